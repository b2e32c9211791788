/*
 * common/pgrow and the worker's rows written with it, read by a real
 * PostgreSQL as arrays of shoal.result_row and shoal.attempt_row (sql/023):
 * strings with every character the two levels of quoting care about come
 * back byte for byte, an empty string stays apart from NULL, numbers keep
 * their values, several rows make one array, shoal_pgrow_fields reads a row
 * back as the server does; and the attempt and result rows of
 * shoal_task_attempt_text/result_text hold what shoal_task_attempt_row/
 * result_row (jansson) hold, column for column, in every branch (fallbacks,
 * errors, queue time, retry-after, failed tasks). Text that is not UTF-8 is
 * copied, and the server refuses it.
 */
#include "common/pgrow.h"

#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/job.h"
#include "common/log.h"
#include "common/models.h"
#include "common/taskmsg.h"
#include "tests/support/check.h"
#include "tests/support/testdb.h"
#include "worker/task.h"

static shoal_pgcluster_t *cluster;
static shoal_models_t *models;

static const char *const tricky[] = {
    "",
    "plain",
    "a \"quoted\" word",
    "back\\slash and \\\\ two and trailing \\",
    "\\\"",
    "\"",
    "(parens), commas, {braces}, [brackets]",
    "  leading and trailing spaces  ",
    "NULL",
    "new\nline\ttab\rreturn",
    "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x90\x9f",
    "{\"json\": [1, \"two\", {\"three\": null}]}",
};

/* One result row: task_id and output carry s, error is NULL. */
static char *result_with(const char *s, size_t *len)
{
    shoal_pgrow_t r;
    shoal_pgrow_init(&r, 1 << 20);
    shoal_pgrow_open(&r);
    shoal_pgrow_str(&r, s);      /* task_id */
    shoal_pgrow_str(&r, "job");  /* job_id */
    shoal_pgrow_int(&r, -7);     /* chunk */
    shoal_pgrow_str(&r, "done"); /* status */
    shoal_pgrow_str(&r, s);      /* output */
    for (int i = 5; i < SHOAL_TASK_RESULT_FIELDS; i++)
        shoal_pgrow_null(&r);
    shoal_pgrow_close(&r);
    return shoal_pgrow_detach(&r, len);
}

static void test_strings(shoal_pg_t *pg)
{
    size_t n = sizeof(tricky) / sizeof(tricky[0]);
    char *rows[sizeof(tricky) / sizeof(tricky[0])];
    size_t lens[sizeof(tricky) / sizeof(tricky[0])];
    for (size_t i = 0; i < n; i++) {
        rows[i] = result_with(tricky[i], &lens[i]);
        assert_true(rows[i] != NULL);
        assert_int_eq(lens[i], strlen(rows[i]));
        /* read back here as the server reads it */
        char *f[SHOAL_TASK_RESULT_FIELDS] = {0};
        assert_int_eq(shoal_pgrow_fields(rows[i], lens[i], f, SHOAL_TASK_RESULT_FIELDS),
                      SHOAL_TASK_RESULT_FIELDS);
        assert_str_eq(f[0], tricky[i]);
        assert_str_eq(f[2], "-7");
        assert_str_eq(f[4], tricky[i]);
        assert_true(f[5] == NULL && f[11] == NULL);
        shoal_pgrow_fields_free(f, SHOAL_TASK_RESULT_FIELDS);
    }
    char *array = shoal_pgrow_array(rows, lens, n);
    const char *params[] = {array};
    PGresult *res;
    char err[512];
    if (shoal_pg_exec(pg,
                      "SELECT x.task_id, x.output, x.chunk, x.error IS NULL, x.model IS NULL "
                      "FROM unnest($1::shoal.result_row[]) WITH ORDINALITY AS x",
                      1, params, &res, err, sizeof(err)) != SHOAL_OK)
        test_fail("the server did not read the rows: %s\n%s", err, array);
    assert_int_eq(PQntuples(res), (long)n);
    for (size_t i = 0; i < n; i++) {
        assert_str_eq(PQgetvalue(res, (int)i, 0), tricky[i]);
        assert_str_eq(PQgetvalue(res, (int)i, 1), tricky[i]);
        assert_true(!PQgetisnull(res, (int)i, 0)); /* "" is a string, not NULL */
        assert_str_eq(PQgetvalue(res, (int)i, 2), "-7");
        assert_str_eq(PQgetvalue(res, (int)i, 3), "t");
        assert_str_eq(PQgetvalue(res, (int)i, 4), "t");
    }
    PQclear(res);
    free(array);
    for (size_t i = 0; i < n; i++)
        free(rows[i]);

    /* no rows: an empty array */
    char *none = shoal_pgrow_array(NULL, NULL, 0);
    assert_str_eq(none, "{}");
    free(none);
    /* not a row */
    char *f[2];
    assert_int_eq(shoal_pgrow_fields("(a,b)", 5, f, 2), -1);
    assert_int_eq(shoal_pgrow_fields("\"a,b\"", 5, f, 2), -1);
}

