-- Learned rates decided on enough calls.
--
-- A lane's window closed every second whatever it held, so at the start of a
-- job (or on a slow lane) a decrease could rest on two or three calls: one
-- 429 among two answers is a refused share of 50%, and with no limit known
-- the learned rate became half of a "served rate" measured over a window
-- that was mostly idle before the first call. A provider refusing 10% of
-- calls at any rate (the fault-mix test) could so be learned at half a call
-- a second, from which the additive increase needs minutes to climb back,
-- and the noise level (004) was never recognised: the share that began the
-- run of decreases was that 50%.
--
-- Once the noise level was known, a window of ten calls with three 429s
-- (one window in ten or so at 15% noise) still counted as "above the noise"
-- and lowered the rate; and the rate grew back only while the fleet sent at
-- 80% of it, which a fleet held by Retry-After after each of those 429s never
-- does. The learned rate only went down, to about a call a second.
--
-- Now:
--   * a window holding a 429 but fewer than 10 calls stays open (up to 5 s,
--     so a lane limited to a few calls a minute still decides), so no
--     decision rests on a handful of answers;
--   * a window that had no calls starts again when calls are first
--     reported, at the reporting worker's previous refresh (the calls it
--     reports were made since then), so an idle spell before a job does not
--     dilute the rate served;
--   * "above the noise" allows for the window's size: the noise share plus
--     two standard deviations of a share of that many calls (and 1%), so a
--     small window's chance excess lowers nothing while a limit, which
--     refuses far more, still does;
--   * the rate grows back while the fleet sends at 80% of it or has more
--     work waiting than it allows (the workers' reported demand).
-- The window's logic is its own function (shoal.fleet_window), so a later
-- change to it need not redefine the whole of shoal.fleet_lease.

-- The highest 429 share of p_calls calls that is still the lane's noise
-- level p_noise speaking: two standard deviations above it, and 1%.
CREATE FUNCTION shoal.fleet_noise_bound(p_noise double precision, p_calls bigint)
RETURNS double precision
LANGUAGE sql IMMUTABLE AS $$
    SELECT p_noise + 2 * sqrt(p_noise * (1 - least(p_noise, 1)) / greatest(p_calls, 1)) + 0.01
$$;

-- One refresh's worth of the AIMD of 004 on lane l, at p_now, with the
-- fleet's reported demand p_demand_rps: closes the window when it is due
-- and holds enough calls, and returns the lane.
CREATE FUNCTION shoal.fleet_window(l shoal.lanes, p_now timestamptz,
                                   p_demand_rps double precision)
RETURNS shoal.lanes
LANGUAGE plpgsql AS $$
DECLARE
    v_elapsed  double precision := extract(epoch FROM p_now - l.win_start);
    v_lim_r    double precision := shoal.fleet_limit(l.header_rpm, l.config_rpm, l.learned_rps);
    v_lim_t    double precision := shoal.fleet_limit(l.header_tpm, l.config_tpm, l.learned_tps);
    v_sent_rps double precision;
    v_share    double precision;
    v_bound    double precision;
    v_quiet    interval := interval '2 seconds';
BEGIN
    -- Decided when a window of a second (one refresh round of every worker)
    -- closes, or sooner after a 429 (workers refresh early on one) when a
    -- limit is in force, lowering the rate at most once a second; a 429
    -- waits for at least 10 calls (or 5 s) to judge by.
    IF NOT (v_elapsed >= 1.0
            OR (v_elapsed >= 0.25 AND l.pending_429 > 0 AND v_lim_r IS NOT NULL
                AND (l.last_decrease_at IS NULL
                     OR p_now - l.last_decrease_at >= interval '1 second')))
       OR (l.pending_429 > 0 AND l.win_sent < 10 AND v_elapsed < 5.0) THEN
        RETURN l;
    END IF;

    l.served_rps := l.win_ok / v_elapsed;
    l.served_tps := l.win_tokens / v_elapsed;
    v_sent_rps := l.win_sent / v_elapsed;
    v_share := l.win_429::double precision / greatest(l.win_sent, 1);
    -- 429s that even half the rate did not make rarer are not the limit
    -- speaking (a provider refusing a share of calls whatever the rate):
    -- lowering further would only starve the fleet. A limit cannot do that:
    -- above a limit L, sending r is refused 1 - L/r of the time, so halving r
    -- cuts the refused share steeply (and a refused share over 15% is
    -- answered by one step straight to L). Such a share becomes the lane's
    -- noise level; 429s up to about that level neither lower the rate nor
    -- stop it growing back.
    IF l.pending_429 > 0 AND l.win_sent >= 10 AND l.probe_rps IS NOT NULL
       AND v_lim_r IS NOT NULL AND v_lim_r <= 0.5 * l.probe_rps
       AND v_share >= 0.7 * l.probe_share AND v_share >= 0.02 THEN
        l.noise_share := greatest(l.noise_share, v_share);
        l.probe_rps := NULL;
    END IF;
    IF v_share < l.noise_share THEN
        l.noise_share := 0.98 * l.noise_share + 0.02 * v_share;
    END IF;
    v_bound := shoal.fleet_noise_bound(l.noise_share, l.win_sent);
    IF l.pending_429 > 0 AND v_share > v_bound
       AND (l.last_decrease_at IS NULL OR p_now - l.last_decrease_at >= interval '1 second') THEN
        -- A run of decreases begins after a quiet spell: remember where, to
        -- judge later whether lowering the rate helped.
        IF l.probe_rps IS NULL OR l.last_decrease_at IS NULL
           OR p_now - l.last_decrease_at > interval '10 seconds' THEN
            l.probe_rps := coalesce(v_lim_r, l.served_rps);
            l.probe_share := v_share;
        END IF;
        -- Tokens are the binding limit only when they are known, nearly used
        -- up and requests are not; otherwise lower requests, which lowers
        -- tokens with them.
        IF v_lim_t IS NOT NULL AND l.served_tps >= 0.8 * v_lim_t
           AND (v_lim_r IS NULL OR v_sent_rps < 0.8 * v_lim_r) THEN
            l.learned_tps := shoal.fleet_decrease(v_lim_t, l.served_tps, v_share);
        ELSE
            l.learned_rps := shoal.fleet_decrease(v_lim_r, l.served_rps, v_share);
        END IF;
        l.last_decrease_at := p_now;
        l.pending_429 := 0;
        l.decreases := l.decreases + 1;
        -- A short pause lets the provider's bucket refill a little and every
        -- worker pick up the lower rate before sending again.
        l.hold_until := greatest(l.hold_until, p_now + interval '500 milliseconds');
    ELSIF (l.last_429_at IS NULL OR p_now - l.last_429_at >= v_quiet
           OR (l.noise_share > 0 AND v_share <= v_bound))
          AND (l.last_decrease_at IS NULL OR p_now - l.last_decrease_at >= v_quiet) THEN
        -- Probe upwards only while the fleet uses the rate, or would with
        -- more (held back by a provider's Retry-After, say): an idle fleet
        -- learns nothing about the provider.
        IF l.learned_rps IS NOT NULL
           AND (v_sent_rps >= 0.8 * l.learned_rps
                OR (l.win_sent > 0 AND coalesce(p_demand_rps, 0) > l.learned_rps)) THEN
            l.learned_rps := l.learned_rps + greatest(l.learned_rps * 0.02, 1.0 / 60.0);
            l.last_increase_at := p_now;
        END IF;
        IF l.learned_tps IS NOT NULL AND l.served_tps >= 0.8 * l.learned_tps THEN
            l.learned_tps := l.learned_tps + greatest(l.learned_tps * 0.02, 1.0);
            l.last_increase_at := p_now;
        END IF;
        l.learned_rps := shoal.fleet_cap(l.learned_rps, l.header_rpm, l.config_rpm);
        l.learned_tps := shoal.fleet_cap(l.learned_tps, l.header_tpm, l.config_tpm);
    END IF;
    l.pending_429 := 0;
    l.win_start := p_now;
    l.win_sent := 0;
    l.win_ok := 0;
    l.win_429 := 0;
    l.win_tokens := 0;
    RETURN l;
END $$;

-- As in 004, with the window's decision in shoal.fleet_window (given the
-- fleet's demand, read with the other workers' leases, so those are read
-- before it) and a window that had no calls starting at the reporting
-- worker's previous refresh.
CREATE OR REPLACE FUNCTION shoal.fleet_lease(p_worker text, p_ttl_ms integer, p_rows jsonb)
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
    v_prev     timestamptz;
    v_demand   double precision;
    v_lim_r    double precision;
    v_lim_t    double precision;
    v_others_r double precision;
    v_others_t double precision;
    v_dem_r    double precision[];
    v_dem_t    double precision[];
    v_n        integer;
    v_grant_r  double precision;
    v_grant_t  double precision;
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

        -- The first calls into an empty window were made since this worker's
        -- previous refresh: the window starts there, not at an idle spell.
        IF l.win_sent = 0 AND v_sent > 0 THEN
            SELECT x.updated_at INTO v_prev FROM shoal.leases x
            WHERE x.worker_id = p_worker AND x.model = r.model;
            IF v_prev IS NOT NULL AND v_prev > l.win_start AND v_prev < v_now THEN
                l.win_start := v_prev;
            END IF;
        END IF;

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

        -- Leases: drop the expired ones of everyone, then read the live
        -- ones of the others: their demand, with this worker's, is the
        -- fleet's for the window; below, the limit is split among them.
        DELETE FROM shoal.leases WHERE model = r.model AND expires_at <= v_now;
        SELECT count(*), array_agg(demand_rps), array_agg(demand_tps), sum(demand_rps)
          INTO v_n, v_dem_r, v_dem_t, v_demand
          FROM shoal.leases
         WHERE model = r.model AND worker_id <> p_worker;
        v_demand := coalesce(v_demand, 0)
                    + greatest(coalesce((r.row->>'demand_rps')::double precision, 0), 0);
        l := shoal.fleet_window(l, v_now, v_demand);

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

        -- The limit split among the live leases. A live lease without a
        -- grant (taken while the limit was unknown) sends freely until it
        -- refreshes: count it as an equal share so the others do not claim
        -- its part meanwhile.
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
