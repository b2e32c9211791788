-- Cheaper task state changes for large jobs.

-- Every task's row is updated twice (queued by the scheduler, done or
-- failed by a worker), and an update that changes an indexed column writes
-- an entry into every index of the table. tasks_pending_idx had status in
-- its predicate, so no status change could be a heap-only (HOT) update;
-- tasks_job_idx serves intake's look-up of a job's pending tasks (once per
-- job) without naming status. With room left free on each page (fillfactor)
-- both updates stay on the row's page and write no index entry.
DROP INDEX shoal.tasks_pending_idx;
CREATE INDEX tasks_job_idx ON shoal.tasks (job_id);
ALTER TABLE shoal.tasks SET (fillfactor = 50);

-- Marks published tasks queued: as in 010, the top-level tasks of the job
-- with those chunks that are pending, or queued already (a task published
-- again by the reconciler restarts its clock), but each row is found by its
-- primary key alone. A task_id is "<job_id>:<chunk as six digits>" (the rule
-- of common/taskmsg.h, which workers enforce), so a top-level task with one
-- of these ids is that job's task of that chunk; the ids are a materialized
-- list, so each is one probe of the primary key. Joining the chunks on
-- (job_id, chunk) let the planner, without statistics for a job's fresh
-- rows, read every task of the job for each call: quadratic in the job's
-- size (20,000 tasks: over a millisecond of server time per task).
CREATE OR REPLACE FUNCTION shoal.mark_queued(p_job_id text, p_chunks int[]) RETURNS void
LANGUAGE sql AS $$
    WITH ids AS MATERIALIZED (
        SELECT p_job_id || ':' || lpad(c::text, 6, '0') AS task_id FROM unnest(p_chunks) AS c
    )
    UPDATE shoal.tasks t SET status = 'queued', queued_at = now()
    FROM ids
    WHERE t.task_id = ids.task_id AND t.status IN ('pending', 'queued')
      AND t.parent_task_id IS NULL;
$$;

-- Records a batch of finished tasks and the calls behind them: everything
-- 009's record_batch does, word for word, but for one change: a call counts
-- as fresh when a look-up of its attempt_id finds no row, written as a
-- scalar subquery (one primary-key probe per call) instead of NOT EXISTS.
-- The planner turned NOT EXISTS into a hash anti-join over a sequential scan
-- of shoal.attempts, planned while the table was small and kept by the
-- function's cached plan: every batch then read every attempt ever recorded
-- (quadratic in the calls of a job).
CREATE OR REPLACE FUNCTION shoal.record_batch(p_results jsonb, p_attempts jsonb) RETURNS SETOF text
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM 1 FROM shoal.jobs
    WHERE job_id IN (SELECT r->>'job_id' FROM jsonb_array_elements(coalesce(p_results, '[]')) r
                     UNION
                     SELECT a->>'job_id' FROM jsonb_array_elements(coalesce(p_attempts, '[]')) a)
    ORDER BY job_id FOR UPDATE;

    WITH fresh AS (
        SELECT DISTINCT ON (a.attempt_id) a.job_id, coalesce(a.cost_usd, 0) AS cost_usd,
               coalesce(a.tokens_in, 0) AS tokens_in, coalesce(a.tokens_out, 0) AS tokens_out,
               (to_timestamp(a.finished_at) AT TIME ZONE 'UTC')::date AS day
        FROM jsonb_to_recordset(coalesce(p_attempts, '[]')) AS a(
            attempt_id text, job_id text, cost_usd double precision, tokens_in int,
            tokens_out int, finished_at double precision)
        WHERE (SELECT 1 FROM shoal.attempts x WHERE x.attempt_id = a.attempt_id) IS NULL
        ORDER BY a.attempt_id
    ), per_job AS (
        UPDATE shoal.jobs j SET spent_usd = j.spent_usd + s.cost
        FROM (SELECT job_id, sum(cost_usd) AS cost FROM fresh GROUP BY job_id) s
        WHERE j.job_id = s.job_id AND s.cost <> 0
        RETURNING j.job_id
    )
    INSERT INTO shoal.tenant_spend AS ts (tenant, day, spent_usd, calls, tokens_in, tokens_out)
    SELECT coalesce(j.tenant, ''), f.day, sum(f.cost_usd), count(*), sum(f.tokens_in),
           sum(f.tokens_out)
    FROM fresh f JOIN shoal.jobs j USING (job_id)
    GROUP BY 1, 2
    ORDER BY 1, 2
    ON CONFLICT (tenant, day) DO UPDATE
    SET spent_usd = ts.spent_usd + excluded.spent_usd, calls = ts.calls + excluded.calls,
        tokens_in = ts.tokens_in + excluded.tokens_in,
        tokens_out = ts.tokens_out + excluded.tokens_out;

    RETURN QUERY SELECT * FROM shoal.record_batch_rows(p_results, p_attempts);
END $$;

