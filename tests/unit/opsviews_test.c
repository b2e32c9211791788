/*
 * The views of sql/012_ops_views.sql on a throwaway PostgreSQL with every
 * migration applied: known jobs (accepted and rejected), tasks with publish
 * and end times, and model calls placed by the second; each view row must
 * show exactly the numbers worked out by hand below. Rows are compared as
 * text with values rounded to 4 decimals, so every column is checked, NULLs
 * (empty between commas) included.
 */
#include <stdio.h>
#include <stdlib.h>

#include "stack/pgcluster.h"
#include "common/log.h"
#include "common/migrate.h"
#include "common/pg.h"
#include "tests/support/check.h"
#include "tests/support/sqlcheck.h"

/* Minute 10:00 of one day, UTC; everything is placed by second from it. */
#define BASE "'2026-01-01 10:00:00+00'::timestamptz"
#define AT(s) BASE " + " #s " * interval '1 second'"

/* Jobs of tenant acme: ja (high, completed at second 40), jb (low, running),
 * jc (normal, running), jr (rejected, no finished_at); tenant zed has only a
 * rejected job. Calls of model m3 belong to a job whose rows are gone. */
static const char jobs_sql[] =
    "INSERT INTO shoal.jobs (job_id, tenant, priority, model, status, submitted_at, "
    "finished_at) VALUES "
    "('ja', 'acme', 'high', 'm1', 'completed', " BASE
    ", " AT(40) "),"
                "('jb', 'acme', 'low', 'm1', 'running', " BASE ", NULL),"
                "('jc', 'acme', 'normal', 'm2', 'running', " BASE ", NULL),"
                "('jr', 'acme', 'normal', 'm1', 'rejected', " BASE ", NULL),"
                "('jz', 'zed', 'normal', 'm1', 'rejected', " BASE ", NULL)";

/* Tasks: (id, job, chunk, status, published at second, ended at second).
 * jb/2 failed without a call (second 130, minute 10:02); jc/0 was taken by a
 * worker one second before the scheduler marked it queued. */
static const char tasks_sql[] =
    "INSERT INTO shoal.tasks (task_id, job_id, chunk, item_ids, status, queued_at, "
    "finished_at) "
    "SELECT id, job, chunk, ARRAY['i'], st, " BASE " + q * interval '1 second', "
    "       " BASE " + f * interval '1 second' "
    "  FROM (VALUES "
    "  ('ja/0', 'ja', 0, 'done',   1,  20),"
    "  ('ja/1', 'ja', 1, 'done',   1,  65),"
    "  ('jb/0', 'jb', 0, 'failed', 2,  50),"
    "  ('jb/1', 'jb', 1, 'queued', 2,  NULL),"
    "  ('jb/2', 'jb', 2, 'failed', 2,  130),"
    "  ('jc/0', 'jc', 0, 'queued', 10, NULL)"
    "  ) AS v(id, job, chunk, st, q, f)";

/* Calls: (id, task, attempt, model, http, outcome, kind, latency, queue,
 * in, out, cost, second sent, second ended).
 *   ja/0: x1 ok (1000 ms). ja/1: x2 a 429, then x3 ok (2000 ms), ending in
 *   minute 10:01. jb/0: x4 a 500, x5 a timeout that failed the task.
 *   jb/1: x6 ok on m2. jc/0: y1 ok on m2, sent before the task was marked
 *   queued. m3, at 11:00: one ok call of a second and four fast 429s. */
static const char attempts_sql[] =
    "INSERT INTO shoal.attempts (attempt_id, task_id, job_id, attempt, model, worker_id, "
    "http_status, outcome, outcome_kind, latency_ms, queue_ms, tokens_in, tokens_out, "
    "cost_usd, started_at, finished_at) "
    "SELECT id, task, split_part(task, '/', 1), att, model, 'w1', http, outcome, kind, lat, q, "
    "       tin, tout, cost, " BASE " + s * interval '1 second', "
    "       " BASE " + e * interval '1 second' "
    "  FROM (VALUES "
    "  ('x1', 'ja/0', 1, 'm1', 200, 'ok',     'ok',           1000, 50,   100, 10, 0.001,  3, 4),"
    "  ('x2', 'ja/1', 1, 'm1', 429, 'retry',  'rate_limited', 2,    100,  0,   0,  0,      6, 6),"
    "  ('x3', 'ja/1', 2, 'm1', 200, 'ok',     'ok',           2000, 10,   200, 20, 0.002,  59, 61),"
    "  ('x4', 'jb/0', 1, 'm1', 500, 'retry',  'server_error', 30,   400,  0,   0,  0,      12, 13),"
    "  ('x5', 'jb/0', 2, 'm1', 0,   'failed', 'timeout',      5000, 20,   0,   0,  0,      20, 25),"
    "  ('x6', 'jb/1', 1, 'm2', 200, 'ok',     'ok',           800,  5,    50,  5,  0.0005, 14, 15),"
    "  ('y1', 'jc/0', 1, 'm2', 200, 'ok',     'ok',           100,  NULL, 0,   0,  0,      9, 9),"
    "  ('z1', 'jm/0', 1, 'm3', 200, 'ok',     'ok',           1000, NULL, 10,  1,  0,      3600, "
    "3601),"
    "  ('z2', 'jm/0', 2, 'm3', 429, 'retry',  'rate_limited', 0.2,  NULL, 0,   0,  0,      3601, "
    "3601),"
    "  ('z3', 'jm/0', 3, 'm3', 429, 'retry',  'rate_limited', 0.2,  NULL, 0,   0,  0,      3602, "
    "3602),"
    "  ('z4', 'jm/0', 4, 'm3', 429, 'retry',  'rate_limited', 0.2,  NULL, 0,   0,  0,      3603, "
    "3603),"
    "  ('z5', 'jm/0', 5, 'm3', 429, 'retry',  'rate_limited', 0.2,  NULL, 0,   0,  0,      3604, "
    "3604)"
    "  ) AS v(id, task, att, model, http, outcome, kind, lat, q, tin, tout, cost, s, e)";

