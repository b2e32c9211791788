/*
 * worker/sink on a throwaway PostgreSQL with the migrations applied: result
 * and attempt rows made by worker/task for a job recorded with
 * shoal.record_job are written by one flush, which hands every token back
 * exactly once and reports the jobs whose last task it finished. A flush
 * while the server is down is retriable, acknowledges nothing and keeps the
 * batch, which the next flush after a restart writes once. Writing the same
 * rows again changes no counter.
 */
#include "worker/sink.h"

#include <unistd.h>

#include <stdlib.h>
#include <string.h>

#include "stack/pgcluster.h"
#include "common/job.h"
#include "common/taskmsg.h"
#include "common/log.h"
#include "common/models.h"
#include "common/pg.h"
#include "worker/store.h"
#include "worker/task.h"
#include "tests/support/check.h"
#include "tests/support/sqlcheck.h"
#include "tests/support/testdb.h"

#define MAX_TOKENS 400

static const char models_text[] =
    "{\"models\": {\"fast\": {\"provider\": \"openai\","
    " \"endpoint\": \"http://127.0.0.1:9/v1/chat/completions\", \"model\": \"gpt-4o-mini\","
    " \"input_usd_per_mtok\": 1, \"output_usd_per_mtok\": 2},"
    " \"backup\": {\"provider\": \"anthropic\", \"endpoint\": \"http://127.0.0.1:9/v1/messages\","
    " \"model\": \"claude-x\", \"input_usd_per_mtok\": 3, \"output_usd_per_mtok\": 15}}}";

static shoal_models_t *models;
static shoal_pgcluster_t *cluster;

/* How often done() handed back each token; tokens are &done_count[i]. */
static int done_count[MAX_TOKENS];

static void on_done(void *token, void *arg)
{
    int *calls = arg;
    assert_true((int *)token >= done_count && (int *)token < done_count + MAX_TOKENS);
    (*(int *)token)++;
    (*calls)++;
}

/* A job "<id>" of n one-item chunks, recorded through shoal.record_job as the
 * scheduler does; returns its tasks as the worker parses them (caller
 * destroys each and frees the array). */
static shoal_task_t **record_job(shoal_pg_t *pg, const char *id, int n)
{
    char err[512];
    json_t *items = json_array();
    for (int i = 0; i < n; i++) {
        char iid[16], input[32];
        snprintf(iid, sizeof(iid), "i%d", i);
        snprintf(input, sizeof(input), "item number %d", i);
        json_array_append_new(items, json_pack("{s:s, s:s}", "id", iid, "input", input));
    }
    json_t *doc = json_pack("{s:s, s:s, s:s, s:s, s:o}", "job_id", id, "tenant", "acme", "model",
                            "fast", "prompt_template", "Echo {{input}}", "items", items);
    char *text = json_dumps(doc, JSON_COMPACT);
    json_decref(doc);
    shoal_job_t *job = shoal_job_parse(text, strlen(text), 0, models, err, sizeof(err));
    free(text);
    if (!job)
        test_fail("job: %s", err);
    json_t *tasks = shoal_taskmsg_build_all(job, err, sizeof(err));
    if (!tasks)
        test_fail("tasks: %s", err);
    assert_int_eq(json_array_size(tasks), n);

    json_t *rows = json_array();
    shoal_task_t **out = calloc((size_t)n, sizeof(*out));
    assert_true(out != NULL);
    size_t k;
    json_t *t;
    json_array_foreach(tasks, k, t)
    {
        json_t *ids = json_array();
        json_array_append(ids,
                          json_object_get(json_array_get(json_object_get(t, "items"), 0), "id"));
        json_array_append_new(rows, json_pack("{s:O, s:O, s:o, s:O}", "task_id",
                                              json_object_get(t, "task_id"), "chunk",
                                              json_object_get(t, "chunk"), "item_ids", ids,
                                              "est_tokens", json_object_get(t, "est_tokens")));
        char *msg = json_dumps(t, JSON_COMPACT);
        out[k] = shoal_task_parse(msg, strlen(msg), models, err, sizeof(err));
        free(msg);
        if (!out[k])
            test_fail("task %zu: %s", k, err);
    }
    json_t *jobrow = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:I}", "job_id", id, "tenant",
                               "acme", "priority", "normal", "model", "fast", "merge", "concat",
                               "output_format", "text", "items_total", (json_int_t)n);
    char *a = json_dumps(jobrow, JSON_COMPACT), *b = json_dumps(rows, JSON_COMPACT);
    const char *params[] = {a, b};
    PGresult *r;
    if (shoal_pg_exec(pg, "SELECT shoal.record_job($1::jsonb, $2::jsonb)", 2, params, &r, err,
                      sizeof(err)) != SHOAL_OK)
        test_fail("record_job: %s", err);
    assert_str_eq(PQgetvalue(r, 0, 0), "new");
    PQclear(r);
    free(a);
    free(b);
    json_decref(jobrow);
    json_decref(rows);
    json_decref(tasks);
    shoal_job_destroy(job);
    return out;
}

