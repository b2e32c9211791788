-- Views operators need: throughput per minute, queue wait from publish to
-- the call, latency of successful calls apart from failed ones, tenant spend
-- over accepted jobs only, and a job's elapsed time that stops when it ends.
-- Views that existed keep their columns (same names, types and order) and
-- only gain new ones at the end, so queries written against them still run;
-- where a column's meaning changed the comment above the view says so.

-- Fleet throughput per minute: tasks that ended (by tasks.finished_at),
-- model calls that ended (by attempts.finished_at), tokens and spend of
-- those calls. Minutes with nothing in them have no row.
--   tasks_done, tasks_failed  tasks that ended done / failed in the minute
--   calls, ok_calls           every model call / those with outcome ok
--   tokens_in, tokens_out     of every call (providers bill refused ones too)
--   cost_usd                  of every call
CREATE VIEW shoal.throughput AS
WITH t AS (
    SELECT date_trunc('minute', finished_at) AS minute,
           count(*) FILTER (WHERE status = 'done') AS tasks_done,
           count(*) FILTER (WHERE status = 'failed') AS tasks_failed
      FROM shoal.tasks
     WHERE status IN ('done', 'failed') AND finished_at IS NOT NULL
     GROUP BY 1
), a AS (
    SELECT date_trunc('minute', finished_at) AS minute,
           count(*) AS calls,
           count(*) FILTER (WHERE outcome = 'ok') AS ok_calls,
           sum(tokens_in) AS tokens_in,
           sum(tokens_out) AS tokens_out,
           sum(cost_usd) AS cost_usd
      FROM shoal.attempts
     GROUP BY 1
)
SELECT coalesce(t.minute, a.minute) AS minute,
       coalesce(t.tasks_done, 0) AS tasks_done,
       coalesce(t.tasks_failed, 0) AS tasks_failed,
       coalesce(a.calls, 0) AS calls,
       coalesce(a.ok_calls, 0) AS ok_calls,
       coalesce(a.tokens_in, 0) AS tokens_in,
       coalesce(a.tokens_out, 0) AS tokens_out,
       coalesce(a.cost_usd, 0) AS cost_usd
  FROM t FULL JOIN a ON a.minute = t.minute;

-- Per job priority and minute: how long tasks waited from being published
-- (tasks.queued_at, set once the task's message was handed to Kafka) to
-- their first model call going out (the earliest attempts.started_at of the
-- task). That is the wait a user sees: Kafka lag, the worker's prefetch, slot
-- and rate-limit waits. The minute is the one the first call went out in.
-- 007 measured only the part inside the worker (attempts.queue_ms); its
-- columns keep their names but now answer publish-to-call:
--   calls           tasks whose first call went out in the minute and whose
--                   publish time is known
--   p50_ms, p95_ms  of those waits
-- and the worker-side part follows as new columns:
--   max_ms          the longest publish-to-call wait
--   worker_calls    calls with a queue_ms (every attempt, retries included)
--   worker_p50_ms, worker_p95_ms
--                   of queue_ms: worker taking the task to the call going out
-- A worker may take a task before the scheduler marked it queued; such a
-- wait counts as 0, never negative. Priorities are the job's; NULL for calls
-- whose job row is gone.
CREATE OR REPLACE VIEW shoal.queue_wait AS
SELECT c.priority,
       c.minute,
       count(c.wait_ms) AS calls,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY c.wait_ms) AS p50_ms,
       percentile_cont(0.95) WITHIN GROUP (ORDER BY c.wait_ms) AS p95_ms,
       max(c.wait_ms) AS max_ms,
       count(c.queue_ms) AS worker_calls,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY c.queue_ms) AS worker_p50_ms,
       percentile_cont(0.95) WITHIN GROUP (ORDER BY c.queue_ms) AS worker_p95_ms
  FROM (SELECT j.priority,
               date_trunc('minute', a.started_at) AS minute,
               a.queue_ms,
               -- greatest() skips NULLs: an unknown publish time must stay NULL.
               CASE WHEN a.first AND t.queued_at IS NOT NULL
                    THEN greatest(0, extract(epoch FROM a.started_at - t.queued_at)
                                     * 1000)::double precision END AS wait_ms
          FROM (SELECT *, row_number() OVER (PARTITION BY task_id
                                                 ORDER BY started_at, attempt) = 1 AS first
                  FROM shoal.attempts) a
          LEFT JOIN shoal.tasks t ON t.task_id = a.task_id
          LEFT JOIN shoal.jobs j ON j.job_id = a.job_id) c
 GROUP BY c.priority, c.minute
HAVING count(c.wait_ms) > 0 OR count(c.queue_ms) > 0;

-- Per model and minute, as in 007, plus what the error columns there leave
-- to be worked out:
--   server_errors   HTTP 5xx answers (overload 529s included)
--   timeouts        calls that got no HTTP answer (http_status 0: timeout,
--                   connection refused or reset)
--   failed_p50_ms   median latency of the calls that did not end ok (how
--                   long a failure takes to come back)
--   p99_ms          of the ok calls
--   cost_usd        of every call in the minute
CREATE OR REPLACE VIEW shoal.model_minute AS
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
       (a.tokens_in + a.tokens_out) / nullif(l.learned_tps * 60, 0) AS learned_tpm_utilization,
       a.server_errors,
       a.timeouts,
       a.failed_p50_ms,
       a.p99_ms,
       a.cost_usd
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
               avg(queue_ms) AS mean_queue_ms,
               count(*) FILTER (WHERE http_status >= 500) AS server_errors,
               count(*) FILTER (WHERE http_status = 0) AS timeouts,
               percentile_cont(0.5) WITHIN GROUP (ORDER BY latency_ms)
                   FILTER (WHERE outcome <> 'ok') AS failed_p50_ms,
               percentile_cont(0.99) WITHIN GROUP (ORDER BY latency_ms)
                   FILTER (WHERE outcome = 'ok') AS p99_ms,
               sum(cost_usd) AS cost_usd
          FROM shoal.attempts
         GROUP BY model, date_trunc('minute', started_at)) a
  LEFT JOIN shoal.lanes l ON l.model = a.model;

