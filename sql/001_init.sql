-- shoal core tables. The database never holds prompt text: jobs keep their
-- settings and counters, tasks keep item ids, results keep model output.

CREATE TABLE shoal.jobs (
    job_id        text PRIMARY KEY,
    tenant        text,
    priority      text,
    model         text,
    merge         text,
    output_format text,
    status        text NOT NULL
                  CHECK (status IN ('running', 'completed', 'partial', 'failed', 'rejected')),
    error         text,
    source        text,                 -- topic/partition@offset it came from
    settings      jsonb,                -- everything but prompt text
    items_total   integer NOT NULL DEFAULT 0,
    tasks_total   integer NOT NULL DEFAULT 0,
    tasks_done    integer NOT NULL DEFAULT 0,
    tasks_failed  integer NOT NULL DEFAULT 0,
    est_tokens    bigint,
    est_cost_usd  double precision,
    output        text,
    submitted_at  timestamptz NOT NULL DEFAULT now(),
    finished_at   timestamptz
);
CREATE INDEX jobs_open_idx ON shoal.jobs (job_id) WHERE status = 'running';
CREATE INDEX jobs_tenant_idx ON shoal.jobs (tenant, submitted_at);

CREATE TABLE shoal.tasks (
    task_id      text PRIMARY KEY,
    job_id       text NOT NULL REFERENCES shoal.jobs ON DELETE CASCADE,
    chunk        integer NOT NULL,
    item_ids     text[] NOT NULL,
    est_tokens   integer,
    status       text NOT NULL DEFAULT 'pending'
                 CHECK (status IN ('pending', 'queued', 'done', 'failed')),
    attempts     integer NOT NULL DEFAULT 0,
    error        text,
    created_at   timestamptz NOT NULL DEFAULT now(),
    queued_at    timestamptz,
    finished_at  timestamptz,
    UNIQUE (job_id, chunk)
);
CREATE INDEX tasks_pending_idx ON shoal.tasks (job_id) WHERE status = 'pending';

CREATE TABLE shoal.results (
    task_id     text PRIMARY KEY REFERENCES shoal.tasks ON DELETE CASCADE,
    job_id      text NOT NULL,
    chunk       integer NOT NULL,
    output      text NOT NULL,
    model       text NOT NULL,
    tokens_in   integer NOT NULL DEFAULT 0,
    tokens_out  integer NOT NULL DEFAULT 0,
    worker_id   text,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX results_job_idx ON shoal.results (job_id, chunk);

-- One row per model call. attempt_id is chosen by the worker
-- (worker_id/sequence) so a retried write of the same batch is one row.
CREATE TABLE shoal.attempts (
    attempt_id     text PRIMARY KEY,
    task_id        text NOT NULL,
    job_id         text NOT NULL,
    attempt        integer NOT NULL,
    model          text NOT NULL,
    worker_id      text NOT NULL,
    http_status    integer NOT NULL,     -- 0 when no HTTP answer came
    outcome        text NOT NULL CHECK (outcome IN ('ok', 'retry', 'failed')),
    error          text,
    latency_ms     double precision NOT NULL,
    queue_ms       double precision,
    tokens_in      integer NOT NULL DEFAULT 0,
    tokens_out     integer NOT NULL DEFAULT 0,
    tokens_cached  integer NOT NULL DEFAULT 0,
    cost_usd       double precision NOT NULL DEFAULT 0,
    retry_after_ms integer,
    started_at     timestamptz NOT NULL,
    finished_at    timestamptz NOT NULL
);
CREATE INDEX attempts_job_idx ON shoal.attempts (job_id);
CREATE INDEX attempts_model_time_idx ON shoal.attempts (model, finished_at);

-- Events waiting for shoal.events, written in the same transaction as the
-- state change they report and deleted once Kafka acknowledged them.
CREATE TABLE shoal.event_outbox (
    id          bigserial PRIMARY KEY,
    job_id      text NOT NULL,
    payload     jsonb NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
