/*
 * The operator views of sql/007_engine_views.sql on a throwaway PostgreSQL
 * with every migration applied: known calls in shoal.attempts, lanes with
 * configured and learned limits, and jobs of two priorities; each view row
 * must show exactly the counts, percentiles, means and utilizations worked
 * out by hand below. Values are rounded to 4 decimals and compared as the
 * row's text, so every column is checked, NULLs (empty between commas)
 * included.
 */
#include <stdio.h>
#include <stdlib.h>

#include "stack/pgcluster.h"
#include "common/log.h"
#include "common/migrate.h"
#include "common/pg.h"
#include "tests/support/check.h"
#include "tests/support/sqlcheck.h"

/* Minute 10:00 and 10:01 of one day, UTC; calls are placed by second. */
#define BASE "'2026-01-01 10:00:00+00'::timestamptz"

/* Calls: (id, job, model, http, outcome, kind, latency, queue, in, out,
 * fallback_from, second sent). m1 in minute 10:00:
 *   a1-a3 ok (latency 100, 200, 400; a3 served for m2), a4 a 429,
 *   a5 truncated and retried, a6 a permanent failure without queue_ms,
 *   a7 a timeout; in minute 10:01 one ok call a8.
 * m2 in minute 10:00: a 500 for job jl, and a call whose job row is gone. */
static const char attempts_sql[] =
    "INSERT INTO shoal.attempts (attempt_id, task_id, job_id, attempt, model, worker_id, "
    "http_status, outcome, outcome_kind, latency_ms, queue_ms, tokens_in, tokens_out, "
    "fallback_from, started_at, finished_at) "
    "SELECT id, job || '/1', job, 1, model, 'w1', http, outcome, kind, lat, q, tin, tout, fb, "
    "       " BASE " + s * interval '1 second', " BASE " + s * interval '1 second' "
    "  FROM (VALUES "
    "  ('a1', 'jh', 'm1', 200, 'ok',     'ok',           100,  10,   100, 50,  NULL, 5),"
    "  ('a2', 'jh', 'm1', 200, 'ok',     'ok',           200,  30,   100, 50,  NULL, 10),"
    "  ('a3', 'jh', 'm1', 200, 'ok',     'ok',           400,  50,   200, 100, 'm2', 20),"
    "  ('a4', 'jl', 'm1', 429, 'retry',  'rate_limited', 5,    20,   0,   0,   NULL, 30),"
    "  ('a5', 'jl', 'm1', 200, 'retry',  'truncated',    1000, 40,   100, 500, NULL, 40),"
    "  ('a6', 'jl', 'm1', 400, 'failed', 'permanent',    7,    NULL, 0,   0,   NULL, 50),"
    "  ('a7', 'jl', 'm1', 0,   'retry',  'timeout',      3000, 60,   0,   0,   NULL, 59),"
    "  ('a8', 'jh', 'm1', 200, 'ok',     'ok',           50,   5,    10,  10,  NULL, 70),"
    "  ('a9', 'jl', 'm2', 500, 'retry',  'server_error', 20,   100,  0,   0,   NULL, 15),"
    "  ('a10', 'gone', 'm2', 200, 'ok',  'ok',           80,   7,    30,  20,  NULL, 25)"
    "  ) AS v(id, job, model, http, outcome, kind, lat, q, tin, tout, fb, s)";

/* One model_minute row as text, every column after model and minute. */
static const char model_minute_sql[] =
    "SELECT row(requests, ok, tokens_in, tokens_out, rate_limited, retries, failures, "
    "truncated, fallbacks, round(p50_ms::numeric, 4), round(p95_ms::numeric, 4), "
    "round(mean_queue_ms::numeric, 4), round(rpm_utilization::numeric, 4), "
    "round(tpm_utilization::numeric, 4), round(learned_rpm_utilization::numeric, 4), "
    "round(learned_tpm_utilization::numeric, 4))::text "
    "FROM shoal.model_minute WHERE model || ' ' || to_char(minute AT TIME ZONE 'UTC', "
    "'HH24:MI') = $1";

static const char queue_wait_sql[] =
    "SELECT row(worker_calls, round(worker_p50_ms::numeric, 4), "
    "round(worker_p95_ms::numeric, 4))::text "
    "FROM shoal.queue_wait WHERE coalesce(priority, 'none') || ' ' || "
    "to_char(minute AT TIME ZONE 'UTC', 'HH24:MI') = $1";

static void setup(shoal_pg_t *pg)
{
    sqlcheck_exec(pg,
                  "INSERT INTO shoal.jobs (job_id, priority, model, status) VALUES "
                  "('jh', 'high', 'm1', 'running'), ('jl', 'low', 'm1', 'running')",
                  NULL);
    /* m1: 100 rpm and 10000 tpm configured, 0.5/s learned (30 a minute), no
     * learned token rate; m2: nothing configured. */
    sqlcheck_exec(pg,
                  "INSERT INTO shoal.lanes (model, config_rpm, config_tpm, learned_rps) VALUES "
                  "('m1', 100, 10000, 0.5), ('m2', 0, 0, NULL)",
                  NULL);
    sqlcheck_exec(pg, attempts_sql, NULL);
}

