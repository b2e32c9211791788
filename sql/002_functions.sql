-- State changes as single statements, so each is one round trip and one
-- transaction, and each is idempotent under at-least-once delivery.

-- Text to jsonb without raising: invalid JSON becomes a JSON string, so one
-- bad output can never make a merge fail forever.
CREATE FUNCTION shoal.try_jsonb(p text) RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    RETURN p::jsonb;
EXCEPTION WHEN others THEN
    RETURN to_jsonb(p);
END $$;

-- Records a job (running or rejected) with its tasks and its first event.
-- Returns 'new', or 'exists:<status>' when the job_id was seen before (the
-- same job delivered or submitted twice is one job).
CREATE FUNCTION shoal.record_job(p_job jsonb, p_tasks jsonb) RETURNS text
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
    SELECT t->>'task_id', v_id, (t->>'chunk')::int,
           ARRAY(SELECT jsonb_array_elements_text(t->'item_ids')), (t->>'est_tokens')::int
    FROM jsonb_array_elements(coalesce(p_tasks, '[]')) AS t;

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

-- Marks published tasks queued (only those still pending: a worker may have
-- finished one already).
CREATE FUNCTION shoal.mark_queued(p_job_id text, p_chunks int[]) RETURNS void
LANGUAGE sql AS $$
    UPDATE shoal.tasks SET status = 'queued', queued_at = now()
    WHERE job_id = p_job_id AND chunk = ANY(p_chunks) AND status = 'pending';
$$;

-- Ends a running job as failed before any task ran (its tasks cannot be
-- published), with the reason and a failed event.
CREATE FUNCTION shoal.fail_job(p_job_id text, p_error text) RETURNS void
LANGUAGE sql AS $$
    WITH j AS (
        UPDATE shoal.jobs SET status = 'failed', error = p_error, finished_at = now(),
                              output = ''
        WHERE job_id = p_job_id AND status = 'running'
        RETURNING job_id, tasks_total
    )
    INSERT INTO shoal.event_outbox (job_id, payload)
    SELECT job_id, jsonb_build_object('type', 'failed', 'job_id', job_id, 'error', p_error,
                                      'tasks', tasks_total, 'tasks_done', 0,
                                      'tasks_failed', 0, 'ts', now())
    FROM j;
$$;

-- Records a batch of finished tasks and the calls behind them. A task counts
-- once: only tasks still pending/queued move to done/failed, only those get a
-- result row, and only they bump their job's counters. Jobs whose last task
-- just ended are returned and announced on channel shoal_merge at commit.
CREATE FUNCTION shoal.record_batch(p_results jsonb, p_attempts jsonb) RETURNS SETOF text
LANGUAGE plpgsql AS $$
DECLARE
    v_job text;
