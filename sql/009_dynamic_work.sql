-- Room for dynamic work: merged output in pages, per-item results, sub-tasks,
-- spend counters, a check of a job's recorded tasks against its chunk plan,
-- and the merge itself (section "Merge", called by scheduler/merge.c).

-- == Merged output in pages ==================================================
-- A merged output can be far larger than one value may be (jsonb stops at
-- 256 MB, text at 1 GB): it is stored as ordered pages of under
-- 2 * shoal.merge_piece_chars() characters each, and read back page by page
-- (shoal results). jobs.output keeps the whole text only when it is one page
-- (output_pages <= 1), else it is NULL; output_pages and output_chars say
-- what is in shoal.job_output. Both stay NULL while a job runs.
CREATE TABLE shoal.job_output (
    job_id  text NOT NULL REFERENCES shoal.jobs ON DELETE CASCADE,
    page    integer NOT NULL,
    body    text NOT NULL,
    PRIMARY KEY (job_id, page)
);

ALTER TABLE shoal.jobs
    ADD COLUMN output_pages integer,
    ADD COLUMN output_chars bigint,
    -- what the job's calls cost so far, kept by record_batch
    ADD COLUMN spent_usd double precision NOT NULL DEFAULT 0;

-- Outputs merged before this migration become one page each (their size was
-- bounded by text's own limit then).
INSERT INTO shoal.job_output (job_id, page, body)
SELECT job_id, 0, output FROM shoal.jobs WHERE output IS NOT NULL AND output <> '';
UPDATE shoal.jobs
SET output_pages = CASE WHEN output = '' THEN 0 ELSE 1 END, output_chars = length(output)
WHERE output IS NOT NULL;

-- Pieces of at most this many characters make up the pages (a page starts at
-- a piece boundary, so it holds under twice this). Characters, not bytes: a
-- page never splits a character.
CREATE FUNCTION shoal.merge_piece_chars() RETURNS integer
LANGUAGE sql IMMUTABLE AS 'SELECT 131072';

-- == Per-item results ========================================================
-- One row per item when one call answers several items (batch mode). Keyed by
-- (job_id, item_id): the first answer recorded for an item stands, so a
-- redelivered write is a no-op. task_id is the task (chunk or sub-task) whose
-- call answered it. A job with any rows here is merged per item (see Merge).
CREATE TABLE shoal.item_results (
    job_id      text NOT NULL REFERENCES shoal.jobs ON DELETE CASCADE,
    item_id     text NOT NULL,
    task_id     text NOT NULL,
    output      text NOT NULL,
    model       text NOT NULL,
    tokens_in   integer NOT NULL DEFAULT 0,
    tokens_out  integer NOT NULL DEFAULT 0,
    worker_id   text,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (job_id, item_id)
);
CREATE INDEX item_results_task_idx ON shoal.item_results (task_id);

-- Records per-item results: p_rows is a JSON array of {job_id, item_id,
-- task_id, output, model, tokens_in, tokens_out, worker_id}. Returns how many
-- rows were new.
CREATE FUNCTION shoal.record_item_results(p_rows jsonb) RETURNS integer
LANGUAGE sql AS $$
    WITH ins AS (
        INSERT INTO shoal.item_results (job_id, item_id, task_id, output, model, tokens_in,
                                        tokens_out, worker_id)
        SELECT r.job_id, r.item_id, r.task_id, r.output, r.model, coalesce(r.tokens_in, 0),
               coalesce(r.tokens_out, 0), r.worker_id
        FROM jsonb_to_recordset(coalesce(p_rows, '[]')) AS r(
            job_id text, item_id text, task_id text, output text, model text, tokens_in int,
            tokens_out int, worker_id text)
        ORDER BY r.job_id, r.item_id
        ON CONFLICT (job_id, item_id) DO NOTHING
        RETURNING 1
    )
    SELECT count(*)::int FROM ins;
$$;

-- == Sub-tasks ===============================================================
-- A sub-task is split off a chunk task after a partial answer and carries
-- some of its items. It is a shoal.tasks row (so workers record it like any
-- task and the job stays open until it ends) with parent_task_id set and its
-- parent's chunk number; only top-level tasks are unique per (job, chunk) and
-- only they are published by intake from the job's chunk plan.
ALTER TABLE shoal.tasks ADD COLUMN parent_task_id text REFERENCES shoal.tasks ON DELETE CASCADE;
ALTER TABLE shoal.tasks DROP CONSTRAINT tasks_job_id_chunk_key;
CREATE UNIQUE INDEX tasks_chunk_idx ON shoal.tasks (job_id, chunk) WHERE parent_task_id IS NULL;
CREATE INDEX tasks_parent_idx ON shoal.tasks (parent_task_id) WHERE parent_task_id IS NOT NULL;

-- Records a sub-task of p_parent (a task of a running job) carrying
-- p_item_ids, and counts it in the job's tasks_total. Returns true when new,
-- false when p_task_id was recorded before (a redelivery); raises when the
-- parent is unknown or its job is not running.
CREATE FUNCTION shoal.record_subtask(p_parent text, p_task_id text, p_item_ids text[])
RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    p shoal.tasks%ROWTYPE;
BEGIN
    SELECT * INTO p FROM shoal.tasks WHERE task_id = p_parent;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'cannot record sub-task %: no task %', p_task_id, p_parent;
    END IF;
    PERFORM 1 FROM shoal.jobs WHERE job_id = p.job_id AND status = 'running' FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'cannot record sub-task %: job % is not running', p_task_id, p.job_id;
    END IF;
    INSERT INTO shoal.tasks (task_id, job_id, chunk, item_ids, parent_task_id)
    VALUES (p_task_id, p.job_id, p.chunk, p_item_ids, p_parent)
    ON CONFLICT (task_id) DO NOTHING;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    UPDATE shoal.jobs SET tasks_total = tasks_total + 1 WHERE job_id = p.job_id;
    RETURN true;
END $$;

-- Marks published tasks queued, as in 008, for top-level tasks only (a
-- sub-task shares its parent's chunk number but is not published by intake).
CREATE OR REPLACE FUNCTION shoal.mark_queued(p_job_id text, p_chunks int[]) RETURNS void
LANGUAGE sql AS $$
    UPDATE shoal.tasks t SET status = 'queued', queued_at = now()
    FROM unnest(p_chunks) AS c(chunk)
    WHERE t.job_id = p_job_id AND t.chunk = c.chunk AND t.status = 'pending'
      AND t.parent_task_id IS NULL;
$$;

-- == Chunk plan check ========================================================
-- Compares a job's recorded top-level tasks with the chunk plan a scheduler
-- makes of the same message now (p_tasks as given to record_job). Returns no
-- row when they match, else one row: why not, and whether p_source is where
-- the job was recorded from (a redelivery of the same message, so the plan
-- changed under an upgrade) or not (another message under the same job_id).
CREATE FUNCTION shoal.plan_mismatch(p_job_id text, p_source text, p_tasks jsonb)
RETURNS TABLE (reason text, same_source boolean)
LANGUAGE sql AS $$
    WITH planned AS (
        SELECT t->>'task_id' AS task_id, (t->>'chunk')::int AS chunk,
               ARRAY(SELECT jsonb_array_elements_text(t->'item_ids')) AS item_ids
        FROM jsonb_array_elements(coalesce(p_tasks, '[]')) AS t
    ), recorded AS (
        SELECT task_id, chunk, item_ids FROM shoal.tasks
        WHERE job_id = p_job_id AND parent_task_id IS NULL
    ), diff AS (
        SELECT coalesce(p.chunk, r.chunk) AS chunk
        FROM planned p FULL JOIN recorded r ON r.chunk = p.chunk
        WHERE p.chunk IS NULL OR r.chunk IS NULL OR p.task_id IS DISTINCT FROM r.task_id
              OR p.item_ids IS DISTINCT FROM r.item_ids
        ORDER BY 1 LIMIT 1
    )
    SELECT format('its recorded tasks no longer match its chunk plan (%s chunks recorded, %s '
                  'planned, first difference at chunk %s): it was chunked by another version '
                  'of the scheduler or under other settings',
                  (SELECT count(*) FROM recorded), (SELECT count(*) FROM planned), d.chunk),
           j.source IS NOT DISTINCT FROM p_source
    FROM diff d, shoal.jobs j WHERE j.job_id = p_job_id;
$$;

-- == Spend ===================================================================
-- What each tenant's calls cost per UTC day (by the call's finish time), kept
-- by record_batch from the attempts it records; a job without a tenant
-- counts under ''.
CREATE TABLE shoal.tenant_spend (
    tenant      text NOT NULL,
    day         date NOT NULL,
    spent_usd   double precision NOT NULL DEFAULT 0,
    calls       bigint NOT NULL DEFAULT 0,
    tokens_in   bigint NOT NULL DEFAULT 0,
    tokens_out  bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant, day)
);

