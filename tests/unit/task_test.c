/*
 * worker/task: a task message made by the scheduler's own code (a parsed job
 * cut into tasks) parses into a task whose request body carries the models
 * file's model name, the system prompt, the rendered prompt and, for JSON
 * output, response_format; poison messages (not JSON, fields missing or out
 * of range, a newer version, an unknown model) give NULL and a reason naming
 * the field; attempt and result rows carry the
 * fields shoal.record_batch reads; offset refs grow without losing any.
 * Failing each jansson allocation in turn must give NULL with a reason or
 * exactly the clean request, never a request with a part left out.
 */
#include "worker/task.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include "common/itembatch.h"
#include "common/job.h"
#include "common/taskmsg.h"
#include "common/models.h"
#include "tests/support/check.h"

static const char models_text[] =
    "{\"models\": {"
    "\"fast\": {\"provider\": \"openai\", \"endpoint\": \"http://127.0.0.1:9/v1/chat/completions\","
    " \"model\": \"gpt-4o-mini\", \"input_usd_per_mtok\": 1.5, \"output_usd_per_mtok\": 6,"
    " \"cached_input_usd_per_mtok\": 0.5, \"max_output_tokens\": 256},"
    "\"smart\": {\"provider\": \"anthropic\", \"endpoint\": \"http://127.0.0.1:9/v1/messages\","
    " \"model\": \"claude-test-1\", \"input_usd_per_mtok\": 3, \"output_usd_per_mtok\": 15}"
    "}}";

/* Three items, two per chunk: chunk 0 holds a and b, chunk 1 holds c (as
 * long as a and b together, so balancing keeps this cut). */
static const char job_json[] =
    "{\"tenant\": \"acme\", \"model\": \"fast\", \"system\": \"You sort tickets.\","
    " \"prompt_template\": \"Classify:\\n{{input}}\","
    " \"items\": [{\"id\": \"a\", \"input\": \"printer jams\"},"
    "             {\"id\": \"b\", \"input\": \"vpn drops {{input}}\"},"
    "             {\"id\": \"c\", \"input\": \"disk full on the shared build volume again\"}],"
    " \"chunking\": {\"max_items\": 2}, \"output\": {\"format\": \"json\"},"
    " \"max_attempts\": 4, \"timeout_ms\": 20000}";

/* One item, text output, no system prompt, the Anthropic alias. */
static const char job_anthropic[] =
    "{\"job_id\": \"ant-1\", \"tenant\": \"acme\", \"model\": \"smart\","
    " \"prompt_template\": \"Say {{input}} back\","
    " \"items\": [{\"id\": \"x\", \"input\": \"hello\"}]}";

static shoal_models_t *models;

/* The tasks of a job as an array of JSON texts (caller frees each and the
 * array); *n receives how many. */
static char **make_tasks(const char *text, const char *id, size_t *n)
{
    char err[512];
    shoal_job_t *job = shoal_job_parse(text, strlen(text), 0, models, err, sizeof(err));
    if (!job)
        test_fail("job: %s", err);
    if (id)
        assert_int_eq(shoal_job_set_id(job, id), SHOAL_OK);
    json_t *tasks = shoal_taskmsg_build_all(job, err, sizeof(err));
    if (!tasks)
        test_fail("tasks: %s", err);
    *n = json_array_size(tasks);
    char **out = calloc(*n, sizeof(*out));
    assert_true(out != NULL);
    for (size_t i = 0; i < *n; i++) {
        out[i] = json_dumps(json_array_get(tasks, i), JSON_COMPACT);
        assert_true(out[i] != NULL);
    }
    json_decref(tasks);
    shoal_job_destroy(job);
    return out;
}

static void free_tasks(char **tasks, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(tasks[i]);
    free(tasks);
}

static shoal_task_t *parse_ok(const char *text)
{
    char err[512];
    shoal_task_t *t = shoal_task_parse(text, strlen(text), models, err, sizeof(err));
    if (!t)
        test_fail("parse: %s", err);
    return t;
}

