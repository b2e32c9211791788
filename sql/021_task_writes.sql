-- Cheaper writes of a task's life: one statement records a batch of
-- finished tasks.

-- == record_batch in one piece ================================================
-- shoal.record_batch (016) wrapped record_batch_spend (009), which wrapped
-- record_batch_rows (010): each layer locked the batch's jobs again and read
-- the batch's JSON again, the spend counters probed shoal.attempts for every
-- call to learn which ones were new, and answers for cancelled tasks cost a
-- join per row in every batch. What they did together, in one function:
--   1. every job the batch names is locked in job_id order (concurrent
--      batches with the same calls wait, then see them recorded, and batches
--      cannot deadlock);
--   2. the calls' budget reservations are settled (016);
--   3. one statement records the calls (a call recorded already adds
--      nothing), the tasks' ends (a task counts once: only pending or queued
--      tasks end), their results, each job's counters and spend, and each
--      tenant's spend of the day, from the calls that statement inserted;
--   4. answers that arrived after their task was cancelled are kept in
--      shoal.results and counted nowhere (010); looked for only when some
--      result of the batch did not end its task.
-- Returns the jobs whose last task this batch ended and announces each on
-- channel shoal_merge at commit.
CREATE OR REPLACE FUNCTION shoal.record_batch(p_results jsonb, p_attempts jsonb) RETURNS SETOF text
LANGUAGE plpgsql AS $$
DECLARE
    v_job   text;
    v_ended boolean;
    v_fin   bigint;
    v_total bigint := 0;
