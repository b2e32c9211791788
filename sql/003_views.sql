-- Analytics views. Plain SQL over jobs, tasks and attempts; filter them like
-- tables (WHERE job_id = ..., WHERE tenant = ...).

-- Live progress and spend of each job. eta_s extrapolates the rate so far.
CREATE VIEW shoal.job_progress AS
SELECT j.job_id, j.tenant, j.status, j.model, j.tasks_total, j.tasks_done, j.tasks_failed,
       j.tasks_total - j.tasks_done - j.tasks_failed AS tasks_left,
       round(100.0 * (j.tasks_done + j.tasks_failed) / greatest(j.tasks_total, 1), 1)
           AS percent,
       coalesce(a.calls, 0) AS calls,
       coalesce(a.tokens_in, 0) AS tokens_in,
       coalesce(a.tokens_out, 0) AS tokens_out,
       coalesce(a.cost_usd, 0) AS cost_usd,
       j.est_cost_usd,
       extract(epoch FROM coalesce(j.finished_at, now()) - j.submitted_at) AS elapsed_s,
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

-- Latency percentiles and error rates per model over every recorded call.
CREATE VIEW shoal.model_latency AS
SELECT model,
       count(*) AS calls,
       count(*) FILTER (WHERE outcome = 'ok') AS ok,
       round(100.0 * count(*) FILTER (WHERE outcome <> 'ok') / count(*), 2) AS error_pct,
       round(100.0 * count(*) FILTER (WHERE http_status = 429) / count(*), 2) AS rate_limited_pct,
       round(100.0 * count(*) FILTER (WHERE http_status >= 500 OR http_status = 0)
             / count(*), 2) AS server_error_pct,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY latency_ms) AS p50_ms,
       percentile_cont(0.9) WITHIN GROUP (ORDER BY latency_ms) AS p90_ms,
       percentile_cont(0.99) WITHIN GROUP (ORDER BY latency_ms) AS p99_ms,
       sum(tokens_in) AS tokens_in, sum(tokens_out) AS tokens_out,
       sum(cost_usd) AS cost_usd
FROM shoal.attempts
GROUP BY model;

-- What each job and each tenant spent.
CREATE VIEW shoal.job_cost AS
SELECT j.job_id, j.tenant, j.status, count(a.*) AS calls,
       coalesce(sum(a.tokens_in), 0) AS tokens_in, coalesce(sum(a.tokens_out), 0) AS tokens_out,
       coalesce(sum(a.cost_usd), 0) AS cost_usd, j.est_cost_usd
FROM shoal.jobs j LEFT JOIN shoal.attempts a ON a.job_id = j.job_id
GROUP BY j.job_id;

CREATE VIEW shoal.tenant_cost AS
SELECT tenant, count(*) AS jobs, sum(calls) AS calls, sum(tokens_in) AS tokens_in,
       sum(tokens_out) AS tokens_out, sum(cost_usd) AS cost_usd
FROM shoal.job_cost
GROUP BY tenant;