static void test_numbers(shoal_pg_t *pg)
{
    shoal_pgrow_t r;
    shoal_pgrow_init(&r, 1 << 20);
    shoal_pgrow_open(&r);
    shoal_pgrow_str(&r, "w/1");           /* attempt_id */
    shoal_pgrow_str(&r, "t");             /* task_id */
    shoal_pgrow_str(&r, "j");             /* job_id */
    shoal_pgrow_int(&r, 2147483647);      /* attempt */
    shoal_pgrow_str(&r, NULL);            /* model */
    shoal_pgrow_str(&r, "w");             /* worker_id */
    shoal_pgrow_int(&r, -429);            /* http_status */
    shoal_pgrow_str(&r, "ok");            /* outcome */
    shoal_pgrow_null(&r);                 /* outcome_kind */
    shoal_pgrow_null(&r);                 /* error */
    shoal_pgrow_fixed(&r, 12.3456789, 6); /* latency_ms */
    shoal_pgrow_fixed(&r, NAN, 6);        /* queue_ms: NULL */
    for (int i = 0; i < 4; i++)           /* tokens */
        shoal_pgrow_int(&r, i * 1000);
    shoal_pgrow_real(&r, 1.2345678901234567e-7); /* cost_usd */
    shoal_pgrow_real(&r, INFINITY);              /* retry_after_ms: NULL */
    shoal_pgrow_null(&r);                        /* fallback_from */
    shoal_pgrow_fixed(&r, 1712345678.25, 6);     /* started_at */
    shoal_pgrow_fixed(&r, -0.5, 6);              /* finished_at */
    shoal_pgrow_close(&r);
    size_t len;
    char *row = shoal_pgrow_detach(&r, &len);
    char *array = shoal_pgrow_array(&row, &len, 1);
    const char *params[] = {array};
    char v[512];
    char err[512];
    PGresult *res;
    if (shoal_pg_exec(pg,
                      "SELECT concat_ws('|', x.attempt, x.model IS NULL, x.http_status, "
                      "x.latency_ms, x.queue_ms IS NULL, x.tokens_cache_write, "
                      "x.cost_usd = 1.2345678901234567e-7::float8, "
                      "x.retry_after_ms IS NULL, x.started_at, x.finished_at) "
                      "FROM unnest($1::shoal.attempt_row[]) x",
                      1, params, &res, err, sizeof(err)) != SHOAL_OK)
        test_fail("the server did not read the row: %s\n%s", err, array);
    snprintf(v, sizeof(v), "%s", PQgetvalue(res, 0, 0));
    PQclear(res);
    assert_str_eq(v, "2147483647|t|-429|12.345679|t|3000|t|t|1712345678.25|-0.5");
    free(array);
    free(row);
}

/* ---- the worker's rows --------------------------------------------------- */

