-- Plans that do not rest on fresh statistics, for the statements that run
-- right after a job's tasks are inserted.
--
-- shoal.mark_queued as in 021, with the tasks it marks found through their
-- primary key by an array (task_id = ANY (...)) rather than by a join with
-- the list of ids. The join's plan rested on the table's statistics, which
-- are stale while a job's tasks have just been inserted: with tasks
-- estimated at a hundred rows the planner scanned every top-level task for
-- each id (a 1,000-task call took 1.3 s while it held the job's lock, and
-- every worker's writes waited on it). An array of ids is looked up in the
-- index whatever the statistics say. A task already finished when the call
-- runs (the call follows Kafka's acknowledgement, and a worker may be
-- quicker) now gets its queued_at as well: its queue wait was unknown.
CREATE OR REPLACE FUNCTION shoal.mark_queued(p_job_id text, p_chunks int[],
                                             p_at timestamptz DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM 1 FROM shoal.jobs WHERE job_id = p_job_id FOR UPDATE;
    -- A task a worker finished before this call keeps its status, and gets
    -- its publication time if it has none (else its queue wait is unknown).
    UPDATE shoal.tasks t
    SET status = CASE WHEN t.status IN ('pending', 'queued') THEN 'queued' ELSE t.status END,
        queued_at = CASE WHEN t.status IN ('pending', 'queued') THEN least(p_at, now())
                         ELSE p_at END
    WHERE t.task_id = ANY (ARRAY(SELECT p_job_id || ':' || lpad(c::text, 6, '0')
                                 FROM unnest(p_chunks) AS c))
      AND (t.status IN ('pending', 'queued') OR (t.queued_at IS NULL AND p_at <= now()))
      AND t.parent_task_id IS NULL;
    UPDATE shoal.jobs j
    SET dispatch_from = coalesce(
            (SELECT t.chunk FROM shoal.tasks t
             WHERE t.job_id = p_job_id AND t.parent_task_id IS NULL
               AND t.chunk >= j.dispatch_from AND t.status = 'pending'
             ORDER BY t.chunk LIMIT 1),
            (SELECT t.chunk + 1 FROM shoal.tasks t
             WHERE t.job_id = p_job_id AND t.parent_task_id IS NULL
             ORDER BY t.chunk DESC LIMIT 1),
            j.dispatch_from)
    WHERE j.job_id = p_job_id;
END $$;

-- shoal.record_job as in 002, with a job's tasks read by one
-- jsonb_to_recordset (item_ids as text[] by the column type) instead of a
-- subquery per task for its item ids, as 021 reads a part's tasks.
CREATE OR REPLACE FUNCTION shoal.record_job(p_job jsonb, p_tasks jsonb) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    v_id     text := p_job->>'job_id';
    v_status text := coalesce(p_job->>'status', 'running');
    v_old    text;
BEGIN
    INSERT INTO shoal.jobs (job_id, tenant, priority, model, merge, output_format, status,
                            error, source, settings, items_total, tasks_total, est_tokens,
                            est_cost_usd)
    VALUES (v_id, p_job->>'tenant', p_job->>'priority', p_job->>'model', p_job->>'merge',
            p_job->>'output_format', v_status, p_job->>'error', p_job->>'source',
            p_job->'settings', coalesce((p_job->>'items_total')::int, 0),
            jsonb_array_length(coalesce(p_tasks, '[]')),
            (p_job->>'est_tokens')::bigint, (p_job->>'est_cost_usd')::double precision)
    ON CONFLICT (job_id) DO NOTHING;
    IF NOT FOUND THEN
        SELECT status INTO v_old FROM shoal.jobs WHERE job_id = v_id;
        RETURN 'exists:' || v_old;
    END IF;

    INSERT INTO shoal.tasks (task_id, job_id, chunk, item_ids, est_tokens)
    SELECT t.task_id, v_id, t.chunk, coalesce(t.item_ids, '{}'), t.est_tokens
    FROM jsonb_to_recordset(coalesce(p_tasks, '[]'))
         AS t(task_id text, chunk int, item_ids text[], est_tokens int);

    INSERT INTO shoal.event_outbox (job_id, payload)
    VALUES (v_id, jsonb_strip_nulls(jsonb_build_object(
        'type', CASE WHEN v_status = 'rejected' THEN 'rejected' ELSE 'accepted' END,
        'job_id', v_id, 'tenant', p_job->>'tenant', 'error', p_job->>'error',
        'tasks', jsonb_array_length(coalesce(p_tasks, '[]')),
        'items', (p_job->>'items_total')::int,
        'est_cost_usd', (p_job->>'est_cost_usd')::double precision,
        'ts', now())));
    RETURN 'new';
END $$;