static void free_tasks(shoal_task_t **tasks, int n)
{
    for (int i = 0; i < n; i++)
        shoal_task_destroy(tasks[i]);
    free(tasks);
}

/* Marks t finished (done with output "out-<chunk>", or failed) after calls
 * model calls. */
static void finish(shoal_task_t *t, int ok, int calls)
{
    t->attempts = calls;
    t->state = ok ? SHOAL_TASK_DONE : SHOAL_TASK_FAILED;
    free(t->output);
    t->output = NULL;
    if (ok) {
        char out[32];
        snprintf(out, sizeof(out), "out-%ld", t->chunk);
        t->output = strdup(out);
        t->tokens_in = 10;
        t->tokens_out = 4;
    } else {
        snprintf(t->error, sizeof(t->error), "%s", "HTTP 400: bad request");
    }
}

/* Adds the attempt row of call number `attempt` of t (id "w1/<job>/<chunk>/<attempt>"). */
static void add_attempt(shoal_sink_t *s, shoal_task_t *t, int attempt, int status)
{
    char id[256];
    shoal_http_reply_t reply = {.status = status,
                                .retry_after_ms = -1,
                                .started_unix = 1700000000.0 + attempt,
                                .latency_ms = 20.0};
    snprintf(id, sizeof(id), "w1/%s/%ld/%d", t->job_id, t->chunk, attempt);
    t->attempts = attempt;
    shoal_task_call_t call = {.outcome = status == 200                    ? "ok"
                                         : status >= 500 || status == 429 ? "retry"
                                                                          : "failed",
                              .kind = status == 200   ? SHOAL_OUTCOME_OK
                                      : status == 429 ? SHOAL_OUTCOME_RATE_LIMITED
                                      : status >= 500 ? SHOAL_OUTCOME_SERVER_ERROR
                                                      : SHOAL_OUTCOME_PERMANENT,
                              .error = status == 200 ? NULL : "provider error",
                              .usage = {.input = 10, .output = 4}};
    json_t *row = shoal_task_attempt_row(t, id, "w1", &reply, &call);
    assert_true(row != NULL);
    shoal_sink_add_attempt(s, row);
}

static void add_result(shoal_sink_t *s, shoal_task_t *t, int token)
{
    assert_true(token >= 0 && token < MAX_TOKENS);
    json_t *row = shoal_task_result_row(t, NULL, "w1");
    assert_true(row != NULL);
    assert_int_eq(shoal_sink_add_result(s, row, &done_count[token]), SHOAL_OK);
}

static void flush_ok(shoal_sink_t *s, int want_done, int want_ended)
{
    char err[512];
    int calls = 0, ended = -1;
    memset(done_count, 0, sizeof(done_count));
    if (shoal_sink_flush(s, on_done, &calls, &ended, err, sizeof(err)) != SHOAL_OK)
        test_fail("flush: %s", err);
    assert_int_eq(calls, want_done);
    assert_int_eq(ended, want_ended);
    for (int i = 0; i < MAX_TOKENS; i++)
        assert_int_eq(done_count[i], i < want_done ? 1 : 0);
    assert_int_eq(shoal_sink_results(s), 0);
    assert_int_eq(shoal_sink_attempts(s), 0);
}

