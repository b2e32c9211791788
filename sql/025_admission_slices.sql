-- A large job's tasks are recorded in slices, so that its first calls start
-- while the rest are being recorded.
--
-- The scheduler recorded a job and all its task rows in one transaction and
-- nothing of the job could run before it committed: for a 20,000-task job a
-- third of a second of one busy core (jsonb of every task, its rows, three
-- b-trees) during which the workers had nothing to do. Now the job row, its
-- inputs and its first slice of tasks are one transaction, as before (the
-- job row carries the whole job's tasks_total, so the job cannot end before
-- its last slice is in and done), and each further slice is a transaction of
-- its own, through shoal.record_job_tasks; the dispatcher publishes what is
-- recorded between slices. The job's message is acknowledged only after its
-- last slice, so a scheduler that stops between slices gets the message
-- again, finds the job recorded ('exists:running') and records the slices
-- that are missing (shoal.job_tasks_missing says how many) before anything
-- else.

-- shoal.record_job as in 022, except that the job's tasks_total (and the
-- count in its 'accepted' event) is p_job's tasks_total when it has one: the
-- tasks of the whole job, of which p_tasks is the first slice.
CREATE OR REPLACE FUNCTION shoal.record_job(p_job jsonb, p_tasks jsonb) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    v_id     text := p_job->>'job_id';
    v_status text := coalesce(p_job->>'status', 'running');
    v_total  integer := coalesce((p_job->>'tasks_total')::int,
                                 jsonb_array_length(coalesce(p_tasks, '[]')));
    v_old    text;
BEGIN
    INSERT INTO shoal.jobs (job_id, tenant, priority, model, merge, output_format, status,
                            error, source, settings, items_total, tasks_total, est_tokens,
                            est_cost_usd)
    VALUES (v_id, p_job->>'tenant', p_job->>'priority', p_job->>'model', p_job->>'merge',
            p_job->>'output_format', v_status, p_job->>'error', p_job->>'source',
            p_job->'settings', coalesce((p_job->>'items_total')::int, 0), v_total,
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
        'tasks', v_total,
        'items', (p_job->>'items_total')::int,
        'est_cost_usd', (p_job->>'est_cost_usd')::double precision,
        'ts', now())));
    RETURN 'new';
END $$;

-- Records a further slice of a recorded job's tasks (rows as record_job
-- takes them). A task already recorded is left as it is, so a slice may be
-- recorded twice. The tasks of a job cancelled meanwhile are recorded
-- cancelled, as shoal.cancel_job would have left them; those of a job that
-- ended otherwise stay pending until it is resumed, as its failed tasks do.
-- Returns the rows added; -1 when the job is not recorded.
CREATE FUNCTION shoal.record_job_tasks(p_job_id text, p_tasks jsonb) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    v_status text;
    v_n      integer;
BEGIN
    SELECT status INTO v_status FROM shoal.jobs WHERE job_id = p_job_id;
    IF NOT FOUND THEN
        RETURN -1;
    END IF;
    INSERT INTO shoal.tasks (task_id, job_id, chunk, item_ids, est_tokens, status, error,
                             finished_at)
    SELECT t.task_id, p_job_id, t.chunk, coalesce(t.item_ids, '{}'), t.est_tokens,
           CASE WHEN v_status = 'cancelled' THEN 'cancelled' ELSE 'pending' END,
           CASE WHEN v_status = 'cancelled' THEN 'cancelled by user' END,
           CASE WHEN v_status = 'cancelled' THEN now() END
    FROM jsonb_to_recordset(coalesce(p_tasks, '[]'))
         AS t(task_id text, chunk int, item_ids text[], est_tokens int)
    ON CONFLICT DO NOTHING;
    GET DIAGNOSTICS v_n = ROW_COUNT;
    RETURN v_n;
END $$;

-- How many of a job's tasks are not recorded yet (0 once its last slice is
-- in; NULL for a job not recorded). Sub-tasks count on both sides.
CREATE FUNCTION shoal.job_tasks_missing(p_job_id text) RETURNS bigint
LANGUAGE sql STABLE AS $$
    SELECT j.tasks_total - (SELECT count(*) FROM shoal.tasks t WHERE t.job_id = j.job_id)
    FROM shoal.jobs j WHERE j.job_id = p_job_id;
$$;

-- == A merged output and a job's parts are written with lz4 =================
-- As the job's inputs since 010: a 20,000-task job's merged output (about
-- 1 MB in pages of 128 kB) was compressed with pglz, TOAST's default, in the
-- merge that its owner waits for; lz4 writes it several times faster at a
-- similar size. Rows written before keep pglz (both are read back alike).
DO $$
BEGIN
    ALTER TABLE shoal.job_output ALTER COLUMN body SET COMPRESSION lz4;
    ALTER TABLE shoal.job_parts ALTER COLUMN doc SET COMPRESSION lz4;
EXCEPTION WHEN feature_not_supported OR invalid_parameter_value THEN
    NULL; -- a server built without lz4 keeps pglz
END $$;
