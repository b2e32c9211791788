-- A lane with no rate at all takes one when its first level starts.
--
-- 027 measured a level begun by a window with few 429s "at the rate as it
-- is", which on a lane that knows no rate (no header, no configuration,
-- nothing learned) meant no limit. But the fleet was not sending without
-- limit then: each worker clamps its own lane after a 429 on such a lane
-- (worker/lane.c), so the level measured the clamps, found them clean, and
-- ended with the lane still knowing no rate. The workers stayed clamped at
-- what each had been answered before its first 429, as little as one call
-- a second: the ratelimit_blind benchmark served 5 to 18 of its 50 calls a
-- second in about one run in five.
--
-- Now such a level starts at the rate the window's calls were not refused
-- at (sent less refused, over the window): for a limit, about what the
-- provider served, which the level then cuts by its share like any other;
-- for random refusals, nearly the rate sent, which grows from there. The
-- grant that carries it replaces the workers' clamps.
--
-- The rule wraps 027's levels (renamed shoal.fleet_levels) rather than
-- repeating them: shoal.fleet_lease calls shoal.fleet_window by name.

ALTER FUNCTION shoal.fleet_window(shoal.lanes, timestamptz, double precision)
    RENAME TO fleet_levels;

CREATE FUNCTION shoal.fleet_window(l shoal.lanes, p_now timestamptz,
                                   p_demand_rps double precision)
RETURNS shoal.lanes
LANGUAGE plpgsql AS $$
DECLARE
    v_elapsed double precision := extract(epoch FROM p_now - l.win_start);
    r         shoal.lanes := shoal.fleet_levels(l, p_now, p_demand_rps);
BEGIN
    -- A level begun here without a cut (a cut sets its own rate), on a lane
    -- with no request rate.
    IF l.level_at IS NULL AND r.level_at = p_now
       AND r.last_decrease_at IS DISTINCT FROM p_now
       AND shoal.fleet_limit(r.header_rpm, r.config_rpm, r.learned_rps) IS NULL
       AND v_elapsed > 0 THEN
        r.learned_rps := greatest((l.win_sent - l.win_429) / v_elapsed, 1.0 / 60.0);
    END IF;
    RETURN r;
END $$;
