-- Tenant plans and quotas, job identity, and the numbers of shoal stats.
--
-- shoal.tenants mirrors the scheduler's tenants file (common/tenants.h) so
-- that workers and SQL read the same plans; quotas are counted here, from
-- shoal.jobs, so every scheduler instance agrees; a resubmission under a known
-- job_id with other content is kept in shoal.job_conflicts and announced.

-- One row per plan; tenant '*' is the default plan for tenants not listed.
-- A NULL limit is no limit.
CREATE TABLE shoal.tenants (
    tenant            text PRIMARY KEY,
    jobs_per_minute   bigint,
    jobs_per_day      bigint,
    max_prompt_tokens bigint,
    max_items         bigint,
    default_priority  text CHECK (default_priority IN ('high', 'normal', 'low')),
    daily_budget_usd  double precision,
    updated_at        timestamptz NOT NULL DEFAULT now()
);

-- Replaces every plan with p_rows (shoal_tenants_rows(): an array of objects
-- with the columns above; 0 means no limit). Returns the rows written. A
-- scheduler with a tenants file calls it at start (one without leaves the
-- table alone); every scheduler of a fleet should read the same file: the
-- last one started wins.
CREATE FUNCTION shoal.set_tenants(p_rows jsonb) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    v_n integer;
BEGIN
    DELETE FROM shoal.tenants;
    INSERT INTO shoal.tenants (tenant, jobs_per_minute, jobs_per_day, max_prompt_tokens,
                               max_items, default_priority, daily_budget_usd)
    SELECT r->>'tenant', nullif((r->>'jobs_per_minute')::bigint, 0),
           nullif((r->>'jobs_per_day')::bigint, 0), nullif((r->>'max_prompt_tokens')::bigint, 0),
           nullif((r->>'max_items')::bigint, 0), r->>'default_priority',
           nullif((r->>'daily_budget_usd')::double precision, 0)
    FROM jsonb_array_elements(coalesce(p_rows, '[]')) AS r;
    GET DIAGNOSTICS v_n = ROW_COUNT;
    RETURN v_n;
END $$;

-- The plan a tenant runs under: its own row, else the default ('*'), else
-- no row (no limits). For the budget checks: daily_budget_usd.
CREATE FUNCTION shoal.tenant_plan(p_tenant text) RETURNS SETOF shoal.tenants
LANGUAGE sql STABLE AS $$
    SELECT * FROM shoal.tenants WHERE tenant IN (p_tenant, '*')
    ORDER BY tenant = '*' LIMIT 1;
$$;

-- The SHA-256 of the message a job was recorded from (common/jobid.h): a
-- message under the same job_id with another hash is another job.
ALTER TABLE shoal.jobs ADD COLUMN content_hash text;

-- Messages that came under a job_id already taken by a job with other
-- content, one row per message (where Kafka kept it), so a redelivery of
-- the same message announces it once. `shoal submit --wait` and `shoal
-- status` read it to warn the user that a submission was ignored.
CREATE TABLE shoal.job_conflicts (
    job_id       text NOT NULL,
    source       text NOT NULL,
    content_hash text,
    seen_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (job_id, source)
);

-- Records a job as shoal.record_job_estimated(p_job, p_tasks, p_inputs) does
-- (011), with three things around it:
-- * A job_id held by a rejected job from another message is free: the
--   rejected row is replaced (a job fixed and submitted again).
-- * A job_id held by a job recorded from another message with another
--   content_hash (p_job->>'content_hash') is a conflict: the message is
--   ignored, a row goes into shoal.job_conflicts and a 'conflict' event
--   into the outbox (once per message). Returns 'conflict:<status>'.
-- * A running job with p_quota (the tenant's plan: jobs_per_minute,
--   jobs_per_day, daily_budget_usd; absent or 0 = no limit) is counted
--   against it under a per-tenant lock, so schedulers admitting jobs of one
--   tenant at once still count each other's. Over a limit it records
--   nothing and returns 'quota:<kind>:<count>:<limit>:<reset unix s>', kind
--   minute, day or budget; the caller records the rejection with its reason.
--   Windows are UTC: the current minute, the current day.
-- Else returns what record_job_estimated returns ('new', 'exists:<status>').
CREATE FUNCTION shoal.record_job_admitted(p_job jsonb, p_tasks jsonb, p_inputs text,
                                          p_quota jsonb) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    v_id      text := p_job->>'job_id';
    v_tenant  text := p_job->>'tenant';
    v_source  text := p_job->>'source';
    v_hash    text := p_job->>'content_hash';
    v_running boolean := coalesce(p_job->>'status', 'running') = 'running';
    v_old     record;
    v_now     timestamp := now() AT TIME ZONE 'UTC';
    v_minute  timestamptz := date_trunc('minute', v_now) AT TIME ZONE 'UTC';
    v_day     timestamptz := date_trunc('day', v_now) AT TIME ZONE 'UTC';
    v_limit   double precision;
    v_n       double precision;
    v_res     text;
    w         record;
