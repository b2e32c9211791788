-- Cheaper hot statements for large jobs.

-- Marks published tasks queued, as in 002. chunk = ANY(array) compared every
-- pending task of the job with every element (a 20,000-task job made 2e8
-- comparisons); joining the array's elements looks each task up by its
-- (job_id, chunk) key instead.
CREATE OR REPLACE FUNCTION shoal.mark_queued(p_job_id text, p_chunks int[]) RETURNS void
LANGUAGE sql AS $$
    UPDATE shoal.tasks t SET status = 'queued', queued_at = now()
    FROM unnest(p_chunks) AS c(chunk)
    WHERE t.job_id = p_job_id AND t.chunk = c.chunk AND t.status = 'pending';
$$;
