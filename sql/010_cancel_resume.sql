-- Cancel, resume and the reconciler: jobs keep their inputs (unless they opt
-- out), a job can be cancelled or its failed tasks run again, and a task whose
-- message was lost can be found and published again.

-- A job may now end cancelled; a task of a cancelled job that had not ended
-- is cancelled with it.
ALTER TABLE shoal.jobs DROP CONSTRAINT jobs_status_check;
ALTER TABLE shoal.jobs ADD CONSTRAINT jobs_status_check
    CHECK (status IN ('running', 'completed', 'partial', 'failed', 'rejected', 'cancelled'));
ALTER TABLE shoal.tasks DROP CONSTRAINT tasks_status_check;
ALTER TABLE shoal.tasks ADD CONSTRAINT tasks_status_check
    CHECK (status IN ('pending', 'queued', 'done', 'failed', 'cancelled'));

-- When the task was last reset by shoal.resume_job: only calls started after
-- it count against max_attempts (the worker's check, worker/store.c).
ALTER TABLE shoal.tasks ADD COLUMN resumed_at timestamptz;

-- Cancelled jobs by when, for the workers' look-up of recent cancels.
CREATE INDEX jobs_cancelled_idx ON shoal.jobs (finished_at) WHERE status = 'cancelled';

-- Queued tasks, for the reconciler's look-up of the ones whose message is lost.
CREATE INDEX tasks_queued_idx ON shoal.tasks (queued_at) WHERE status = 'queued';

-- Each job's message as the scheduler parsed it (defaults filled in): the
-- system prompt, template and item inputs from which every task message is
-- built again (common/taskmsg.h). This is the one table holding prompt text,
-- and only for jobs that keep their inputs (a job with "store_inputs": false
-- has no row). The text is compressed by TOAST, in place and out of the
-- table's pages: lz4 when the server was built with it (fast to write and
-- read back, about as small as pglz on JSON), else pglz, TOAST's default.
-- TOAST compresses rows over about 2 kB; smaller inputs stay as they are.
CREATE TABLE shoal.job_inputs (
    job_id     text PRIMARY KEY REFERENCES shoal.jobs ON DELETE CASCADE,
    doc        text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
DO $$
BEGIN
    ALTER TABLE shoal.job_inputs ALTER COLUMN doc SET COMPRESSION lz4;
EXCEPTION WHEN feature_not_supported OR invalid_parameter_value THEN
    NULL; -- a server built without lz4 keeps pglz, TOAST's default
END $$;

-- Records a job as shoal.record_job(p_job, p_tasks) does and, for a job new
-- now, its inputs (p_inputs; NULL when the job does not keep them) in the
-- same transaction. Returns what record_job returns.
CREATE FUNCTION shoal.record_job(p_job jsonb, p_tasks jsonb, p_inputs text) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    v_res text := shoal.record_job(p_job, p_tasks);
BEGIN
    IF v_res = 'new' AND p_inputs IS NOT NULL THEN
        INSERT INTO shoal.job_inputs (job_id, doc) VALUES (p_job->>'job_id', p_inputs);
    END IF;
    RETURN v_res;
END $$;

-- Marks published top-level tasks queued, as in 009, and also restarts the
-- clock of tasks already queued: the reconciler publishes those again when
-- their message was lost, and measures the next loss from now.
CREATE OR REPLACE FUNCTION shoal.mark_queued(p_job_id text, p_chunks int[]) RETURNS void
LANGUAGE sql AS $$
    UPDATE shoal.tasks t SET status = 'queued', queued_at = now()
    FROM unnest(p_chunks) AS c(chunk)
    WHERE t.job_id = p_job_id AND t.chunk = c.chunk AND t.status IN ('pending', 'queued')
      AND t.parent_task_id IS NULL;
$$;

-- Cancels a running job: the job ends 'cancelled' (finished_at, error
-- 'cancelled by user'), every task of it not yet ended becomes 'cancelled'
-- (workers skip them at their check and drop those waiting for capacity), a
-- 'cancelled' event is queued and channel shoal_cancel is told the job_id at
-- commit. Returns 'cancelled:<tasks cancelled>', 'not_found', or
-- 'ended:<status>' for a job that is no longer running (cancelling a
-- cancelled job again is 'ended:cancelled' and changes nothing).
CREATE FUNCTION shoal.cancel_job(p_job_id text) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    j   shoal.jobs%ROWTYPE;
    v_n integer;
BEGIN
    SELECT * INTO j FROM shoal.jobs WHERE job_id = p_job_id FOR UPDATE;
    IF NOT FOUND THEN
        RETURN 'not_found';
    END IF;
    IF j.status <> 'running' THEN
        RETURN 'ended:' || j.status;
    END IF;
    UPDATE shoal.tasks SET status = 'cancelled', finished_at = now(), error = 'cancelled by user'
    WHERE job_id = p_job_id AND status IN ('pending', 'queued');
    GET DIAGNOSTICS v_n = ROW_COUNT;
    UPDATE shoal.jobs SET status = 'cancelled', finished_at = now(), error = 'cancelled by user'
    WHERE job_id = p_job_id;
    INSERT INTO shoal.event_outbox (job_id, payload)
    VALUES (p_job_id, jsonb_build_object('type', 'cancelled', 'job_id', p_job_id,
                                         'error', 'cancelled by user', 'tasks', j.tasks_total,
                                         'tasks_done', j.tasks_done,
                                         'tasks_failed', j.tasks_failed,
                                         'tasks_cancelled', v_n, 'ts', now()));
    PERFORM pg_notify('shoal_cancel', p_job_id);
    RETURN 'cancelled:' || v_n;
END $$;

-- Runs a finished job's failed (and so dead-lettered) tasks again: they go
-- back to pending with resumed_at set (their earlier calls no longer count
-- against max_attempts), the job is running again (finished_at, error and
-- output cleared, tasks_failed lowered by as many), and a 'resumed' event is
-- queued. The scheduler's reconciler then publishes them from the stored
-- inputs. Returns 'resumed:<tasks>', 'not_found', 'not_ended:running',
-- 'cannot:<status>' (a rejected, completed or cancelled job), 'no_inputs'
-- (the job does not keep its inputs) or 'nothing_failed'.
CREATE FUNCTION shoal.resume_job(p_job_id text) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    j   shoal.jobs%ROWTYPE;
    v_n integer;
BEGIN
    SELECT * INTO j FROM shoal.jobs WHERE job_id = p_job_id FOR UPDATE;
    IF NOT FOUND THEN
        RETURN 'not_found';
    END IF;
    IF j.status = 'running' THEN
        RETURN 'not_ended:running';
    END IF;
    IF j.status NOT IN ('partial', 'failed') THEN
        RETURN 'cannot:' || j.status;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM shoal.job_inputs WHERE job_id = p_job_id) THEN
        RETURN 'no_inputs';
    END IF;
    UPDATE shoal.tasks
    SET status = 'pending', error = NULL, finished_at = NULL, queued_at = NULL,
        resumed_at = now()
    WHERE job_id = p_job_id AND status = 'failed';
    GET DIAGNOSTICS v_n = ROW_COUNT;
    IF v_n = 0 THEN
        RETURN 'nothing_failed';
    END IF;
    UPDATE shoal.jobs
    SET status = 'running', finished_at = NULL, error = NULL, output = NULL,
        tasks_failed = greatest(tasks_failed - v_n, 0)
    WHERE job_id = p_job_id;
    INSERT INTO shoal.event_outbox (job_id, payload)
    VALUES (p_job_id, jsonb_build_object('type', 'resumed', 'job_id', p_job_id,
                                         'tasks', j.tasks_total, 'tasks_resumed', v_n,
                                         'tasks_done', j.tasks_done, 'ts', now()));
    RETURN 'resumed:' || v_n;
