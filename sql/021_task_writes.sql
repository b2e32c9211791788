-- Cheaper writes of a task's life: one statement records a batch of
-- finished tasks, a task's changes of state are heap-only updates, and task
-- and result rows are written without a key check per row.

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

-- == Task state changes without index writes ================================
-- A task's row is updated twice (queued by the dispatcher, done or failed by
-- a worker). tasks_pending_chunk_idx (018) and tasks_queued_idx (010) name
-- status in their predicates (and the latter indexes queued_at), so neither
-- update could be heap-only: each wrote an entry into every index of the
-- table, which cost more than the rest of the update. What the two indexes
-- served is now kept on the job:
--   * jobs.tasks_queued: how many of the job's tasks (sub-tasks included)
--     are queued, for the dispatcher's windows;
--   * jobs.dispatch_from: no pending top-level task of the job has a lower
--     chunk, so the dispatcher reads the job's pending tasks in chunk order
--     from there through tasks_chunk_idx.
-- Statement triggers on shoal.tasks keep both, whichever function changes a
-- task; shoal.mark_queued moves dispatch_from past what it queued. The
-- reconciler's look-up (shoal.lost_tasks, every few seconds) reads the tasks
-- of running jobs through tasks_job_idx instead.
DROP INDEX shoal.tasks_pending_chunk_idx;
DROP INDEX shoal.tasks_queued_idx;

ALTER TABLE shoal.jobs
    ADD COLUMN tasks_queued integer NOT NULL DEFAULT 0,
    ADD COLUMN dispatch_from integer NOT NULL DEFAULT 0;

UPDATE shoal.jobs j
SET tasks_queued = q.n
FROM (SELECT job_id, count(*) AS n FROM shoal.tasks WHERE status = 'queued' GROUP BY job_id) q
WHERE j.job_id = q.job_id;
UPDATE shoal.jobs j
SET dispatch_from = p.first
FROM (SELECT job_id, min(chunk) AS first FROM shoal.tasks
      WHERE status = 'pending' AND parent_task_id IS NULL GROUP BY job_id) p
WHERE j.job_id = p.job_id;
UPDATE shoal.jobs j
SET dispatch_from = m.next
FROM (SELECT job_id, max(chunk) + 1 AS next FROM shoal.tasks
      WHERE parent_task_id IS NULL GROUP BY job_id) m
WHERE j.job_id = m.job_id
  AND NOT EXISTS (SELECT 1 FROM shoal.tasks t
                  WHERE t.job_id = j.job_id AND t.status = 'pending'
                    AND t.parent_task_id IS NULL);

-- What a statement changed, per job: queued tasks gained (negative: lost)
-- and the lowest chunk of a top-level task it left pending. Rows come from
-- the statement's transition tables (NULL when the event has none).
CREATE FUNCTION shoal.tasks_track(p_delta bigint, p_job_id text, p_first_pending integer)
RETURNS void
LANGUAGE sql AS $$
    UPDATE shoal.jobs
    SET tasks_queued = tasks_queued + p_delta,
        dispatch_from = least(dispatch_from, coalesce(p_first_pending, dispatch_from))
    WHERE job_id = p_job_id;
$$;

CREATE FUNCTION shoal.tasks_track_insert() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    -- a job's tasks are recorded pending (queued for sub-tasks) above the
    -- chunks it has: usually nothing to write
    PERFORM shoal.tasks_track(n.queued, n.job_id, n.first_pending)
    FROM (SELECT job_id, count(*) FILTER (WHERE status = 'queued') AS queued,
                 min(chunk) FILTER (WHERE status = 'pending' AND parent_task_id IS NULL)
                     AS first_pending
          FROM new_rows GROUP BY job_id ORDER BY job_id) n
    JOIN shoal.jobs j ON j.job_id = n.job_id
    WHERE n.queued <> 0 OR n.first_pending < j.dispatch_from;
    RETURN NULL;
END $$;

CREATE FUNCTION shoal.tasks_track_update() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM shoal.tasks_track(d.queued, d.job_id, d.first_pending)
    FROM (SELECT job_id, sum(q) AS queued, min(p) AS first_pending
          FROM (SELECT job_id, (status = 'queued')::int AS q,
                       CASE WHEN status = 'pending' AND parent_task_id IS NULL THEN chunk END AS p
                FROM new_rows
                UNION ALL
                SELECT job_id, -(status = 'queued')::int, NULL FROM old_rows) x
          GROUP BY job_id ORDER BY job_id) d
    JOIN shoal.jobs j ON j.job_id = d.job_id
    WHERE d.queued <> 0 OR d.first_pending < j.dispatch_from;
    RETURN NULL;
