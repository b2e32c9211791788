-- Batch mode (answer_mode "batch"): a worker writes a batch task's per-item
-- answers, the sub-task carrying the items its answer left out, and the task
-- itself in one transaction (shoal.record_batch_split), and the reconciler
-- finds sub-tasks whose message was lost as it finds lost chunk tasks.

-- == Sub-tasks of several parents ============================================
-- A worker gathers the items left unanswered by several batch tasks of one
-- job (the tasks of one result write) into one sub-task, so a 10% loss costs
-- a few more calls, not one more call per chunk. p_subtasks is a JSON array
-- of {task_id, job_id, chunk, est_tokens, parents: [{task_id, item_ids}]}:
-- the sub-task's id derives from its first parent (common/taskmsg.h), which
-- becomes its parent_task_id, and each parent names the items it hands on.
--
-- Only parents still open (pending or queued) hand on their items: a parent
-- another delivery already finished had its leftovers recorded then. Items
-- already answered (shoal.item_results) are left out too. A sub-task left
-- with no item, or of a job that is no longer running (a cancel), is not
-- recorded; nothing raises, so a cancel never makes a worker's write fail.
-- A sub-task is recorded queued (its message is produced right after this
-- commit; when that is lost, shoal.lost_tasks finds it queued and uncalled)
-- and counts in its job's tasks_total. A parent that split has its cache key
-- cleared: a partial answer is not a cache entry (sql/014). Returns the ids
-- recorded now; a redelivered write records nothing again. The caller locks
-- the jobs (shoal.record_batch_split does).
CREATE FUNCTION shoal.record_subtasks(p_subtasks jsonb) RETURNS SETOF text
LANGUAGE plpgsql AS $$
BEGIN
    RETURN QUERY
    WITH s AS (
        SELECT x.v->>'task_id' AS task_id, x.v->>'job_id' AS job_id, (x.v->>'chunk')::int AS chunk,
               (x.v->>'est_tokens')::int AS est_tokens, x.v->'parents' AS parents, x.n
        FROM jsonb_array_elements(coalesce(p_subtasks, '[]')) WITH ORDINALITY AS x(v, n)
    ), p AS (
        SELECT s.task_id, s.job_id, pr.value->>'task_id' AS parent, pr.value->'item_ids' AS ids,
               pr.ordinality AS pn
        FROM s, jsonb_array_elements(s.parents) WITH ORDINALITY AS pr
    ), open_parents AS (
        SELECT p.* FROM p JOIN shoal.tasks t ON t.task_id = p.parent
        WHERE t.status IN ('pending', 'queued')
    ), items AS (
        SELECT op.task_id, array_agg(i.item_id ORDER BY op.pn, i.k) AS item_ids
        FROM open_parents op, jsonb_array_elements_text(op.ids) WITH ORDINALITY AS i(item_id, k)
        WHERE NOT EXISTS (SELECT 1 FROM shoal.item_results ir
                          WHERE ir.job_id = op.job_id AND ir.item_id = i.item_id)
        GROUP BY op.task_id
    ), ins AS (
        INSERT INTO shoal.tasks (task_id, job_id, chunk, item_ids, est_tokens, parent_task_id,
                                 status, queued_at)
        SELECT s.task_id, s.job_id, s.chunk, it.item_ids, s.est_tokens,
               s.parents->0->>'task_id', 'queued', now()
        FROM s
        JOIN items it ON it.task_id = s.task_id
        JOIN shoal.jobs j ON j.job_id = s.job_id AND j.status = 'running'
        ORDER BY s.n
        ON CONFLICT (task_id) DO NOTHING
        RETURNING task_id, job_id
    ), counted AS (
        UPDATE shoal.jobs j SET tasks_total = j.tasks_total + c.n
        FROM (SELECT job_id, count(*) AS n FROM ins GROUP BY job_id) c
        WHERE j.job_id = c.job_id
        RETURNING j.job_id
    ), uncached AS (
        UPDATE shoal.tasks t SET cache_key = NULL
        FROM (SELECT DISTINCT op.parent FROM open_parents op JOIN ins USING (task_id)) d
        WHERE t.task_id = d.parent AND t.cache_key IS NOT NULL
        RETURNING t.task_id
    )
    -- counted and uncached run to completion unread (data-modifying WITH)
    SELECT ins.task_id FROM ins;
END $$;

-- == One write of a batch of finished tasks ===================================
-- What a worker writes when its batch holds batch-mode tasks: in one
-- transaction, every job named locked in job_id order (as shoal.record_batch
-- does, so batches cannot deadlock), then
--   1. the sub-tasks (shoal.record_subtasks), before their parents end, so a
--      job whose last chunk just split stays running (tasks_total grew);
--   2. the per-item answers (shoal.record_item_results; p_items as there);
--   3. the tasks themselves and their calls (shoal.record_batch, whatever its
--      latest definition does: spend, cache, merge announcements).
-- Returns ('subtask', task_id) for each sub-task recorded now (the worker
-- produces exactly those messages, after this commits) and ('ended', job_id)
-- for each job whose last task this write finished.
CREATE FUNCTION shoal.record_batch_split(p_results jsonb, p_attempts jsonb, p_items jsonb,
                                         p_subtasks jsonb)
RETURNS TABLE (kind text, id text)
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM 1 FROM shoal.jobs
    WHERE job_id IN (SELECT r->>'job_id' FROM jsonb_array_elements(coalesce(p_results, '[]')) r
                     UNION
                     SELECT a->>'job_id' FROM jsonb_array_elements(coalesce(p_attempts, '[]')) a
                     UNION
                     SELECT i->>'job_id' FROM jsonb_array_elements(coalesce(p_items, '[]')) i
                     UNION
                     SELECT s->>'job_id' FROM jsonb_array_elements(coalesce(p_subtasks, '[]')) s)
    ORDER BY job_id FOR UPDATE;

    RETURN QUERY SELECT 'subtask'::text, s FROM shoal.record_subtasks(p_subtasks) s;
    PERFORM shoal.record_item_results(p_items);
    RETURN QUERY SELECT 'ended'::text, e FROM shoal.record_batch(p_results, p_attempts) e;
END $$;

-- Marks sub-tasks the reconciler published again as queued now, so their
-- next loss is measured from now (shoal.mark_queued does this for chunk
-- tasks only).
CREATE FUNCTION shoal.mark_subtasks_queued(p_task_ids text[]) RETURNS void
LANGUAGE sql AS $$
    UPDATE shoal.tasks SET status = 'queued', queued_at = now()
    WHERE task_id = ANY (p_task_ids) AND status IN ('pending', 'queued')
      AND parent_task_id IS NOT NULL;
$$;