END $$;

-- The reconciler's look-up of lost tasks is shoal.lost_tasks (018, which
-- adds the parts it also reports).

-- Records the rows of a batch of finished tasks as 005's record_batch did
-- (009 renamed it record_batch_rows and wraps it in shoal.record_batch with
-- the spend counters), except that a task cancelled with its job keeps the
-- result of a call that was in flight at the cancel (in shoal.results) while
-- the task stays 'cancelled' and its job's counters and status do not change.
CREATE OR REPLACE FUNCTION shoal.record_batch_rows(p_results jsonb, p_attempts jsonb) RETURNS SETOF text
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

    -- Answers that arrived after their job was cancelled: kept, counted nowhere.
    INSERT INTO shoal.results (task_id, job_id, chunk, output, model, model_requested,
                               tokens_in, tokens_out, worker_id)
    SELECT r.task_id, r.job_id, r.chunk, r.output, r.model, r.model_requested,
           coalesce(r.tokens_in, 0), coalesce(r.tokens_out, 0), r.worker_id
    FROM jsonb_to_recordset(coalesce(p_results, '[]')) AS r(
        task_id text, job_id text, chunk int, status text, output text, model text,
        model_requested text, tokens_in int, tokens_out int, worker_id text)
    JOIN shoal.tasks t ON t.task_id = r.task_id
    WHERE t.status = 'cancelled' AND r.status = 'done' AND r.output IS NOT NULL
    ON CONFLICT (task_id) DO NOTHING;

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
