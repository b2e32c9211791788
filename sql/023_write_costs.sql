-- What a task costs PostgreSQL, lowered where the throughput bench showed
-- it: a worker's result write reads its rows once, a call record writes
-- one b-tree fewer, and a job's merge is not compiled.

-- == A result write reads its rows once =====================================
-- shoal.record_batch (021) took the batch as two jsonb arrays and read each
-- with jsonb_to_recordset three times (the jobs to lock, the reservations to
-- settle, the rows to write). Building jsonb and then looking up each of the
-- 21 members of every attempt row and converting its value through text cost
-- more than writing the rows. The rows now have types, and workers send a
-- batch as two arrays of them (the array literals of common/pgrow.h), which
-- the server reads with the types' input functions, once:
--   shoal.record_rows(result_row[], attempt_row[])  the write itself;
--   shoal.record_batch_split(result_row[], attempt_row[], jsonb, jsonb)
--                                                   the same with per-item
--                                                   rows and sub-tasks (017);
--   shoal.record_batch(jsonb, jsonb)                as before (021), for
--                                                   workers of earlier
--                                                   releases.
-- Backend CPU for the same 18,000 rows in batches of 300, per task: 41-57 us
-- through record_batch(jsonb), 30 through record_rows. What a write does is
-- unchanged: see 021.

CREATE TYPE shoal.attempt_row AS (
    attempt_id text, task_id text, job_id text, attempt int, model text, worker_id text,
    http_status int, outcome text, outcome_kind text, error text,
    latency_ms double precision, queue_ms double precision, tokens_in int, tokens_out int,
    tokens_cached int, tokens_cache_write int, cost_usd double precision, retry_after_ms int,
    fallback_from text, started_at double precision, finished_at double precision);

CREATE TYPE shoal.result_row AS (
    task_id text, job_id text, chunk int, status text, output text, model text,
    model_requested text, tokens_in int, tokens_out int, worker_id text, error text,
    attempts int);

-- As settle_reservations(jsonb) in 016, for typed rows.
CREATE FUNCTION shoal.settle_reservations(p_attempts shoal.attempt_row[]) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    v_held    text[];
    v_expired text[];
BEGIN
    SELECT array_agg(c.reservation_id ORDER BY c.reservation_id)
               FILTER (WHERE c.status = 'held'),
           array_agg(c.reservation_id ORDER BY c.reservation_id)
               FILTER (WHERE c.status = 'expired')
    INTO v_held, v_expired
    FROM shoal.call_reservations c
    WHERE c.reservation_id = ANY (ARRAY(SELECT a.attempt_id FROM unnest(p_attempts) a))
      AND c.status IN ('held', 'expired');
    IF v_held IS NULL AND v_expired IS NULL THEN
        RETURN 0;
    END IF;
    IF v_held IS NOT NULL THEN
        PERFORM shoal.budget_shift(v_held, -1, 0);
    END IF;
    IF v_expired IS NOT NULL THEN
        PERFORM shoal.budget_shift(v_expired, 0, -1);
    END IF;
    UPDATE shoal.call_reservations c
    SET status = 'settled', settled_at = now(), cost_usd = coalesce(a.cost_usd, 0)
    FROM (SELECT DISTINCT ON (x.attempt_id) x.attempt_id, x.cost_usd
          FROM unnest(p_attempts) x
          ORDER BY x.attempt_id) a
    WHERE c.reservation_id = a.attempt_id AND c.status IN ('held', 'expired');
    RETURN coalesce(array_length(v_held, 1), 0) + coalesce(array_length(v_expired, 1), 0);
END $$;

-- The body of record_batch (021), reading the arrays. A batch is a few
-- hundred rows looked up by key in tables of millions, and is planned that
-- way whatever the statistics say: the planner knows an array's real length,
-- and against a tasks table just filled by a job's admission (statistics not
-- yet updated) it found scanning the whole table cheaper than a few hundred
-- key look-ups, which made each write of the throughput bench scan every
-- task of the job. Without sequential scans a plan that still has one looks
-- expensive enough to compile, so it is never compiled (jit) either.
CREATE FUNCTION shoal.record_rows(p_results shoal.result_row[], p_attempts shoal.attempt_row[])
RETURNS SETOF text
LANGUAGE plpgsql
SET enable_seqscan = off
SET jit = off
AS $$
DECLARE
    v_job   text;
    v_ended boolean;
    v_fin   bigint;
    v_total bigint := 0;