BEGIN
    p_results := coalesce(p_results, '[]');
    p_attempts := coalesce(p_attempts, '[]');

    PERFORM 1 FROM shoal.jobs
    WHERE job_id = ANY (ARRAY(SELECT r.job_id FROM jsonb_to_recordset(p_results) AS r(job_id text)
                              UNION
                              SELECT a.job_id FROM jsonb_to_recordset(p_attempts) AS a(job_id text)))
    ORDER BY job_id FOR UPDATE;

    IF jsonb_array_length(p_attempts) > 0 THEN
        PERFORM shoal.settle_reservations(p_attempts);
    END IF;

    FOR v_job, v_ended, v_fin IN
        WITH calls AS (
            INSERT INTO shoal.attempts (attempt_id, task_id, job_id, attempt, model, worker_id,
                                        http_status, outcome, outcome_kind, error, latency_ms,
                                        queue_ms, tokens_in, tokens_out, tokens_cached,
                                        tokens_cache_write, cost_usd, retry_after_ms,
                                        fallback_from, started_at, finished_at)
            SELECT a.attempt_id, a.task_id, a.job_id, a.attempt, a.model, a.worker_id,
                   a.http_status, a.outcome, a.outcome_kind, a.error, a.latency_ms, a.queue_ms,
                   coalesce(a.tokens_in, 0), coalesce(a.tokens_out, 0),
                   coalesce(a.tokens_cached, 0), coalesce(a.tokens_cache_write, 0),
                   coalesce(a.cost_usd, 0), a.retry_after_ms, a.fallback_from,
                   to_timestamp(a.started_at), to_timestamp(a.finished_at)
            FROM jsonb_to_recordset(p_attempts) AS a(
                attempt_id text, task_id text, job_id text, attempt int, model text,
                worker_id text, http_status int, outcome text, outcome_kind text, error text,
                latency_ms double precision, queue_ms double precision, tokens_in int,
                tokens_out int, tokens_cached int, tokens_cache_write int,
                cost_usd double precision, retry_after_ms int, fallback_from text,
                started_at double precision, finished_at double precision)
            ON CONFLICT (attempt_id) DO NOTHING
            RETURNING job_id, cost_usd, tokens_in, tokens_out, finished_at
        ), r AS (
            SELECT * FROM jsonb_to_recordset(p_results) AS x(
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
        ), ends AS (
            SELECT job_id, count(*) FILTER (WHERE status = 'done') AS done,
                   count(*) FILTER (WHERE status = 'failed') AS failed
            FROM fin GROUP BY job_id
        ), spend AS (
            SELECT job_id, sum(cost_usd) AS cost FROM calls GROUP BY job_id
        ), upd AS (
            UPDATE shoal.jobs j
            SET tasks_done = j.tasks_done + coalesce(c.done, 0),
                tasks_failed = j.tasks_failed + coalesce(c.failed, 0),
                spent_usd = j.spent_usd + coalesce(c.cost, 0)
            FROM (SELECT * FROM ends FULL JOIN spend USING (job_id)) c
            WHERE j.job_id = c.job_id AND (c.done IS NOT NULL OR c.cost <> 0)
            -- ended by this batch: some task of the job ended in it (a job
            -- charged for a late call only was not ended by it)
            RETURNING j.job_id, c.done IS NOT NULL AND j.status = 'running'
                                AND j.tasks_done + j.tasks_failed >= j.tasks_total AS ended,
                      coalesce(c.done + c.failed, 0) AS fin
        ), tenant_day AS (
            INSERT INTO shoal.tenant_spend AS ts (tenant, day, spent_usd, calls, tokens_in,
                                                  tokens_out)
            SELECT coalesce(j.tenant, ''), (c.finished_at AT TIME ZONE 'UTC')::date,
                   sum(c.cost_usd), count(*), sum(c.tokens_in), sum(c.tokens_out)
            FROM calls c JOIN shoal.jobs j USING (job_id)
            GROUP BY 1, 2
            ORDER BY 1, 2
            ON CONFLICT (tenant, day) DO UPDATE
            SET spent_usd = ts.spent_usd + excluded.spent_usd, calls = ts.calls + excluded.calls,
                tokens_in = ts.tokens_in + excluded.tokens_in,
                tokens_out = ts.tokens_out + excluded.tokens_out
        )
        SELECT upd.job_id, upd.ended, upd.fin FROM upd
    LOOP
        v_total := v_total + v_fin;
        IF v_ended THEN
            PERFORM pg_notify('shoal_merge', v_job);
            RETURN NEXT v_job;
        END IF;
    END LOOP;

    IF v_total < jsonb_array_length(p_results) THEN
        INSERT INTO shoal.results (task_id, job_id, chunk, output, model, model_requested,
                                   tokens_in, tokens_out, worker_id)
        SELECT r.task_id, r.job_id, r.chunk, r.output, r.model, r.model_requested,
               coalesce(r.tokens_in, 0), coalesce(r.tokens_out, 0), r.worker_id
        FROM jsonb_to_recordset(p_results) AS r(
            task_id text, job_id text, chunk int, status text, output text, model text,
            model_requested text, tokens_in int, tokens_out int, worker_id text)
        JOIN shoal.tasks t ON t.task_id = r.task_id
        WHERE t.status = 'cancelled' AND r.status = 'done' AND r.output IS NOT NULL
        ON CONFLICT (task_id) DO NOTHING;
    END IF;
END $$;

-- == The dispatcher's look-ups, per job ======================================
-- Each pass of shoal.dispatch_pick (018) read every pending task of every
-- running job to learn which jobs have one, and every task of the table to
-- count the queued ones: a pass over a 100,000-task job cost tens of
-- milliseconds ten times a second. Queued tasks are now indexed by job, so
-- a pass counts each running job's queued tasks (at most its window) and
-- probes each for one pending task.
DROP INDEX shoal.tasks_queued_idx;
CREATE INDEX tasks_queued_idx ON shoal.tasks (job_id, queued_at) WHERE status = 'queued';

-- As in 018: per priority, each tenant may have p_window tasks queued
-- (published, unfinished) across its running jobs; the pass fills each
-- tenant's room from its jobs in submission order, then chunk order, and
-- takes at most p_limit tasks, higher priorities first and tenants in turn.
-- Jobs still receiving parts, or without stored inputs, are not dispatched
-- (their queued tasks still count).
CREATE OR REPLACE FUNCTION shoal.dispatch_pick(p_window integer, p_limit integer)
RETURNS TABLE (job_id text, part integer, chunk integer)
LANGUAGE sql STABLE AS $$
    WITH running AS MATERIALIZED (
        SELECT j.job_id, j.priority, coalesce(j.tenant, '') AS tenant, j.submitted_at,
               (j.parts_total IS NULL OR j.parts_received >= j.parts_total)
               AND EXISTS (SELECT 1 FROM shoal.job_inputs i WHERE i.job_id = j.job_id)
                   AS dispatched,
               -- at most p_window of them: more leaves no room either way,
               -- and the ordered, limited read keeps to the job's entries
               -- of tasks_queued_idx whatever the statistics say
               (SELECT count(*) FROM (SELECT 1 FROM shoal.tasks t
                                      WHERE t.job_id = j.job_id AND t.status = 'queued'
                                      ORDER BY t.queued_at LIMIT p_window) q) AS queued
        FROM shoal.jobs j
        WHERE j.status = 'running'
    ), ready AS (
        SELECT r.job_id, r.priority, r.tenant, r.submitted_at
        FROM running r
        WHERE r.dispatched
          -- a probe of the job's first pending task, not a semi-join the
          -- planner may turn into a read of every pending task
          AND (SELECT 1 FROM shoal.tasks t
               WHERE t.job_id = r.job_id AND t.status = 'pending' AND t.parent_task_id IS NULL
               LIMIT 1) IS NOT NULL
    ), inflight AS (
        SELECT priority, tenant, sum(queued) AS n FROM running GROUP BY 1, 2
    ), room AS (
        SELECT r.priority, r.tenant, greatest(p_window - coalesce(f.n, 0), 0) AS room
        FROM (SELECT DISTINCT priority, tenant FROM ready) r
        LEFT JOIN inflight f ON f.priority = r.priority AND f.tenant = r.tenant
    ), cand AS (
        SELECT r.job_id, r.priority, r.tenant, r.submitted_at, c.part, c.chunk, m.room
        FROM ready r
        JOIN room m ON m.priority = r.priority AND m.tenant = r.tenant AND m.room > 0
        CROSS JOIN LATERAL (SELECT t.part, t.chunk FROM shoal.tasks t
                            WHERE t.job_id = r.job_id AND t.status = 'pending'
                              AND t.parent_task_id IS NULL
                            ORDER BY t.chunk LIMIT least(m.room, p_limit)) c
    ), ranked AS (
        SELECT cand.*, row_number() OVER (PARTITION BY priority, tenant
                                          ORDER BY submitted_at, job_id, chunk) AS rn
        FROM cand
    ), picked AS (
        SELECT ranked.job_id, ranked.part, ranked.chunk FROM ranked
        WHERE rn <= room
        ORDER BY CASE priority WHEN 'high' THEN 0 WHEN 'normal' THEN 1 ELSE 2 END, rn, tenant
        LIMIT p_limit
    )
    SELECT * FROM picked ORDER BY job_id, part NULLS FIRST, chunk;
$$;