static const char models_text[] =
    "{\"models\": {"
    "\"fast\": {\"provider\": \"openai\", \"endpoint\": \"http://127.0.0.1:9/v1/chat/completions\","
    " \"model\": \"gpt-4o-mini\", \"input_usd_per_mtok\": 1.5, \"output_usd_per_mtok\": 6,"
    " \"cached_input_usd_per_mtok\": 0.5},"
    "\"smart\": {\"provider\": \"anthropic\", \"endpoint\": \"http://127.0.0.1:9/v1/messages\","
    " \"model\": \"claude-test-1\", \"input_usd_per_mtok\": 3, \"output_usd_per_mtok\": 15}"
    "}}";

static const char job_json[] =
    "{\"job_id\": \"rows-1\", \"tenant\": \"acme\", \"model\": \"fast\","
    " \"prompt_template\": \"Say {{input}}\","
    " \"items\": [{\"id\": \"a\", \"input\": \"caf\\u00e9 \\\"x\\\"\"}]}";

static shoal_task_t *make_task(void)
{
    char err[512];
    shoal_job_t *job = shoal_job_parse(job_json, strlen(job_json), 0, models, err, sizeof(err));
    if (!job)
        test_fail("job: %s", err);
    json_t *tasks = shoal_taskmsg_build_all(job, err, sizeof(err));
    if (!tasks)
        test_fail("tasks: %s", err);
    char *msg = json_dumps(json_array_get(tasks, 0), JSON_COMPACT);
    shoal_task_t *t = shoal_task_parse(msg, strlen(msg), models, err, sizeof(err));
    if (!t)
        test_fail("parse: %s", err);
    free(msg);
    json_decref(tasks);
    shoal_job_destroy(job);
    return t;
}

/* The row as the server reads it, as a JSON object of every column (null
 * for NULL); NULL when the server refuses it (err then says why). */
static json_t *server_read(shoal_pg_t *pg, const char *type, char *text, size_t len, char *err,
                           size_t errlen)
{
    char *array = shoal_pgrow_array(&text, &len, 1);
    char sql[128];
    snprintf(sql, sizeof(sql), "SELECT to_json(x) FROM unnest($1::%s[]) x", type);
    const char *params[] = {array};
    PGresult *res;
    json_t *row = NULL;
    if (shoal_pg_exec(pg, sql, 1, params, &res, err, errlen) == SHOAL_OK) {
        row = json_loads(PQgetvalue(res, 0, 0), 0, NULL);
        PQclear(res);
    }
    free(array);
    return row;
}

/* The server's reading of the text row holds the jansson row: each column
 * the member of that name (null when the member is left out), numbers by
 * value (finished_at, the clock at each call, within a few seconds). */
static void same_row(shoal_pg_t *pg, const char *type, const char *const *fields, int nfields,
                     json_t *want, char *text, size_t len)
{
    char err[512];
    assert_true(want != NULL && text != NULL);
    assert_int_eq(len, strlen(text));
    json_t *got = server_read(pg, type, text, len, err, sizeof(err));
    if (!got)
        test_fail("the server refused %s: %s", text, err);
    for (int i = 0; i < nfields; i++) {
        json_t *w = json_object_get(want, fields[i]), *g = json_object_get(got, fields[i]);
        if (!w || json_is_null(w)) {
            if (!json_is_null(g))
                test_fail("%s: want NULL, the server read %s", fields[i],
                          json_dumps(g, JSON_ENCODE_ANY));
        } else if (json_is_number(w)) {
            double tol = !strcmp(fields[i], "finished_at") ? 5.0 : 1e-6;
            if (!json_is_number(g) || fabs(json_number_value(w) - json_number_value(g)) > tol)
                test_fail("%s: want %.9g, the server read %s", fields[i], json_number_value(w),
                          json_dumps(g, JSON_ENCODE_ANY));
        } else if (!json_equal(w, g)) {
            test_fail("%s: want %s, the server read %s", fields[i], json_dumps(w, JSON_ENCODE_ANY),
                      json_dumps(g, JSON_ENCODE_ANY));
        }
    }
    json_decref(want);
    json_decref(got);
    free(text);
}