/* The one-row text of sql for key must be want. */
static void expect(shoal_pg_t *pg, const char *sql, const char *key, const char *want)
{
    char v[512];
    sqlcheck_text(pg, sql, key, v, sizeof(v));
    assert_str_eq(v, want);
}

static void test_throughput(shoal_pg_t *pg)
{
    static const char sql[] =
        "SELECT row(tasks_done, tasks_failed, calls, ok_calls, tokens_in, tokens_out, "
        "round(cost_usd::numeric, 4))::text FROM shoal.throughput "
        "WHERE to_char(minute AT TIME ZONE 'UTC', 'HH24:MI') = $1";
    assert_int_eq(sqlcheck_long(pg, "SELECT count(*) FROM shoal.throughput", NULL), 4);
    /* 10:00: ja/0 done, jb/0 failed; calls ended x1, x2, x4, x5, x6, y1 (ok
     * x1, x6, y1), tokens 150 in, 15 out, $0.0015. */
    expect(pg, sql, "10:00", "(1,1,6,3,150,15,0.0015)");
    /* 10:01: ja/1 done, x3 ended. */
    expect(pg, sql, "10:01", "(1,0,1,1,200,20,0.0020)");
    /* 10:02: a task that failed without any call still shows. */
    expect(pg, sql, "10:02", "(0,1,0,0,0,0,0.0000)");
    /* 11:00: calls whose task rows are gone still count as calls. */
    expect(pg, sql, "11:00", "(0,0,5,1,10,1,0.0000)");
}

static void test_queue_wait(shoal_pg_t *pg)
{
    static const char sql[] =
        "SELECT row(calls, round(p50_ms::numeric, 4), round(p95_ms::numeric, 4), "
        "round(max_ms::numeric, 4), worker_calls, round(worker_p50_ms::numeric, 4), "
        "round(worker_p95_ms::numeric, 4))::text FROM shoal.queue_wait "
        "WHERE coalesce(priority, 'none') || ' ' || "
        "to_char(minute AT TIME ZONE 'UTC', 'HH24:MI') = $1";
    /* m3's calls have neither a publish time nor a queue_ms: no row. */
    assert_int_eq(sqlcheck_long(pg, "SELECT count(*) FROM shoal.queue_wait", NULL), 3);
    /* high: ja/0 published at 1, first call at 3 (2000 ms); ja/1 at 1, first
     * call x2 at 6 (5000 ms; its retry x3 is not a first call). p50 3500,
     * p95 2000 + 0.95 * 3000 = 4850. Worker side: x1 50, x2 100, x3 10: p50
     * 50, p95 50 + 0.9 * 50 = 95. */
    expect(pg, sql, "high 10:00", "(2,3500.0000,4850.0000,5000.0000,3,50.0000,95.0000)");
    /* low: jb/0 at 2 -> x4 at 12 (10000 ms), jb/1 at 2 -> x6 at 14 (12000
     * ms): p50 11000, p95 10000 + 0.95 * 2000 = 11900. Worker: 5, 20, 400:
     * p50 20, p95 20 + 0.9 * 380 = 362. */
    expect(pg, sql, "low 10:00", "(2,11000.0000,11900.0000,12000.0000,3,20.0000,362.0000)");
    /* normal: y1 went out a second before jc/0 was marked queued: 0, not
     * -1000; it has no queue_ms. */
    expect(pg, sql, "normal 10:00", "(1,0.0000,0.0000,0.0000,0,,)");
}

