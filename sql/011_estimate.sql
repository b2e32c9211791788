-- The job's estimate as shoal estimate prints it (common/estimate.h): calls,
-- output tokens and expected duration next to est_tokens and est_cost_usd,
-- and a view that sets the token estimate against what providers reported.

ALTER TABLE shoal.jobs
    ADD COLUMN IF NOT EXISTS est_calls      bigint,
    ADD COLUMN IF NOT EXISTS est_tokens_out bigint,
    ADD COLUMN IF NOT EXISTS est_duration_s double precision;

-- As in 002_functions.sql, also storing est_calls, est_tokens_out and
-- est_duration_s when the job row carries them.
CREATE OR REPLACE FUNCTION shoal.record_job(p_job jsonb, p_tasks jsonb) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    v_id     text := p_job->>'job_id';
    v_status text := coalesce(p_job->>'status', 'running');
    v_old    text;
BEGIN
    INSERT INTO shoal.jobs (job_id, tenant, priority, model, merge, output_format, status,
                            error, source, settings, items_total, tasks_total, est_tokens,
                            est_cost_usd, est_calls, est_tokens_out, est_duration_s)
    VALUES (v_id, p_job->>'tenant', p_job->>'priority', p_job->>'model', p_job->>'merge',
            p_job->>'output_format', v_status, p_job->>'error', p_job->>'source',
            p_job->'settings', coalesce((p_job->>'items_total')::int, 0),
            jsonb_array_length(coalesce(p_tasks, '[]')),
            (p_job->>'est_tokens')::bigint, (p_job->>'est_cost_usd')::double precision,
            (p_job->>'est_calls')::bigint, (p_job->>'est_tokens_out')::bigint,
            (p_job->>'est_duration_s')::double precision)
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

-- Estimated against reported prompt tokens, per job and model: every call
-- that reported usage (tokens_in > 0) counts its task's estimate once, so
-- retries weigh the same on both sides. ratio = reported / estimated: 1.05
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
WHERE a.tokens_in > 0
GROUP BY a.job_id, a.model;