UPDATE shoal.jobs j SET spent_usd = a.cost
FROM (SELECT job_id, sum(cost_usd) AS cost FROM shoal.attempts GROUP BY job_id) a
WHERE a.job_id = j.job_id;
INSERT INTO shoal.tenant_spend (tenant, day, spent_usd, calls, tokens_in, tokens_out)
SELECT coalesce(j.tenant, ''), (a.finished_at AT TIME ZONE 'UTC')::date, sum(a.cost_usd),
       count(*), sum(a.tokens_in), sum(a.tokens_out)
FROM shoal.attempts a JOIN shoal.jobs j USING (job_id)
GROUP BY 1, 2;

-- 005's record_batch keeps recording the rows (attempts, task states,
-- results, job counters, the shoal_merge announcements) under this name;
-- shoal.record_batch wraps it with the spend counters.
ALTER FUNCTION shoal.record_batch(jsonb, jsonb) RENAME TO record_batch_rows;

-- Records a batch of finished tasks and the calls behind them: everything
-- 005's record_batch does (now shoal.record_batch_rows: a task counts once,
-- jobs whose last task just ended are returned and announced on channel
-- shoal_merge at commit), and the calls this batch records first add their
-- cost to jobs.spent_usd and shoal.tenant_spend, one aggregate statement for
-- both. Every job the batch names is locked first, in job_id order: a
-- concurrent batch with the same calls waits and then sees them recorded
-- (a rewritten batch adds nothing), and batches cannot deadlock.
CREATE FUNCTION shoal.record_batch(p_results jsonb, p_attempts jsonb) RETURNS SETOF text
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
        -- a scalar look-up (one primary-key probe per call), not NOT EXISTS:
        -- the planner turned that into a hash anti-join over all of
        -- shoal.attempts, kept in the function's cached plan, so every batch
        -- read every attempt ever recorded
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

