-- Hard budgets: a job's budget_usd and its tenant's daily budget are reserved
-- before each model call and settled from the call's real cost, so what is
-- spent never passes either budget. A reservation is also the record of a
-- call in flight: a worker killed mid-call leaves its reservations behind,
-- and they count as spent at their worst case once they expire.
--
-- The invariant kept under each job's row lock (and each tenant's day row
-- lock): spent_usd + reserved_usd <= budget. A reservation is granted only
-- when it fits; settling replaces a reservation by the call's cost, which is
-- never more than the reservation (the worker reserves the call's worst
-- case: its input tokens counted generously, all of max_tokens as output).

-- A tenant's daily budget is its plan's daily_budget_usd (shoal.tenants and
-- shoal.tenant_plan, 015).

-- reserved_usd: held reservations of the job's calls. budget_stop: why a
-- call of the job was refused (its budget or its tenant's is exhausted);
-- the job's error starts with it when it ends (see jobs_budget_stop).
ALTER TABLE shoal.jobs
    ADD COLUMN reserved_usd double precision NOT NULL DEFAULT 0,
    ADD COLUMN budget_stop text;
-- reserved_usd: held reservations counted against the tenant's budget of
-- that (UTC) day.
ALTER TABLE shoal.tenant_spend
    ADD COLUMN reserved_usd double precision NOT NULL DEFAULT 0;

-- One row per call reserved. reservation_id is the attempt_id the call's
-- attempts row will have, so that row settles it. Statuses:
--   held      the call may be running; amount_usd counts as reserved
--   settled   its attempts row arrived; cost_usd is the call's cost
--   expired   no attempts row by expires_at (its worker died, or could not
--             write for that long): counted as spent at amount_usd; an
--             attempts row arriving later still settles it at its real cost
--   released  granted but never called (the job was cancelled meanwhile)
CREATE TABLE shoal.call_reservations (
    reservation_id text PRIMARY KEY,
    job_id         text NOT NULL,
    task_id        text NOT NULL,
    tenant         text NOT NULL,
    day            date NOT NULL,
    model          text NOT NULL,
    worker_id      text NOT NULL,
    amount_usd     double precision NOT NULL CHECK (amount_usd >= 0),
    status         text NOT NULL DEFAULT 'held'
                   CHECK (status IN ('held', 'settled', 'expired', 'released')),
    cost_usd       double precision,
    reserved_at    timestamptz NOT NULL DEFAULT now(),
    expires_at     timestamptz NOT NULL,
    settled_at     timestamptz
);
CREATE INDEX call_reservations_job_idx ON shoal.call_reservations (job_id);
CREATE INDEX call_reservations_held_idx ON shoal.call_reservations (expires_at)
    WHERE status = 'held';

-- Moves the amounts of reservations p_ids between the counters of their
-- jobs and tenant days: reserved_usd changes by p_reserved x amount and
-- spent_usd by p_spent x amount (each -1, 0 or 1), never below 0. Settling a
-- held reservation is (-1, 0), settling an expired one (0, -1) (its worst
-- case was counted as spent), expiring a held one (-1, 1). The caller holds
-- the job rows' locks; the tenant day rows are locked here in key order.
CREATE FUNCTION shoal.budget_shift(p_ids text[], p_reserved integer, p_spent integer)
RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM 1 FROM shoal.tenant_spend ts
    WHERE (ts.tenant, ts.day) IN (SELECT c.tenant, c.day FROM shoal.call_reservations c
                                  WHERE c.reservation_id = ANY (p_ids))
    ORDER BY ts.tenant, ts.day FOR UPDATE;
    UPDATE shoal.jobs j
    SET reserved_usd = greatest(j.reserved_usd + p_reserved * s.amt, 0),
        spent_usd = greatest(j.spent_usd + p_spent * s.amt, 0)
    FROM (SELECT job_id, sum(amount_usd) AS amt FROM shoal.call_reservations
          WHERE reservation_id = ANY (p_ids) GROUP BY job_id) s
    WHERE j.job_id = s.job_id;
    UPDATE shoal.tenant_spend ts
    SET reserved_usd = greatest(ts.reserved_usd + p_reserved * s.amt, 0),
        spent_usd = greatest(ts.spent_usd + p_spent * s.amt, 0)
    FROM (SELECT tenant, day, sum(amount_usd) AS amt FROM shoal.call_reservations
          WHERE reservation_id = ANY (p_ids) GROUP BY tenant, day) s
    WHERE ts.tenant = s.tenant AND ts.day = s.day;
END $$;

-- Expires held reservations past expires_at (of p_job_ids, or of every job
-- when NULL): each counts as spent at its worst case, on the job and on the
-- tenant's day. Returns how many expired. Safe to run from any number of
-- processes at once.
CREATE FUNCTION shoal.expire_reservations(p_job_ids text[] DEFAULT NULL) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    v_ids text[];
BEGIN
    PERFORM 1 FROM shoal.jobs
    WHERE job_id IN (SELECT job_id FROM shoal.call_reservations
                     WHERE status = 'held' AND expires_at < now()
                       AND (p_job_ids IS NULL OR job_id = ANY (p_job_ids)))
    ORDER BY job_id FOR UPDATE;
    SELECT array_agg(reservation_id ORDER BY reservation_id) INTO v_ids
    FROM shoal.call_reservations
    WHERE status = 'held' AND expires_at < now()
      AND (p_job_ids IS NULL OR job_id = ANY (p_job_ids));
    IF v_ids IS NULL THEN
        RETURN 0;
    END IF;
    PERFORM shoal.budget_shift(v_ids, -1, 1);
    UPDATE shoal.call_reservations
    SET status = 'expired', cost_usd = amount_usd, settled_at = now()
    WHERE reservation_id = ANY (v_ids);
    RETURN array_length(v_ids, 1);
END $$;

-- Settles the reservations of the calls p_attempts records (attempts rows as
-- record_batch takes them; a row's attempt_id is its reservation_id): held
-- ones leave reserved_usd, expired ones give their worst case back to
-- spent_usd, and record_batch then adds each call's real cost as for any
-- call. A reservation settles once; rows without one change nothing. The
-- caller holds the job rows' locks.
CREATE FUNCTION shoal.settle_reservations(p_attempts jsonb) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    v_held    text[];
    v_expired text[];
BEGIN
    SELECT array_agg(c.reservation_id ORDER BY c.reservation_id)
               FILTER (WHERE c.status = 'held'),
           array_agg(c.reservation_id ORDER BY c.reservation_id)
               FILTER (WHERE c.status = 'expired')
    INTO v_held, v_expired
    FROM shoal.call_reservations c
    WHERE c.reservation_id IN (SELECT a->>'attempt_id'
                               FROM jsonb_array_elements(coalesce(p_attempts, '[]')) a)
      AND c.status IN ('held', 'expired');
    IF v_held IS NULL AND v_expired IS NULL THEN
        RETURN 0;
    END IF;
    IF v_held IS NOT NULL THEN
        PERFORM shoal.budget_shift(v_held, -1, 0);
    END IF;
    IF v_expired IS NOT NULL THEN
        PERFORM shoal.budget_shift(v_expired, 0, -1);
    END IF;
    UPDATE shoal.call_reservations c
    SET status = 'settled', settled_at = now(), cost_usd = coalesce(a.cost_usd, 0)
    FROM (SELECT DISTINCT ON (attempt_id) attempt_id, cost_usd
          FROM jsonb_to_recordset(p_attempts) AS x(attempt_id text, cost_usd double precision)
          ORDER BY attempt_id) a
    WHERE c.reservation_id = a.attempt_id AND c.status IN ('held', 'expired');
    RETURN coalesce(array_length(v_held, 1), 0) + coalesce(array_length(v_expired, 1), 0);
END $$;

-- Reserves the worst-case cost of calls about to start, in one transaction.
-- p_rows: [{id, job_id, task_id, model, worker_id, amount_usd, ttl_ms}], id
-- being the attempt_id the call will have. p_release: ids of reservations
-- granted earlier whose call never started (they are released). Returns one
-- row per element of p_rows, in order (n from 1):
--   granted  reserved (or reserved already: a repeated request answers the
--            same); the call may start
--   wait     the job's or tenant's budget has room only once calls in
--            flight settle: ask again later
--   refused  the budget is spent: even with nothing in flight this call
--            could pass it; reason says which budget. The job's budget_stop
--            is set and a 'budget_exhausted' event queued, once per job.
-- Only jobs with budget_usd and tenants with daily_budget_usd are limited;
-- the worker asks only for those. Jobs are locked in job_id order, then
-- tenant day rows in key order, as record_batch does: no deadlocks.
CREATE FUNCTION shoal.reserve_calls(p_rows jsonb, p_release jsonb DEFAULT '[]')
RETURNS TABLE (n integer, verdict text, reason text)
LANGUAGE plpgsql AS $$
DECLARE
    v_day    date := (now() AT TIME ZONE 'UTC')::date;
    v_rel    text[];
    r        record;
    j        record;
    ts       record;
    v_budget double precision;
    v_daily  double precision;
    v_why    text;
BEGIN
    SELECT array_agg(c.reservation_id ORDER BY c.reservation_id) INTO v_rel
    FROM shoal.call_reservations c
    WHERE c.reservation_id IN (SELECT jsonb_array_elements_text(coalesce(p_release, '[]')))
      AND c.status = 'held';

    PERFORM 1 FROM shoal.jobs
    WHERE job_id IN (SELECT x->>'job_id' FROM jsonb_array_elements(coalesce(p_rows, '[]')) x
                     UNION
                     SELECT c.job_id FROM shoal.call_reservations c
                     WHERE c.reservation_id = ANY (coalesce(v_rel, '{}')))
    ORDER BY job_id FOR UPDATE;

    IF v_rel IS NOT NULL THEN
        PERFORM shoal.budget_shift(v_rel, -1, 0);
        UPDATE shoal.call_reservations
        SET status = 'released', cost_usd = 0, settled_at = now()
        WHERE reservation_id = ANY (v_rel);
    END IF;
    IF jsonb_array_length(coalesce(p_rows, '[]')) = 0 THEN
        RETURN;
    END IF;

    -- Held reservations of these jobs past their time count as spent now,
    -- so the checks below see them where they belong.
    PERFORM shoal.expire_reservations(ARRAY(SELECT DISTINCT x->>'job_id'
                                            FROM jsonb_array_elements(p_rows) x));

    INSERT INTO shoal.tenant_spend (tenant, day)
    SELECT DISTINCT coalesce(jb.tenant, ''), v_day
    FROM shoal.jobs jb
    WHERE jb.job_id IN (SELECT x->>'job_id' FROM jsonb_array_elements(p_rows) x)
    ORDER BY 1
    ON CONFLICT (tenant, day) DO NOTHING;
    PERFORM 1 FROM shoal.tenant_spend
    WHERE day = v_day
      AND tenant IN (SELECT coalesce(jb.tenant, '') FROM shoal.jobs jb
                     WHERE jb.job_id IN (SELECT x->>'job_id'
                                         FROM jsonb_array_elements(p_rows) x))
    ORDER BY tenant FOR UPDATE;

    FOR r IN
        SELECT x.ord::integer AS ord, x.e->>'id' AS id, x.e->>'job_id' AS job_id,
               x.e->>'task_id' AS task_id, x.e->>'model' AS model,
               x.e->>'worker_id' AS worker_id,
               greatest((x.e->>'amount_usd')::double precision, 0) AS amount,
               coalesce((x.e->>'ttl_ms')::bigint, 600000) AS ttl_ms
        FROM jsonb_array_elements(p_rows) WITH ORDINALITY AS x(e, ord)
        ORDER BY x.ord
    LOOP
        n := r.ord;
        reason := NULL;
        SELECT c.status INTO v_why FROM shoal.call_reservations c
        WHERE c.reservation_id = r.id;
        IF FOUND THEN
            verdict := CASE WHEN v_why = 'released' THEN 'refused' ELSE 'granted' END;
            IF verdict = 'refused' THEN
                reason := 'the reservation was released';
            END IF;
            RETURN NEXT;
            CONTINUE;
        END IF;

        SELECT jb.job_id, coalesce(jb.tenant, '') AS tenant, jb.spent_usd, jb.reserved_usd,
               (jb.settings->>'budget_usd')::double precision AS budget
        INTO j FROM shoal.jobs jb WHERE jb.job_id = r.job_id;
        IF NOT FOUND THEN
            verdict := 'refused';
            reason := 'no such job';
            RETURN NEXT;
            CONTINUE;
        END IF;
        v_budget := j.budget;
        -- the tenant's own plan, else the default plan '*' (015)
        SELECT t.daily_budget_usd INTO v_daily FROM shoal.tenant_plan(j.tenant) t;
        SELECT s.spent_usd, s.reserved_usd INTO ts FROM shoal.tenant_spend s
        WHERE s.tenant = j.tenant AND s.day = v_day;

        v_why := NULL;
        verdict := 'granted';
        IF v_budget IS NOT NULL AND j.spent_usd + r.amount > v_budget THEN
            verdict := 'refused';
            v_why := format('budget exhausted: the job spent $%s of its budget_usd $%s',
                            trim_scale(round(j.spent_usd::numeric, 6)), v_budget);
        ELSIF v_daily IS NOT NULL AND ts.spent_usd + r.amount > v_daily THEN
            verdict := 'refused';
            v_why := format('budget exhausted: tenant %s spent $%s of its daily budget $%s '
                            'today (UTC)', j.tenant,
                            trim_scale(round(ts.spent_usd::numeric, 6)), v_daily);
        ELSIF (v_budget IS NOT NULL AND j.spent_usd + j.reserved_usd + r.amount > v_budget)
              OR (v_daily IS NOT NULL
                  AND ts.spent_usd + ts.reserved_usd + r.amount > v_daily) THEN
            verdict := 'wait';
        END IF;

        IF verdict = 'refused' THEN
            reason := v_why;
            UPDATE shoal.jobs SET budget_stop = v_why
            WHERE job_id = r.job_id AND budget_stop IS NULL;
            IF FOUND THEN
                INSERT INTO shoal.event_outbox (job_id, payload)
                VALUES (r.job_id, jsonb_build_object('type', 'budget_exhausted',
                                                     'job_id', r.job_id, 'error', v_why,
                                                     'spent_usd', j.spent_usd,
                                                     'budget_usd', v_budget,
                                                     'tenant_daily_budget_usd', v_daily,
                                                     'ts', now()));
            END IF;
        ELSIF verdict = 'granted' THEN
            INSERT INTO shoal.call_reservations (reservation_id, job_id, task_id, tenant, day,
                                                 model, worker_id, amount_usd, expires_at)
            VALUES (r.id, r.job_id, r.task_id, j.tenant, v_day, r.model,
                    coalesce(r.worker_id, ''), r.amount,
                    now() + r.ttl_ms * interval '1 millisecond');
            UPDATE shoal.jobs SET reserved_usd = reserved_usd + r.amount
            WHERE job_id = r.job_id;
            UPDATE shoal.tenant_spend SET reserved_usd = reserved_usd + r.amount
            WHERE tenant = j.tenant AND day = v_day;
        END IF;
        RETURN NEXT;
    END LOOP;
END $$;

-- 009's record_batch (spend counters, then record_batch_rows) keeps its work
-- under this name; shoal.record_batch wraps it and first settles the
-- reservations of the calls the batch records, in the same transaction.
ALTER FUNCTION shoal.record_batch(jsonb, jsonb) RENAME TO record_batch_spend;

-- Records a batch of finished tasks and the calls behind them: everything
-- 009's record_batch does (now shoal.record_batch_spend), after settling the
-- calls' reservations (shoal.settle_reservations). The jobs are locked in
-- job_id order first, as record_batch_spend locks them.
CREATE FUNCTION shoal.record_batch(p_results jsonb, p_attempts jsonb) RETURNS SETOF text
LANGUAGE plpgsql AS $$
BEGIN
    IF jsonb_array_length(coalesce(p_attempts, '[]')) > 0 THEN
        PERFORM 1 FROM shoal.jobs
        WHERE job_id IN (SELECT r->>'job_id'
                         FROM jsonb_array_elements(coalesce(p_results, '[]')) r
                         UNION
                         SELECT a->>'job_id' FROM jsonb_array_elements(p_attempts) a)
        ORDER BY job_id FOR UPDATE;
        PERFORM shoal.settle_reservations(p_attempts);
    END IF;
    RETURN QUERY SELECT * FROM shoal.record_batch_spend(p_results, p_attempts);
END $$;

-- A job stopped by a budget says so when it ends: its error starts with the
-- reason (and keeps what merge_job wrote, e.g. how many tasks failed). A job
-- running again (shoal.resume_job) forgets the stop.
CREATE FUNCTION shoal.jobs_budget_stop() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.status = 'running' AND OLD.status <> 'running' THEN
        NEW.budget_stop := NULL;
    ELSIF OLD.status = 'running' AND NEW.status IN ('partial', 'failed')
          AND NEW.budget_stop IS NOT NULL THEN
        NEW.error := NEW.budget_stop || coalesce(' (' || NEW.error || ')', '');
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER jobs_budget_stop BEFORE UPDATE OF status ON shoal.jobs
    FOR EACH ROW EXECUTE FUNCTION shoal.jobs_budget_stop();

-- Each job with a budget, or whose tenant has a daily budget: what it may
-- spend, what it spent (calls recorded, plus expired reservations at their
-- worst case), what its calls in flight hold, and the room left.
CREATE VIEW shoal.job_budgets AS
SELECT j.job_id, coalesce(j.tenant, '') AS tenant, j.status,
       (j.settings->>'budget_usd')::double precision AS budget_usd,
       t.daily_budget_usd AS tenant_daily_budget_usd,
       j.spent_usd, j.reserved_usd,
       (j.settings->>'budget_usd')::double precision - j.spent_usd - j.reserved_usd
           AS room_usd,
       j.budget_stop
FROM shoal.jobs j
LEFT JOIN LATERAL shoal.tenant_plan(coalesce(j.tenant, '')) t ON true
WHERE j.settings ? 'budget_usd' OR t.daily_budget_usd IS NOT NULL;

-- Calls that no attempts row records: reservations still held (in flight,
-- or whose worker died and whose time has not run out yet) and expired ones
-- (their worker died mid-call or could not write for longer than the call's
-- timeout plus a margin). Calls a dead worker made:
--   SELECT worker_id, count(*) FROM shoal.calls_unrecorded GROUP BY 1;
-- Only calls of budgeted jobs are reserved, so only they are counted here.
CREATE VIEW shoal.calls_unrecorded AS
SELECT c.reservation_id, c.job_id, c.task_id, c.tenant, c.model, c.worker_id, c.status,
       c.amount_usd, c.reserved_at, c.expires_at,
       c.status = 'held' AND c.expires_at >= now() AS may_be_in_flight
FROM shoal.call_reservations c
WHERE c.status IN ('held', 'expired');