static void test_flush(shoal_pg_t *pg)
{
    char err[512];
    shoal_task_t **tasks = record_job(pg, "sink-1", 3);
    shoal_sink_t *s = shoal_sink_new(pg);
    assert_true(s != NULL);

    /* nothing waiting: nothing to do */
    flush_ok(s, 0, 0);

    /* chunk 0 took a retry, chunk 1 went through at once */
    finish(tasks[0], 1, 2);
    add_attempt(s, tasks[0], 1, 503);
    add_attempt(s, tasks[0], 2, 200);
    add_result(s, tasks[0], 0);
    finish(tasks[1], 1, 1);
    add_attempt(s, tasks[1], 1, 200);
    add_result(s, tasks[1], 1);
    assert_int_eq(shoal_sink_results(s), 2);
    assert_int_eq(shoal_sink_attempts(s), 3);
    flush_ok(s, 2, 0);
    assert_int_eq(
        sqlcheck_long(pg, "SELECT tasks_done FROM shoal.jobs WHERE job_id = $1", "sink-1"), 2);
    assert_int_eq(
        sqlcheck_long(pg, "SELECT count(*) FROM shoal.results WHERE job_id = $1", "sink-1"), 2);
    assert_int_eq(
        sqlcheck_long(pg, "SELECT count(*) FROM shoal.attempts WHERE job_id = $1", "sink-1"), 3);
    assert_int_eq(
        sqlcheck_long(pg, "SELECT attempts FROM shoal.tasks WHERE task_id = $1 AND status = 'done'",
                      "sink-1:000000"),
        2);
    assert_int_eq(
        sqlcheck_long(pg,
                      "SELECT count(*) FROM shoal.results WHERE task_id = $1 AND output = "
                      "'out-1' AND worker_id = 'w1' AND tokens_in = 10 AND tokens_out = 4",
                      "sink-1:000001"),
        1);

    /* the last task (failed) is added, then the database goes away */
    finish(tasks[2], 0, 1);
    add_attempt(s, tasks[2], 1, 400);
    add_result(s, tasks[2], 0);
    assert_int_eq(shoal_pgcluster_stop(cluster, SHOAL_PGCLUSTER_FAST), SHOAL_OK);
    for (int i = 0; i < 2; i++) {
        int calls = 0, ended = -1;
        memset(done_count, 0, sizeof(done_count));
        err[0] = '\0';
        assert_int_eq(shoal_sink_flush(s, on_done, &calls, &ended, err, sizeof(err)),
                      SHOAL_ERR_RETRY);
        assert_true(err[0] != '\0');
        assert_int_eq(calls, 0);
        assert_int_eq(done_count[0], 0);
        assert_int_eq(ended, 0);
        assert_int_eq(shoal_sink_results(s), 1);
        assert_int_eq(shoal_sink_attempts(s), 1);
    }
    if (shoal_pgcluster_start(cluster, err, sizeof(err)) != SHOAL_OK)
        test_fail("restart: %s", err);
    /* the kept batch goes out with the first flush and ends the job */
    flush_ok(s, 1, 1);
    assert_int_eq(
        sqlcheck_long(pg, "SELECT tasks_done FROM shoal.jobs WHERE job_id = $1", "sink-1"), 2);
    assert_int_eq(
        sqlcheck_long(pg, "SELECT tasks_failed FROM shoal.jobs WHERE job_id = $1", "sink-1"), 1);
    assert_int_eq(
        sqlcheck_long(pg, "SELECT count(*) FROM shoal.attempts WHERE job_id = $1", "sink-1"), 4);
    assert_int_eq(
        sqlcheck_long(pg, "SELECT count(*) FROM shoal.results WHERE job_id = $1", "sink-1"), 2);
    assert_int_eq(
        sqlcheck_long(pg,
                      "SELECT count(*) FROM shoal.tasks WHERE task_id = $1 AND status = 'failed' "
                      "AND error = 'HTTP 400: bad request'",
                      "sink-1:000002"),
        1);
    assert_int_eq(
        sqlcheck_long(pg,
                      "SELECT count(*) FROM shoal.attempts WHERE attempt_id = $1 AND "
                      "http_status = 400 AND outcome = 'failed' AND error = 'provider error'",
                      "w1/sink-1/2/1"),
        1);

    /* the same rows again, rebuilt as a worker that redelivers them would:
     * durable, so acknowledged, but counted once */
    add_attempt(s, tasks[0], 1, 503);
    add_attempt(s, tasks[0], 2, 200);
    finish(tasks[0], 1, 2);
    add_result(s, tasks[0], 0);
    add_attempt(s, tasks[1], 1, 200);
    finish(tasks[1], 1, 1);
    add_result(s, tasks[1], 1);
    add_attempt(s, tasks[2], 1, 400);
    finish(tasks[2], 0, 1);
    add_result(s, tasks[2], 2);
    flush_ok(s, 3, 0);
    assert_int_eq(
        sqlcheck_long(pg, "SELECT tasks_done FROM shoal.jobs WHERE job_id = $1", "sink-1"), 2);
    assert_int_eq(
        sqlcheck_long(pg, "SELECT tasks_failed FROM shoal.jobs WHERE job_id = $1", "sink-1"), 1);
    assert_int_eq(
        sqlcheck_long(pg, "SELECT count(*) FROM shoal.attempts WHERE job_id = $1", "sink-1"), 4);
    assert_int_eq(
        sqlcheck_long(pg, "SELECT count(*) FROM shoal.results WHERE job_id = $1", "sink-1"), 2);
    assert_int_eq(
        sqlcheck_long(pg, "SELECT sum(attempts) FROM shoal.tasks WHERE job_id = $1", "sink-1"), 4);

    /* attempts alone are a batch too */
    add_attempt(s, tasks[1], 2, 200);
    assert_int_eq(shoal_sink_results(s), 0);
    flush_ok(s, 0, 0);
    assert_int_eq(
        sqlcheck_long(pg, "SELECT count(*) FROM shoal.attempts WHERE job_id = $1", "sink-1"), 5);

    shoal_sink_destroy(s);
    free_tasks(tasks, 3);
}

