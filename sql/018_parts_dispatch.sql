-- Jobs sent in parts, and the paced dispatcher.
--
-- A job too large for one Kafka message comes as a header (the job without
-- items, with "parts": N) and N part messages ({"job_id", "part": k,
-- "items": [...]}); see README "Large jobs in parts". The header is recorded
-- as a running job with no tasks and its document kept in shoal.job_inputs;
-- each part's message is kept in shoal.job_parts (compressed, one row per
-- part, so one part is read back without the others) and its chunk tasks
-- recorded pending. While parts are missing the job's tasks_total counts one
-- task more than it has, so no merger or reconciler takes it for finished.
--
-- Tasks of jobs that keep their inputs stay 'pending' until the dispatcher
-- (scheduler/dispatch.c) publishes them: per priority, at most a window of
-- tasks per tenant published and unfinished, tenants served in turn.

ALTER TABLE shoal.jobs
    ADD COLUMN IF NOT EXISTS parts_total    integer, -- NULL: a job sent as one message
    ADD COLUMN IF NOT EXISTS parts_received integer NOT NULL DEFAULT 0;

-- The part a task's items came from (NULL: a job sent as one message).
ALTER TABLE shoal.tasks ADD COLUMN IF NOT EXISTS part integer;

CREATE TABLE shoal.job_parts (
    job_id      text NOT NULL REFERENCES shoal.jobs ON DELETE CASCADE,
    part        integer NOT NULL,
    doc         text NOT NULL,    -- the part message as it came
    items       integer NOT NULL,
    chunk_first integer NOT NULL, -- its tasks are chunks [chunk_first, chunk_first + chunks)
    chunks      integer NOT NULL,
    source      text,             -- topic/partition@offset
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (job_id, part)
);
DO $$
BEGIN
    ALTER TABLE shoal.job_parts ALTER COLUMN doc SET COMPRESSION lz4;
EXCEPTION WHEN feature_not_supported OR invalid_parameter_value THEN
    NULL; -- a server built without lz4 keeps pglz, TOAST's default
END $$;

-- The dispatcher takes a job's pending tasks in chunk order.
CREATE INDEX tasks_pending_chunk_idx ON shoal.tasks (job_id, chunk)
    WHERE status = 'pending' AND parent_task_id IS NULL;

-- Records a job header: shoal.record_job_estimated with no tasks, the
-- header's document as the job's inputs, and parts_total. tasks_total starts
-- at 1 (no task yet, see above). Returns what record_job returns.
CREATE FUNCTION shoal.record_job_header(p_job jsonb, p_inputs text, p_parts integer)
RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    v_status text := shoal.record_job_estimated(p_job, '[]'::jsonb, p_inputs);
BEGIN
    IF v_status = 'new' THEN
        UPDATE shoal.jobs SET parts_total = p_parts, tasks_total = 1
        WHERE job_id = p_job->>'job_id';
    END IF;
    RETURN v_status;
END $$;

-- Ends a job that is still taking parts as rejected with p_error: its tasks,
-- parts and inputs are dropped, a 'rejected' event is queued. Nothing of it
-- was published (the dispatcher waits for the last part).
CREATE FUNCTION shoal.reject_parted_job(p_job_id text, p_error text) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM shoal.tasks WHERE job_id = p_job_id;
    DELETE FROM shoal.job_parts WHERE job_id = p_job_id;
    DELETE FROM shoal.job_inputs WHERE job_id = p_job_id;
    UPDATE shoal.jobs
    SET status = 'rejected', error = p_error, finished_at = now(), tasks_total = 0,
        tasks_done = 0, tasks_failed = 0
    WHERE job_id = p_job_id;
    INSERT INTO shoal.event_outbox (job_id, payload)
    VALUES (p_job_id, jsonb_build_object('type', 'rejected', 'job_id', p_job_id,
                                         'error', p_error, 'ts', now()));
END $$;

-- Records part p_part of a parted job: its message (p_doc), its tasks
-- (p_tasks: [{"chunk": local chunk, "item_ids": [...], "est_tokens": n}], chunk
-- numbers local to the part) numbered after the chunks recorded so far, and
-- its counts, in one transaction. When it is the last part, the job's item
-- ids are checked for repeats across parts and its estimated cost against
-- its budget_usd; the job is rejected when either fails. Returns
--   'added:<received>/<total>', 'complete', 'duplicate' (part seen before),
--   'no_job' (no header yet), 'not_parted', 'exists:<status>' (job ended),
--   'rejected:<reason>' (this part made the job rejected).
CREATE FUNCTION shoal.record_job_part(p_job_id text, p_part integer, p_doc text, p_tasks jsonb,
                                      p_items integer, p_est_tokens bigint,
                                      p_est_cost double precision, p_source text)
RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    j       shoal.jobs%ROWTYPE;
    v_first integer;
    v_n     integer := jsonb_array_length(coalesce(p_tasks, '[]'));
    v_dup   record;
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

    INSERT INTO shoal.tasks (task_id, job_id, chunk, item_ids, est_tokens, part)
    SELECT p_job_id || ':' || lpad((v_first + (t->>'chunk')::int)::text, 6, '0'), p_job_id,
           v_first + (t->>'chunk')::int,
           ARRAY(SELECT jsonb_array_elements_text(t->'item_ids')), (t->>'est_tokens')::int, p_part
    FROM jsonb_array_elements(coalesce(p_tasks, '[]')) AS t;
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

    -- The last part: checks that need the whole job.
    SELECT id, min(t.part) AS first_part, max(t.part) AS last_part INTO v_dup
    FROM shoal.tasks t, unnest(t.item_ids) AS id
    WHERE t.job_id = p_job_id AND t.parent_task_id IS NULL
    GROUP BY id HAVING count(*) > 1
    LIMIT 1;
    IF FOUND THEN
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

-- The dispatcher's pick: pending top-level tasks of running jobs that keep
-- their inputs and have all their parts, at most p_limit. Per priority and
-- tenant (NULL tenant as ''), a tenant gets at most p_window tasks queued and
-- unfinished; its jobs are served oldest first, and the tenants of a
-- priority in turn (the rank of a task within its tenant orders the pick), so
-- a pass cut short by p_limit still serves every tenant. Rows come by job,
-- part and chunk, the order in which they are published.
-- A job's candidates are at most p_limit of its pending tasks, not its whole
-- room: a pass publishes at most p_limit tasks, and a task ranked below
-- p_limit in its tenant can never be among them, so the cut changes nothing
-- but the work (with a window as large as the job, every pass would rank and
-- sort all of the job's pending tasks).
CREATE FUNCTION shoal.dispatch_pick(p_window integer, p_limit integer)
RETURNS TABLE (job_id text, part integer, chunk integer)
LANGUAGE sql STABLE AS $$
    WITH ready AS (
        SELECT j.job_id, j.priority, coalesce(j.tenant, '') AS tenant, j.submitted_at
        FROM shoal.jobs j
        WHERE j.status = 'running'
          AND (j.parts_total IS NULL OR j.parts_received >= j.parts_total)
          AND EXISTS (SELECT 1 FROM shoal.job_inputs i WHERE i.job_id = j.job_id)
          AND EXISTS (SELECT 1 FROM shoal.tasks t
                      WHERE t.job_id = j.job_id AND t.status = 'pending'
                        AND t.parent_task_id IS NULL)
    ), inflight AS (
        SELECT j.priority, coalesce(j.tenant, '') AS tenant, count(*) AS n
        FROM shoal.tasks t JOIN shoal.jobs j ON j.job_id = t.job_id
        WHERE t.status = 'queued' AND j.status = 'running'
        GROUP BY 1, 2
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

-- The reconciler's look-up: tasks of running jobs whose message must be
-- published again, at most p_limit, by job, part and chunk. A task qualifies
-- when
--   * it is pending and was reset by resume_job (at once), or was never
--     published p_pending_ms after it was recorded (the intake that recorded
--     it died before publishing, or Kafka refused it); or
--   * it has been queued for p_queued_ms with no call recorded since it was
--     queued (its message was lost: retention, a broker, a crash).
-- has_inputs says whether the job kept its inputs; when it did not, the
-- caller fails the task instead, and a pending task of such a job waits
-- p_queued_ms too (a redelivery of its job message may still publish it).
-- With p_paced, pending chunk tasks of jobs that keep their inputs belong to
-- the dispatcher (resumed ones included) and are never lost.
-- Sub-tasks (parent_task_id, 009) count too: one recorded queued whose
-- message never went out (a worker died between its commit and its produce)
-- or was lost later is found by the queued rule, a failed one put back by
-- resume_job at once. The caller tells a sub-task from a chunk task by its
-- task_id (a chunk task's is "<job_id>:<chunk as 6 digits>"); within a
-- chunk, the chunk task comes first.
CREATE FUNCTION shoal.lost_tasks(p_pending_ms bigint, p_queued_ms bigint, p_limit integer,
                                 p_paced boolean)
RETURNS TABLE (job_id text, chunk integer, task_id text, has_inputs boolean, part integer)
LANGUAGE sql STABLE AS $$
    SELECT t.job_id, t.chunk, t.task_id, i.job_id IS NOT NULL, t.part
    FROM shoal.tasks t
    JOIN shoal.jobs j ON j.job_id = t.job_id
    LEFT JOIN shoal.job_inputs i ON i.job_id = t.job_id
    WHERE j.status = 'running'
      AND ((t.status = 'pending'
            AND (NOT p_paced OR t.parent_task_id IS NOT NULL OR i.job_id IS NULL)
            AND (t.resumed_at IS NOT NULL
                 OR t.created_at < now() - make_interval(secs => CASE WHEN i.job_id IS NULL
                                                                      THEN p_queued_ms
                                                                      ELSE p_pending_ms
                                                                 END / 1000.0)))
           OR (t.status = 'queued'
               AND t.queued_at < now() - make_interval(secs => p_queued_ms / 1000.0)
               AND NOT EXISTS (SELECT 1 FROM shoal.attempts a
                               WHERE a.task_id = t.task_id AND a.finished_at >= t.queued_at)))
    ORDER BY t.job_id, t.part NULLS FIRST, t.chunk, t.parent_task_id IS NOT NULL, t.task_id
    LIMIT p_limit;
$$;