static void test_model_minute(shoal_pg_t *pg)
{
    char v[512];

    assert_int_eq(sqlcheck_long(pg, "SELECT count(*) FROM shoal.model_minute", NULL), 3);

    /* m1 10:00: 7 calls, 3 ok; tokens 500 in, 700 out; one 429; retries a4,
     * a5, a7; one failure; one truncated; one fallback. ok latencies 100,
     * 200, 400: p50 200, p95 200 + 0.9 * 200 = 380. Queue of the six calls
     * with one: 210 / 6 = 35. 7 / 100 rpm, 1200 / 10000 tpm, 7 / 30 learned,
     * no learned token rate. */
    sqlcheck_text(pg, model_minute_sql, "m1 10:00", v, sizeof(v));
    assert_str_eq(v, "(7,3,500,700,1,3,1,1,1,200.0000,380.0000,35.0000,0.0700,0.1200,0.2333,)");

    /* m1 10:01: one ok call of 20 tokens. */
    sqlcheck_text(pg, model_minute_sql, "m1 10:01", v, sizeof(v));
    assert_str_eq(v, "(1,1,10,10,0,0,0,0,0,50.0000,50.0000,5.0000,0.0100,0.0020,0.0333,)");

    /* m2 10:00: no limits configured or learned, so no utilization; the one
     * ok call sets both percentiles; queue (100 + 7) / 2. */
    sqlcheck_text(pg, model_minute_sql, "m2 10:00", v, sizeof(v));
    assert_str_eq(v, "(2,1,30,20,0,1,0,0,0,80.0000,80.0000,53.5000,,,,)");

    /* A model with calls and no lane row still shows, without utilization. */
    sqlcheck_exec(pg,
                  "INSERT INTO shoal.attempts (attempt_id, task_id, job_id, attempt, model, "
                  "worker_id, http_status, outcome, latency_ms, started_at, finished_at) VALUES "
                  "('b1', 'jh/2', 'jh', 1, 'm3', 'w1', 200, 'ok', 30, " BASE ", " BASE ")",
                  NULL);
    sqlcheck_text(pg, model_minute_sql, "m3 10:00", v, sizeof(v));
    assert_str_eq(v, "(1,1,0,0,0,0,0,0,0,30.0000,30.0000,,,,,)");
    sqlcheck_exec(pg, "DELETE FROM shoal.attempts WHERE attempt_id = 'b1'", NULL);

    /* A learned token rate shows as its own utilization: 1200 / (10 * 60). */
    sqlcheck_exec(pg, "UPDATE shoal.lanes SET learned_tps = 10 WHERE model = 'm1'", NULL);
    sqlcheck_text(pg,
                  "SELECT round(learned_tpm_utilization::numeric, 4)::text FROM "
                  "shoal.model_minute WHERE model = 'm1' AND minute = " BASE,
                  NULL, v, sizeof(v));
    assert_str_eq(v, "2.0000");
    sqlcheck_exec(pg, "UPDATE shoal.lanes SET learned_tps = NULL WHERE model = 'm1'", NULL);
}

/* The worker-side wait (queue_ms), which 007 named p50_ms/p95_ms and 012
 * moved to worker_*: publish-to-call is checked in opsviews_test.c. */
static void test_queue_wait(shoal_pg_t *pg)
{
    char v[256];

    assert_int_eq(sqlcheck_long(pg, "SELECT count(*) FROM shoal.queue_wait", NULL), 4);

    /* high 10:00: a1-a3 waited 10, 30, 50: p50 30, p95 30 + 0.9 * 20 = 48. */
    sqlcheck_text(pg, queue_wait_sql, "high 10:00", v, sizeof(v));
    assert_str_eq(v, "(3,30.0000,48.0000)");
    sqlcheck_text(pg, queue_wait_sql, "high 10:01", v, sizeof(v));
    assert_str_eq(v, "(1,5.0000,5.0000)");

    /* low 10:00: a4, a5, a7 (20, 40, 60; a6 has none) and a9 (100):
     * p50 40 + 0.5 * 20 = 50, p95 60 + 0.85 * 40 = 94. */
    sqlcheck_text(pg, queue_wait_sql, "low 10:00", v, sizeof(v));
    assert_str_eq(v, "(4,50.0000,94.0000)");

    /* The call whose job row is gone has no priority. */
    sqlcheck_text(pg, queue_wait_sql, "none 10:00", v, sizeof(v));
    assert_str_eq(v, "(1,7.0000,7.0000)");
}

int main(void)
{
    char err[512];
    int applied = 0;

    shoal_log_init("views_test", SHOAL_LOG_WARN, 0);
    shoal_pgcluster_t *cluster = shoal_pgcluster_new(NULL, err, sizeof(err));
    if (!cluster)
        test_fail("cannot start PostgreSQL: %s", err);
    shoal_pg_t *pg = shoal_pg_new(shoal_pgcluster_url(cluster), "views_test");
    assert_true(pg != NULL);
    if (shoal_migrate_apply(pg, &applied, err, sizeof(err)) != SHOAL_OK)
        test_fail("migrations: %s", err);
    assert_int_ge(applied, 7);

    setup(pg);
    test_model_minute(pg);
    test_queue_wait(pg);

    shoal_pg_destroy(pg);
    shoal_pgcluster_destroy(cluster);
    printf("views_test: ok\n");
    return 0;
}