/* More results than the sink's first token array holds, over two jobs that
 * both end in the same flush; and a sink dropped with rows unflushed. */
static void test_large_batch(shoal_pg_t *pg)
{
    const int big = 300;
    shoal_task_t **a = record_job(pg, "sink-big", big);
    shoal_task_t **b = record_job(pg, "sink-small", 1);
    shoal_sink_t *s = shoal_sink_new(pg);
    assert_true(s != NULL);
    for (int i = 0; i < big; i++) {
        finish(a[i], 1, 1);
        add_attempt(s, a[i], 1, 200);
        add_result(s, a[i], i);
    }
    finish(b[0], 1, 1);
    add_result(s, b[0], big);
    assert_int_eq(shoal_sink_results(s), big + 1);
    flush_ok(s, big + 1, 2);
    assert_int_eq(
        sqlcheck_long(pg, "SELECT tasks_done FROM shoal.jobs WHERE job_id = $1", "sink-big"), big);
    assert_int_eq(
        sqlcheck_long(pg, "SELECT count(*) FROM shoal.attempts WHERE job_id = $1", "sink-big"),
        big);

    /* destroy drops what was never flushed */
    add_attempt(s, a[0], 2, 200);
    add_result(s, a[0], 0);
    shoal_sink_destroy(s);
    shoal_sink_destroy(NULL);
    free_tasks(a, big);
    free_tasks(b, 1);
}

/* The columns of sql/005_usage.sql: a fallback's attempt and result keep
 * cache writes, the outcome kind and the model fallen back from; rows
 * without those keys get the defaults. */
