-- Usage and outcome detail per call: cache writes (billed apart from other
-- prompt tokens), how each call ended beyond ok/retry/failed, and which model
-- a fallback replaced.

-- tokens_cache_write: prompt tokens written to the provider's cache (part of
-- tokens_in, like tokens_cached). outcome_kind: how the call ended, one of the
-- worker's outcome names (NULL on rows written before this migration).
-- fallback_from: the task's own model when this call went to a fallback.
ALTER TABLE shoal.attempts
    ADD COLUMN tokens_cache_write integer NOT NULL DEFAULT 0,
    ADD COLUMN fallback_from text,
    ADD COLUMN outcome_kind text
        CHECK (outcome_kind IN ('ok', 'truncated', 'rate_limited', 'overloaded',
                                'server_error', 'timeout', 'connection', 'permanent',
                                'malformed'));

-- model_requested: the job's model when a fallback served the result (model
-- is then the fallback); NULL when the job's own model served it.
ALTER TABLE shoal.results ADD COLUMN model_requested text;

-- Records a batch of finished tasks and the calls behind them. A task counts
-- once: only tasks still pending/queued move to done/failed, only those get a
-- result row, and only they bump their job's counters. Jobs whose last task
-- just ended are returned and announced on channel shoal_merge at commit.
-- As in 002, plus the attempt keys tokens_cache_write, fallback_from and
-- outcome_kind and the result key model_requested; a row without them (an
-- older worker) gets the defaults.
CREATE OR REPLACE FUNCTION shoal.record_batch(p_results jsonb, p_attempts jsonb) RETURNS SETOF text
LANGUAGE plpgsql AS $$
DECLARE
    v_job text;
BEGIN
    INSERT INTO shoal.attempts (attempt_id, task_id, job_id, attempt, model, worker_id,
                                http_status, outcome, outcome_kind, error, latency_ms, queue_ms,
                                tokens_in, tokens_out, tokens_cached, tokens_cache_write,
                                cost_usd, retry_after_ms, fallback_from, started_at, finished_at)
    SELECT a.attempt_id, a.task_id, a.job_id, a.attempt, a.model, a.worker_id, a.http_status,
           a.outcome, a.outcome_kind, a.error, a.latency_ms, a.queue_ms,
           coalesce(a.tokens_in, 0), coalesce(a.tokens_out, 0), coalesce(a.tokens_cached, 0),
           coalesce(a.tokens_cache_write, 0), coalesce(a.cost_usd, 0), a.retry_after_ms,
           a.fallback_from, to_timestamp(a.started_at), to_timestamp(a.finished_at)
    FROM jsonb_to_recordset(coalesce(p_attempts, '[]')) AS a(
        attempt_id text, task_id text, job_id text, attempt int, model text, worker_id text,
        http_status int, outcome text, outcome_kind text, error text,
        latency_ms double precision, queue_ms double precision, tokens_in int, tokens_out int,
        tokens_cached int, tokens_cache_write int, cost_usd double precision,
        retry_after_ms int, fallback_from text, started_at double precision,
        finished_at double precision)
    ON CONFLICT (attempt_id) DO NOTHING;

    -- Lock the jobs in a fixed order so concurrent batches cannot deadlock.
    PERFORM 1 FROM shoal.jobs
    WHERE job_id IN (SELECT DISTINCT r->>'job_id' FROM jsonb_array_elements(p_results) r)
    ORDER BY job_id FOR UPDATE;

    FOR v_job IN
        WITH r AS (
            SELECT * FROM jsonb_to_recordset(coalesce(p_results, '[]')) AS x(
                task_id text, job_id text, chunk int, status text, output text, model text,
                model_requested text, tokens_in int, tokens_out int, worker_id text, error text,
                attempts int)
        ), fin AS (
            UPDATE shoal.tasks t
            SET status = r.status, error = r.error, attempts = t.attempts + coalesce(r.attempts, 1),
                finished_at = now()
            FROM r
            WHERE t.task_id = r.task_id AND t.status IN ('pending', 'queued')
            RETURNING t.task_id, t.job_id, t.status
        ), ins AS (
            INSERT INTO shoal.results (task_id, job_id, chunk, output, model, model_requested,
                                       tokens_in, tokens_out, worker_id)
            SELECT r.task_id, r.job_id, r.chunk, r.output, r.model, r.model_requested,
                   coalesce(r.tokens_in, 0), coalesce(r.tokens_out, 0), r.worker_id
            FROM r JOIN fin USING (task_id)
            WHERE fin.status = 'done'
            ON CONFLICT (task_id) DO NOTHING
        ), per_job AS (
            SELECT job_id, count(*) FILTER (WHERE status = 'done') AS done,
                   count(*) FILTER (WHERE status = 'failed') AS failed
            FROM fin GROUP BY job_id
        ), upd AS (
            UPDATE shoal.jobs j
            SET tasks_done = j.tasks_done + p.done, tasks_failed = j.tasks_failed + p.failed
            FROM per_job p
            WHERE j.job_id = p.job_id
            RETURNING j.job_id, j.status, j.tasks_done + j.tasks_failed >= j.tasks_total AS ended
        )
        SELECT upd.job_id FROM upd WHERE ended AND status = 'running'
    LOOP
        PERFORM pg_notify('shoal_merge', v_job);
        RETURN NEXT v_job;
    END LOOP;
END $$;