-- Latency percentiles and error rates per model over every recorded call.
-- 003 took p50/p90/p99 over every call, so a fast stream of 429s pulled a
-- one-second model's median down to a fraction of a millisecond: they are
-- now over the ok calls only (NULL when none), and the calls that did not
-- end ok get their own, in new columns:
--   failed          calls with outcome retry or failed
--   failed_p50_ms, failed_p90_ms, failed_p99_ms
--                   latency of those (NULL when none)
-- calls, ok and the *_pct columns still count every call.
CREATE OR REPLACE VIEW shoal.model_latency AS
SELECT model,
       count(*) AS calls,
       count(*) FILTER (WHERE outcome = 'ok') AS ok,
       round(100.0 * count(*) FILTER (WHERE outcome <> 'ok') / count(*), 2) AS error_pct,
       round(100.0 * count(*) FILTER (WHERE http_status = 429) / count(*), 2) AS rate_limited_pct,
       round(100.0 * count(*) FILTER (WHERE http_status >= 500 OR http_status = 0)
             / count(*), 2) AS server_error_pct,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY latency_ms)
           FILTER (WHERE outcome = 'ok') AS p50_ms,
       percentile_cont(0.9) WITHIN GROUP (ORDER BY latency_ms)
           FILTER (WHERE outcome = 'ok') AS p90_ms,
       percentile_cont(0.99) WITHIN GROUP (ORDER BY latency_ms)
           FILTER (WHERE outcome = 'ok') AS p99_ms,
       sum(tokens_in) AS tokens_in, sum(tokens_out) AS tokens_out,
       sum(cost_usd) AS cost_usd,
       count(*) FILTER (WHERE outcome <> 'ok') AS failed,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY latency_ms)
           FILTER (WHERE outcome <> 'ok') AS failed_p50_ms,
       percentile_cont(0.9) WITHIN GROUP (ORDER BY latency_ms)
           FILTER (WHERE outcome <> 'ok') AS failed_p90_ms,
       percentile_cont(0.99) WITHIN GROUP (ORDER BY latency_ms)
           FILTER (WHERE outcome <> 'ok') AS failed_p99_ms
FROM shoal.attempts
GROUP BY model;

-- What each tenant spent, over the jobs the scheduler accepted: 003 counted
-- rejected messages as jobs. A tenant whose every job was rejected still has
-- a row (jobs 0, sums 0), and the new column rejected_jobs says how many were.
CREATE OR REPLACE VIEW shoal.tenant_cost AS
SELECT tenant,
       count(*) FILTER (WHERE status <> 'rejected') AS jobs,
       coalesce(sum(calls) FILTER (WHERE status <> 'rejected'), 0) AS calls,
       coalesce(sum(tokens_in) FILTER (WHERE status <> 'rejected'), 0) AS tokens_in,
       coalesce(sum(tokens_out) FILTER (WHERE status <> 'rejected'), 0) AS tokens_out,
       coalesce(sum(cost_usd) FILTER (WHERE status <> 'rejected'), 0) AS cost_usd,
       count(*) FILTER (WHERE status = 'rejected') AS rejected_jobs
FROM shoal.job_cost
GROUP BY tenant;

-- Live progress and spend of each job, as in 003, except that elapsed_s
-- stops when the job ends: at finished_at, or at submitted_at for a job that
-- ended without one (a rejected job is never run, so it took no time), where
-- 003 kept counting from now().
CREATE OR REPLACE VIEW shoal.job_progress AS
SELECT j.job_id, j.tenant, j.status, j.model, j.tasks_total, j.tasks_done, j.tasks_failed,
       j.tasks_total - j.tasks_done - j.tasks_failed AS tasks_left,
       round(100.0 * (j.tasks_done + j.tasks_failed) / greatest(j.tasks_total, 1), 1)
           AS percent,
       coalesce(a.calls, 0) AS calls,
       coalesce(a.tokens_in, 0) AS tokens_in,
       coalesce(a.tokens_out, 0) AS tokens_out,
       coalesce(a.cost_usd, 0) AS cost_usd,
       j.est_cost_usd,
       extract(epoch FROM coalesce(j.finished_at,
                                   CASE WHEN j.status = 'running' THEN now()
                                        ELSE j.submitted_at END) - j.submitted_at) AS elapsed_s,
       CASE WHEN j.status = 'running' AND j.tasks_done + j.tasks_failed > 0
            THEN extract(epoch FROM now() - j.submitted_at)
                 * (j.tasks_total - j.tasks_done - j.tasks_failed)
                 / (j.tasks_done + j.tasks_failed)
       END AS eta_s,
       j.error, j.submitted_at, j.finished_at
FROM shoal.jobs j
LEFT JOIN LATERAL (
    SELECT count(*) AS calls, sum(tokens_in) AS tokens_in, sum(tokens_out) AS tokens_out,
           sum(cost_usd) AS cost_usd
    FROM shoal.attempts WHERE attempts.job_id = j.job_id
) a ON true;