static void test_usage_columns(shoal_pg_t *pg)
{
    shoal_task_t **tasks = record_job(pg, "sink-fb", 2);
    shoal_sink_t *s = shoal_sink_new(pg);
    const shoal_model_t *backup = shoal_models_find(models, "backup");
    shoal_http_reply_t reply = {.status = 529, .retry_after_ms = -1, .started_unix = 1700000000.0};
    shoal_task_call_t call = {.outcome = "retry",
                              .kind = SHOAL_OUTCOME_OVERLOADED,
                              .error = "HTTP 529: Overloaded",
                              .usage = {.input = 10}};

    assert_true(s != NULL && backup != NULL);
    tasks[0]->attempts = 1;
    shoal_sink_add_attempt(s,
                           shoal_task_attempt_row(tasks[0], "w1/sink-fb/0/1", "w1", &reply, &call));
    reply.status = 200;
    call =
        (shoal_task_call_t){.model = backup,
                            .outcome = "ok",
                            .kind = SHOAL_OUTCOME_TRUNCATED,
                            .usage = {.input = 100, .cached = 40, .cache_write = 50, .output = 7}};
    tasks[0]->attempts = 2;
    shoal_sink_add_attempt(s,
                           shoal_task_attempt_row(tasks[0], "w1/sink-fb/0/2", "w1", &reply, &call));
    finish(tasks[0], 1, 2);
    assert_int_eq(
        shoal_sink_add_result(s, shoal_task_result_row(tasks[0], backup, "w1"), &done_count[0]),
        SHOAL_OK);
    finish(tasks[1], 1, 1);
    add_result(s, tasks[1], 1);
    flush_ok(s, 2, 1);

    assert_int_eq(sqlcheck_long(pg,
                                "SELECT count(*) FROM shoal.attempts WHERE attempt_id = $1 AND "
                                "model = 'fast' AND fallback_from IS NULL AND outcome = 'retry' "
                                "AND outcome_kind = 'overloaded' AND tokens_cache_write = 0",
                                "w1/sink-fb/0/1"),
                  1);
    assert_int_eq(sqlcheck_long(pg,
                                "SELECT count(*) FROM shoal.attempts WHERE attempt_id = $1 AND "
                                "model = 'backup' AND fallback_from = 'fast' AND outcome = 'ok' "
                                "AND outcome_kind = 'truncated' AND tokens_in = 100 AND "
                                "tokens_cached = 40 AND tokens_cache_write = 50 AND "
                                "abs(cost_usd - (10 * 3 + 40 * 3 + 50 * 3.75 + 7 * 15) / 1e6) "
                                "< 1e-12",
                                "w1/sink-fb/0/2"),
                  1);
    assert_int_eq(sqlcheck_long(pg,
                                "SELECT count(*) FROM shoal.results WHERE task_id = $1 AND "
                                "model = 'backup' AND model_requested = 'fast'",
                                "sink-fb:000000"),
                  1);
    assert_int_eq(sqlcheck_long(pg,
                                "SELECT count(*) FROM shoal.results WHERE task_id = $1 AND "
                                "model = 'fast' AND model_requested IS NULL",
                                "sink-fb:000001"),
                  1);

    /* a row of an older worker, without the new keys: defaults */
    assert_int_eq(sqlcheck_long(pg,
                                "SELECT count(*) FROM shoal.record_batch('[]', jsonb_build_array("
                                "jsonb_build_object('attempt_id', $1::text, 'task_id', "
                                "'sink-fb:000001', 'job_id', 'sink-fb', 'attempt', 2, 'model', "
                                "'fast', 'worker_id', 'w0', 'http_status', 200, 'outcome', 'ok', "
                                "'latency_ms', 1, 'started_at', 1700000000, 'finished_at', "
                                "1700000001)))",
                                "w0/old/1"),
                  0);
    assert_int_eq(sqlcheck_long(pg,
                                "SELECT count(*) FROM shoal.attempts WHERE attempt_id = $1 AND "
                                "tokens_cache_write = 0 AND outcome_kind IS NULL AND "
                                "fallback_from IS NULL",
                                "w0/old/1"),
                  1);
    /* an outcome kind the worker does not have is refused */
    char err[512];
    PGresult *res = NULL;
    const char *bad =
        "[{\"attempt_id\": \"w0/bad/1\", \"task_id\": \"sink-fb:000001\", \"job_id\": "
        "\"sink-fb\", \"attempt\": 3, \"model\": \"fast\", \"worker_id\": \"w0\", "
        "\"http_status\": 200, \"outcome\": \"ok\", \"outcome_kind\": \"fine\", \"latency_ms\": 1, "
        "\"started_at\": 1700000000, \"finished_at\": 1700000001}]";
    const char *params[] = {bad};
    assert_true(shoal_pg_exec(pg, "SELECT shoal.record_batch('[]', $1::jsonb)", 1, params, &res,
                              err, sizeof(err)) != SHOAL_OK);
    assert_str_contains(err, "outcome_kind");
    PQclear(res);

    shoal_sink_destroy(s);
    free_tasks(tasks, 2);
}