/* The request body of t, decoded. Caller decrefs. */
static json_t *request_of(const shoal_task_t *t)
{
    json_error_t jerr;
    assert_true(t->request != NULL);
    assert_int_eq(t->request_len, strlen(t->request));
    json_t *req = json_loadb(t->request, t->request_len, 0, &jerr);
    if (!json_is_object(req))
        test_fail("request is not a JSON object: %s", t->request);
    return req;
}

static const char *msg_field(const json_t *req, size_t i, const char *key)
{
    return json_string_value(
        json_object_get(json_array_get(json_object_get(req, "messages"), i), key));
}

static void test_parse_openai(void)
{
    size_t n;
    char **tasks = make_tasks(job_json, "job-7", &n);
    assert_int_eq(n, 2);

    shoal_task_t *t = parse_ok(tasks[0]);
    assert_str_eq(t->task_id, "job-7:000000");
    assert_str_eq(t->job_id, "job-7");
    assert_int_eq(t->chunk, 0);
    assert_int_eq(t->max_attempts, 4);
    assert_int_eq(t->timeout_ms, 20000);
    assert_int_eq(t->want_json, 1);
    assert_true(t->model == shoal_models_find(models, "fast"));
    assert_int_eq(t->state, SHOAL_TASK_TAKEN);
    assert_int_eq(t->attempts, 0);
    assert_true(t->output == NULL);
    assert_int_eq(t->nrefs, 0);
    assert_int_eq(t->version, 1);
    assert_str_eq(t->priority, "normal");
    assert_int_eq(json_array_size(t->fallback_models), 0);
    assert_true(t->output_schema == NULL);
    assert_int_ge(t->est_tokens, 1);

    json_t *req = request_of(t);
    assert_str_eq(json_string_value(json_object_get(req, "model")), "gpt-4o-mini");
    assert_int_eq(json_array_size(json_object_get(req, "messages")), 2);
    assert_str_eq(msg_field(req, 0, "role"), "system");
    assert_str_eq(msg_field(req, 0, "content"), "You sort tickets.");
    assert_str_eq(msg_field(req, 1, "role"), "user");
    /* several items: each as "[id]\ninput"; an input's own {{input}} stays */
    assert_str_eq(msg_field(req, 1, "content"),
                  "Classify:\n[a]\nprinter jams\n\n[b]\nvpn drops {{input}}");
    assert_str_eq(
        json_string_value(json_object_get(json_object_get(req, "response_format"), "type")),
        "json_object");
    assert_int_eq(json_integer_value(json_object_get(req, "max_tokens")), 256);
    json_decref(req);
    shoal_task_destroy(t);

    /* one item: its input verbatim */
    t = parse_ok(tasks[1]);
    assert_str_eq(t->task_id, "job-7:000001");
    assert_int_eq(t->chunk, 1);
    req = request_of(t);
    assert_str_eq(msg_field(req, 1, "content"),
                  "Classify:\ndisk full on the shared build volume again");
    json_decref(req);
    shoal_task_destroy(t);
    free_tasks(tasks, n);
}

static void test_parse_anthropic(void)
{
    size_t n;
    char **tasks = make_tasks(job_anthropic, NULL, &n);
    assert_int_eq(n, 1);
    shoal_task_t *t = parse_ok(tasks[0]);
    assert_str_eq(t->task_id, "ant-1:000000");
    assert_true(t->model == shoal_models_find(models, "smart"));
    assert_int_eq(t->want_json, 0);
    /* the job's defaults travel in the message */
    assert_int_eq(t->max_attempts, 3);
    assert_int_eq(t->timeout_ms, 60000);

    json_t *req = request_of(t);
    assert_str_eq(json_string_value(json_object_get(req, "model")), "claude-test-1");
    assert_true(json_object_get(req, "system") == NULL);
    assert_true(json_object_get(req, "response_format") == NULL);
    assert_int_eq(json_array_size(json_object_get(req, "messages")), 1);
    assert_str_eq(msg_field(req, 0, "role"), "user");
    assert_str_eq(msg_field(req, 0, "content"), "Say hello back");
    json_decref(req);
    shoal_task_destroy(t);

    /* the same task sent to the Anthropic alias with a system prompt and JSON
     * output: system is top-level, and there is no response_format */
    json_t *doc = json_loads(tasks[0], 0, NULL);
    assert_true(doc != NULL);
    json_object_set_new(doc, "system", json_string("Be brief."));
    json_object_set_new(json_object_get(doc, "output"), "format", json_string("json"));
    char *text = json_dumps(doc, JSON_COMPACT);
    t = parse_ok(text);
    assert_int_eq(t->want_json, 1);
    req = request_of(t);
    assert_str_eq(json_string_value(json_object_get(req, "system")), "Be brief.");
    assert_true(json_object_get(req, "response_format") == NULL);
    assert_int_eq(json_array_size(json_object_get(req, "messages")), 1);
    json_decref(req);
    shoal_task_destroy(t);
    free(text);
    json_decref(doc);
    free_tasks(tasks, n);
}

