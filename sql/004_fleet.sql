-- Fleet-wide rate limits. Each model alias is a lane; every worker holds a
-- short lease on a slice of the lane's limit and spends it locally, so no
-- model call waits for the database. shoal.fleet_lease is the only writer:
-- one statement per worker refresh (about once a second) renews the worker's
-- leases for all its models, splits each limit among the live workers and
-- learns limits nobody told us from the 429s the fleet reports.
--
-- Rates are per second here; configured and header limits are per minute as
-- providers state them.

CREATE TABLE shoal.lanes (
    model            text PRIMARY KEY,
    config_rpm       double precision NOT NULL DEFAULT 0,  -- models file, 0 = none
    config_tpm       double precision NOT NULL DEFAULT 0,
    header_rpm       double precision,                      -- x-ratelimit-limit-*
    header_tpm       double precision,
    learned_rps      double precision,                      -- from 429s; NULL until learned
    learned_tps      double precision,
    limit_source     text NOT NULL DEFAULT 'config'
                     CHECK (limit_source IN ('config', 'header', 'learned')),
    hold_until       timestamptz,                           -- nobody sends before
    last_decrease_at timestamptz,
    last_increase_at timestamptz,
    last_429_at      timestamptz,
    pending_429      bigint NOT NULL DEFAULT 0,             -- 429s since the last decrease
    probe_rps        double precision,                      -- limit when a run of decreases began
    probe_share      double precision,                      -- and the 429 share that began it
    noise_share      double precision NOT NULL DEFAULT 0,   -- 429 share that no decrease cures
    -- The current measuring window: what the fleet reported since win_start.
    win_start        timestamptz NOT NULL DEFAULT clock_timestamp(),
    win_sent         bigint NOT NULL DEFAULT 0,
    win_ok           bigint NOT NULL DEFAULT 0,
    win_429          bigint NOT NULL DEFAULT 0,
    win_tokens       bigint NOT NULL DEFAULT 0,
    served_rps       double precision,                      -- ok/s of the last closed window
    served_tps       double precision,
    sent_total       bigint NOT NULL DEFAULT 0,
    ok_total         bigint NOT NULL DEFAULT 0,
    rate_limited_total bigint NOT NULL DEFAULT 0,
    tokens_total     bigint NOT NULL DEFAULT 0,
    decreases        bigint NOT NULL DEFAULT 0,
    updated_at       timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE shoal.leases (
    worker_id        text NOT NULL,
    model            text NOT NULL,
    demand_rps       double precision NOT NULL DEFAULT 0,
    demand_tps       double precision NOT NULL DEFAULT 0,
    granted_rps      double precision,                      -- NULL: no limit known
    granted_tps      double precision,
    expires_at       timestamptz NOT NULL,
    sent_last        bigint NOT NULL DEFAULT 0,             -- counts of the last refresh
    ok_last          bigint NOT NULL DEFAULT 0,
    rate_limited_last bigint NOT NULL DEFAULT 0,
    updated_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (worker_id, model)
);
CREATE INDEX leases_model_idx ON shoal.leases (model, expires_at);

-- The per-second limit in force from per-minute header and configured limits
-- and a learned per-second rate: a header limit replaces the configured one,
-- a learned rate only ever lowers it. NULL when nothing is known (no limit).
CREATE FUNCTION shoal.fleet_limit(p_header_pm double precision, p_config_pm double precision,
                                  p_learned_ps double precision)
RETURNS double precision
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE
        WHEN coalesce(p_header_pm, nullif(p_config_pm, 0)) IS NULL THEN p_learned_ps
        WHEN p_learned_ps IS NULL THEN coalesce(p_header_pm, nullif(p_config_pm, 0)) / 60.0
        ELSE least(coalesce(p_header_pm, nullif(p_config_pm, 0)) / 60.0, p_learned_ps)
    END
$$;

-- A learned per-second rate held under the per-minute limit the provider
-- states (header, else configuration); NULL stays NULL (nothing learned).
CREATE FUNCTION shoal.fleet_cap(p_learned_ps double precision, p_header_pm double precision,
                                p_config_pm double precision)
RETURNS double precision
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN p_learned_ps IS NOT NULL
                THEN least(p_learned_ps, coalesce(p_header_pm, nullif(p_config_pm, 0)) / 60.0)
           END
$$;

-- Where the binding limit comes from: 'learned' when the learned rate is below
-- what headers or configuration say (or they say nothing), else 'header' or
-- 'config'.
CREATE FUNCTION shoal.fleet_source(p_header_pm double precision, p_config_pm double precision,
                                   p_learned_ps double precision)
RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE
        WHEN p_learned_ps IS NOT NULL
             AND (coalesce(p_header_pm, nullif(p_config_pm, 0)) IS NULL
                  OR p_learned_ps < coalesce(p_header_pm, nullif(p_config_pm, 0)) / 60.0)
            THEN 'learned'
        WHEN p_header_pm IS NOT NULL THEN 'header'
        ELSE 'config'
    END
$$;

-- Max-min fair share of p_limit for a client demanding p_mine among others
-- demanding p_others: demands are met from the smallest up while the limit
-- lasts (the rest share what remains equally); when every demand is met, the
-- spare is split equally on top, so a lone busy client gets the whole limit
-- and an idle one still has room to start.
CREATE FUNCTION shoal.fleet_fair_share(p_limit double precision, p_mine double precision,
                                       p_others double precision[])
RETURNS double precision
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    v_mine double precision := greatest(coalesce(p_mine, 0), 0);
    v_n    integer := coalesce(cardinality(p_others), 0) + 1;
    v_left integer := v_n;
    v_rem  double precision := greatest(p_limit, 0);
    d      double precision;
BEGIN
    FOR d IN SELECT greatest(coalesce(x, 0), 0)
             FROM unnest(array_append(coalesce(p_others, '{}'), v_mine)) AS x ORDER BY 1 LOOP
        IF d * v_left > v_rem THEN
            RETURN least(v_mine, v_rem / v_left);
        END IF;
        v_rem := v_rem - d;
        v_left := v_left - 1;
    END LOOP;
    RETURN v_mine + v_rem / v_n;
END $$;

-- The learned rate after congestion. With a limit in force, times 0.85, or
-- times the share of calls accepted when more were refused (sending r into a
-- provider serving L is refused (r - L) / r of the time, so the accepted
-- share brings the rate straight to about L instead of creeping down from far
-- above), but never below half per step: a ratio from a few calls is noisy.
-- The share is a ratio of the same reports, so it does not depend on when
-- each worker's report arrived, as a rate measured over a window would. With
-- no limit known, half the rate served over the window (slow start ends at
-- the first 429; the window may hold a provider's burst allowance, so the
-- served rate overstates the limit), or NULL, still no limit, when nothing
-- was served.
CREATE FUNCTION shoal.fleet_decrease(p_limit double precision, p_served double precision,
                                     p_refused_share double precision)
RETURNS double precision
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE
        WHEN p_limit IS NULL THEN CASE WHEN p_served > 0 THEN greatest(p_served * 0.5, 1.0 / 60.0) END
        ELSE greatest(p_limit * greatest(0.5, least(0.85, 1 - coalesce(p_refused_share, 0))),
                      1.0 / 60.0)
    END
$$;

-- One refresh of worker p_worker. p_rows is a JSON array, one object per
-- model the worker serves:
--   model, rpm, tpm (configured per minute, 0 = none),
--   demand_rps, demand_tps (what it could use now),
--   sent, ok, rate_limited, tokens (counts since its last refresh),
--   limit_rpm, limit_tpm (from response headers, absent or <= 0 = none),
--   hold_ms (the provider asked everyone to wait this long from now).
-- Returns {"<model>": {granted_rps, granted_tps (NULL = no limit), limit_rps,
-- limit_tps, source, learned, workers, hold_ms, hold_until (unix seconds)}}.
--
-- The sum of unexpired grants never exceeds the limit: a worker gets at most
-- its fair share and at most what the other unexpired leases leave, so a
-- newcomer starts small and grows as the others refresh and shrink, and a
-- dead worker's share comes back when its lease expires (p_ttl_ms). Lanes
-- are locked in model order, so concurrent refreshes serialize per model and
-- cannot deadlock.
CREATE FUNCTION shoal.fleet_lease(p_worker text, p_ttl_ms integer, p_rows jsonb)
RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    r          record;
    l          shoal.lanes%ROWTYPE;
    v_now      timestamptz;
    v_out      jsonb := '{}';
    v_sent     bigint;
    v_ok       bigint;
    v_429      bigint;
    v_tokens   bigint;
    v_hold_ms  double precision;
    v_elapsed  double precision;
    v_lim_r    double precision;
    v_lim_t    double precision;
    v_share    double precision;
    v_sent_rps double precision;
    v_others_r double precision;
    v_others_t double precision;
    v_dem_r    double precision[];
    v_dem_t    double precision[];
    v_n        integer;
    v_grant_r  double precision;
    v_grant_t  double precision;
    v_quiet    interval := interval '2 seconds';
BEGIN
    FOR r IN SELECT e AS row, e->>'model' AS model
             FROM jsonb_array_elements(coalesce(p_rows, '[]')) AS e
             WHERE coalesce(e->>'model', '') <> ''
             ORDER BY e->>'model' LOOP
        INSERT INTO shoal.lanes (model) VALUES (r.model) ON CONFLICT (model) DO NOTHING;
        SELECT * INTO l FROM shoal.lanes WHERE model = r.model FOR UPDATE;
        v_now := clock_timestamp();

        v_sent := greatest(coalesce((r.row->>'sent')::bigint, 0), 0);
        v_ok := greatest(coalesce((r.row->>'ok')::bigint, 0), 0);
        v_429 := greatest(coalesce((r.row->>'rate_limited')::bigint, 0), 0);
        v_tokens := greatest(coalesce((r.row->>'tokens')::bigint, 0), 0);
        v_hold_ms := coalesce((r.row->>'hold_ms')::double precision, 0);

        l.config_rpm := greatest(coalesce((r.row->>'rpm')::double precision, 0), 0);
        l.config_tpm := greatest(coalesce((r.row->>'tpm')::double precision, 0), 0);
        IF (r.row->>'limit_rpm')::double precision > 0 THEN
            l.header_rpm := (r.row->>'limit_rpm')::double precision;
        END IF;
        IF (r.row->>'limit_tpm')::double precision > 0 THEN
            l.header_tpm := (r.row->>'limit_tpm')::double precision;
        END IF;
        -- A learned rate never stands above what the provider says.
        l.learned_rps := shoal.fleet_cap(l.learned_rps, l.header_rpm, l.config_rpm);
        l.learned_tps := shoal.fleet_cap(l.learned_tps, l.header_tpm, l.config_tpm);

        l.sent_total := l.sent_total + v_sent;
        l.ok_total := l.ok_total + v_ok;
        l.rate_limited_total := l.rate_limited_total + v_429;
        l.tokens_total := l.tokens_total + v_tokens;
        l.win_sent := l.win_sent + v_sent;
        l.win_ok := l.win_ok + v_ok;
        l.win_429 := l.win_429 + v_429;
        l.win_tokens := l.win_tokens + v_tokens;
        IF v_429 > 0 THEN
            l.last_429_at := v_now;
            -- 429s reported during the hold that followed a decrease answer
            -- calls sent before it: they say nothing about the lowered rate.
            IF l.last_decrease_at IS NULL OR l.hold_until IS NULL OR v_now > l.hold_until THEN
                l.pending_429 := l.pending_429 + v_429;
            END IF;
        END IF;
        IF v_hold_ms > 0 THEN
            l.hold_until := greatest(l.hold_until, v_now + v_hold_ms * interval '1 millisecond');
        END IF;

        -- AIMD on the learned rate, on fleet-wide counts, decided when a
        -- window of a second (one refresh round of every worker) closes, or
        -- sooner after a 429 (workers refresh early on one) when a limit is
        -- in force, but lowering the rate at most once a second. The first
        -- limit of slow start is a served rate: it waits for a whole window.
        v_elapsed := extract(epoch FROM v_now - l.win_start);
        IF v_elapsed >= 1.0
           OR (v_elapsed >= 0.25 AND l.pending_429 > 0
               AND shoal.fleet_limit(l.header_rpm, l.config_rpm, l.learned_rps) IS NOT NULL
               AND (l.last_decrease_at IS NULL
                    OR v_now - l.last_decrease_at >= interval '1 second')) THEN
            l.served_rps := l.win_ok / v_elapsed;
            l.served_tps := l.win_tokens / v_elapsed;
            v_sent_rps := l.win_sent / v_elapsed;
            v_share := l.win_429::double precision / greatest(l.win_sent, 1);
            v_lim_r := shoal.fleet_limit(l.header_rpm, l.config_rpm, l.learned_rps);
            v_lim_t := shoal.fleet_limit(l.header_tpm, l.config_tpm, l.learned_tps);
            -- 429s that even half the rate did not make rarer are not the
            -- limit speaking (a provider refusing a share of calls whatever
            -- the rate): lowering further would only starve the fleet. A limit
            -- cannot do that: above a limit L, sending r is refused 1 - L/r
            -- of the time, so halving r cuts the refused share steeply (and a
            -- refused share over 15% is answered by one step straight to L).
            -- Such a share becomes the lane's noise level; 429s up to about
            -- that level neither lower the rate nor stop it growing back.
            IF l.pending_429 > 0 AND l.win_sent >= 10 AND l.probe_rps IS NOT NULL
               AND v_lim_r IS NOT NULL AND v_lim_r <= 0.5 * l.probe_rps
               AND v_share >= 0.7 * l.probe_share AND v_share >= 0.02 THEN
                l.noise_share := greatest(l.noise_share, v_share);
                l.probe_rps := NULL;
            END IF;
            IF v_share < l.noise_share THEN
                l.noise_share := 0.98 * l.noise_share + 0.02 * v_share;
            END IF;
            IF l.pending_429 > 0 AND v_share > l.noise_share * 1.5 + 0.01
               AND (l.win_sent >= 10 OR v_elapsed >= 1.0)
               AND (l.last_decrease_at IS NULL OR v_now - l.last_decrease_at >= interval '1 second') THEN
                -- A run of decreases begins after a quiet spell: remember
                -- where, to judge later whether lowering the rate helped.
                IF l.probe_rps IS NULL OR l.last_decrease_at IS NULL
                   OR v_now - l.last_decrease_at > interval '10 seconds' THEN
                    l.probe_rps := coalesce(v_lim_r, l.served_rps);
                    l.probe_share := v_share;
                END IF;
                -- Tokens are the binding limit only when they are known, nearly
                -- used up and requests are not; otherwise lower requests, which
                -- lowers tokens with them.
                IF v_lim_t IS NOT NULL AND l.served_tps >= 0.8 * v_lim_t
                   AND (v_lim_r IS NULL OR v_sent_rps < 0.8 * v_lim_r) THEN
                    l.learned_tps := shoal.fleet_decrease(v_lim_t, l.served_tps, v_share);
                ELSE
                    l.learned_rps := shoal.fleet_decrease(v_lim_r, l.served_rps, v_share);
                END IF;
                l.last_decrease_at := v_now;
                l.pending_429 := 0;
                l.decreases := l.decreases + 1;
                -- A short pause lets the provider's bucket refill a little and
                -- every worker pick up the lower rate before sending again.
                l.hold_until := greatest(l.hold_until, v_now + interval '500 milliseconds');
            ELSIF (l.last_429_at IS NULL OR v_now - l.last_429_at >= v_quiet
                   OR (l.noise_share > 0 AND v_share <= l.noise_share * 1.5 + 0.01))
                  AND (l.last_decrease_at IS NULL OR v_now - l.last_decrease_at >= v_quiet) THEN
                -- Probe upwards only while the fleet actually uses the rate:
                -- an idle fleet learns nothing about the provider.
                IF l.learned_rps IS NOT NULL AND v_sent_rps >= 0.8 * l.learned_rps THEN
                    l.learned_rps := l.learned_rps + greatest(l.learned_rps * 0.02, 1.0 / 60.0);
                    l.last_increase_at := v_now;
                END IF;
                IF l.learned_tps IS NOT NULL AND l.served_tps >= 0.8 * l.learned_tps THEN
                    l.learned_tps := l.learned_tps + greatest(l.learned_tps * 0.02, 1.0);
                    l.last_increase_at := v_now;
                END IF;
                l.learned_rps := shoal.fleet_cap(l.learned_rps, l.header_rpm, l.config_rpm);
                l.learned_tps := shoal.fleet_cap(l.learned_tps, l.header_tpm, l.config_tpm);
            END IF;
            l.pending_429 := 0;
            l.win_start := v_now;
            l.win_sent := 0;
            l.win_ok := 0;
            l.win_429 := 0;
            l.win_tokens := 0;
        END IF;

        v_lim_r := shoal.fleet_limit(l.header_rpm, l.config_rpm, l.learned_rps);
        v_lim_t := shoal.fleet_limit(l.header_tpm, l.config_tpm, l.learned_tps);
        l.limit_source := CASE WHEN v_lim_r IS NOT NULL
                               THEN shoal.fleet_source(l.header_rpm, l.config_rpm, l.learned_rps)
                               ELSE shoal.fleet_source(l.header_tpm, l.config_tpm, l.learned_tps)
                          END;
        l.updated_at := v_now;
        UPDATE shoal.lanes
           SET config_rpm = l.config_rpm, config_tpm = l.config_tpm,
               header_rpm = l.header_rpm, header_tpm = l.header_tpm,
               learned_rps = l.learned_rps, learned_tps = l.learned_tps,
               limit_source = l.limit_source, hold_until = l.hold_until,
               last_decrease_at = l.last_decrease_at, last_increase_at = l.last_increase_at,
               last_429_at = l.last_429_at, pending_429 = l.pending_429,
               probe_rps = l.probe_rps, probe_share = l.probe_share,
               noise_share = l.noise_share,
               win_start = l.win_start, win_sent = l.win_sent, win_ok = l.win_ok,
               win_429 = l.win_429, win_tokens = l.win_tokens,
               served_rps = l.served_rps, served_tps = l.served_tps,
               sent_total = l.sent_total, ok_total = l.ok_total,
               rate_limited_total = l.rate_limited_total, tokens_total = l.tokens_total,
               decreases = l.decreases, updated_at = l.updated_at
         WHERE model = r.model;

        -- Leases: drop the expired ones of everyone, then split the limit
        -- among the live ones. A live lease without a grant (taken while the
        -- limit was unknown) sends freely until it refreshes: count it as an
        -- equal share so the others do not claim its part meanwhile.
        DELETE FROM shoal.leases WHERE model = r.model AND expires_at <= v_now;
        SELECT count(*), array_agg(demand_rps), array_agg(demand_tps)
          INTO v_n, v_dem_r, v_dem_t
          FROM shoal.leases
         WHERE model = r.model AND worker_id <> p_worker;
        SELECT coalesce(sum(coalesce(granted_rps, v_lim_r / (v_n + 1))), 0),
               coalesce(sum(coalesce(granted_tps, v_lim_t / (v_n + 1))), 0)
          INTO v_others_r, v_others_t
          FROM shoal.leases
         WHERE model = r.model AND worker_id <> p_worker;

        v_grant_r := NULL;
        v_grant_t := NULL;
        IF v_lim_r IS NOT NULL THEN
            v_grant_r := least(shoal.fleet_fair_share(v_lim_r,
                                   (r.row->>'demand_rps')::double precision, v_dem_r),
                               greatest(v_lim_r - v_others_r, 0));
        END IF;
        IF v_lim_t IS NOT NULL THEN
            v_grant_t := least(shoal.fleet_fair_share(v_lim_t,
                                   (r.row->>'demand_tps')::double precision, v_dem_t),
                               greatest(v_lim_t - v_others_t, 0));
        END IF;

        INSERT INTO shoal.leases AS x (worker_id, model, demand_rps, demand_tps, granted_rps,
                                       granted_tps, expires_at, sent_last, ok_last,
                                       rate_limited_last, updated_at)
        VALUES (p_worker, r.model,
                greatest(coalesce((r.row->>'demand_rps')::double precision, 0), 0),
                greatest(coalesce((r.row->>'demand_tps')::double precision, 0), 0),
                v_grant_r, v_grant_t,
                v_now + greatest(p_ttl_ms, 100) * interval '1 millisecond',
                v_sent, v_ok, v_429, v_now)
        ON CONFLICT (worker_id, model) DO UPDATE
           SET demand_rps = excluded.demand_rps, demand_tps = excluded.demand_tps,
               granted_rps = excluded.granted_rps, granted_tps = excluded.granted_tps,
               expires_at = excluded.expires_at, sent_last = excluded.sent_last,
               ok_last = excluded.ok_last, rate_limited_last = excluded.rate_limited_last,
               updated_at = excluded.updated_at;

        v_out := v_out || jsonb_build_object(r.model, jsonb_build_object(
            'granted_rps', v_grant_r,
            'granted_tps', v_grant_t,
            'limit_rps', v_lim_r,
            'limit_tps', v_lim_t,
            'source', l.limit_source,
            'learned', l.limit_source = 'learned',
            'workers', v_n + 1,
            'hold_ms', CASE WHEN l.hold_until > v_now
                            THEN extract(epoch FROM l.hold_until - v_now) * 1000 ELSE 0 END,
            'hold_until', CASE WHEN l.hold_until > v_now
                               THEN extract(epoch FROM l.hold_until) END));
    END LOOP;
    RETURN v_out;
END $$;

-- Removes a worker's leases at once (a clean stop), so its share returns
-- without waiting for the leases to expire. Returns how many it removed.
CREATE FUNCTION shoal.fleet_leave(p_worker text) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    v_n integer;
BEGIN
    DELETE FROM shoal.leases
     WHERE (worker_id, model) IN (SELECT worker_id, model FROM shoal.leases
                                   WHERE worker_id = p_worker ORDER BY model FOR UPDATE);
    GET DIAGNOSTICS v_n = ROW_COUNT;
    RETURN v_n;
END $$;

-- What operators look at: per model, the limit in force (per second and per
-- minute) and where it comes from, configured, header and learned rates, the
-- live workers and what they were granted, and the latest hold and 429.
CREATE VIEW shoal.lane_status AS
SELECT l.model,
       shoal.fleet_limit(l.header_rpm, l.config_rpm, l.learned_rps) AS limit_rps,
       shoal.fleet_limit(l.header_rpm, l.config_rpm, l.learned_rps) * 60 AS limit_rpm,
       shoal.fleet_limit(l.header_tpm, l.config_tpm, l.learned_tps) AS limit_tps,
       shoal.fleet_limit(l.header_tpm, l.config_tpm, l.learned_tps) * 60 AS limit_tpm,
       l.limit_source,
       l.config_rpm, l.config_tpm, l.header_rpm, l.header_tpm,
       l.learned_rps, l.learned_tps,
       l.served_rps, l.served_tps,
       coalesce(s.workers, 0) AS live_workers,
       s.granted_rps, s.granted_tps,
       s.demand_rps, s.demand_tps,
       CASE WHEN l.hold_until > now() THEN l.hold_until END AS hold_until,
       l.last_429_at, l.last_decrease_at, l.decreases,
       l.noise_share, -- share of calls refused whatever the rate (not taken as the limit)
       l.sent_total, l.ok_total, l.rate_limited_total, l.tokens_total,
       l.updated_at
  FROM shoal.lanes l
  LEFT JOIN (SELECT model, count(*) AS workers, sum(granted_rps) AS granted_rps,
                    sum(granted_tps) AS granted_tps, sum(demand_rps) AS demand_rps,
                    sum(demand_tps) AS demand_tps
               FROM shoal.leases WHERE expires_at > now() GROUP BY model) s
    ON s.model = l.model;