/* A result the database refuses for good (bytes in its output that are not
 * UTF-8) is found by halving the batch: it is recorded failed with
 * the reason, and the rest of the batch is written as it is. */
static void test_refused_row(shoal_pg_t *pg)
{
    shoal_task_t **t = record_job(pg, "sink-bad", 4);
    shoal_sink_t *s = shoal_sink_new(pg);
    for (int i = 0; i < 4; i++) {
        finish(t[i], 1, 1);
        add_attempt(s, t[i], 1, 200);
        json_t *row = shoal_task_result_row(t[i], NULL, "w1");
        if (i == 2)
            json_object_set_new(row, "output", json_stringn_nocheck("bad \xff byte", 10));
        assert_int_eq(shoal_sink_add_result(s, row, &done_count[i]), SHOAL_OK);
    }
    assert_true(shoal_sink_bytes(s) > 0);
    flush_ok(s, 4, 1);
    assert_int_eq(shoal_sink_refused(s), 1);
    assert_int_eq(shoal_sink_bytes(s), 0);
    assert_int_eq(
        sqlcheck_long(pg, "SELECT count(*) FROM shoal.results WHERE job_id = $1", "sink-bad"), 3);
    assert_int_eq(sqlcheck_long(pg,
                                "SELECT count(*) FROM shoal.tasks WHERE task_id = $1 AND status = "
                                "'failed' AND error LIKE 'the database refused the result: %'",
                                t[2]->task_id),
                  1);
    assert_int_eq(
        sqlcheck_long(pg, "SELECT tasks_failed FROM shoal.jobs WHERE job_id = $1", "sink-bad"), 1);
    shoal_sink_destroy(s);
    free_tasks(t, 4);
}

/* A call record the database refuses for good (its error text not UTF-8),
 * here the last of the batch, is found by halving and dropped; the other
 * records and every result are written. */
static void test_refused_attempt(shoal_pg_t *pg)
{
    shoal_task_t **t = record_job(pg, "sink-badcall", 3);
    shoal_sink_t *s = shoal_sink_new(pg);
    for (int i = 0; i < 3; i++) {
        finish(t[i], 1, 1);
        if (i < 2) {
            add_attempt(s, t[i], 1, 200);
        } else {
            shoal_http_reply_t reply = {.status = 500, .retry_after_ms = -1, .latency_ms = 5};
            shoal_task_call_t call = {
                .outcome = "retry", .kind = SHOAL_OUTCOME_SERVER_ERROR, .error = "provider error"};
            json_t *row = shoal_task_attempt_row(t[i], "w1/sink-badcall/2/1", "w1", &reply, &call);
            json_object_set_new(row, "error", json_stringn_nocheck("bad \xff byte", 10));
            shoal_sink_add_attempt(s, row);
        }
        add_result(s, t[i], i);
    }
    assert_int_eq(shoal_sink_attempts(s), 3);
    flush_ok(s, 3, 1);
    assert_int_eq(shoal_sink_refused(s), 1);
    assert_int_eq(
        sqlcheck_long(pg, "SELECT count(*) FROM shoal.attempts WHERE job_id = $1", "sink-badcall"),
        2);
    assert_int_eq(
        sqlcheck_long(pg, "SELECT count(*) FROM shoal.results WHERE job_id = $1", "sink-badcall"),
        3);
    shoal_sink_destroy(s);
    free_tasks(t, 3);
}