BEGIN
    p_results := coalesce(p_results, '{}');
    p_attempts := coalesce(p_attempts, '{}');

    PERFORM 1 FROM shoal.jobs
    WHERE job_id = ANY (ARRAY(SELECT r.job_id FROM unnest(p_results) r
                              UNION
                              SELECT a.job_id FROM unnest(p_attempts) a))
    ORDER BY job_id FOR UPDATE;

    IF cardinality(p_attempts) > 0 THEN
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
            FROM unnest(p_attempts) a
            ON CONFLICT (attempt_id) DO NOTHING
            RETURNING job_id, cost_usd, tokens_in, tokens_out, finished_at
        ), r AS (
            SELECT * FROM unnest(p_results)
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

    IF v_total < cardinality(p_results) THEN
        INSERT INTO shoal.results (task_id, job_id, chunk, output, model, model_requested,
                                   tokens_in, tokens_out, worker_id)
        SELECT r.task_id, r.job_id, r.chunk, r.output, r.model, r.model_requested,
               coalesce(r.tokens_in, 0), coalesce(r.tokens_out, 0), r.worker_id
        FROM unnest(p_results) r
        JOIN shoal.tasks t ON t.task_id = r.task_id
        WHERE t.status = 'cancelled' AND r.status = 'done' AND r.output IS NOT NULL
        ON CONFLICT (task_id) DO NOTHING;
    END IF;
END $$;

CREATE OR REPLACE FUNCTION shoal.record_batch(p_results jsonb, p_attempts jsonb)
RETURNS SETOF text
LANGUAGE sql AS $$
    SELECT * FROM shoal.record_rows(
        ARRAY(SELECT jsonb_populate_recordset(NULL::shoal.result_row, coalesce(p_results, '[]'))),
        ARRAY(SELECT jsonb_populate_recordset(NULL::shoal.attempt_row,
                                              coalesce(p_attempts, '[]'))));
$$;

-- As record_batch_split(jsonb, jsonb, jsonb, jsonb) in 017, with typed
-- results and call records.
CREATE FUNCTION shoal.record_batch_split(p_results shoal.result_row[],
                                         p_attempts shoal.attempt_row[], p_items jsonb,
                                         p_subtasks jsonb)
RETURNS TABLE (kind text, id text)
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM 1 FROM shoal.jobs
    WHERE job_id IN (SELECT r.job_id FROM unnest(p_results) r
                     UNION
                     SELECT a.job_id FROM unnest(p_attempts) a
                     UNION
                     SELECT i->>'job_id' FROM jsonb_array_elements(coalesce(p_items, '[]')) i
                     UNION
                     SELECT s->>'job_id' FROM jsonb_array_elements(coalesce(p_subtasks, '[]')) s)
    ORDER BY job_id FOR UPDATE;

    RETURN QUERY SELECT 'subtask'::text, s FROM shoal.record_subtasks(p_subtasks) s;
    PERFORM shoal.record_item_results(p_items);
    RETURN QUERY SELECT 'ended'::text, e FROM shoal.record_rows(p_results, p_attempts) e;
END $$;

-- == One b-tree fewer per call record =======================================
-- Every call adds a shoal.attempts row and an entry to each of its b-trees.
-- (model, finished_at) served look-ups of recent calls (`shoal top`, usage
-- by period), which read the last minutes of a table written in time order:
-- a BRIN index on finished_at finds those pages for a few bytes per
-- thousand rows and next to nothing per insert (the b-tree cost 2-4 us of
-- backend CPU per call); the model is filtered on the rows it finds.
DROP INDEX shoal.attempts_model_time_idx;
CREATE INDEX attempts_finished_brin ON shoal.attempts USING brin (finished_at);

-- == A job's merge is not compiled ==========================================
-- Assembling a 20,000-task job's output costs the planner more than
-- jit_above_cost, and the server then compiled the statement with LLVM on
-- every merge: 40 ms of a 150 ms merge, after the job's last task, which
-- is the time its owner waits. A function redefining shoal.merge_job must
-- keep this setting (CREATE OR REPLACE resets it).
ALTER FUNCTION shoal.merge_job(text) SET jit = off;