static void test_model_minute(shoal_pg_t *pg)
{
    static const char sql[] =
        "SELECT row(requests, ok, rate_limited, retries, failures, server_errors, timeouts, "
        "round(p50_ms::numeric, 4), round(p99_ms::numeric, 4), "
        "round(failed_p50_ms::numeric, 4), round(cost_usd::numeric, 4))::text "
        "FROM shoal.model_minute WHERE model || ' ' || to_char(minute AT TIME ZONE 'UTC', "
        "'HH24:MI') = $1";
    /* m1 10:00 (by second sent, x3 included): 5 calls, 2 ok; one 429, two
     * retries, one failure; x4's 500 and x5's missing answer. ok latencies
     * 1000, 2000: p50 1500, p99 1000 + 0.99 * 1000 = 1990. Not ok: 2, 30,
     * 5000: median 30. $0.003. */
    expect(pg, sql, "m1 10:00", "(5,2,1,2,1,1,1,1500.0000,1990.0000,30.0000,0.0030)");
    /* m2 10:00: two ok calls (100, 800): p99 100 + 0.99 * 700 = 793; no
     * failed call, so no failed median. */
    expect(pg, sql, "m2 10:00", "(2,2,0,0,0,0,0,450.0000,793.0000,,0.0005)");
    /* m3 11:00: one ok second and four 0.2 ms 429s. */
    expect(pg, sql, "m3 11:00", "(5,1,4,4,0,0,0,1000.0000,1000.0000,0.2000,0.0000)");
}

static void test_model_latency(shoal_pg_t *pg)
{
    static const char sql[] =
        "SELECT row(calls, ok, error_pct, rate_limited_pct, server_error_pct, "
        "round(p50_ms::numeric, 4), round(p90_ms::numeric, 4), round(p99_ms::numeric, 4), "
        "failed, round(failed_p50_ms::numeric, 4), round(failed_p90_ms::numeric, 4), "
        "round(failed_p99_ms::numeric, 4))::text FROM shoal.model_latency WHERE model = $1";
    /* The case: a model that takes a second and answers fast 429s.
     * Over every call its median was 0.2 ms; over the ok call it is 1000. */
    expect(pg, sql, "m3",
           "(5,1,80.00,80.00,0.00,1000.0000,1000.0000,1000.0000,4,0.2000,0.2000,0.2000)");
    /* m1: ok 1000, 2000: p50 1500, p90 1900, p99 1990. Not ok 2, 30, 5000:
     * p50 30, p90 30 + 0.8 * 4970 = 4006, p99 30 + 0.98 * 4970 = 4900.6.
     * 3 of 5 not ok (60%), one 429 (20%), the 500 and the timeout (40%). */
    expect(pg, sql, "m1",
           "(5,2,60.00,20.00,40.00,1500.0000,1900.0000,1990.0000,3,30.0000,4006.0000,"
           "4900.6000)");
    /* m2: only ok calls, so no failed percentiles. */
    expect(pg, sql, "m2", "(2,2,0.00,0.00,0.00,450.0000,730.0000,793.0000,0,,,)");
}

static void test_tenant_cost(shoal_pg_t *pg)
{
    static const char sql[] =
        "SELECT row(jobs, calls, tokens_in, tokens_out, round(cost_usd::numeric, 4), "
        "rejected_jobs)::text FROM shoal.tenant_cost WHERE tenant = $1";
    /* acme: ja, jb, jc accepted (7 calls, 350 in, 35 out, $0.0035), jr
     * rejected and not counted as a job. */
    expect(pg, sql, "acme", "(3,7,350,35,0.0035,1)");
    /* zed: only a rejected message: no jobs, nothing spent. */
    expect(pg, sql, "zed", "(0,0,0,0,0.0000,1)");
}

static void test_job_progress(shoal_pg_t *pg)
{
    static const char sql[] =
        "SELECT round(elapsed_s::numeric, 1)::text FROM shoal.job_progress WHERE job_id = $1";

    /* A finished job's elapsed time is submitted to finished: 40 s. */
    expect(pg, sql, "ja", "40.0");
    /* A rejected job never ran: 0, not the months since it was submitted. */
    expect(pg, sql, "jr", "0.0");
    /* A running job's still counts up from its submission to now. */
    assert_int_eq(sqlcheck_long(pg,
                                "SELECT (elapsed_s > extract(epoch FROM now() - (" AT(
                                    1) ")))::int "
                                       "FROM shoal.job_progress WHERE job_id = $1",
                                "jb"),
                  1);
}

int main(void)
{
    char err[512];
    int applied = 0;

    shoal_log_init("opsviews_test", SHOAL_LOG_WARN, 0);
    shoal_pgcluster_t *cluster = shoal_pgcluster_new(NULL, err, sizeof(err));
    if (!cluster)
        test_fail("cannot start PostgreSQL: %s", err);
    shoal_pg_t *pg = shoal_pg_new(shoal_pgcluster_url(cluster), "opsviews_test");
    assert_true(pg != NULL);
    if (shoal_migrate_apply(pg, &applied, err, sizeof(err)) != SHOAL_OK)
        test_fail("migrations: %s", err);
    assert_int_ge(applied, 9);

    sqlcheck_exec(pg, jobs_sql, NULL);
    sqlcheck_exec(pg, tasks_sql, NULL);
    sqlcheck_exec(pg, attempts_sql, NULL);
    test_throughput(pg);
    test_queue_wait(pg);
    test_model_minute(pg);
    test_model_latency(pg);
    test_tenant_cost(pg);
    test_job_progress(pg);

    shoal_pg_destroy(pg);
    shoal_pgcluster_destroy(cluster);
    printf("opsviews_test: ok\n");
    return 0;
}