END $$;

CREATE FUNCTION shoal.tasks_track_delete() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM shoal.tasks_track(-d.queued, d.job_id, NULL)
    FROM (SELECT job_id, count(*) FILTER (WHERE status = 'queued') AS queued
          FROM old_rows GROUP BY job_id ORDER BY job_id) d
    WHERE d.queued <> 0;
    RETURN NULL;
END $$;

CREATE TRIGGER tasks_track_insert AFTER INSERT ON shoal.tasks
REFERENCING NEW TABLE AS new_rows
FOR EACH STATEMENT EXECUTE FUNCTION shoal.tasks_track_insert();
CREATE TRIGGER tasks_track_update AFTER UPDATE ON shoal.tasks
REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
FOR EACH STATEMENT EXECUTE FUNCTION shoal.tasks_track_update();
CREATE TRIGGER tasks_track_delete AFTER DELETE ON shoal.tasks
REFERENCING OLD TABLE AS old_rows
FOR EACH STATEMENT EXECUTE FUNCTION shoal.tasks_track_delete();

-- As in 013 (each task found by its primary key; a task queued already
-- restarts its clock), with the job locked first, as record_batch locks it
-- before its tasks, and dispatch_from moved to the job's first pending
-- top-level task from there (past the last chunk when none is left: tasks of
-- parts still to come have higher chunks). p_at is when the messages were
-- produced (the caller's clock, never past now(); now() when NULL, which
-- least() skips): the call runs after Kafka acknowledged them, by which time
-- a worker may have started on them, and a task's queued_at is its
-- publication, from which queue waits are measured.
DROP FUNCTION shoal.mark_queued(text, int[]);
CREATE FUNCTION shoal.mark_queued(p_job_id text, p_chunks int[], p_at timestamptz DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM 1 FROM shoal.jobs WHERE job_id = p_job_id FOR UPDATE;
    WITH ids AS MATERIALIZED (
        SELECT p_job_id || ':' || lpad(c::text, 6, '0') AS task_id FROM unnest(p_chunks) AS c
    )
    UPDATE shoal.tasks t SET status = 'queued', queued_at = least(p_at, now())
    FROM ids
    WHERE t.task_id = ids.task_id AND t.status IN ('pending', 'queued')
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

-- As in 017, with the jobs of the sub-tasks locked first.
CREATE OR REPLACE FUNCTION shoal.mark_subtasks_queued(p_task_ids text[]) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM 1 FROM shoal.jobs
    WHERE job_id IN (SELECT job_id FROM shoal.tasks WHERE task_id = ANY (p_task_ids))
    ORDER BY job_id FOR UPDATE;
    UPDATE shoal.tasks SET status = 'queued', queued_at = now()
    WHERE task_id = ANY (p_task_ids) AND status IN ('pending', 'queued')
      AND parent_task_id IS NOT NULL;
END $$;

-- As in 018: per priority, each tenant may have p_window tasks queued
-- (published, unfinished) across its running jobs; the pass fills each
-- tenant's room from its jobs in submission order, then chunk order, and
-- takes at most p_limit tasks, higher priorities first and tenants in turn.
-- Jobs still receiving parts, or without stored inputs, are not dispatched
-- (their queued tasks still count). Queued tasks are the jobs' counters, and
-- a job's pending tasks are read from its dispatch_from on.
CREATE OR REPLACE FUNCTION shoal.dispatch_pick(p_window integer, p_limit integer)
RETURNS TABLE (job_id text, part integer, chunk integer)
LANGUAGE sql STABLE AS $$
    WITH running AS MATERIALIZED (
        SELECT j.job_id, j.priority, coalesce(j.tenant, '') AS tenant, j.submitted_at,
               j.dispatch_from, j.tasks_queued,
               (j.parts_total IS NULL OR j.parts_received >= j.parts_total)
               AND EXISTS (SELECT 1 FROM shoal.job_inputs i WHERE i.job_id = j.job_id)
                   AS dispatched
        FROM shoal.jobs j
        WHERE j.status = 'running'
    ), ready AS (
        SELECT r.job_id, r.priority, r.tenant, r.submitted_at, r.dispatch_from
        FROM running r
        WHERE r.dispatched
          -- a probe for the job's first pending task, not a semi-join the
          -- planner may turn into a read of every task
          AND (SELECT 1 FROM shoal.tasks t
               WHERE t.job_id = r.job_id AND t.parent_task_id IS NULL
                 AND t.chunk >= r.dispatch_from AND t.status = 'pending'
               ORDER BY t.chunk LIMIT 1) IS NOT NULL
    ), inflight AS (
        SELECT priority, tenant, sum(tasks_queued) AS n FROM running GROUP BY 1, 2
    ), room AS (
        SELECT r.priority, r.tenant, greatest(p_window - coalesce(f.n, 0), 0) AS room
        FROM (SELECT DISTINCT priority, tenant FROM ready) r
        LEFT JOIN inflight f ON f.priority = r.priority AND f.tenant = r.tenant
    ), cand AS (
        SELECT r.job_id, r.priority, r.tenant, r.submitted_at, c.part, c.chunk, m.room
        FROM ready r
        JOIN room m ON m.priority = r.priority AND m.tenant = r.tenant AND m.room > 0
        CROSS JOIN LATERAL (SELECT t.part, t.chunk FROM shoal.tasks t
                            WHERE t.job_id = r.job_id AND t.parent_task_id IS NULL
                              AND t.chunk >= r.dispatch_from AND t.status = 'pending'
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

-- == Task and result rows without per-row key checks =========================
-- tasks.job_id referenced shoal.jobs and results.task_id shoal.tasks. Each
-- row written ran its foreign-key check as a trigger of its own, a query
-- that locked the referenced row: about 15 microseconds per task recorded
-- and again per result, more than the rest of the insert. Every writer of
-- these rows already holds what they reference: tasks are recorded by the
-- functions that record (and lock) their job, results only for tasks the
-- same statement ended or found. shoal.attempts never had such a key. What
-- the keys' ON DELETE CASCADE did stays, as statement triggers: deleting a
-- job deletes its tasks, deleting tasks deletes their results.
ALTER TABLE shoal.tasks DROP CONSTRAINT tasks_job_id_fkey;
ALTER TABLE shoal.results DROP CONSTRAINT results_task_id_fkey;

CREATE FUNCTION shoal.jobs_delete_tasks() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM shoal.tasks t USING old_rows o WHERE t.job_id = o.job_id;
    RETURN NULL;
END $$;
CREATE TRIGGER jobs_delete_tasks AFTER DELETE ON shoal.jobs
REFERENCING OLD TABLE AS old_rows
FOR EACH STATEMENT EXECUTE FUNCTION shoal.jobs_delete_tasks();

CREATE FUNCTION shoal.tasks_delete_results() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM shoal.results r USING old_rows o WHERE r.task_id = o.task_id;
    RETURN NULL;
END $$;
CREATE TRIGGER tasks_delete_results AFTER DELETE ON shoal.tasks
REFERENCING OLD TABLE AS old_rows
FOR EACH STATEMENT EXECUTE FUNCTION shoal.tasks_delete_results();

-- == The last part's check of item ids =======================================
-- As in 018, except that the check for repeated item ids first asks whether
-- any id repeats (one sort: a 1,000,000-item job's last part waited a second
-- for the grouped query that names the id and its parts, now run only when
-- there is one to name), and the part's tasks are read with one
-- jsonb_to_recordset.
CREATE OR REPLACE FUNCTION shoal.record_job_part(p_job_id text, p_part integer, p_doc text, p_tasks jsonb,
                                      p_items integer, p_est_tokens bigint,
                                      p_est_cost double precision, p_source text)
RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    j       shoal.jobs%ROWTYPE;
    v_first integer;
    v_n     integer := jsonb_array_length(coalesce(p_tasks, '[]'));
    v_dup   record;
    v_rep   boolean := false;
    v_err   text;
BEGIN
    SELECT * INTO j FROM shoal.jobs WHERE job_id = p_job_id FOR UPDATE;
    IF NOT FOUND THEN
        RETURN 'no_job';
    END IF;
    IF j.status <> 'running' THEN
        RETURN 'exists:' || j.status;
    END IF;
    IF j.parts_total IS NULL THEN
        RETURN 'not_parted';
    END IF;
    IF EXISTS (SELECT 1 FROM shoal.job_parts WHERE job_id = p_job_id AND part = p_part) THEN
        RETURN 'duplicate';
    END IF;
    IF p_part < 0 OR p_part >= j.parts_total THEN
        v_err := format('part %s: out of range, the header announced %s parts (0 to %s)',
                        p_part, j.parts_total, j.parts_total - 1);
        PERFORM shoal.reject_parted_job(p_job_id, v_err);
        RETURN 'rejected:' || v_err;
    END IF;
    v_first := j.tasks_total - 1;
    IF v_first + v_n > 100000 THEN
        v_err := format('part %s: the job would have %s chunks, more than the 100000 a job may '
                        'have; raise chunking.max_items or split the job',
                        p_part, v_first + v_n);
        PERFORM shoal.reject_parted_job(p_job_id, v_err);
        RETURN 'rejected:' || v_err;
    END IF;

    -- item_ids read as text[] by the record's column type, not by a
    -- subquery per task
    INSERT INTO shoal.tasks (task_id, job_id, chunk, item_ids, est_tokens, part)
    SELECT p_job_id || ':' || lpad((v_first + t.chunk)::text, 6, '0'), p_job_id,
           v_first + t.chunk, coalesce(t.item_ids, '{}'), t.est_tokens, p_part
    FROM jsonb_to_recordset(coalesce(p_tasks, '[]'))
         AS t(chunk integer, item_ids text[], est_tokens integer);
    INSERT INTO shoal.job_parts (job_id, part, doc, items, chunk_first, chunks, source)
    VALUES (p_job_id, p_part, p_doc, p_items, v_first, v_n, p_source);
    UPDATE shoal.jobs
    SET tasks_total = tasks_total + v_n, items_total = items_total + p_items,
        est_tokens = coalesce(est_tokens, 0) + p_est_tokens,
        est_cost_usd = coalesce(est_cost_usd, 0) + p_est_cost,
        parts_received = parts_received + 1
    WHERE job_id = p_job_id
    RETURNING * INTO j;
    IF j.parts_received < j.parts_total THEN
        RETURN format('added:%s/%s', j.parts_received, j.parts_total);
    END IF;

    -- The last part: checks that need the whole job. Whether an item id
    -- repeats is one sort of the ids; which one, and in which parts, is
    -- looked for only when one does (grouping every id with the parts it is
    -- in took twice as long, on every job).
    IF (SELECT count(*) <> count(DISTINCT id)
        FROM shoal.tasks t, unnest(t.item_ids) AS id
        WHERE t.job_id = p_job_id AND t.parent_task_id IS NULL) THEN
        SELECT id, min(t.part) AS first_part, max(t.part) AS last_part INTO v_dup
        FROM shoal.tasks t, unnest(t.item_ids) AS id
        WHERE t.job_id = p_job_id AND t.parent_task_id IS NULL
        GROUP BY id HAVING count(*) > 1
        LIMIT 1;
        v_rep := FOUND;
    END IF;
    IF v_rep THEN
        v_err := format('part %s: item id "%s" is already used in part %s; item ids must be '
                        'unique across the job', v_dup.last_part, v_dup.id, v_dup.first_part);
    ELSIF (j.settings->>'budget_usd') IS NOT NULL
          AND j.est_cost_usd > (j.settings->>'budget_usd')::double precision THEN
        v_err := format('budget_usd: the job is estimated at $%s (%s prompt tokens), over its '
                        'budget of $%s; raise budget_usd or split the job',
                        round(j.est_cost_usd::numeric, 4), j.est_tokens,
                        j.settings->>'budget_usd');
    END IF;
    IF v_err IS NOT NULL THEN
        PERFORM shoal.reject_parted_job(p_job_id, v_err);
        RETURN 'rejected:' || v_err;
    END IF;
    UPDATE shoal.jobs SET tasks_total = tasks_total - 1 WHERE job_id = p_job_id;
    INSERT INTO shoal.event_outbox (job_id, payload)
    VALUES (p_job_id, jsonb_build_object('type', 'parts_complete', 'job_id', p_job_id,
                                         'parts', j.parts_total, 'tasks', j.tasks_total - 1,
                                         'items', j.items_total, 'ts', now()));
    RETURN 'complete';
END $$;