/* Parses text, which must fail with a reason containing why. */
static void poison(const char *text, const char *why)
{
    char err[512] = "";
    shoal_task_t *t = shoal_task_parse(text, strlen(text), models, err, sizeof(err));
    if (t)
        test_fail("parsed a poison message: %s", text);
    assert_str_contains(err, why);
}

/* Returns tmpl with key removed (or set to value when value is not NULL). */
static char *edited(const char *tmpl, const char *key, json_t *value)
{
    json_t *doc = json_loads(tmpl, 0, NULL);
    assert_true(doc != NULL);
    if (value)
        json_object_set_new(doc, key, value);
    else
        assert_int_eq(json_object_del(doc, key), 0);
    char *text = json_dumps(doc, JSON_COMPACT);
    assert_true(text != NULL);
    json_decref(doc);
    return text;
}

static void test_poison(void)
{
    size_t n;
    char **tasks = make_tasks(job_json, "job-7", &n);
    /* everything the worker reads, and the job's defaults it has none of */
    const char *required[] = {"task_id", "job_id",       "chunk",      "model", "prompt_template",
                              "items",   "max_attempts", "timeout_ms", "output"};

    poison("", "task: invalid JSON at line 1");
    poison("not json", "task: invalid JSON at line 1, column 3: invalid token");
    poison("[1, 2]", "task: expected a JSON object, got an array");
    poison("\"task\"", "task: expected a JSON object, got \"task\"");
    poison("{}", "task: missing required field \"task_id\"");
    for (size_t i = 0; i < sizeof(required) / sizeof(required[0]); i++) {
        char *text = edited(tasks[0], required[i], NULL), want[128];
        snprintf(want, sizeof(want), "task: missing required field \"%s\"", required[i]);
        poison(text, want);
        free(text);
    }
    /* present but of the wrong type or out of range */
    char *text = edited(tasks[0], "chunk", json_string("0"));
    poison(text, "task.chunk: expected an integer from 0 to 99999, got \"0\"");
    free(text);
    text = edited(tasks[0], "items", json_object());
    poison(text, "task.items: expected an array of 1 to 1000 items, got an object");
    free(text);
    text = edited(tasks[0], "task_id", json_integer(7));
    poison(text, "task.task_id: expected a non-empty string, got 7");
    free(text);
    text = edited(tasks[0], "max_attempts", json_integer(0));
    poison(text, "task.max_attempts: expected an integer from 1 to 20, got 0");
    free(text);
    /* a model this worker does not know */
    text = edited(tasks[0], "model", json_string("nope"));
    poison(text, "task.model: \"nope\" is not in this worker's models file");
    free(text);
    /* items that cannot be rendered */
    text = edited(tasks[0], "items", json_pack("[{s:i}]", "id", 1));
    poison(text, "task.items[0].id: expected a non-empty string, got 1");
    free(text);
    /* a message from a newer scheduler */
    text = edited(tasks[0], "v", json_integer(3));
    poison(text, "task message version 3 is newer than this worker understands (2)");
    free(text);
    /* a batch task runs: its prompt asks for the items by id, its request
     * for JSON, it keeps its items and is never repaired */
    text = edited(tasks[0], "v", json_integer(2));
    {
        json_t *d = json_loads(text, 0, NULL);
        json_object_set_new(d, "mode", json_string("batch"));
        json_object_set_new(d, "task_id", json_string("job-7:000000.3"));
        json_object_set_new(json_object_get(d, "output"), "format", json_string("text"));
        free(text);
        text = json_dumps(d, JSON_COMPACT);
        json_decref(d);
    }
    {
        shoal_task_t *bt = parse_ok(text);
        assert_int_eq(bt->batch, 1);
        assert_int_eq(bt->split_level, 3);
        assert_int_eq(bt->want_json, 0);
        assert_int_eq(json_array_size(bt->items), 2);
        assert_str_contains(bt->prompt, SHOAL_ITEMBATCH_IDS_MARK "[\"a\",\"b\"]");
        assert_str_contains(bt->request, "json_object");
        assert_int_eq(shoal_task_begin_repair(bt, "{}", "no item answered"), SHOAL_ERR_INVALID);
        shoal_task_set_state(bt, SHOAL_TASK_DONE);
        assert_true(bt->items == NULL);
        shoal_task_destroy(bt);
    }
    free(text);
    /* a message cut short */
    char cut[64];
    snprintf(cut, sizeof(cut), "%.40s", tasks[0]);
    poison(cut, "task: invalid JSON");

    /* a message from before versions (no "v") is version 1 */
    text = edited(tasks[0], "v", NULL);
    shoal_task_t *t = parse_ok(text);
    assert_int_eq(t->version, 1);
    assert_str_eq(t->task_id, "job-7:000000");
    shoal_task_destroy(t);
    free(text);
    shoal_task_destroy(NULL);
    free_tasks(tasks, n);
}