/* The database thread: a check tells which tasks finished and how many
 * counted calls each made; a write hands back every token once and the
 * sink to reuse; while the server is away the write waits and the store
 * says it is failing; after a restart it completes. */
struct seen {
    int checked, written, tokens, ended;
    size_t checked_tasks; /* over every check */
    const char *status[8];
    int attempts[8];
    shoal_sink_t *sink;
};

static void on_store_done(const shoal_store_done_t *d, void *arg)
{
    struct seen *w = arg;
    if (d->kind == SHOAL_STORE_CHECKED) {
        w->checked++;
        w->checked_tasks += d->ntasks;
        for (size_t i = 0; i < d->ntasks && i < 8; i++) {
            free((char *)w->status[i]);
            w->status[i] = d->status && d->status[i] ? strdup(d->status[i]) : NULL;
            w->attempts[i] = d->attempts ? d->attempts[i] : -1;
        }
        return;
    }
    w->written++;
    w->tokens += (int)d->ntokens;
    w->ended += d->jobs_ended;
    w->sink = d->sink;
}

static void test_store(shoal_pg_t *pg)
{
    char err[512];
    int wake[2];
    assert_int_eq(pipe(wake), 0);
    shoal_task_t **t = record_job(pg, "store-1", 3);
    /* Task 0 is done after a 429 (not counted) and an ok call. */
    shoal_sink_t *s = shoal_sink_new(pg);
    finish(t[0], 1, 2);
    add_attempt(s, t[0], 1, 429);
    add_attempt(s, t[0], 2, 200);
    add_result(s, t[0], 0);
    add_attempt(s, t[1], 1, 500);
    flush_ok(s, 1, 0);
    shoal_sink_destroy(s);

    shoal_store_t *st = shoal_store_new(shoal_pgcluster_url(cluster), wake[1], err, sizeof(err));
    assert_true(st != NULL);
    struct seen w;
    memset(&w, 0, sizeof(w));
    assert_int_eq(shoal_store_check(st, t, 3), SHOAL_OK);
    assert_int_eq(shoal_store_pending(st), 1);
    assert_wait(shoal_store_poll(st, on_store_done, &w) > 0 || w.checked, 20, "the check");
    assert_int_eq(w.checked, 1);
    assert_str_eq(w.status[0], "done");
    assert_str_eq(w.status[1], "pending");
    assert_int_eq(w.attempts[0], 1); /* the 429 does not count */
    assert_int_eq(w.attempts[1], 1);
    assert_int_eq(w.attempts[2], 0);
    char b;
    assert_int_eq(read(wake[0], &b, 1), 1); /* it woke the loop */

    /* Checks queued behind one that runs go as one statement: here the
     * first waits for a lock another session holds on the tasks. */
    char url[512];
    snprintf(url, sizeof(url), "%s", shoal_pgcluster_url(cluster));
    shoal_pg_t *locker = shoal_pg_new(url, "sink_test_locker");
    if (shoal_pg_exec(locker, "BEGIN; LOCK TABLE shoal.tasks IN ACCESS EXCLUSIVE MODE", 0, NULL,
                      NULL, err, sizeof(err)) != SHOAL_OK)
        test_fail("lock: %s", err);
    w.checked = 0;
    w.checked_tasks = 0;
    assert_int_eq(shoal_store_check(st, t, 1), SHOAL_OK);
    assert_wait(sqlcheck_long(pg,
                              "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1 "
                              "AND wait_event_type = 'Lock'",
                              "shoal-worker") == 1,
                20, "the first check to wait for the lock");
    assert_int_eq(shoal_store_check(st, t + 1, 1), SHOAL_OK);
    assert_int_eq(shoal_store_check(st, t + 2, 1), SHOAL_OK);
    assert_int_eq(shoal_store_check(st, t, 2), SHOAL_OK);
    assert_int_eq(shoal_store_pending(st), 2);
    assert_int_eq(shoal_pg_exec(locker, "ROLLBACK", 0, NULL, NULL, err, sizeof(err)), SHOAL_OK);
    shoal_pg_destroy(locker);
    assert_wait(shoal_store_poll(st, on_store_done, &w) >= 0 && w.checked == 2, 20,
                "the two checks");
    assert_int_eq(w.checked_tasks, 5);
    assert_int_eq(shoal_store_pending(st), 0);

    shoal_sink_t *mine = shoal_sink_new(NULL);
    finish(t[1], 1, 2);
    add_attempt(mine, t[1], 2, 200);
    add_result(mine, t[1], 1);
    assert_int_eq(shoal_store_write(st, mine), SHOAL_OK);
    assert_int_eq(shoal_store_writes_pending(st), 1);
    assert_wait(shoal_store_poll(st, on_store_done, &w) > 0 || w.written, 20, "the write");
    assert_int_eq(w.tokens, 1);
    assert_true(w.sink == mine);
    assert_int_eq(shoal_sink_results(mine), 0);
    assert_int_eq(shoal_store_writes_pending(st), 0);

    /* The server goes away: the write waits, and lands after the restart. */
    assert_int_eq(shoal_pgcluster_stop(cluster, SHOAL_PGCLUSTER_FAST), SHOAL_OK);
    finish(t[2], 1, 1);
    add_attempt(mine, t[2], 1, 200);
    add_result(mine, t[2], 2);
    assert_int_eq(shoal_store_write(st, mine), SHOAL_OK);
    assert_wait(shoal_store_failing_ms(st) > 0, 20, "the store to notice the outage");
    assert_int_eq(shoal_store_poll(st, on_store_done, &w), 0);
    assert_int_eq(shoal_store_writes_pending(st), 1);
    if (shoal_pgcluster_start(cluster, err, sizeof(err)) != SHOAL_OK)
        test_fail("restart: %s", err);
    assert_wait(shoal_store_poll(st, on_store_done, &w) > 0 || w.written == 2, 30,
                "the write after the restart");
    assert_int_eq(w.written, 2);
    assert_int_eq(w.tokens, 2);
    assert_int_eq(w.ended, 1); /* the write finished the job */
    assert_true(shoal_store_failing_ms(st) == 0);
    /* this test's own connection died with the server: let it reconnect */
    shoal_pg_exec(pg, "SELECT 1", 0, NULL, NULL, err, sizeof(err));
    assert_int_eq(
        sqlcheck_long(pg, "SELECT tasks_done FROM shoal.jobs WHERE job_id = $1", "store-1"), 3);

    /* Work queued at destroy is dropped without a leak. */
    shoal_task_t *one[] = {t[0]};
    assert_int_eq(shoal_store_check(st, one, 1), SHOAL_OK);
    shoal_store_destroy(st);
    shoal_store_destroy(NULL);
    shoal_sink_destroy(mine);
    for (int i = 0; i < 8; i++)
        free((char *)w.status[i]);
    free_tasks(t, 3);
    close(wake[0]);
    close(wake[1]);
}

int main(void)
{
    char err[512];

    shoal_log_init("sink_test", SHOAL_LOG_ERROR, 0);
    models = shoal_models_parse(models_text, strlen(models_text), err, sizeof(err));
    if (!models)
        test_fail("models: %s", err);
    shoal_pg_t *pg = testdb_start("sink_test", &cluster);

    test_flush(pg);
    test_large_batch(pg);
    test_usage_columns(pg);
    test_refused_row(pg);
    test_refused_attempt(pg);
    test_store(pg);

    shoal_pg_destroy(pg);
    shoal_pgcluster_destroy(cluster);
    shoal_models_destroy(models);
    printf("sink_test: ok\n");
    return 0;
}
