-- The job's estimate as shoal estimate prints it (common/estimate.h): calls,
-- output tokens and expected duration next to est_tokens and est_cost_usd,
-- and a view that sets the token estimate against what providers reported.
-- shoal.record_job itself is left as it is.

ALTER TABLE shoal.jobs
    ADD COLUMN IF NOT EXISTS est_calls      bigint,
    ADD COLUMN IF NOT EXISTS est_tokens_out bigint,
    ADD COLUMN IF NOT EXISTS est_duration_s double precision;

-- shoal.record_job(p_job, p_tasks, p_inputs) (010) and then, for a job it
-- recorded just now, the estimate keys est_calls, est_tokens_out and
-- est_duration_s of p_job. One statement, so one transaction with the job's
-- row; a row without the keys (a rejection, an older scheduler) records
-- exactly as record_job does. Returns what record_job returns.
CREATE FUNCTION shoal.record_job_estimated(p_job jsonb, p_tasks jsonb, p_inputs text)
RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    v_status text := shoal.record_job(p_job, p_tasks, p_inputs);
BEGIN
    IF v_status = 'new' AND (p_job ? 'est_calls' OR p_job ? 'est_tokens_out'
                             OR p_job ? 'est_duration_s') THEN
        UPDATE shoal.jobs
        SET est_calls = (p_job->>'est_calls')::bigint,
            est_tokens_out = (p_job->>'est_tokens_out')::bigint,
            est_duration_s = (p_job->>'est_duration_s')::double precision
        WHERE job_id = p_job->>'job_id';
    END IF;
    RETURN v_status;
END $$;

-- Estimated against reported prompt tokens, per job and model: every call
-- that reported usage (tokens_in > 0) counts its task's estimate once, so
-- retries weigh the same on both sides. Sub-tasks split off after a partial
-- answer carry no estimate and are left out. ratio = reported / estimated: 1.05
-- means providers counted 5% more than estimated. Providers add a few tokens
-- per message for roles and formatting, and tokenizers other than
-- o200k_base (Anthropic's, Llama's) count differently, so a ratio a little
-- above 1 is expected.
CREATE VIEW shoal.estimate_accuracy AS
SELECT a.job_id,
       a.model,
       count(*)                          AS calls,
       sum(t.est_tokens)::bigint         AS est_tokens_in,
       sum(a.tokens_in)::bigint          AS tokens_in,
       sum(a.tokens_in)::double precision / nullif(sum(t.est_tokens), 0) AS ratio
FROM shoal.attempts a
JOIN shoal.tasks t ON t.task_id = a.task_id
WHERE a.tokens_in > 0 AND t.est_tokens IS NOT NULL
GROUP BY a.job_id, a.model;
