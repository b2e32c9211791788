-- Result cache (issue 7, 2.5): a chunk whose exact call was answered before
-- is answered from shoal.cache without a call.
--
-- The scheduler computes each chunk's key (common/cachekey.h: SHA-256 of the
-- provider, the provider's model name, the call parameters, system, the
-- rendered prompt and the output schema) when it is about to publish the
-- chunk's task, and hands a job's keys to shoal.cache_answer in one query:
-- hits are answered there (a result row marked cached, the task done, the
-- job's counters moved, the job announced to the mergers when that was its
-- last task), misses keep their key in shoal.tasks.cache_key and are
-- published. When a worker records a miss's answer (shoal.record_batch), the
-- trigger below stores it under that key. So whatever shape the workers'
-- batches take, the answer stored is exactly the row shoal.results got:
-- a validated answer of the task's own model. A fallback model's answer
-- (results.model_requested set) is not stored under the primary's key, and
-- output that failed validation never reaches shoal.results.
--
-- The TTL is the scheduler's (--cache-ttl-s): look-ups ignore older rows and
-- the reconciler deletes them in small batches (shoal.cache_expire).

CREATE TABLE shoal.cache (
    key          bytea PRIMARY KEY CHECK (length(key) = 32),
    output       text NOT NULL,
    model        text NOT NULL,            -- the alias whose answer this is
    tokens_in    integer NOT NULL DEFAULT 0,
    tokens_out   integer NOT NULL DEFAULT 0,
    cost_usd     double precision NOT NULL DEFAULT 0, -- what the call that made it cost
    created_at   timestamptz NOT NULL DEFAULT now(),
    hits         bigint NOT NULL DEFAULT 0,
    last_hit_at  timestamptz
);
CREATE INDEX cache_created_idx ON shoal.cache (created_at);

-- The key a published task's answer is stored under (NULL: not cached).
ALTER TABLE shoal.tasks ADD COLUMN cache_key bytea;
-- Results answered from the cache, not by a call of this job.
ALTER TABLE shoal.results ADD COLUMN cached boolean NOT NULL DEFAULT false;
-- Tasks of the job answered from the cache (counted in tasks_done too).
ALTER TABLE shoal.jobs ADD COLUMN tasks_cached integer NOT NULL DEFAULT 0;