static double unix_now(void)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (double)tv.tv_sec + (double)tv.tv_usec / 1e6;
}

/* The attempts columns shoal.record_batch reads (sql/002_functions.sql). */
/* (sql/005_usage.sql adds outcome_kind, tokens_cache_write, fallback_from
 * and model_requested.) */
static const char *const attempt_cols[] = {
    "attempt_id",     "task_id",     "job_id",      "attempt",       "model",
    "worker_id",      "http_status", "outcome",     "error",         "latency_ms",
    "queue_ms",       "tokens_in",   "tokens_out",  "tokens_cached", "cost_usd",
    "retry_after_ms", "started_at",  "finished_at", "outcome_kind",  "tokens_cache_write",
    "fallback_from",  NULL};
static const char *const result_cols[] = {
    "task_id",    "job_id",    "chunk", "status",   "output",          "model", "tokens_in",
    "tokens_out", "worker_id", "error", "attempts", "model_requested", NULL};

/* The attempts row of a call of t's own model that ended with this outcome. */
static json_t *attempt_row(const shoal_task_t *t, const char *id, const shoal_http_reply_t *reply,
                           const char *outcome, const char *error, long in, long out, long cached)
{
    shoal_task_call_t call = {.outcome = outcome,
                              .kind = strcmp(outcome, "ok") == 0 ? SHOAL_OUTCOME_OK
                                                                 : SHOAL_OUTCOME_SERVER_ERROR,
                              .error = error,
                              .usage = {.input = in, .cached = cached, .output = out}};
    return shoal_task_attempt_row(t, id, "w1", reply, &call);
}

static void only_known_keys(const json_t *row, const char *const *cols)
{
    const char *key;
    json_t *v;
    json_object_foreach((json_t *)row, key, v)
    {
        size_t i;
        for (i = 0; cols[i] && strcmp(cols[i], key) != 0; i++)
            ;
        if (!cols[i])
            test_fail("row has \"%s\", which shoal.record_batch does not read", key);
    }
}

static double num(const json_t *row, const char *key)
{
    const json_t *v = json_object_get(row, key);
    if (!json_is_number(v))
        test_fail("row has no number \"%s\"", key);
    return json_number_value(v);
}