BEGIN
    IF v_running AND p_quota IS NOT NULL THEN
        PERFORM pg_advisory_xact_lock(hashtext('shoal.quota'), hashtext(coalesce(v_tenant, '')));
    END IF;
    SELECT status, source, content_hash INTO v_old FROM shoal.jobs WHERE job_id = v_id;
    IF FOUND THEN
        IF v_old.status = 'rejected' AND v_old.source IS DISTINCT FROM v_source THEN
            DELETE FROM shoal.jobs WHERE job_id = v_id AND status = 'rejected';
        ELSIF v_old.status <> 'rejected' AND v_hash IS NOT NULL AND v_old.content_hash IS NOT NULL
              AND v_old.content_hash <> v_hash AND v_old.source IS DISTINCT FROM v_source THEN
            INSERT INTO shoal.job_conflicts (job_id, source, content_hash)
            VALUES (v_id, coalesce(v_source, ''), v_hash)
            ON CONFLICT DO NOTHING;
            IF FOUND THEN
                INSERT INTO shoal.event_outbox (job_id, payload)
                VALUES (v_id, jsonb_build_object(
                    'type', 'conflict', 'job_id', v_id, 'status', v_old.status,
                    'source', v_source,
                    'error', format('a job with other content was submitted under job_id %s '
                                    '(from %s) while a job under that id is %s: it was '
                                    'ignored; submit it under another job_id',
                                    v_id, v_source, v_old.status),
                    'ts', now()));
            END IF;
            RETURN 'conflict:' || v_old.status;
        ELSE
            RETURN 'exists:' || v_old.status;
        END IF;
    END IF;

    IF v_running AND p_quota IS NOT NULL THEN
        FOR w IN SELECT * FROM (VALUES ('minute', v_minute, interval '1 minute'),
                                       ('day', v_day, interval '1 day')) AS x(kind, since, span)
        LOOP
            v_limit := nullif((p_quota->>('jobs_per_' || w.kind))::double precision, 0);
            CONTINUE WHEN v_limit IS NULL;
            SELECT count(*) INTO v_n FROM shoal.jobs
            WHERE tenant = v_tenant AND submitted_at >= w.since AND status <> 'rejected';
            IF v_n >= v_limit THEN
                RETURN format('quota:%s:%s:%s:%s', w.kind, v_n, v_limit,
                              extract(epoch FROM w.since + w.span)::bigint);
            END IF;
        END LOOP;
        v_limit := nullif((p_quota->>'daily_budget_usd')::double precision, 0);
        IF v_limit IS NOT NULL THEN
            SELECT coalesce(sum(spent_usd), 0) INTO v_n FROM shoal.tenant_spend
            WHERE tenant = v_tenant AND day = v_now::date;
            IF v_n >= v_limit THEN
                RETURN format('quota:budget:%s:%s:%s', v_n, v_limit,
                              extract(epoch FROM v_day + interval '1 day')::bigint);
            END IF;
        END IF;
    END IF;

    v_res := shoal.record_job_estimated(p_job, p_tasks, p_inputs);
    IF v_res = 'new' AND v_hash IS NOT NULL THEN
        UPDATE shoal.jobs SET content_hash = v_hash WHERE job_id = v_id;
    END IF;
    RETURN v_res;
END $$;

