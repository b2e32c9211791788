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

-- record_batch's look-up of calls already recorded is a primary-key probe
-- per call from the start (009).