static void test_attempt_row(void)
{
    size_t n;
    char **tasks = make_tasks(job_json, "job-7", &n);
    shoal_task_t *t = parse_ok(tasks[1]);
    t->attempts = 2;
    t->received_unix = 1700000000.0;
    shoal_http_reply_t reply = {.status = 200,
                                .body = "{}",
                                .len = 2,
                                .retry_after_ms = -1,
                                .started_unix = 1700000000.25,
                                .latency_ms = 12.5};

    double before = unix_now();
    json_t *row = attempt_row(t, "w1/17", &reply, "ok", NULL, 1000, 500, 400);
    double after = unix_now();
    assert_true(row != NULL);
    only_known_keys(row, attempt_cols);
    assert_str_eq(json_string_value(json_object_get(row, "attempt_id")), "w1/17");
    assert_str_eq(json_string_value(json_object_get(row, "task_id")), "job-7:000001");
    assert_str_eq(json_string_value(json_object_get(row, "job_id")), "job-7");
    assert_int_eq(json_integer_value(json_object_get(row, "attempt")), 2);
    assert_str_eq(json_string_value(json_object_get(row, "model")), "fast"); /* the alias */
    assert_str_eq(json_string_value(json_object_get(row, "worker_id")), "w1");
    assert_int_eq(json_integer_value(json_object_get(row, "http_status")), 200);
    assert_str_eq(json_string_value(json_object_get(row, "outcome")), "ok");
    assert_true(num(row, "latency_ms") == 12.5);
    assert_int_eq(json_integer_value(json_object_get(row, "tokens_in")), 1000);
    assert_int_eq(json_integer_value(json_object_get(row, "tokens_out")), 500);
    assert_int_eq(json_integer_value(json_object_get(row, "tokens_cached")), 400);
    /* 600 uncached at 1.5, 400 cached at 0.5, 500 out at 6, per million */
    double cost = num(row, "cost_usd");
    assert_true(cost > 0.00409999 && cost < 0.00410001);
    shoal_usage_t u = {.input = 1000, .cached = 400, .output = 500};
    assert_true(cost == shoal_model_cost(t->model, &u));
    assert_str_eq(json_string_value(json_object_get(row, "outcome_kind")), "ok");
    assert_int_eq(json_integer_value(json_object_get(row, "tokens_cache_write")), 0);
    assert_true(json_object_get(row, "fallback_from") == NULL);
    assert_true(num(row, "started_at") == 1700000000.25);
    assert_true(num(row, "finished_at") >= before && num(row, "finished_at") <= after);
    double q = num(row, "queue_ms");
    assert_true(q > 249.999 && q < 250.001);
    assert_true(json_object_get(row, "error") == NULL);
    assert_true(json_object_get(row, "retry_after_ms") == NULL);
    json_decref(row);

    /* an empty error is no error; a failed call carries its error and
     * Retry-After */
    row = attempt_row(t, "w1/18", &reply, "ok", "", 0, 0, 0);
    assert_true(json_object_get(row, "error") == NULL);
    assert_true(num(row, "cost_usd") == 0);
    json_decref(row);
    reply.status = 429;
    reply.retry_after_ms = 1500;
    row = attempt_row(t, "w1/19", &reply, "retry", "rate limited", 0, 0, 0);
    assert_str_eq(json_string_value(json_object_get(row, "error")), "rate limited");
    assert_str_eq(json_string_value(json_object_get(row, "outcome")), "retry");
    assert_int_eq(json_integer_value(json_object_get(row, "http_status")), 429);
    assert_int_eq(json_integer_value(json_object_get(row, "retry_after_ms")), 1500);
    json_decref(row);

    /* no HTTP answer: status 0 */
    reply.status = 0;
    reply.retry_after_ms = -1;
    row = attempt_row(t, "w1/20", &reply, "retry", "timed out", 0, 0, 0);
    assert_int_eq(json_integer_value(json_object_get(row, "http_status")), 0);
    assert_str_eq(json_string_value(json_object_get(row, "error")), "timed out");
    json_decref(row);

    /* queue_ms only when the receive time is known and not after the start */
    t->received_unix = 0;
    row = attempt_row(t, "w1/21", &reply, "ok", NULL, 0, 0, 0);
    assert_true(json_object_get(row, "queue_ms") == NULL);
    json_decref(row);
    t->received_unix = reply.started_unix + 1;
    row = attempt_row(t, "w1/22", &reply, "ok", NULL, 0, 0, 0);
    assert_true(json_object_get(row, "queue_ms") == NULL);
    json_decref(row);
    t->received_unix = reply.started_unix;
    row = attempt_row(t, "w1/23", &reply, "ok", NULL, 0, 0, 0);
    assert_true(num(row, "queue_ms") == 0);
    json_decref(row);

    /* a fallback's call: its alias and prices, the task's own model named as
     * what it fell back from; cache writes and the outcome kind recorded */
    const shoal_model_t *smart = shoal_models_find(models, "smart");
    shoal_task_call_t call = {
        .model = smart,
        .outcome = "retry",
        .kind = SHOAL_OUTCOME_OVERLOADED,
        .error = "HTTP 529: Overloaded",
        .usage = {.input = 1000, .cached = 200, .cache_write = 300, .output = 100}};
    row = shoal_task_attempt_row(t, "w1/24", "w1", &reply, &call);
    only_known_keys(row, attempt_cols);
    assert_str_eq(json_string_value(json_object_get(row, "model")), "smart");
    assert_str_eq(json_string_value(json_object_get(row, "fallback_from")), "fast");
    assert_str_eq(json_string_value(json_object_get(row, "outcome")), "retry");
    assert_str_eq(json_string_value(json_object_get(row, "outcome_kind")), "overloaded");
    assert_int_eq(json_integer_value(json_object_get(row, "tokens_in")), 1000);
    assert_int_eq(json_integer_value(json_object_get(row, "tokens_cached")), 200);
    assert_int_eq(json_integer_value(json_object_get(row, "tokens_cache_write")), 300);
    /* 500 at 3, 200 at 3 (no cached price), 300 at 3.75, 100 at 15, per million */
    cost = num(row, "cost_usd");
    assert_true(cost > 0.0047249 && cost < 0.0047251);
    json_decref(row);

    shoal_task_destroy(t);
    free_tasks(tasks, n);
}