-- Time range arguments of shoal stats: NULL or '' is p_default; '90s',
-- '30m', '24h', '7d' count back from now; anything else is read as a
-- timestamp ('2024-05-01', '2024-05-01T12:00:00Z').
CREATE FUNCTION shoal.time_arg(p text, p_default timestamptz) RETURNS timestamptz
LANGUAGE plpgsql STABLE AS $$
DECLARE
    m text[] := regexp_match(coalesce(p, ''), '^\s*([0-9]+)\s*([smhd])\s*$');
BEGIN
    IF coalesce(p, '') = '' THEN
        RETURN p_default;
    END IF;
    IF m IS NOT NULL THEN
        RETURN now() - m[1]::bigint * CASE m[2] WHEN 's' THEN interval '1 second'
                                                WHEN 'm' THEN interval '1 minute'
                                                WHEN 'h' THEN interval '1 hour'
                                                ELSE interval '1 day' END;
    END IF;
    RETURN p::timestamptz;
END $$;

-- Per tenant and model over [p_since, p_until): jobs submitted (accepted and
-- rejected apart, by the job's model), the model calls that finished in the
-- range (by the model that answered, so fallbacks show as their own rows):
-- calls, 429 answers, tokens and cost; and the chunks the result cache
-- answered in the range (shoal.cache_hits, 014) with the dollars their calls
-- took when they were made.
CREATE FUNCTION shoal.stats(p_since timestamptz, p_until timestamptz)
RETURNS TABLE (tenant text, model text, jobs bigint, jobs_rejected bigint, calls bigint,
               calls_429 bigint, tokens_in bigint, tokens_out bigint, cost_usd double precision,
               cache_hits bigint, usd_saved double precision)
LANGUAGE sql STABLE AS $$
    WITH j AS (
        SELECT coalesce(jb.tenant, '') AS tenant, coalesce(jb.model, '') AS model,
               count(*) FILTER (WHERE jb.status <> 'rejected') AS jobs,
               count(*) FILTER (WHERE jb.status = 'rejected') AS jobs_rejected
        FROM shoal.jobs jb
        WHERE jb.submitted_at >= p_since AND jb.submitted_at < p_until
        GROUP BY 1, 2
    ), a AS (
        SELECT coalesce(jb.tenant, '') AS tenant, at.model,
               count(*) AS calls, count(*) FILTER (WHERE at.http_status = 429) AS calls_429,
               sum(at.tokens_in)::bigint AS tokens_in, sum(at.tokens_out)::bigint AS tokens_out,
               sum(at.cost_usd) AS cost_usd
        FROM shoal.attempts at LEFT JOIN shoal.jobs jb ON jb.job_id = at.job_id
        WHERE at.finished_at >= p_since AND at.finished_at < p_until
        GROUP BY 1, 2
    ), c AS (
        SELECT coalesce(jb.tenant, '') AS tenant, h.model, count(*) AS hits,
               sum(h.cost_usd) AS usd_saved
        FROM shoal.cache_hits h LEFT JOIN shoal.jobs jb ON jb.job_id = h.job_id
        WHERE h.hit_at >= p_since AND h.hit_at < p_until
        GROUP BY 1, 2
    ), ja AS (
        SELECT coalesce(j.tenant, a.tenant) AS tenant, coalesce(j.model, a.model) AS model,
               coalesce(j.jobs, 0) AS jobs, coalesce(j.jobs_rejected, 0) AS jobs_rejected,
               coalesce(a.calls, 0) AS calls, coalesce(a.calls_429, 0) AS calls_429,
               coalesce(a.tokens_in, 0) AS tokens_in, coalesce(a.tokens_out, 0) AS tokens_out,
               coalesce(a.cost_usd, 0) AS cost_usd
        FROM j FULL JOIN a ON a.tenant = j.tenant AND a.model = j.model
    )
    SELECT coalesce(ja.tenant, c.tenant), coalesce(ja.model, c.model), coalesce(ja.jobs, 0),
           coalesce(ja.jobs_rejected, 0), coalesce(ja.calls, 0), coalesce(ja.calls_429, 0),
           coalesce(ja.tokens_in, 0), coalesce(ja.tokens_out, 0), coalesce(ja.cost_usd, 0),
           coalesce(c.hits, 0), coalesce(c.usd_saved, 0)
    FROM ja FULL JOIN c ON c.tenant = ja.tenant AND c.model = ja.model
    ORDER BY 1, 2;
$$;
