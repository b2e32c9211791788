/*
 * No API key or password reaches a log line or the database, and prompts
 * never reach a log line; prompts are in the database only for jobs that
 * keep their inputs (shoal.job_inputs), and a job with "store_inputs": false
 * has no prompt text in the database. A scheduler and a worker run at debug
 * level with a PostgreSQL URL holding the stack's real password (read from
 * its 0600 pgpass file) and a model whose API key and gateway header come from the
 * environment; a job with
 * "store_inputs": false and a distinctive system prompt completes (and the key really went out with
 * every call), as does a second job that keeps its inputs; then every log and every row is searched
 * for the four secrets and the second job's prompt. Before that, the worker started without the
 * key refuses to run: it exits 1 naming the alias and the variable, before it takes any task.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "stack/pgcluster.h"
#include "stack/proc.h"
#include "tests/support/check.h"
#include "tests/support/harness.h"

#define API_KEY "test-key-do-not-log-7f3a9c"
#define GW_KEY "gateway-key-do-not-log-52be1d"
static char password[128];
#define PASSWORD password
#define SYSTEM "SYSTEM-SECRET-91c4"
#define KEPT "SYSTEM-KEPT-3e7d"

int main(void)
{
    harness_conf_t conf = {.workers = 1,
                           .schedulers = 1,
                           .extra_models =
                               "\"sim-keyed\": {\"provider\": \"openai\", \"endpoint\": "
                               "\"${SHOAL_SIM_URL}/v1/chat/completions\", \"model\": \"keyed\", "
                               "\"api_key_env\": \"SHOAL_TEST_API_KEY\", \"headers\": "
                               "{\"X-Gateway-Key\": \"gw ${SHOAL_TEST_GW_KEY}\"}}"};
    /* The stack starts without the key: its worker must refuse to run. */
    unsetenv("SHOAL_TEST_API_KEY");
    harness_t *h = harness_start(&conf);
    shoal_devstack_t *ds = harness_stack(h);
    char pg[512], key[128], gw[128], level[64], status[64], err[512], out[4096], wlog[1024];

    int wstatus = -1;
    assert_int_eq(shoal_proc_wait(shoal_devstack_proc(ds, "worker", 0), 60000, &wstatus), SHOAL_OK);
    assert_int_eq(wstatus, 1);
    snprintf(wlog, sizeof(wlog), "%s/logs/worker-0.log", shoal_devstack_workdir(ds));
    assert_int_eq(
        shoal_proc_wait_file_line(wlog, "cannot start without an API key", 1000, out, sizeof(out)),
        SHOAL_OK);
    assert_str_contains(out, "models.sim-keyed.api_key_env");
    assert_str_contains(out, "SHOAL_TEST_API_KEY is not set");

    /* The same server, reached through a URL with its password in it. */
    char pgpass[700], line[256];
    snprintf(pgpass, sizeof(pgpass), "%s/pg/pgpass", shoal_devstack_workdir(ds));
    FILE *pf = fopen(pgpass, "r");
    assert_true(pf != NULL);
    assert_true(fgets(line, sizeof(line), pf) != NULL);
    fclose(pf);
    assert_true(strncmp(line, "*:*:*:postgres:", 15) == 0);
    snprintf(password, sizeof(password), "%.*s", (int)strcspn(line + 15, "\n"), line + 15);
    assert_true(strlen(password) >= 16);
    snprintf(pg, sizeof(pg), "SHOAL_PG=postgresql://postgres:%s@127.0.0.1:%d/postgres", PASSWORD,
             shoal_pgcluster_port(shoal_devstack_pg(ds)));
    snprintf(key, sizeof(key), "SHOAL_TEST_API_KEY=%s", API_KEY);
    snprintf(gw, sizeof(gw), "SHOAL_TEST_GW_KEY=%s", GW_KEY);
    snprintf(level, sizeof(level), "SHOAL_LOG_LEVEL=debug");
    char *const env[] = {pg, key, gw, level, NULL};
    if (shoal_devstack_restart(ds, "scheduler", 0, env, err, sizeof(err)) != SHOAL_OK ||
        shoal_devstack_restart(ds, "worker", 0, env, err, sizeof(err)) != SHOAL_OK)
        test_fail("could not restart with secrets: %s", err);

    char *job = harness_job("secret-1", 5, 1,
                            "{\"model\": \"sim-keyed\", \"store_inputs\": false, \"system\": "
                            "\"" SYSTEM "\"}");
    harness_produce(h, "shoal.jobs", "secret-1", job, strlen(job));
    free(job);
    harness_wait_job(h, "secret-1", 90, status, sizeof(status));
    assert_str_eq(status, "completed");
    json_t *stats = harness_sim_stats(h);
    assert_int_eq(json_integer_value(json_object_get(stats, "authorized_requests")), 5);
    json_decref(stats);
    job = harness_job("kept-1", 2, 1, "{\"model\": \"sim-keyed\", \"system\": \"" KEPT "\"}");
    harness_produce(h, "shoal.jobs", "kept-1", job, strlen(job));
    free(job);
    harness_wait_job(h, "kept-1", 90, status, sizeof(status));
    assert_str_eq(status, "completed");

    /* --help shows where a secret comes from, never its value. */
    assert_int_eq(harness_sh(h, out, sizeof(out),
                             "%s --help 2>&1 | grep -c 'secret'; %s --help "
                             "2>&1 | grep -c '%s'",
                             harness_bin("shoal-scheduler"), harness_bin("shoal-scheduler"),
                             PASSWORD),
                  1); /* the last grep found nothing */
    assert_str_eq(out, "1\n0\n");

    /* Logs: debug level, every process of the stack. They describe each call
     * of this job, so the search below is a real one. */
    const char *wd = shoal_devstack_workdir(ds);
    assert_int_eq(harness_sh(h, out, sizeof(out),
                             "cat %s/logs/*.log | grep 'call ended' | grep -c 'job_id=secret-1'",
                             wd),
                  0);
    assert_int_eq(strtol(out, NULL, 10), 5);
    assert_int_eq(harness_sh(h, out, sizeof(out),
                             "grep -l -e '%s' -e '%s' -e '%s' -e '%s' -e '%s' %s/logs/*.log",
                             API_KEY, GW_KEY, PASSWORD, SYSTEM, KEPT, wd),
                  1);

    /* The database: every row of every shoal table, as text. No secret, no
     * prompt of the job without stored inputs; the other job's prompt only in
     * its shoal.job_inputs row. */