static void test_result_row(void)
{
    size_t n;
    char **tasks = make_tasks(job_json, "job-7", &n);
    shoal_task_t *t = parse_ok(tasks[1]);

    t->state = SHOAL_TASK_DONE;
    t->output = strdup("{\"label\": \"storage\"}");
    t->tokens_in = 42;
    t->tokens_out = 7;
    t->attempts = 3;
    snprintf(t->error, sizeof(t->error), "%s", "an earlier attempt failed");
    json_t *row = shoal_task_result_row(t, NULL, "w9");
    assert_true(row != NULL);
    only_known_keys(row, result_cols);
    assert_str_eq(json_string_value(json_object_get(row, "task_id")), "job-7:000001");
    assert_str_eq(json_string_value(json_object_get(row, "job_id")), "job-7");
    assert_int_eq(json_integer_value(json_object_get(row, "chunk")), 1);
    assert_str_eq(json_string_value(json_object_get(row, "status")), "done");
    assert_str_eq(json_string_value(json_object_get(row, "model")), "fast");
    assert_int_eq(json_integer_value(json_object_get(row, "tokens_in")), 42);
    assert_int_eq(json_integer_value(json_object_get(row, "tokens_out")), 7);
    assert_str_eq(json_string_value(json_object_get(row, "worker_id")), "w9");
    assert_int_eq(json_integer_value(json_object_get(row, "attempts")), 3);
    assert_str_eq(json_string_value(json_object_get(row, "output")), "{\"label\": \"storage\"}");
    assert_true(json_object_get(row, "error") == NULL);
    assert_true(json_object_get(row, "model_requested") == NULL);
    json_decref(row);

    /* served by a fallback: its alias, and the task's own as requested */
    row = shoal_task_result_row(t, shoal_models_find(models, "smart"), "w9");
    only_known_keys(row, result_cols);
    assert_str_eq(json_string_value(json_object_get(row, "model")), "smart");
    assert_str_eq(json_string_value(json_object_get(row, "model_requested")), "fast");
    json_decref(row);
    row = shoal_task_result_row(t, t->model, "w9"); /* its own model named: not a fallback */
    assert_true(json_object_get(row, "model_requested") == NULL);
    json_decref(row);

    /* done without output: an empty output, never a missing one */
    free(t->output);
    t->output = NULL;
    row = shoal_task_result_row(t, NULL, "w9");
    assert_str_eq(json_string_value(json_object_get(row, "output")), "");
    json_decref(row);

    /* failed: the error, no output */
    t->state = SHOAL_TASK_FAILED;
    snprintf(t->error, sizeof(t->error), "%s", "HTTP 400: bad request");
    row = shoal_task_result_row(t, NULL, "w9");
    assert_str_eq(json_string_value(json_object_get(row, "status")), "failed");
    assert_str_eq(json_string_value(json_object_get(row, "error")), "HTTP 400: bad request");
    assert_true(json_object_get(row, "output") == NULL);
    json_decref(row);

    shoal_task_destroy(t);
    free_tasks(tasks, n);
}

