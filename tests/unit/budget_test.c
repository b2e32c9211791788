/*
 * Hard budgets: worker/budget's worst case of a call, and the reserve,
 * settle, expire and release functions of sql/016_budgets.sql on a
 * throwaway PostgreSQL, with amounts worked out by hand. Two connections
 * reserving against one job at once never pass its budget.
 */
#include "worker/budget.h"

#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "common/models.h"
#include "common/pg.h"
#include "stack/pgcluster.h"
#include "tests/support/check.h"
#include "tests/support/sqlcheck.h"
#include "tests/support/testdb.h"

static const char models_text[] =
    "{\"models\": {\"fast\": {\"provider\": \"openai\","
    " \"endpoint\": \"http://127.0.0.1:9/v1/chat/completions\", \"model\": \"m\","
    " \"input_usd_per_mtok\": 1, \"output_usd_per_mtok\": 2},"
    " \"dear\": {\"provider\": \"anthropic\", \"endpoint\": \"http://127.0.0.1:9/v1/messages\","
    " \"model\": \"c\", \"input_usd_per_mtok\": 3, \"output_usd_per_mtok\": 15,"
    " \"max_output_tokens\": 100, \"timeout_ms\": 5000}}}";

#define assert_near(a, b)                                                                          \
    do {                                                                                           \
        double a_ = (a), b_ = (b);                                                                 \
        if (fabs(a_ - b_) > 1e-9)                                                                  \
            test_fail("%s == %s: %.12f != %.12f", #a, #b, a_, b_);                                 \
    } while (0)

static shoal_task_t *task_for(const shoal_model_t *m, const char *request)
{
    shoal_task_t *t = calloc(1, sizeof(*t));
    assert_true(t != NULL);
    t->model = m;
    t->request = strdup(request);
    t->request_len = strlen(request);
    t->timeout_ms = 60000;
    t->job_id = "jb";
    t->task_id = "jb:000000";
    return t;
}

static void test_worst_case(void)
{
    char err[256];
    shoal_models_t *models = shoal_models_parse(models_text, strlen(models_text), err, sizeof(err));
    if (!models)
        test_fail("models: %s", err);
    const shoal_model_t *fast = shoal_models_find(models, "fast");
    const shoal_model_t *dear = shoal_models_find(models, "dear");

    /* No max_tokens anywhere: the request gets the default ceiling, and the
     * worst case counts it all, plus a token per 3 request bytes at $1/M. */
    shoal_task_t *t = task_for(fast, "{\"model\":\"m\",\"messages\":[]}");
    double usd = 0;
    assert_int_eq(shoal_budget_prepare(t, &usd), SHOAL_OK);
    assert_str_eq(t->request, "{\"model\":\"m\",\"messages\":[],\"max_tokens\":4096}");
    assert_int_eq(t->request_len, 45);
    assert_near(usd, (15.0 * 1 + 4096.0 * 2) / 1e6); /* 45 bytes -> 15 tokens */
    json_t *row = shoal_budget_row(t, "w/1/1", "w", usd);
    assert_int_eq(json_integer_value(json_object_get(row, "ttl_ms")),
                  60000 + SHOAL_BUDGET_EXPIRY_MARGIN_MS);
    assert_str_eq(json_string_value(json_object_get(row, "model")), "fast");
    json_decref(row);
    shoal_task_destroy(t);

    /* The request's own max_tokens counts (not the model's 100); the prompt
     * at the dearest prompt price: cache writes, 1.25 x $3. */
    t = task_for(dear, "{\"max_tokens\":50,\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}");
    size_t len = t->request_len;
    assert_int_eq(shoal_budget_prepare(t, &usd), SHOAL_OK);
    assert_int_eq(t->request_len, len); /* unchanged */
    assert_near(usd, ((double)((len + 2) / 3) * 3.75 + 50.0 * 15) / 1e6);
    row = shoal_budget_row(t, "w/1/2", "w", usd);
    assert_int_eq(json_integer_value(json_object_get(row, "ttl_ms")),
                  5000 + SHOAL_BUDGET_EXPIRY_MARGIN_MS);
    json_decref(row);
    shoal_task_destroy(t);

    t = task_for(fast, "not json");
    assert_int_eq(shoal_budget_prepare(t, &usd), SHOAL_ERR_INVALID);
    shoal_task_destroy(t);
    shoal_models_destroy(models);
}

/* The verdicts of one shoal.reserve_calls(rows), comma-separated. */
static void reserve(shoal_pg_t *pg, const char *rows, char *out, size_t len)
{
    sqlcheck_text(pg,
                  "SELECT string_agg(verdict, ',' ORDER BY n) FROM shoal.reserve_calls($1::jsonb)",
                  rows, out, len);
}

/* Records the call of reservation id (job jb's task) at cost usd through
 * record_batch, as a worker's result batch does. */
static void record_call(shoal_pg_t *pg, const char *job, const char *id, double usd)
{
    char sql[1024];
    snprintf(sql, sizeof(sql),
             "SELECT count(*) FROM shoal.record_batch('[]', jsonb_build_array(jsonb_build_object("
             "'attempt_id', $1::text, 'task_id', '%s:000000', 'job_id', '%s', 'attempt', 1, "
             "'model', 'fast', 'worker_id', 'w', 'http_status', 200, 'outcome', 'ok', "
             "'outcome_kind', 'ok', 'latency_ms', 10, 'tokens_in', 10, 'tokens_out', 10, "
             "'cost_usd', %.6f, 'started_at', extract(epoch FROM now()), "
             "'finished_at', extract(epoch FROM now()))))",
             job, job, usd);
    sqlcheck_long(pg, sql, id);
}

static double dbl(shoal_pg_t *pg, const char *sql, const char *p1)
{
    char v[64];
    sqlcheck_text(pg, sql, p1, v, sizeof(v));
    return strtod(v, NULL);
}

/* Job ja's spend counters are (spent, reserved). */
static void assert_counters(shoal_pg_t *pg, const char *job, double spent, double reserved)
{
    assert_near(dbl(pg, "SELECT spent_usd FROM shoal.jobs WHERE job_id = $1", job), spent);
    assert_near(dbl(pg, "SELECT reserved_usd FROM shoal.jobs WHERE job_id = $1", job), reserved);
}

#define ROW(id, job, amount, ttl)                                                                  \
    "{\"id\": \"" id "\", \"job_id\": \"" job "\", \"task_id\": \"" job ":000000\", "              \
    "\"model\": \"fast\", \"worker_id\": \"w\", \"amount_usd\": " amount ", \"ttl_ms\": " ttl "}"

static void test_job_budget(shoal_pg_t *pg)
{
    char v[512];
    sqlcheck_exec(pg,
                  "INSERT INTO shoal.jobs (job_id, tenant, status, settings, tasks_total) VALUES "
                  "('ja', 'acme', 'running', '{\"budget_usd\": 1.0}', 2)",
                  NULL);

    /* 0.4 + 0.4 fit a budget of 1.0; a third 0.4 fits only once calls in
     * flight settle: wait, not refused. */
    reserve(pg,
            "[" ROW("r1", "ja", "0.4", "600000") "," ROW("r2", "ja", "0.4", "600000") "," ROW(
                "r3", "ja", "0.4", "600000") "]",
            v, sizeof(v));
    assert_str_eq(v, "granted,granted,wait");
    assert_near(dbl(pg, "SELECT reserved_usd FROM shoal.jobs WHERE job_id = $1", "ja"), 0.8);
    assert_int_eq(sqlcheck_long(pg, "SELECT count(*) FROM shoal.call_reservations", NULL), 2);

    /* Asked again (a retried batch): the same answer, counted once. */
    reserve(pg, "[" ROW("r1", "ja", "0.4", "600000") "]", v, sizeof(v));
    assert_str_eq(v, "granted");
    assert_near(dbl(pg, "SELECT reserved_usd FROM shoal.jobs WHERE job_id = $1", "ja"), 0.8);

    /* r1's call cost 0.1: settled with its attempts row, the rest released. */
    record_call(pg, "ja", "r1", 0.1);
    assert_counters(pg, "ja", 0.1, 0.4);
    sqlcheck_text(pg,
                  "SELECT status || ' ' || cost_usd FROM shoal.call_reservations "
                  "WHERE reservation_id = $1",
                  "r1", v, sizeof(v));
    assert_str_eq(v, "settled 0.1");
    /* The same batch again changes nothing. */
    record_call(pg, "ja", "r1", 0.1);
    assert_counters(pg, "ja", 0.1, 0.4);

    /* 0.1 spent + 0.4 held + 0.4 = 0.9: granted; then 0.2 more must wait. */
    reserve(pg, "[" ROW("r4", "ja", "0.4", "600000") "," ROW("r5", "ja", "0.2", "600000") "]", v,
            sizeof(v));
    assert_str_eq(v, "granted,wait");

    /* A granted call that never started is released. */
    sqlcheck_text(pg, "SELECT count(*) FROM shoal.reserve_calls('[]', '[\"r4\"]')", NULL, v,
                  sizeof(v));
    assert_near(dbl(pg, "SELECT reserved_usd FROM shoal.jobs WHERE job_id = $1", "ja"), 0.4);
    sqlcheck_text(pg, "SELECT status FROM shoal.call_reservations WHERE reservation_id = $1", "r4",
                  v, sizeof(v));
    assert_str_eq(v, "released");

    /* r2 costs all of its 0.4: 0.5 spent. 0.6 is refused (0.5 + 0.6 > 1.0
     * even with nothing in flight), once with an event, and the job's stop
     * says why. */
    record_call(pg, "ja", "r2", 0.4);
    assert_counters(pg, "ja", 0.5, 0.0);
    sqlcheck_text(pg,
                  "SELECT string_agg(verdict || ':' || coalesce(reason, ''), ',' ORDER BY n) "
                  "FROM shoal.reserve_calls($1::jsonb)",
                  "[" ROW("r6", "ja", "0.6", "600000") "," ROW("r7", "ja", "0.6", "600000") "]", v,
                  sizeof(v));
    assert_str_contains(v, "refused:budget exhausted: the job spent $0.5");
    assert_str_contains(v, "of its budget_usd $1");
    assert_int_eq(sqlcheck_long(pg,
                                "SELECT count(*) FROM shoal.event_outbox WHERE job_id = $1 AND "
                                "payload->>'type' = 'budget_exhausted'",
                                "ja"),
                  1);
    /* 0.5 still fits exactly. */
    reserve(pg, "[" ROW("r8", "ja", "0.5", "600000") "]", v, sizeof(v));
    assert_str_eq(v, "granted");

    /* The call of r8 never reports (its worker died): once it expires it
     * counts as spent at its worst case, and spent + reserved stays 1.0. */
    sqlcheck_exec(pg,
                  "UPDATE shoal.call_reservations SET expires_at = now() - interval '1 second' "
                  "WHERE reservation_id = 'r8'",
                  NULL);
    assert_int_eq(sqlcheck_long(pg, "SELECT shoal.expire_reservations()", NULL), 1);
    assert_counters(pg, "ja", 1.0, 0.0);
    assert_int_eq(sqlcheck_long(pg,
                                "SELECT count(*) FROM shoal.calls_unrecorded "
                                "WHERE worker_id = 'w' AND status = 'expired'",
                                NULL),
                  1);
    /* Its attempts row arrives after all (0.05): the real cost replaces the
     * worst case. */
    record_call(pg, "ja", "r8", 0.05);
    assert_near(dbl(pg, "SELECT spent_usd FROM shoal.jobs WHERE job_id = $1", "ja"), 0.55);
    assert_int_eq(sqlcheck_long(pg, "SELECT count(*) FROM shoal.calls_unrecorded", NULL), 0);
    sqlcheck_text(pg,
                  "SELECT room_usd::numeric(10,4)::text FROM shoal.job_budgets "
                  "WHERE job_id = $1",
                  "ja", v, sizeof(v));
    assert_str_eq(v, "0.4500");

    /* The job ends partial: its error starts with the budget's reason. */
    sqlcheck_exec(pg,
                  "UPDATE shoal.jobs SET status = 'partial', error = '1 of 2 tasks failed' "
                  "WHERE job_id = 'ja'",
                  NULL);
    sqlcheck_text(pg, "SELECT error FROM shoal.jobs WHERE job_id = $1", "ja", v, sizeof(v));
    assert_str_contains(v, "budget exhausted: the job spent $0.5");
    assert_str_contains(v, "(1 of 2 tasks failed)");
    /* Resumed, it forgets the stop. */
    sqlcheck_exec(pg, "UPDATE shoal.jobs SET status = 'running', error = NULL WHERE job_id = 'ja'",
                  NULL);
    sqlcheck_text(pg, "SELECT coalesce(budget_stop, 'none') FROM shoal.jobs WHERE job_id = $1",
                  "ja", v, sizeof(v));
    assert_str_eq(v, "none");
}

static void test_tenant_budget(shoal_pg_t *pg)
{
    char v[512];
    /* Tenant beta may spend 0.5 a day; its job has no budget of its own. */
    sqlcheck_exec(pg,
                  "INSERT INTO shoal.tenants (tenant, daily_budget_usd) VALUES ('beta', 0.5);"
                  "INSERT INTO shoal.jobs (job_id, tenant, status, settings, tasks_total) VALUES "
                  "('jb', 'beta', 'running', '{}', 3), ('jb2', 'beta', 'running', '{}', 1)",
                  NULL);
    reserve(pg, "[" ROW("t1", "jb", "0.3", "600000") "," ROW("t2", "jb2", "0.3", "600000") "]", v,
            sizeof(v));
    assert_str_eq(v, "granted,wait");
    record_call(pg, "jb", "t1", 0.3);
    sqlcheck_text(pg,
                  "SELECT spent_usd || ' ' || reserved_usd FROM shoal.tenant_spend "
                  "WHERE tenant = $1 AND day = (now() AT TIME ZONE 'UTC')::date",
                  "beta", v, sizeof(v));
    assert_str_eq(v, "0.3 0");
    sqlcheck_text(pg, "SELECT verdict || ':' || reason FROM shoal.reserve_calls($1::jsonb)",
                  "[" ROW("t3", "jb2", "0.3", "600000") "]", v, sizeof(v));
    assert_str_contains(v, "refused:budget exhausted: tenant beta spent $0.3 of its daily budget");
    /* The view lists both jobs of the tenant with a daily budget. */
    assert_int_eq(
        sqlcheck_long(pg, "SELECT count(*) FROM shoal.job_budgets WHERE tenant = $1", "beta"), 2);

    /* A tenant without a plan of its own runs under the default plan '*'. */
    sqlcheck_exec(pg,
                  "INSERT INTO shoal.tenants (tenant, daily_budget_usd) VALUES ('*', 0.2);"
                  "INSERT INTO shoal.jobs (job_id, tenant, status, settings, tasks_total) VALUES "
                  "('jg', 'gamma', 'running', '{}', 2)",
                  NULL);
    reserve(pg, "[" ROW("t4", "jg", "0.15", "600000") "," ROW("t5", "jg", "0.15", "600000") "]", v,
            sizeof(v));
    assert_str_eq(v, "granted,wait");
    sqlcheck_text(pg,
                  "SELECT tenant_daily_budget_usd::text FROM shoal.job_budgets WHERE job_id = $1",
                  "jg", v, sizeof(v));
    assert_str_eq(v, "0.2");
    sqlcheck_exec(pg, "DELETE FROM shoal.tenants WHERE tenant = '*'", NULL);
}

/* Two connections reserve 40 calls of 0.01 each against a budget of 0.3 at
 * the same time: 30 at most are granted, whatever the interleaving. */
struct racer {
    const char *url;
    const char *prefix;
    char verdicts[4096];
};

static void *race(void *arg)
{
    struct racer *rc = arg;
    char err[256];
    shoal_pg_t *pg = shoal_pg_new(rc->url, rc->prefix);
    json_t *rows = json_array();
    for (int i = 0; i < 40; i++) {
        char id[32];
        snprintf(id, sizeof(id), "%s%d", rc->prefix, i);
        json_array_append_new(rows,
                              json_pack("{s:s, s:s, s:s, s:s, s:s, s:f, s:i}", "id", id, "job_id",
                                        "jc", "task_id", "jc:000000", "model", "fast", "worker_id",
                                        rc->prefix, "amount_usd", 0.01, "ttl_ms", 600000));
    }
    char *text = json_dumps(rows, JSON_COMPACT);
    json_decref(rows);
    /* Each statement holds the job's lock while it loops: the other waits. */
    const char *params[] = {text};
    PGresult *res = NULL;
    if (shoal_pg_exec(pg,
                      "SELECT string_agg(verdict, ',' ORDER BY n) FROM "
                      "shoal.reserve_calls($1::jsonb)",
                      1, params, &res, err, sizeof(err)) != SHOAL_OK)
        test_fail("race: %s", err);
    snprintf(rc->verdicts, sizeof(rc->verdicts), "%s", PQgetvalue(res, 0, 0));
    PQclear(res);
    free(text);
    shoal_pg_destroy(pg);
    return NULL;
}

static int count_of(const char *list, const char *word)
{
    int n = 0;
    for (const char *p = strstr(list, word); p; p = strstr(p + 1, word))
        n++;
    return n;
}

static void test_concurrent(shoal_pg_t *pg, shoal_pgcluster_t *cluster)
{
    sqlcheck_exec(pg,
                  "INSERT INTO shoal.jobs (job_id, tenant, status, settings, tasks_total) VALUES "
                  "('jc', 'gamma', 'running', '{\"budget_usd\": 0.3}', 80)",
                  NULL);
    /* One transaction holds the job's lock while both racers start, so both
     * are queued on it and then run against each other. */
    sqlcheck_exec(pg, "BEGIN", NULL);
    sqlcheck_exec(pg, "SELECT 1 FROM shoal.jobs WHERE job_id = 'jc' FOR UPDATE", NULL);
    struct racer a = {shoal_pgcluster_url(cluster), "a", ""};
    struct racer b = {shoal_pgcluster_url(cluster), "b", ""};
    pthread_t ta, tb;
    pthread_create(&ta, NULL, race, &a);
    pthread_create(&tb, NULL, race, &b);
    shoal_pg_t *watch = shoal_pg_new(shoal_pgcluster_url(cluster), "watch");
    assert_wait(sqlcheck_long(watch,
                              "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = "
                              "'Lock' AND application_name IN ('a', 'b')",
                              NULL) == 2,
                30, "both racers waiting for the job's lock");
    sqlcheck_exec(pg, "COMMIT", NULL);
    pthread_join(ta, NULL);
    pthread_join(tb, NULL);
    int granted = count_of(a.verdicts, "granted") + count_of(b.verdicts, "granted");
    int waits = count_of(a.verdicts, "wait") + count_of(b.verdicts, "wait");
    assert_int_eq(granted + waits, 80);
    assert_true(granted >= 29 && granted <= 30); /* 30 x 0.01 = 0.3, give or take a rounding */
    assert_true(dbl(watch, "SELECT spent_usd + reserved_usd FROM shoal.jobs WHERE job_id = $1",
                    "jc") <= 0.3 + 1e-12);
    assert_int_eq(sqlcheck_long(watch,
                                "SELECT count(*) FROM shoal.call_reservations WHERE job_id = $1",
                                "jc"),
                  granted);
    shoal_pg_destroy(watch);
}

int main(void)
{
    shoal_pgcluster_t *cluster;
    shoal_log_init("budget_test", SHOAL_LOG_WARN, 0);
    test_worst_case();
    shoal_pg_t *pg = testdb_start("budget_test", &cluster);
    test_job_budget(pg);
    test_tenant_budget(pg);
    test_concurrent(pg, cluster);
    shoal_pg_destroy(pg);
    shoal_pgcluster_destroy(cluster);
    printf("budget_test: ok\n");
    return 0;
}
