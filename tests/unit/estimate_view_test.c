/*
 * The estimate columns and shoal.estimate_accuracy (sql/011_estimate.sql) on
 * a throwaway PostgreSQL with every migration applied:
 * shoal.record_job_estimated stores est_calls, est_tokens_out and
 * est_duration_s beside est_tokens and est_cost_usd (a row without them
 * records as shoal.record_job does, and a job recorded twice keeps its first
 * estimate); the view sets each job and model's estimated prompt tokens
 * against the reported ones for known calls, worked out by hand below
 * (calls of sub-tasks, which carry no estimate, left out).
 */
#include <stdio.h>
#include <stdlib.h>

#include "stack/pgcluster.h"
#include "common/log.h"
#include "common/migrate.h"
#include "common/pg.h"
#include "tests/support/check.h"
#include "tests/support/sqlcheck.h"

/* Job e1: three tasks estimated at 100, 200 and 50 prompt tokens. */
static const char record_sql[] =
    "SELECT shoal.record_job_estimated("
    "'{\"job_id\": \"e1\", \"tenant\": \"acme\", \"model\": \"m1\", \"merge\": \"concat\","
    "  \"output_format\": \"text\", \"items_total\": 3, \"est_tokens\": 350,"
    "  \"est_cost_usd\": 0.25, \"est_calls\": 3, \"est_tokens_out\": 120,"
    "  \"est_duration_s\": 12.5}'::jsonb,"
    "'[{\"task_id\": \"e1:0\", \"chunk\": 0, \"item_ids\": [\"a\"], \"est_tokens\": 100},"
    "  {\"task_id\": \"e1:1\", \"chunk\": 1, \"item_ids\": [\"b\"], \"est_tokens\": 200},"
    "  {\"task_id\": \"e1:2\", \"chunk\": 2, \"item_ids\": [\"c\"], \"est_tokens\": 50}]'::jsonb,"
    " NULL)";

/* Calls: e1:0 on m1 reported 110; e1:1 on m1 first got a 429 (no usage),
 * then reported 220; e1:2 went to m2 and reported 60. */
static const char attempts_sql[] =
    "INSERT INTO shoal.attempts (attempt_id, task_id, job_id, attempt, model, worker_id, "
    "http_status, outcome, latency_ms, tokens_in, tokens_out, started_at, finished_at) "
    "SELECT id, task, 'e1', n, model, 'w1', http, outcome, 10, tin, 5, now(), now() "
    "  FROM (VALUES "
    "  ('x1', 'e1:0', 1, 'm1', 200, 'ok',    110),"
    "  ('x2', 'e1:1', 1, 'm1', 429, 'retry', 0),"
    "  ('x3', 'e1:1', 2, 'm1', 200, 'ok',    220),"
    "  ('x4', 'e1:2', 1, 'm2', 200, 'ok',    60)"
    "  ) AS v(id, task, n, model, http, outcome, tin)";

static const char accuracy_sql[] =
    "SELECT row(calls, est_tokens_in, tokens_in, round(ratio::numeric, 4))::text "
    "FROM shoal.estimate_accuracy WHERE job_id || ' ' || model = $1";

int main(void)
{
    char err[512], v[256];
    int applied = 0;

    shoal_log_init("estimate_view_test", SHOAL_LOG_WARN, 0);
    shoal_pgcluster_t *cluster = shoal_pgcluster_new(NULL, err, sizeof(err));
    if (!cluster)
        test_fail("cannot start PostgreSQL: %s", err);
    shoal_pg_t *pg = shoal_pg_new(shoal_pgcluster_url(cluster), "estimate_view_test");
    assert_true(pg != NULL);
    if (shoal_migrate_apply(pg, &applied, err, sizeof(err)) != SHOAL_OK)
        test_fail("migrations: %s", err);
    assert_int_ge(applied, 9);

    sqlcheck_text(pg, record_sql, NULL, v, sizeof(v));
    assert_str_eq(v, "new");
    sqlcheck_text(pg,
                  "SELECT row(est_tokens, est_cost_usd, est_calls, est_tokens_out, "
                  "est_duration_s, tasks_total)::text FROM shoal.jobs WHERE job_id = 'e1'",
                  NULL, v, sizeof(v));
    assert_str_eq(v, "(350,0.25,3,120,12.5,3)");
    /* recorded again, even with another estimate: the same job, unchanged */
    sqlcheck_text(pg, record_sql, NULL, v, sizeof(v));
    assert_str_eq(v, "exists:running");
    sqlcheck_text(pg,
                  "SELECT shoal.record_job_estimated('{\"job_id\": \"e1\", \"est_calls\": 9}', "
                  "'[]', NULL)",
                  NULL, v, sizeof(v));
    assert_str_eq(v, "exists:running");
    assert_int_eq(sqlcheck_long(pg, "SELECT est_calls FROM shoal.jobs WHERE job_id = 'e1'", NULL),
                  3);
    /* a row without the new keys (an older scheduler) records with NULLs */
    sqlcheck_text(
        pg,
        "SELECT shoal.record_job_estimated('{\"job_id\": \"old\", \"est_tokens\": 7}'::jsonb, "
        "'[]'::jsonb, NULL)",
        NULL, v, sizeof(v));
    assert_str_eq(v, "new");
    sqlcheck_text(pg,
                  "SELECT row(est_tokens, est_calls, est_tokens_out, est_duration_s)::text "
                  "FROM shoal.jobs WHERE job_id = 'old'",
                  NULL, v, sizeof(v));
    assert_str_eq(v, "(7,,,)");

    sqlcheck_exec(pg, attempts_sql, NULL);
    /* a sub-task split off e1:1 has no estimate: its call is left out */
    sqlcheck_exec(pg,
                  "INSERT INTO shoal.tasks (task_id, job_id, chunk, item_ids, parent_task_id) "
                  "VALUES ('e1:1/0', 'e1', 1, '{b}', 'e1:1')",
                  NULL);
    sqlcheck_exec(pg,
                  "INSERT INTO shoal.attempts (attempt_id, task_id, job_id, attempt, model, "
                  "worker_id, http_status, outcome, latency_ms, tokens_in, started_at, "
                  "finished_at) VALUES ('x5', 'e1:1/0', 'e1', 1, 'm1', 'w1', 200, 'ok', 10, 500, "
                  "now(), now())",
                  NULL);
    assert_int_eq(sqlcheck_long(pg, "SELECT count(*) FROM shoal.estimate_accuracy", NULL), 2);
    /* m1: the 429 reported nothing and is left out; estimated 100 + 200,
     * reported 110 + 220: ratio 1.1 */
    sqlcheck_text(pg, accuracy_sql, "e1 m1", v, sizeof(v));
    assert_str_eq(v, "(2,300,330,1.1000)");
    /* m2: estimated 50, reported 60 */
    sqlcheck_text(pg, accuracy_sql, "e1 m2", v, sizeof(v));
    assert_str_eq(v, "(1,50,60,1.2000)");

    shoal_pg_destroy(pg);
    shoal_pgcluster_destroy(cluster);
    printf("estimate_view_test: ok\n");
    return 0;
}
