-- Publishing a large job at speed: the dispatcher's pick no longer costs in
-- proportion to the job's pending tasks (013 did the same for mark_queued).

-- As shoal.dispatch_pick (018), with the same rows: a job's candidates are
-- at most p_limit of its pending tasks, not its whole room. A pass publishes
-- at most p_limit tasks, and a tenant's task ranked below p_limit in its
-- tenant can never be among them (p_limit tasks of the same priority rank
-- before it), so the cut changes nothing but the work: with a window as large
-- as the job, every pass ranked and sorted all of the job's pending tasks.
CREATE OR REPLACE FUNCTION shoal.dispatch_pick(p_window integer, p_limit integer)
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