-- One row per task answered from the cache: what its call would have cost
-- (the tokens and dollars of the call that made the entry).
CREATE TABLE shoal.cache_hits (
    task_id     text PRIMARY KEY REFERENCES shoal.tasks ON DELETE CASCADE,
    job_id      text NOT NULL,
    key         bytea NOT NULL,
    model       text NOT NULL,
    tokens_in   integer NOT NULL DEFAULT 0,
    tokens_out  integer NOT NULL DEFAULT 0,
    cost_usd    double precision NOT NULL DEFAULT 0,
    hit_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX cache_hits_job_idx ON shoal.cache_hits (job_id);

-- Answers chunks p_chunks of job p_job_id whose key (p_keys, hex, same
-- order) has an entry younger than p_ttl_s seconds; remembers the key of
-- every chunk looked up on its task. Only tasks not yet ended (pending, or
-- queued when the reconciler publishes a lost task again) are touched, and
-- nothing when the job is not running. Returns the chunks answered. Locks
-- the job row first, as shoal.record_batch does, so the two serialize on the
-- job's counters.
CREATE FUNCTION shoal.cache_answer(p_job_id text, p_chunks integer[], p_keys text[],
                                   p_ttl_s double precision)
RETURNS integer[]
LANGUAGE plpgsql AS $$
DECLARE
    v_hits integer[];
    v_ended boolean;
BEGIN
    PERFORM 1 FROM shoal.jobs WHERE job_id = p_job_id AND status = 'running' FOR UPDATE;
    IF NOT FOUND THEN
        RETURN '{}';
    END IF;

    WITH k AS (
        SELECT u.chunk, decode(u.hex, 'hex') AS key
        FROM unnest(p_chunks, p_keys) AS u(chunk, hex)
    ), t AS (
        SELECT t.task_id, t.chunk, k.key
        FROM k JOIN shoal.tasks t ON t.job_id = p_job_id AND t.chunk = k.chunk
        WHERE t.parent_task_id IS NULL AND t.status IN ('pending', 'queued')
    ), hit AS (
        SELECT t.task_id, t.chunk, t.key, c.output, c.model, c.tokens_in, c.tokens_out,
               c.cost_usd
        FROM t JOIN shoal.cache c ON c.key = t.key
        WHERE p_ttl_s > 0 AND c.created_at > now() - make_interval(secs => p_ttl_s)
    ), marked AS (
        UPDATE shoal.tasks x
        SET cache_key = t.key,
            status = CASE WHEN h.task_id IS NULL THEN x.status ELSE 'done' END,
            finished_at = CASE WHEN h.task_id IS NULL THEN x.finished_at ELSE now() END
        FROM t LEFT JOIN hit h ON h.task_id = t.task_id
        WHERE x.task_id = t.task_id
        RETURNING x.task_id
    ), res AS (
        INSERT INTO shoal.results (task_id, job_id, chunk, output, model, tokens_in, tokens_out,
                                   cached)
        SELECT h.task_id, p_job_id, h.chunk, h.output, h.model, 0, 0, true
        FROM hit h
        ON CONFLICT (task_id) DO NOTHING
    ), saved AS (
        INSERT INTO shoal.cache_hits (task_id, job_id, key, model, tokens_in, tokens_out,
                                      cost_usd)
        SELECT h.task_id, p_job_id, h.key, h.model, h.tokens_in, h.tokens_out, h.cost_usd
        FROM hit h
        ON CONFLICT (task_id) DO NOTHING
    ), counted AS (
        UPDATE shoal.cache c
        SET hits = c.hits + n.hits, last_hit_at = now()
        FROM (SELECT key, count(*) AS hits FROM hit GROUP BY key) n
        WHERE c.key = n.key
    )
    SELECT coalesce(array_agg(chunk ORDER BY chunk), '{}') INTO v_hits FROM hit;

    IF cardinality(v_hits) > 0 THEN
        UPDATE shoal.jobs
        SET tasks_done = tasks_done + cardinality(v_hits),
            tasks_cached = tasks_cached + cardinality(v_hits)
        WHERE job_id = p_job_id
        RETURNING tasks_done + tasks_failed >= tasks_total INTO v_ended;
        IF v_ended THEN
            PERFORM pg_notify('shoal_merge', p_job_id);
        END IF;
    END IF;
    RETURN v_hits;
END $$;

-- Stores the answers a statement just recorded in shoal.results under their
-- task's cache key: answers of the task's own model (no model_requested)
-- that were not themselves served from the cache. The entry's cost is the
-- successful call's, from shoal.attempts (recorded earlier in the same
-- statement by shoal.record_batch). A newer answer under the same key
-- replaces the entry and restarts its TTL. Rows are written in key order so
-- that concurrent batches storing the same keys cannot deadlock.
CREATE FUNCTION shoal.cache_store() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO shoal.cache AS c (key, output, model, tokens_in, tokens_out, cost_usd)
    SELECT DISTINCT ON (t.cache_key) t.cache_key, n.output, n.model, n.tokens_in, n.tokens_out,
           coalesce((SELECT a.cost_usd FROM shoal.attempts a
                     WHERE a.task_id = n.task_id AND a.outcome = 'ok'
                     ORDER BY a.finished_at DESC LIMIT 1), 0)
    FROM new_rows n JOIN shoal.tasks t ON t.task_id = n.task_id
    WHERE t.cache_key IS NOT NULL AND NOT n.cached AND n.model_requested IS NULL
    ORDER BY t.cache_key
    ON CONFLICT (key) DO UPDATE
    SET output = excluded.output, model = excluded.model, tokens_in = excluded.tokens_in,
        tokens_out = excluded.tokens_out, cost_usd = excluded.cost_usd, created_at = now();
    RETURN NULL;
END $$;

CREATE TRIGGER results_cache_store AFTER INSERT ON shoal.results
REFERENCING NEW TABLE AS new_rows
FOR EACH STATEMENT EXECUTE FUNCTION shoal.cache_store();

-- Deletes at most p_limit entries older than p_ttl_s seconds, oldest first,
-- skipping rows another session holds; returns how many went. Cheap enough
-- for every reconciler pass. p_ttl_s <= 0 (cache off) deletes nothing: other
-- schedulers may still use the entries.
CREATE FUNCTION shoal.cache_expire(p_ttl_s double precision, p_limit integer) RETURNS integer
LANGUAGE sql AS $$
    WITH gone AS (
        DELETE FROM shoal.cache
        WHERE key IN (SELECT key FROM shoal.cache
                      WHERE p_ttl_s > 0
                        AND created_at < now() - make_interval(secs => p_ttl_s)
                      ORDER BY created_at
                      LIMIT p_limit
                      FOR UPDATE SKIP LOCKED)
        RETURNING 1
    )
    SELECT count(*)::integer FROM gone;
$$;

-- What the cache saved, per job, tenant and model: chunks answered without a
-- call, and the tokens and dollars those calls took when they were made.
-- Sum it per tenant or model for the totals ("how much did the cache save
-- tenant acme this month?").
CREATE VIEW shoal.cache_savings AS
SELECT h.job_id, coalesce(j.tenant, '') AS tenant, h.model,
       count(*) AS hits,
       sum(h.tokens_in) AS tokens_in_saved,
       sum(h.tokens_out) AS tokens_out_saved,
       sum(h.cost_usd) AS usd_saved,
       min(h.hit_at) AS first_hit_at,
       max(h.hit_at) AS last_hit_at
FROM shoal.cache_hits h
JOIN shoal.jobs j ON j.job_id = h.job_id
GROUP BY h.job_id, j.tenant, h.model;
