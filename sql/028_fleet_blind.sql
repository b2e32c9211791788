-- Blind lanes: a first rate, and noise told from a limit more carefully.
--
-- 027 measured a level begun by a window with few 429s "at the rate as it
-- is", which on a lane that knows no rate (no header, no configuration,
-- nothing learned) meant no limit. But the fleet was not sending without
-- limit then: each worker clamps its own lane after a 429 on such a lane
-- (worker/lane.c), so the level measured the clamps, found them clean, and
-- ended with the lane still knowing no rate. The workers stayed clamped at
-- what each had been answered before its first 429, as little as one call
-- a second: the ratelimit_blind benchmark served 5 to 18 of its 50 calls a
-- second in about one run in five. Now a lane with no rate is cut at once
-- by its first window with 429s above the noise level, to half what the
-- fleet was served, as the workers hold themselves.
--
-- Noise could also be recognised where a limit spoke (one blind run in
-- four of a first version of this migration, whose levels started above
-- the limit; 027's rules allow it too): the share of a level cut early
-- (at its third 429, from 24 calls) or measured while the provider's burst
-- allowance ran out understates the limit's, so its cut lands above the
-- limit and the next level still refuses, at least half as often (0.074
-- after 0.125 seen), or more often (0.356 after 0.162). Taken for noise of
-- 9 to 24%, that let the lane send into the limit: 9 to 10% 429s. Now noise
-- needs levels above of at least 40 calls and a share no more than chance
-- allows above theirs (shoal.fleet_noise_bound), besides at least half of
-- it (as in 027's code; its header says 0.7).
--
-- The first level of a run has no levels above it, so it cannot be noise:
-- with three 429s above the noise bound of a lane that knows no noise, it
-- is cut at once as a level a lone 429 began already was. A first cut from
-- a window holding a provider's burst allowance lands above the limit (68
-- calls a second for a limit of 50 seen); its level cost some 30 429s
-- while 40 calls were pooled.
--
-- The rest is 027's shoal.fleet_window as it was.

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
            ELSIF l.probe_sent >= 40 AND l.probe_share <= 0.4 AND v_lshare <= 0.4
                  AND v_lshare >= 0.5 * l.probe_share
                  AND v_lshare <= shoal.fleet_noise_bound(l.probe_share, l.level_sent) THEN
                -- Refused at least half as often as the levels above, and
                -- not more often than chance allows: noise. A limit
                -- L refusing s at r (s = 1 - L/r) is cut to r (1 - s) = L,
                -- or to 0.85 r < L when s < 0.15, and refuses next to nothing
                -- there. The share of all those levels is the noise level.
                -- The levels above must hold a level's worth of calls (one
                -- cut early stopped at its third 429) and the share may not
                -- have grown beyond chance: a provider's burst allowance
                -- running out makes a limit's share grow.
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
        ELSIF (NOT v_cutlevel OR l.probe_sent = 0) AND l.noise_share = 0
              AND l.level_429 >= 3 AND v_decided
              AND v_lshare > shoal.fleet_noise_bound(0, l.level_sent) THEN
            -- A lane that knows no noise, with three 429s at the rate as it
            -- is, or at the first level of a run (nothing to compare it
            -- with: noise needs levels above it): cut now, as the whole
            -- level would.
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
        IF (l.noise_share = 0 AND l.win_sent >= 10 AND l.pending_429 >= 3
            AND v_share > greatest(v_bound, 0.35))
           OR v_lim_r IS NULL THEN
            -- Clearly over, or with no rate yet: cut at once (with no rate,
            -- to half the rate served, as each worker already holds itself
            -- to half what it was answered), then measure the level the cut
            -- set. On a noisy lane one window says too little for that.
            l := shoal.fleet_cut(l, p_now, v_share, v_sent_rps);
        ELSE
            -- One window's few 429s: measure the rate as it is first.
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
