-- Random 429s are told from a limit at any rate.
--
-- A provider that refuses a share of calls whatever the rate (an overloaded
-- one, or the fault-mix test's 10%) is not a limit, and lowering the rate for
-- it only starves the fleet. 026 told them apart by comparing one window of at
-- least 10 calls at half the rate with the window that began the run of
-- decreases, a run that ended 10 s after its last decrease. Below about 2
-- calls a second neither held: a window holding a 429 closes after 5 s with
-- fewer calls, decreases come more than 10 s apart, and the share that began
-- the run came from one window chosen for holding a 429 (2 of 11 where the
-- provider refused 10%). Each random 429 cut the rate by its window's share:
-- a lane fell from 3 calls a second to 0.13 and a 120-task job was not done
-- after 4 minutes. A wrong configured limit four times the real one could
-- also be taken for noise (50% refused at half the rate against 75%).
--
-- Now decisions rest on levels: a rate held while at least 40 of its calls
-- (20 if none is refused; at most 2 minutes) are pooled, however slowly they
-- come. The share of a level is unbiased, where a window's is chosen for
-- holding a 429.
--   * A window with 429s above the noise bound starts measuring the rate as
--     it is (it may grow meanwhile). Only a window far over (3 or more 429s,
--     over 35%, on a lane with no noise level) or a lane with no rate yet is
--     cut at once.
--   * A level refused no more than the noise level allows (or fewer than 2)
--     ends the measuring: the rate grows again from there, and the noise
--     level moves toward the level's share (so it falls when noise goes).
--   * Otherwise the rate is cut by the level's share (at least 15%) and the
--     new level measured. If it is refused at least 0.7 times as often as
--     the one above, both at most 40%, that is noise: a limit refusing a
--     share s of calls sent at r serves r (1 - s), which is where the cut
--     lands (0.85 r when s < 0.15), and refuses next to nothing there. Their
--     mean share becomes the noise level, and the last cut is undone.
--   * A level refused over 50% (and above the noise bound) after 10 calls is
--     cut at once.
-- A deterministic simulation of a lane (tests/unit/fleet_test.c) checks
-- random 10% and 20% refusals from 1 and 3 calls a second, a 5 calls a
-- second limit from slow start and from a configured limit four times too
-- high, with and without noise.
--
-- The write-back of a lane is its own function, shoal.fleet_save, so a later
-- column needs no new shoal.fleet_lease.

ALTER TABLE shoal.lanes
    ADD COLUMN level_at   timestamptz,                     -- a level measured since (NULL: none)
    ADD COLUMN level_sent bigint NOT NULL DEFAULT 0,       -- calls made at it
    ADD COLUMN level_429  bigint NOT NULL DEFAULT 0,       -- and refused (outside holds)
    ADD COLUMN probe_sent bigint NOT NULL DEFAULT 0;       -- calls of the levels before

COMMENT ON COLUMN shoal.lanes.probe_rps IS
    'rate of the level measured before the current one (calls/s)';
COMMENT ON COLUMN shoal.lanes.probe_share IS
    'share of calls refused on the levels of this run before the current one';
COMMENT ON COLUMN shoal.lanes.noise_share IS
    'share of calls refused whatever the rate (not taken as the limit)';

-- Writes lane l back (locked by the caller).
CREATE FUNCTION shoal.fleet_save(l shoal.lanes)
RETURNS void
LANGUAGE sql AS $$
    UPDATE shoal.lanes
       SET config_rpm = l.config_rpm, config_tpm = l.config_tpm,
           header_rpm = l.header_rpm, header_tpm = l.header_tpm,
           learned_rps = l.learned_rps, learned_tps = l.learned_tps,
           limit_source = l.limit_source, hold_until = l.hold_until,
           last_decrease_at = l.last_decrease_at, last_increase_at = l.last_increase_at,
           last_429_at = l.last_429_at, pending_429 = l.pending_429,
           probe_rps = l.probe_rps, probe_share = l.probe_share, level_at = l.level_at,
           level_sent = l.level_sent, level_429 = l.level_429,
           probe_sent = l.probe_sent,
           noise_share = l.noise_share,
           win_start = l.win_start, win_sent = l.win_sent, win_ok = l.win_ok,
           win_429 = l.win_429, win_tokens = l.win_tokens,
           served_rps = l.served_rps, served_tps = l.served_tps,
           sent_total = l.sent_total, ok_total = l.ok_total,
           rate_limited_total = l.rate_limited_total, tokens_total = l.tokens_total,
           decreases = l.decreases, updated_at = l.updated_at
     WHERE model = l.model
$$;

-- A cut: lower the rate that binds (tokens only when they are known,
-- nearly used up and requests are not; otherwise requests, which lowers
-- tokens with them) by share p_share, hold the fleet briefly, and start
-- measuring the new level.
CREATE FUNCTION shoal.fleet_cut(l shoal.lanes, p_now timestamptz, p_share double precision,
                                p_sent_rps double precision)
RETURNS shoal.lanes
LANGUAGE plpgsql AS $$
DECLARE
    v_lim_r double precision := shoal.fleet_limit(l.header_rpm, l.config_rpm, l.learned_rps);
    v_lim_t double precision := shoal.fleet_limit(l.header_tpm, l.config_tpm, l.learned_tps);
BEGIN
    IF v_lim_t IS NOT NULL AND l.served_tps >= 0.8 * v_lim_t
       AND (v_lim_r IS NULL OR p_sent_rps < 0.8 * v_lim_r) THEN
        l.learned_tps := shoal.fleet_decrease(v_lim_t, l.served_tps, p_share);
    ELSE
        l.learned_rps := shoal.fleet_decrease(v_lim_r, l.served_rps, p_share);
    END IF;
    l.last_decrease_at := p_now;
    l.pending_429 := 0;
    l.decreases := l.decreases + 1;
    -- A short pause lets the provider's bucket refill a little and every
    -- worker pick up the lower rate before sending again.
    l.hold_until := greatest(l.hold_until, p_now + interval '500 milliseconds');
    l.level_at := p_now;
    l.level_sent := 0;
    l.level_429 := 0;
    RETURN l;
END $$;

-- One refresh's worth of the AIMD of 004 on lane l, at p_now, with the
-- fleet's reported demand p_demand_rps: closes the window when it is due
-- and holds enough calls, and returns the lane.
CREATE OR REPLACE FUNCTION shoal.fleet_window(l shoal.lanes, p_now timestamptz,
                                              p_demand_rps double precision)
RETURNS shoal.lanes
LANGUAGE plpgsql AS $$
DECLARE
    v_elapsed  double precision := extract(epoch FROM p_now - l.win_start);
    v_lim_r    double precision := shoal.fleet_limit(l.header_rpm, l.config_rpm, l.learned_rps);
    v_sent_rps double precision;
    v_share    double precision;
    v_bound    double precision;
    v_lshare   double precision;
    v_cutlevel boolean;
    v_grow     boolean := false;
    v_cut      boolean := false;
    v_end      boolean := false;
    -- No decision within a second of the last cut.
    v_decided  boolean := l.last_decrease_at IS NULL
                          OR p_now - l.last_decrease_at >= interval '1 second';
    v_quiet    interval := interval '2 seconds';
BEGIN
    -- When a window closes, as in 026.
    IF NOT (v_elapsed >= 1.0
            OR (v_elapsed >= 0.25 AND l.pending_429 > 0 AND v_lim_r IS NOT NULL AND v_decided))
       OR (l.pending_429 > 0 AND l.win_sent < 10 AND v_elapsed < 5.0) THEN
        RETURN l;
    END IF;

    l.served_rps := l.win_ok / v_elapsed;
    l.served_tps := l.win_tokens / v_elapsed;
    v_sent_rps := l.win_sent / v_elapsed;
    v_share := l.win_429::double precision / greatest(l.win_sent, 1);
    v_bound := shoal.fleet_noise_bound(l.noise_share, l.win_sent);

    IF l.level_at IS NOT NULL THEN
        -- Measuring a level: its calls are pooled (429s reported during a
        -- hold answer calls sent before the cut: pending_429 leaves them
        -- out). A level a cut set keeps its rate; one a lone 429 set may
        -- grow meanwhile (a limit's share only rises with it).
        v_cutlevel := l.last_decrease_at IS NOT NULL AND l.last_decrease_at >= l.level_at;
        -- A cut's level counts from 1.5 s after it: answers to calls sent
        -- before it (reported at the workers' next refresh, which may come
        -- after the hold) are not its own.
        IF NOT v_cutlevel OR p_now - l.last_decrease_at >= interval '1.5 seconds' THEN
            l.level_sent := l.level_sent + l.win_sent;
            l.level_429 := l.level_429 + l.pending_429;
        END IF;
        v_lshare := l.level_429::double precision / greatest(l.level_sent, 1);
        IF ((l.level_sent >= 40 OR (l.level_sent >= 20 AND l.level_429 = 0))
            AND p_now - l.level_at >= interval '1 second')
           OR p_now - l.level_at > interval '2 minutes' THEN
            IF l.level_429 < 2 OR l.level_sent < 10
               OR v_lshare <= shoal.fleet_noise_bound(l.noise_share, l.level_sent) THEN
                -- Clean, or as noisy as the lane's noise level: grow again
                -- from here. A noise level follows what such levels show,
                -- so it falls when the noise goes.
                IF l.noise_share > 0 THEN
                    l.noise_share := l.noise_share
                                     + least(0.5, l.level_sent / 200.0) * (v_lshare - l.noise_share);
                END IF;
                v_end := true;
                v_grow := NOT v_cutlevel;
            ELSIF l.probe_share <= 0.4 AND v_lshare <= 0.4 AND v_lshare >= 0.5 * l.probe_share THEN
                -- Refused at least half as often as the levels above: noise.
                -- A limit L refusing s at r (s = 1 - L/r) is cut to
                -- r (1 - s) = L, or to 0.85 r < L when s < 0.15, and refuses
                -- next to nothing there. The share of all those levels is
                -- the noise level.
                l.noise_share := greatest(l.noise_share,
                                          (l.level_429 + l.probe_share * l.probe_sent)
                                          / (l.level_sent + l.probe_sent));
                -- The last cut was the noise's doing: undone (only the last:
                -- were this a limit after all, the rate should not leap).
                IF l.learned_rps < l.probe_rps THEN
                    l.learned_rps := shoal.fleet_cap(l.probe_rps, l.header_rpm, l.config_rpm);
                END IF;
                v_end := true;
            ELSE
                -- Refused more than noise allows: a limit, or noise not yet
                -- told apart from one. Step down by the refused share and
                -- measure again, compared with the levels so far.
                v_cut := true;
            END IF;
        ELSIF l.level_sent >= 10 AND l.level_429 >= 3 AND v_decided
              AND v_lshare > greatest(0.5, shoal.fleet_noise_bound(l.noise_share, l.level_sent)) THEN
            -- Far over: no need to wait for the whole level.
            v_cut := true;
        ELSIF NOT v_cutlevel AND l.noise_share = 0 AND l.level_429 >= 3 AND v_decided
              AND v_lshare > shoal.fleet_noise_bound(0, l.level_sent) THEN
            -- A lane that knows no noise, with three 429s at the rate as it
            -- is: cut now, as the whole level would.
            v_cut := true;
        ELSE
            v_grow := NOT v_cutlevel;
        END IF;
        IF v_cut THEN
            -- The levels of one run are pooled: a share of many calls is
            -- compared with the next level, not one level's.
            l.probe_rps := v_lim_r;
            l.probe_share := (coalesce(l.probe_share, 0) * l.probe_sent + l.level_429)
                             / (l.probe_sent + l.level_sent);
            l.probe_sent := l.probe_sent + l.level_sent;
            l := shoal.fleet_cut(l, p_now, v_lshare, v_sent_rps);
        ELSIF v_end THEN
            l.level_at := NULL;
            l.probe_rps := NULL;
            l.probe_share := NULL;
            l.probe_sent := 0;
        END IF;
    ELSIF l.pending_429 > 0 AND v_share > v_bound
          AND v_decided THEN
        -- A run of levels begins (the share of a window chosen for holding
        -- a 429 is not one of them).
        l.probe_rps := NULL;
        l.probe_share := NULL;
        l.probe_sent := 0;
        IF l.noise_share = 0 AND l.win_sent >= 10 AND l.pending_429 >= 3
           AND v_share > greatest(v_bound, 0.35) THEN
            -- Clearly over: cut at once (with no limit yet, to half the rate
            -- served), then measure the level the cut set. On a noisy lane
            -- one window says too little for that.
            l := shoal.fleet_cut(l, p_now, v_share, v_sent_rps);
        ELSE
            -- One window's few 429s: measure the rate as it is first (with
            -- no limit yet, as the fleet sends).
            l.level_at := p_now;
            l.level_sent := 0;
            l.level_429 := 0;
        END IF;
    ELSE
        v_grow := (l.last_429_at IS NULL OR p_now - l.last_429_at >= v_quiet
                   OR (l.noise_share > 0 AND v_share <= v_bound));
    END IF;
    IF v_grow AND (l.last_decrease_at IS NULL OR p_now - l.last_decrease_at >= v_quiet) THEN
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

-- As in 026, writing the lane back with shoal.fleet_save.
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
        PERFORM shoal.fleet_save(l);

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