#define ROWS                                                                                       \
    "(SELECT 'jobs' AS tbl, row_to_json(j)::text AS t FROM shoal.jobs j UNION ALL "                \
    "SELECT 'tasks', row_to_json(t)::text FROM shoal.tasks t UNION ALL SELECT 'results', "         \
    "row_to_json(r)::text FROM shoal.results r UNION ALL SELECT 'attempts', "                      \
    "row_to_json(a)::text FROM shoal.attempts a UNION ALL SELECT 'event_outbox', "                 \
    "row_to_json(e)::text FROM shoal.event_outbox e UNION ALL SELECT 'job_inputs', "               \
    "row_to_json(i)::text FROM shoal.job_inputs i) x"
    long hits = harness_long(h,
                             "SELECT count(*) FROM " ROWS " WHERE t LIKE '%' || $1 || '%' OR t "
                             "LIKE '%' || $2 || '%' OR t LIKE '%' || $3 || '%' OR t LIKE '%' || "
                             "$4 || '%'",
                             API_KEY, PASSWORD, SYSTEM, GW_KEY, NULL);
    assert_int_eq(hits, 0);
    char where[256];
    harness_str(h, where, sizeof(where),
                "SELECT string_agg(tbl || ':' || (t::json->>'job_id'), ',') FROM " ROWS
                " WHERE t LIKE '%' || $1 || '%'",
                KEPT, NULL);
    assert_str_eq(where, "job_inputs:kept-1");
#undef ROWS
    /* ... while the job itself is there, with its settings. */
    assert_int_eq(harness_long(h,
                               "SELECT count(*) FROM shoal.jobs WHERE job_id = 'secret-1' AND "
                               "settings->>'model' = 'sim-keyed'",
                               NULL),
                  1);

    harness_stop(h);
    fprintf(stderr, "ok\n");
    return 0;
}