-- == Merge ===================================================================
-- What a job's merged output is, entry by entry in order (ord), each entry's
-- text including its separators, so the output is the entries' texts joined
-- with nothing between. Kept as one query per strategy so no entry, page or
-- whole output is ever held as one value beyond its own size.
--
-- Per chunk (a job without per-item results), as in 002:
--   concat      outputs of the chunks that succeeded, in chunk order,
--               newline-separated;
--   json_array  one element per chunk (parsed when the format is JSON, a JSON
--               string when it does not parse; null for a failed chunk),
--               written as jsonb prints an array: "[a, b]";
--   jsonl       one line per chunk: {"task_id", "chunk", "items", "output"}
--               or "error" in place of "output" for a failed chunk.
-- Per item (a job with rows in shoal.item_results), in the job's item order
-- (top-level tasks by chunk, each task's item_ids in order):
--   concat      outputs of the items answered, newline-separated;
--   json_array  one element per item, null for an item never answered;
--   jsonl       one line per item: {"item_id", "task_id", "chunk", "output"}
--               or "error" in place of "output".
-- Any other merge value raises: such a job cannot be merged.
CREATE FUNCTION shoal.merge_entries(p_job_id text, p_merge text, p_json boolean,
                                    p_per_item boolean)
RETURNS TABLE (ord bigint, txt text)
LANGUAGE plpgsql STABLE AS $$
BEGIN
    IF p_merge NOT IN ('concat', 'json_array', 'jsonl') THEN
        RAISE EXCEPTION 'cannot merge job %: unknown merge strategy "%"', p_job_id, p_merge;
    END IF;

    IF p_per_item THEN
        RETURN QUERY
        WITH items AS (
            SELECT t.task_id, t.chunk, i.item_id,
                   row_number() OVER (ORDER BY t.chunk, i.n) AS pos
            FROM shoal.tasks t, unnest(t.item_ids) WITH ORDINALITY AS i(item_id, n)
            WHERE t.job_id = p_job_id AND t.parent_task_id IS NULL
        ), e AS (
            SELECT x.pos, x.task_id, x.chunk, x.item_id, ir.task_id AS answered_by, ir.output
            FROM items x
            LEFT JOIN shoal.item_results ir ON ir.job_id = p_job_id AND ir.item_id = x.item_id
        )
        SELECT -1::bigint, '[' WHERE p_merge = 'json_array'
        UNION ALL
        SELECT e.pos,
               CASE WHEN p_merge = 'json_array'
                    THEN CASE WHEN e.pos = 1 THEN '' ELSE ', ' END
                         || CASE WHEN e.output IS NULL THEN 'null'
                                 WHEN p_json THEN shoal.try_jsonb(e.output)::text
                                 ELSE to_jsonb(e.output)::text END
                    WHEN p_merge = 'jsonl'
                    THEN (jsonb_build_object('item_id', e.item_id,
                                             'task_id', coalesce(e.answered_by, e.task_id),
                                             'chunk', e.chunk)
                          || CASE WHEN e.output IS NULL
                                  THEN jsonb_build_object('error', 'no result for the item')
                                  ELSE jsonb_build_object('output',
                                           CASE WHEN p_json THEN shoal.try_jsonb(e.output)
                                                ELSE to_jsonb(e.output) END) END)::text
                         || E'\n'
               END
        FROM e WHERE p_merge <> 'concat'
        UNION ALL
        SELECT c.n, CASE WHEN c.n = 1 THEN '' ELSE E'\n' END || c.output
        FROM (SELECT e.output, row_number() OVER (ORDER BY e.pos) AS n
              FROM e WHERE p_merge = 'concat' AND e.output IS NOT NULL) c
        UNION ALL
        SELECT 9223372036854775807, ']' WHERE p_merge = 'json_array';
        RETURN;
    END IF;

    IF p_merge = 'json_array' THEN
        RETURN QUERY
        SELECT -1::bigint, '['
        UNION ALL
        SELECT t.chunk::bigint,
               CASE WHEN row_number() OVER (ORDER BY t.chunk) = 1 THEN '' ELSE ', ' END
               || CASE WHEN r.task_id IS NULL THEN 'null'
                       WHEN p_json THEN shoal.try_jsonb(r.output)::text
                       ELSE to_jsonb(r.output)::text END
        FROM shoal.tasks t LEFT JOIN shoal.results r USING (task_id)
        WHERE t.job_id = p_job_id AND t.parent_task_id IS NULL
        UNION ALL
        SELECT 9223372036854775807, ']';
    ELSIF p_merge = 'jsonl' THEN
        RETURN QUERY
        SELECT t.chunk::bigint,
               (jsonb_build_object('task_id', t.task_id, 'chunk', t.chunk,
                                   'items', to_jsonb(t.item_ids))
                || CASE WHEN r.task_id IS NULL
                        THEN jsonb_build_object('error', coalesce(t.error, 'failed'))
                        ELSE jsonb_build_object('output',
                                 CASE WHEN p_json THEN shoal.try_jsonb(r.output)
                                      ELSE to_jsonb(r.output) END) END)::text
               || E'\n'
        FROM shoal.tasks t LEFT JOIN shoal.results r USING (task_id)
        WHERE t.job_id = p_job_id AND t.parent_task_id IS NULL;
    ELSE
        RETURN QUERY
        SELECT r.chunk::bigint,
               CASE WHEN row_number() OVER (ORDER BY r.chunk) = 1 THEN '' ELSE E'\n' END
               || r.output
        FROM shoal.results r JOIN shoal.tasks t USING (task_id)
        WHERE r.job_id = p_job_id AND t.parent_task_id IS NULL;
    END IF;
END $$;

-- Assembles a finished job's output into shoal.job_output and closes it:
-- completed (every task done), partial (some failed) or failed (none done),
-- as in 002. The entries are cut into pieces of at most merge_piece_chars()
-- characters and the pieces grouped into pages by where they start, all in
-- one statement, so PostgreSQL streams (and spills to disk) rather than
-- building the whole output as one value. Returns the new status, or NULL
-- when the job is not ready or already merged, so several mergers may race on
-- one job safely. Raises when the job cannot be merged (the caller then ends
-- it failed with shoal.fail_job).
CREATE OR REPLACE FUNCTION shoal.merge_job(p_job_id text) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    j        shoal.jobs%ROWTYPE;
    v_status text;
    v_piece  integer := shoal.merge_piece_chars();
    v_pages  integer;
    v_chars  bigint;
BEGIN
    SELECT * INTO j FROM shoal.jobs WHERE job_id = p_job_id FOR UPDATE;
    IF NOT FOUND OR j.status <> 'running' OR j.tasks_done + j.tasks_failed < j.tasks_total THEN
        RETURN NULL;
    END IF;

    DELETE FROM shoal.job_output WHERE job_id = p_job_id;
    INSERT INTO shoal.job_output (job_id, page, body)
    SELECT p_job_id, s.page, string_agg(s.piece, '' ORDER BY s.ord, s.k)
    FROM (
        SELECT p.ord, p.k, p.piece,
               ((sum(length(p.piece)) OVER (ORDER BY p.ord, p.k)) - length(p.piece))
                   / v_piece AS page
        FROM (
            SELECT e.ord, k, substr(e.txt, k * v_piece + 1, v_piece) AS piece
            FROM shoal.merge_entries(p_job_id, j.merge, j.output_format = 'json',
                                     EXISTS (SELECT 1 FROM shoal.item_results ir
                                             WHERE ir.job_id = p_job_id)) e,
                 generate_series(0, greatest(length(e.txt) - 1, 0) / v_piece) AS k
            WHERE e.txt IS NOT NULL
        ) p
    ) s
    GROUP BY s.page;

    SELECT count(*), coalesce(sum(length(body)), 0) INTO v_pages, v_chars
    FROM shoal.job_output WHERE job_id = p_job_id;

    v_status := CASE WHEN j.tasks_failed = 0 THEN 'completed'
                     WHEN j.tasks_done = 0 THEN 'failed'
                     ELSE 'partial' END;
    UPDATE shoal.jobs
    SET status = v_status, finished_at = now(), output_pages = v_pages, output_chars = v_chars,
        output = CASE WHEN v_pages = 0 THEN ''
                      WHEN v_pages = 1 THEN (SELECT body FROM shoal.job_output
                                             WHERE job_id = p_job_id AND page = 0) END,
        error = CASE WHEN j.tasks_failed > 0
                     THEN j.tasks_failed || ' of ' || j.tasks_total || ' tasks failed' END
    WHERE job_id = p_job_id;

    -- cost_usd: the job's spend counter (record_batch keeps it under the job's
    -- lock), instead of summing the job's attempts again
    INSERT INTO shoal.event_outbox (job_id, payload)
    VALUES (p_job_id, jsonb_build_object('type', v_status, 'job_id', p_job_id,
                                         'tasks', j.tasks_total, 'tasks_done', j.tasks_done,
                                         'tasks_failed', j.tasks_failed,
                                         'cost_usd', j.spent_usd, 'ts', now()));
    RETURN v_status;
END $$;

-- Ends a running job as failed with the reason and a failed event, as in 002
-- (before any task ran: its tasks cannot be published), and now also when its
-- merge fails for good: the event carries the job's real task counts, and
-- the output is empty (no pages).
CREATE OR REPLACE FUNCTION shoal.fail_job(p_job_id text, p_error text) RETURNS void
LANGUAGE sql AS $$
    DELETE FROM shoal.job_output o USING shoal.jobs j
    WHERE o.job_id = p_job_id AND j.job_id = p_job_id AND j.status = 'running';
    WITH j AS (
        UPDATE shoal.jobs SET status = 'failed', error = p_error, finished_at = now(),
                              output = '', output_pages = 0, output_chars = 0
        WHERE job_id = p_job_id AND status = 'running'
        RETURNING job_id, tasks_total, tasks_done, tasks_failed
    )
    INSERT INTO shoal.event_outbox (job_id, payload)
    SELECT job_id, jsonb_build_object('type', 'failed', 'job_id', job_id, 'error', p_error,
                                      'tasks', tasks_total, 'tasks_done', tasks_done,
                                      'tasks_failed', tasks_failed, 'ts', now())
    FROM j;
$$;