/* A running task keeps its message as text and only the fields still read
 * in doc. Reaching DONE lets go of the prompt, requests and message but for
 * task_id, job_id and model (the same strings, at the same addresses), and
 * its result row is unchanged; reaching FAILED puts the whole message back
 * in doc, printing as the message did, for the dead-letter topic. */
static void test_finished_shed(void)
{
    size_t n;
    char **tasks = make_tasks(job_json, "job-7", &n);
    shoal_task_t *t = parse_ok(tasks[1]);
    const char *task_id = t->task_id, *job_id = t->job_id;

    assert_true(t->prompt != NULL && t->request != NULL);
    assert_str_eq(t->system, "You sort tickets.");
    assert_true(json_object_get(t->doc, "items") == NULL);
    assert_true(t->message != NULL);
    assert_int_eq(t->message_len, strlen(tasks[1]));
    assert_true(memcmp(t->message, tasks[1], t->message_len) == 0);
    t->output = strdup("{\"label\": \"network\"}");
    t->attempts = 1;
    shoal_task_set_state(t, SHOAL_TASK_DONE);
    assert_int_eq(t->state, SHOAL_TASK_DONE);
    assert_true(t->prompt == NULL);
    assert_true(t->request == NULL);
    assert_int_eq(t->request_len, 0);
    assert_true(t->message == NULL);
    assert_true(t->system == NULL);
    assert_true(t->task_id == task_id);
    assert_true(t->job_id == job_id);
    assert_str_eq(t->task_id, "job-7:000001");
    assert_int_eq(json_object_size(t->doc), 3);
    assert_str_eq(json_string_value(json_object_get(t->doc, "model")), "fast");
    json_t *row = shoal_task_result_row(t, NULL, "w9");
    only_known_keys(row, result_cols);
    assert_str_eq(json_string_value(json_object_get(row, "task_id")), "job-7:000001");
    assert_str_eq(json_string_value(json_object_get(row, "job_id")), "job-7");
    assert_str_eq(json_string_value(json_object_get(row, "status")), "done");
    assert_str_eq(json_string_value(json_object_get(row, "model")), "fast");
    assert_str_eq(json_string_value(json_object_get(row, "output")), "{\"label\": \"network\"}");
    json_decref(row);
    shoal_task_destroy(t);

    t = parse_ok(tasks[0]);
    task_id = t->task_id;
    json_t *orig = json_loads(tasks[0], 0, NULL);
    char *want = json_dumps(orig, JSON_COMPACT);
    shoal_task_set_state(t, SHOAL_TASK_FAILED);
    assert_true(t->prompt == NULL);
    assert_true(t->request == NULL);
    assert_true(t->message == NULL);
    assert_true(t->task_id == task_id);
    assert_true(json_is_array(json_object_get(t->doc, "items")));
    char *got = json_dumps(t->doc, JSON_COMPACT);
    assert_str_eq(got, want);
    free(got);
    free(want);
    json_decref(orig);
    shoal_task_destroy(t);
    free_tasks(tasks, n);
}

static void test_refs(void)
{
    size_t n;
    char **tasks = make_tasks(job_json, "job-7", &n);
    shoal_task_t *t = parse_ok(tasks[0]);

    for (int i = 0; i < 1000; i++) {
        shoal_offset_ref_t ref = {i % 7, (uint32_t)(i * 3 + 1), 100000 + i};
        assert_int_eq(shoal_task_add_ref(t, &ref), SHOAL_OK);
        assert_int_eq(t->nrefs, i + 1);
        assert_true(t->caprefs >= t->nrefs);
    }
    assert_true(t->caprefs < 4000); /* grows geometrically, not wildly */
    for (int i = 0; i < 1000; i++) {
        assert_int_eq(t->refs[i].slot, i % 7);
        assert_int_eq(t->refs[i].gen, i * 3 + 1);
        assert_int_eq(t->refs[i].offset, 100000 + i);
    }
    shoal_task_destroy(t);
    free_tasks(tasks, n);
}

