-- Operator views over the worker engine: what each model did minute by
-- minute against its limits, and how long tasks of each priority waited
-- before their calls went out. Plain SQL over shoal.attempts (one row per
-- model call), shoal.lanes (the fleet's limits per model) and shoal.jobs;
-- filter them like tables (WHERE model = ..., WHERE minute > now() - ...).
--
-- A minute is the one the call was sent in (started_at), because provider
-- limits count calls when they arrive. The current minute is still filling.

-- Per model and minute: traffic, how calls ended, latency of the successful
-- ones, queue wait, and the share of the limits it used.
--   requests        every call sent, whatever its answer (providers count
--                   refused and failed calls against the limit too)
--   ok              calls that produced the task's result
--   rate_limited    HTTP 429 answers (overload 429s included)
--   retries         calls whose task tried again (outcome retry)
--   failures        calls that ended their task as failed
--   truncated       answers cut at the output token limit
--   fallbacks       calls this model served for another one (fallback_from set)
--   p50_ms, p95_ms  latency of the ok calls; NULL when none
--   mean_queue_ms   mean time from the worker taking the task to the call
--                   going out (slot wait, database check, backoff)
--   rpm_utilization, tpm_utilization
--                   requests and tokens (in + out, as the fleet counts them)
--                   over the configured rpm / tpm of shoal.lanes; NULL when
--                   none is configured or the lane is unknown
--   learned_rpm_utilization, learned_tpm_utilization
--                   the same over the learned limit (learned_rps * 60,
--                   learned_tps * 60); NULL until the fleet learned one
-- Limits are today's values in shoal.lanes, not those in force back then.
CREATE VIEW shoal.model_minute AS
SELECT a.model,
       a.minute,
       a.requests,
       a.ok,
       a.tokens_in,
       a.tokens_out,
       a.rate_limited,
       a.retries,
       a.failures,
       a.truncated,
       a.fallbacks,
       a.p50_ms,
       a.p95_ms,
       a.mean_queue_ms,
       a.requests / nullif(l.config_rpm, 0) AS rpm_utilization,
       (a.tokens_in + a.tokens_out) / nullif(l.config_tpm, 0) AS tpm_utilization,
       a.requests / nullif(l.learned_rps * 60, 0) AS learned_rpm_utilization,
       (a.tokens_in + a.tokens_out) / nullif(l.learned_tps * 60, 0) AS learned_tpm_utilization
  FROM (SELECT model,
               date_trunc('minute', started_at) AS minute,
               count(*) AS requests,
               count(*) FILTER (WHERE outcome = 'ok') AS ok,
               sum(tokens_in) AS tokens_in,
               sum(tokens_out) AS tokens_out,
               count(*) FILTER (WHERE http_status = 429) AS rate_limited,
               count(*) FILTER (WHERE outcome = 'retry') AS retries,
               count(*) FILTER (WHERE outcome = 'failed') AS failures,
               count(*) FILTER (WHERE outcome_kind = 'truncated') AS truncated,
               count(*) FILTER (WHERE fallback_from IS NOT NULL) AS fallbacks,
               percentile_cont(0.5) WITHIN GROUP (ORDER BY latency_ms)
                   FILTER (WHERE outcome = 'ok') AS p50_ms,
               percentile_cont(0.95) WITHIN GROUP (ORDER BY latency_ms)
                   FILTER (WHERE outcome = 'ok') AS p95_ms,
               avg(queue_ms) AS mean_queue_ms
          FROM shoal.attempts
         GROUP BY model, date_trunc('minute', started_at)) a
  LEFT JOIN shoal.lanes l ON l.model = a.model;

-- Per job priority and minute: how long calls waited between the worker
-- taking their task and the call going out (queue_ms: slot and rate-limit
-- waits, the database check, and the backoff before retries). Priorities are
-- the job's (shoal.jobs.priority); NULL for calls whose job row is gone.
-- calls counts the calls with a queue_ms.
CREATE VIEW shoal.queue_wait AS
SELECT j.priority,
       date_trunc('minute', a.started_at) AS minute,
       count(a.queue_ms) AS calls,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY a.queue_ms) AS p50_ms,
       percentile_cont(0.95) WITHIN GROUP (ORDER BY a.queue_ms) AS p95_ms
  FROM shoal.attempts a
  LEFT JOIN shoal.jobs j ON j.job_id = a.job_id
 WHERE a.queue_ms IS NOT NULL
 GROUP BY j.priority, date_trunc('minute', a.started_at);