BEGIN
    INSERT INTO shoal.attempts (attempt_id, task_id, job_id, attempt, model, worker_id,
                                http_status, outcome, error, latency_ms, queue_ms, tokens_in,
                                tokens_out, tokens_cached, cost_usd, retry_after_ms,
                                started_at, finished_at)
    SELECT a.attempt_id, a.task_id, a.job_id, a.attempt, a.model, a.worker_id, a.http_status,
           a.outcome, a.error, a.latency_ms, a.queue_ms, coalesce(a.tokens_in, 0),
           coalesce(a.tokens_out, 0), coalesce(a.tokens_cached, 0), coalesce(a.cost_usd, 0),
           a.retry_after_ms, to_timestamp(a.started_at), to_timestamp(a.finished_at)
    FROM jsonb_to_recordset(coalesce(p_attempts, '[]')) AS a(
        attempt_id text, task_id text, job_id text, attempt int, model text, worker_id text,
        http_status int, outcome text, error text, latency_ms double precision,
        queue_ms double precision, tokens_in int, tokens_out int, tokens_cached int,
        cost_usd double precision, retry_after_ms int, started_at double precision,
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
                tokens_in int, tokens_out int, worker_id text, error text, attempts int)
        ), fin AS (
            UPDATE shoal.tasks t
            SET status = r.status, error = r.error, attempts = t.attempts + coalesce(r.attempts, 1),
                finished_at = now()
            FROM r
            WHERE t.task_id = r.task_id AND t.status IN ('pending', 'queued')
            RETURNING t.task_id, t.job_id, t.status
        ), ins AS (
            INSERT INTO shoal.results (task_id, job_id, chunk, output, model, tokens_in,
                                       tokens_out, worker_id)
            SELECT r.task_id, r.job_id, r.chunk, r.output, r.model, coalesce(r.tokens_in, 0),
                   coalesce(r.tokens_out, 0), r.worker_id
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

-- Assembles a finished job's output by its merge strategy and closes it:
-- completed (every task done), partial (some failed) or failed (none done).
-- concat joins the outputs of the chunks that succeeded; json_array and jsonl
-- keep one entry per chunk, so a failed chunk holds its place (null in the
-- array, a line with "error" instead of "output").
-- Returns the new status, or NULL when the job is not ready or already
-- merged, so several mergers may race on one job safely.
CREATE FUNCTION shoal.merge_job(p_job_id text) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    j        shoal.jobs%ROWTYPE;
    v_out    text;
    v_status text;
    v_json   boolean;
BEGIN
    SELECT * INTO j FROM shoal.jobs WHERE job_id = p_job_id FOR UPDATE;
    IF NOT FOUND OR j.status <> 'running' OR j.tasks_done + j.tasks_failed < j.tasks_total THEN
        RETURN NULL;
    END IF;
    v_json := j.output_format = 'json';

    IF j.merge = 'json_array' THEN
        SELECT coalesce(jsonb_agg(CASE WHEN r.task_id IS NULL THEN 'null'::jsonb
                                       WHEN v_json THEN shoal.try_jsonb(r.output)
                                       ELSE to_jsonb(r.output) END ORDER BY t.chunk), '[]')::text
        INTO v_out
        FROM shoal.tasks t LEFT JOIN shoal.results r USING (task_id)
        WHERE t.job_id = p_job_id;
    ELSIF j.merge = 'jsonl' THEN
        SELECT string_agg((jsonb_build_object(
                   'task_id', t.task_id, 'chunk', t.chunk, 'items', to_jsonb(t.item_ids))
                   || CASE WHEN r.task_id IS NULL
                           THEN jsonb_build_object('error', coalesce(t.error, 'failed'))
                           ELSE jsonb_build_object('output',
                                    CASE WHEN v_json THEN shoal.try_jsonb(r.output)
                                         ELSE to_jsonb(r.output) END) END)::text
                   || E'\n', '' ORDER BY t.chunk)
        INTO v_out
        FROM shoal.tasks t LEFT JOIN shoal.results r USING (task_id)
        WHERE t.job_id = p_job_id;
    ELSE
        SELECT string_agg(r.output, E'\n' ORDER BY r.chunk) INTO v_out
        FROM shoal.results r WHERE r.job_id = p_job_id;
    END IF;

    v_status := CASE WHEN j.tasks_failed = 0 THEN 'completed'
                     WHEN j.tasks_done = 0 THEN 'failed'
                     ELSE 'partial' END;
    UPDATE shoal.jobs
    SET status = v_status, output = coalesce(v_out, ''), finished_at = now(),
        error = CASE WHEN j.tasks_failed > 0
                     THEN j.tasks_failed || ' of ' || j.tasks_total || ' tasks failed' END
    WHERE job_id = p_job_id;

    INSERT INTO shoal.event_outbox (job_id, payload)
    SELECT p_job_id, jsonb_build_object(
        'type', v_status, 'job_id', p_job_id, 'tasks', j.tasks_total,
        'tasks_done', j.tasks_done, 'tasks_failed', j.tasks_failed,
        'cost_usd', coalesce(sum(a.cost_usd), 0), 'ts', now())
    FROM shoal.attempts a WHERE a.job_id = p_job_id;
    RETURN v_status;
END $$;