static void check_attempt(shoal_pg_t *pg, const shoal_task_t *t, const shoal_http_reply_t *reply,
                          const shoal_task_call_t *call)
{
    size_t len = 0;
    json_t *want = shoal_task_attempt_row(t, "w1/9/1", "w1", reply, call);
    char *text = shoal_task_attempt_text(t, "w1/9/1", "w1", reply, call, &len);
    same_row(pg, "shoal.attempt_row", shoal_task_attempt_fields, SHOAL_TASK_ATTEMPT_FIELDS, want,
             text, len);
}

static void check_result(shoal_pg_t *pg, const shoal_task_t *t, const shoal_model_t *served)
{
    size_t len = 0;
    json_t *want = shoal_task_result_row(t, served, "w1");
    char *text = shoal_task_result_text(t, served, "w1", &len);
    same_row(pg, "shoal.result_row", shoal_task_result_fields, SHOAL_TASK_RESULT_FIELDS, want, text,
             len);
}

static void refused(shoal_pg_t *pg, const char *type, char *text)
{
    char err[512];
    size_t len = strlen(text);
    json_t *got = server_read(pg, type, text, len, err, sizeof(err));
    if (got)
        test_fail("the server read %s", json_dumps(got, 0));
    assert_str_contains(err, "UTF8");
    free(text);
}

static void test_task_rows(shoal_pg_t *pg)
{
    shoal_task_t *t = make_task();
    const shoal_model_t *smart = shoal_models_find(models, "smart");
    shoal_http_reply_t reply = {
        .status = 200, .retry_after_ms = -1, .started_unix = 1712345678.25, .latency_ms = 12.5};
    shoal_task_call_t call = {.outcome = "ok",
                              .kind = SHOAL_OUTCOME_OK,
                              .usage = {.input = 120, .output = 30, .cached = 20}};

    t->attempts = 1;
    check_attempt(pg, t, &reply, &call); /* no queue time: received_unix unset */
    t->received_unix = 1712345678.0;
    check_attempt(pg, t, &reply, &call);
    call.error = "";
    check_attempt(pg, t, &reply, &call); /* an empty error is left out */

    reply.status = 429;
    reply.retry_after_ms = 1500;
    call = (shoal_task_call_t){.model = smart,
                               .outcome = "retry",
                               .kind = SHOAL_OUTCOME_RATE_LIMITED,
                               .error = "HTTP 429: \"slow down\"\n\tnow \\ (really)",
                               .usage = {.input = 1000, .cache_write = 300}};
    check_attempt(pg, t, &reply, &call); /* a fallback, an error, a retry-after */
    call.error = "bad \xff utf-8";
    refused(pg, "shoal.attempt_row",
            shoal_task_attempt_text(t, "w1/9/2", "w1", &reply, &call, NULL));
    call.error = NULL;
    check_attempt(pg, t, &reply, &call);

    t->state = SHOAL_TASK_DONE;
    t->output = strdup("{\"label\": \"caf\xc3\xa9\", \"n\": [1, 2]}\n");
    t->tokens_in = 120;
    t->tokens_out = 30;
    check_result(pg, t, NULL);
    check_result(pg, t, smart); /* served by a fallback */
    check_result(pg, t, t->model);
    free(t->output);
    t->output = NULL;
    check_result(pg, t, NULL); /* done without output: "" */
    t->output = strdup("bad \xc0\xaf output");
    refused(pg, "shoal.result_row", shoal_task_result_text(t, NULL, "w1", NULL));
    t->state = SHOAL_TASK_FAILED;
    snprintf(t->error, sizeof(t->error), "%s", "HTTP 400: \"no\"");
    check_result(pg, t, NULL);
    shoal_task_destroy(t);
}

int main(void)
{
    char err[512];

    shoal_log_init("pgrow_test", SHOAL_LOG_ERROR, 0);
    models = shoal_models_parse(models_text, strlen(models_text), err, sizeof(err));
    if (!models)
        test_fail("models: %s", err);
    shoal_pg_t *pg = testdb_start("pgrow_test", &cluster);
    test_strings(pg);
    test_numbers(pg);
    test_task_rows(pg);
    shoal_pg_destroy(pg);
    shoal_pgcluster_destroy(cluster);
    shoal_models_destroy(models);
    printf("pgrow_test: ok\n");
    return 0;
}