static long fail_at = -1; /* the allocation (counting from 0) that fails; -1: none */
static long alloc_count;

static void *failing_malloc(size_t size)
{
    if (alloc_count++ == fail_at)
        return NULL;
    return malloc(size);
}

/* Fails each jansson allocation of shoal_task_parse of msg in turn; the
 * number of runs that gave NULL (each with a reason). Nothing may crash or
 * leak (ASan), and from allocation `from` on a run that succeeds has the
 * clean request, so a failure that was ignored and lost a field shows up. */
static long fail_each_allocation(const char *msg, const shoal_task_t *clean, long from)
{
    char err[512];
    json_set_alloc_funcs(failing_malloc, free);
    alloc_count = 0;
    shoal_task_t *t = parse_ok(msg);
    long needed = alloc_count;
    shoal_task_destroy(t);
    assert_int_ge(needed, 10);
    long failures = 0;
    for (long i = 0; i < needed; i++) {
        alloc_count = 0;
        fail_at = i;
        err[0] = '\0';
        t = shoal_task_parse(msg, strlen(msg), models, err, sizeof(err));
        fail_at = -1;
        if (!t) {
            if (err[0] == '\0')
                test_fail("allocation %ld failed: NULL without a reason", i);
            failures++;
            continue;
        }
        if (i >= from && strcmp(t->request, clean->request) != 0)
            test_fail("allocation %ld failed and the request is incomplete: %s", i, t->request);
        shoal_task_destroy(t);
    }
    json_set_alloc_funcs(malloc, free);
    printf("task_test: %ld of %ld allocation failures reported\n", failures, needed);
    return failures;
}

/* Allocation failures while a task is parsed, through both readers of the
 * message. A plain message takes the fast reader (common/jsonlex.h): a
 * failure there hands it to jansson's, and one after is only memory lost,
 * so every run has the clean request. The same message with a \u escape is
 * jansson's: failures there are reported, except that jansson 2.14 can lose
 * a character while decoding (its lexer, growing a string) and still
 * succeed, so those runs only have to survive. The request is written as
 * text, without jansson. */
static void test_alloc_failures(void)
{
    size_t n;
    char **tasks = make_tasks(job_json, "job-7", &n);
    shoal_task_t *clean = parse_ok(tasks[0]);

    fail_each_allocation(tasks[0], clean, 0);

    /* "Classify" with its C escaped: the same message for jansson only */
    char *c = strstr(tasks[0], "Classify");
    assert_true(c != NULL);
    size_t len = strlen(tasks[0]);
    char *escaped = malloc(len + 6);
    memcpy(escaped, tasks[0], (size_t)(c - tasks[0]));
    memcpy(escaped + (c - tasks[0]), "\\u0043", 6);
    memcpy(escaped + (c - tasks[0]) + 6, c + 1, len - (size_t)(c - tasks[0]));
    json_set_alloc_funcs(failing_malloc, free);
    alloc_count = 0;
    json_decref(json_loads(escaped, 0, NULL));
    long decoding = alloc_count;
    json_set_alloc_funcs(malloc, free);
    assert_int_ge(fail_each_allocation(escaped, clean, decoding), 1);
    free(escaped);
    shoal_task_destroy(clean);
    free_tasks(tasks, n);
}

int main(void)
{
    char err[512];
    models = shoal_models_parse(models_text, strlen(models_text), err, sizeof(err));
    if (!models)
        test_fail("models: %s", err);
    assert_int_eq(shoal_models_count(models), 2);

    test_parse_openai();
    test_parse_anthropic();
    test_poison();
    test_attempt_row();
    test_result_row();
    test_finished_shed();
    test_refs();
    test_alloc_failures();

    shoal_models_destroy(models);
    printf("task_test: ok\n");
    return 0;
}
