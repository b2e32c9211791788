/*
 * common/jsontext and the text rows built with it: every string jansson
 * accepts reads back equal (escapes, control characters, multibyte UTF-8),
 * strings jansson refuses (invalid UTF-8, overlong forms, surrogates) and
 * non-finite numbers write nothing and say so, reals round-trip exactly and
 * stay reals, the size cap loses the text instead of truncating it; and the
 * attempt and result rows as text equal the jansson rows of
 * shoal_task_attempt_row/result_row member for member, in every branch
 * (fallbacks, errors, queue time, retry-after, failed tasks, invalid UTF-8).
 */
#include "common/jsontext.h"

#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/job.h"
#include "common/taskmsg.h"
#include "common/models.h"
#include "tests/support/check.h"
#include "worker/task.h"

static json_t *load(const char *text)
{
    json_error_t jerr;
    json_t *j = json_loads(text, JSON_DECODE_ANY, &jerr);
    if (!j)
        test_fail("not JSON (%s): %s", jerr.text, text);
    return j;
}

static void test_strings(void)
{
    static const char *const ok[] = {"",
                                     "plain ascii",
                                     "quote \" backslash \\ slash /",
                                     "\b\f\n\r\t \x01\x1f\x7f",
                                     "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x90\x9f \xf4\x8f\xbf\xbf",
                                     NULL};
    for (int i = 0; ok[i]; i++) {
        shoal_jsontext_t b;
        shoal_jsontext_init(&b, 1 << 20);
        assert_int_eq(shoal_jsontext_str(&b, ok[i]), 0);
        size_t len;
        char *text = shoal_jsontext_detach(&b, &len);
        assert_true(text != NULL);
        assert_int_eq(len, strlen(text));
        json_t *j = load(text);
        assert_str_eq(json_string_value(j), ok[i]);
        json_decref(j);
        free(text);
    }
    static const char *const bad[] = {"\xff",
                                      "a\xc3",
                                      "\xc0\xaf", /* overlong */
                                      "\xe0\x80\xaf",
                                      "\xed\xa0\x80",     /* surrogate */
                                      "\xf4\x90\x80\x80", /* > U+10FFFF */
                                      NULL};
    for (int i = 0; bad[i]; i++) {
        assert_true(json_string(bad[i]) == NULL); /* jansson refuses it too */
        shoal_jsontext_t b;
        shoal_jsontext_init(&b, 1 << 20);
        shoal_jsontext_open(&b);
        assert_int_eq(shoal_jsontext_key_str(&b, "k", bad[i]), -1);
        assert_int_eq(shoal_jsontext_str(&b, bad[i]), -1);
        shoal_jsontext_close(&b);
        char *text = shoal_jsontext_detach(&b, NULL);
        assert_str_eq(text, "{}");
        free(text);
    }
}

/* A string body read from JSON text comes out as the decoded string
 * written by shoal_jsontext_strn: copied when it has no escapes, decoded and
 * written again when it has. */
static void test_bodies(void)
{
    static const struct {
        const char *body;
        int escaped;
        const char *want;
    } cases[] = {
        {"plain caf\xc3\xa9", 0, "\"plain caf\xc3\xa9\""},
        {"a\\nb \\\" \\/", 1, "\"a\\nb \\\" /\""},
        {"", 0, "\"\""},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        shoal_jsontext_t b;
        shoal_jsontext_init(&b, 1 << 20);
        assert_int_eq(
            shoal_jsontext_body(&b, cases[i].body, strlen(cases[i].body), cases[i].escaped), 0);
        char *text = shoal_jsontext_detach(&b, NULL);
        assert_str_eq(text, cases[i].want);
        free(text);
    }
}

static void test_numbers(void)
{
    static const double reals[] = {0.0, 1.0, -2.5, 1e300, 1712345678.123456, 0.1 + 0.2, 5e-324};
    shoal_jsontext_t b;
    shoal_jsontext_init(&b, 1 << 20);
    shoal_jsontext_open(&b);
    for (size_t i = 0; i < sizeof(reals) / sizeof(reals[0]); i++) {
        char k[8];
        snprintf(k, sizeof(k), "r%zu", i);
        assert_int_eq(shoal_jsontext_key_real(&b, k, reals[i]), 0);
    }
    assert_int_eq(shoal_jsontext_key_real(&b, "nan", NAN), -1);
    assert_int_eq(shoal_jsontext_key_real(&b, "inf", INFINITY), -1);
    shoal_jsontext_key_int(&b, "big", -9007199254740993LL);
    shoal_jsontext_close(&b);
    char *text = shoal_jsontext_detach(&b, NULL);
    json_t *j = load(text);
    for (size_t i = 0; i < sizeof(reals) / sizeof(reals[0]); i++) {
        char k[8];
        snprintf(k, sizeof(k), "r%zu", i);
        json_t *v = json_object_get(j, k);
        if (!json_is_real(v) || json_real_value(v) != reals[i])
            test_fail("%s: %.17g did not read back as the same real: %s", k, reals[i], text);
    }
    assert_true(json_object_get(j, "nan") == NULL);
    assert_true(json_object_get(j, "inf") == NULL);
    assert_true(json_integer_value(json_object_get(j, "big")) == -9007199254740993LL);
    json_decref(j);
    free(text);
}

/* Integers without printf: the extremes and zero read back exactly; fixed
 * decimals round to the place asked, keep the sign, refuse what is not
 * finite and fall back to 17 digits past 2^53 units; a bare key takes the
 * caller's value. */
static void test_ints_and_fixed(void)
{
    static const struct {
        const char *key;
        long long v;
    } ints[] = {{"zero", 0},        {"seven", 7},      {"minus", -1}, {"big", 1234567890123LL},
                {"max", LLONG_MAX}, {"min", LLONG_MIN}};
    const size_t nints = sizeof(ints) / sizeof(ints[0]);
    shoal_jsontext_t b;
    shoal_jsontext_init(&b, 1 << 20);
    shoal_jsontext_open(&b);
    for (size_t i = 0; i < nints; i++)
        shoal_jsontext_key_int(&b, ints[i].key, ints[i].v);
    assert_int_eq(shoal_jsontext_key_fixed(&b, "t", 1712345678.25, 6), 0);
    assert_int_eq(shoal_jsontext_key_fixed(&b, "round", 0.0000125, 5), 0);
    assert_int_eq(shoal_jsontext_key_fixed(&b, "neg", -3.5, 2), 0);
    assert_int_eq(shoal_jsontext_key_fixed(&b, "tiny_neg", -0.0000001, 3), 0);
    assert_int_eq(shoal_jsontext_key_fixed(&b, "huge", 1e300, 6), 0);
    assert_int_eq(shoal_jsontext_key_fixed(&b, "nan", NAN, 6), -1);
    assert_int_eq(shoal_jsontext_key_fixed(&b, "zero_places", 1.0, 0), -1);
    shoal_jsontext_key(&b, "nested");
    shoal_jsontext_open(&b);
    shoal_jsontext_key_int(&b, "a", 1);
    shoal_jsontext_close(&b);
    shoal_jsontext_close(&b);
    char *text = shoal_jsontext_detach(&b, NULL);
    const char *want = "\"t\":1712345678.250000,\"round\":0.00001,\"neg\":-3.50,"
                       "\"tiny_neg\":0.000,\"huge\":1.0000000000000001e+300,"
                       "\"nested\":{\"a\":1}}";
    if (!strstr(text, want))
        test_fail("fixed decimals: %s", text);
    json_t *j = load(text);
    for (size_t i = 0; i < nints; i++)
        assert_true(json_integer_value(json_object_get(j, ints[i].key)) == ints[i].v);
    json_decref(j);
    free(text);
}

static void test_cap(void)
{
    shoal_jsontext_t b;
    shoal_jsontext_init(&b, 64);
    shoal_jsontext_open(&b);
    assert_int_eq(shoal_jsontext_key_str(&b, "k", "short"), 0);
    shoal_jsontext_key_str(&b, "long",
                           "far more than sixty-four bytes of text, which the cap does not allow");
    shoal_jsontext_close(&b);
    assert_true(shoal_jsontext_detach(&b, NULL) == NULL);
    /* detached: empty and usable again */
    assert_int_eq(shoal_jsontext_str(&b, "again"), 0);
    char *text = shoal_jsontext_detach(&b, NULL);
    assert_str_eq(text, "\"again\"");
    free(text);
    shoal_jsontext_free(&b);
}

/* ---- rows ---------------------------------------------------------------- */

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

static shoal_models_t *models;

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

/* The text row equals the jansson row; finished_at (the clock at each call)
 * only within a few seconds. Both NULL is equal too. */
static void same_row(json_t *want, char *text, size_t len)
{
    if (!want) {
        if (text)
            test_fail("jansson refused the row, the text is %s", text);
        return;
    }
    if (!text)
        test_fail("the text row is NULL, jansson's is %s", json_dumps(want, JSON_COMPACT));
    assert_int_eq(len, strlen(text));
    json_t *got = load(text);
    json_t *f1 = json_object_get(want, "finished_at"), *f2 = json_object_get(got, "finished_at");
    if (f1 || f2) {
        assert_true(json_is_real(f1) && json_is_real(f2));
        assert_true(fabs(json_real_value(f1) - json_real_value(f2)) < 5.0);
        json_object_del(want, "finished_at");
        json_object_del(got, "finished_at");
    }
    if (!json_equal(want, got)) {
        char *w = json_dumps(want, JSON_COMPACT | JSON_SORT_KEYS);
        char *g = json_dumps(got, JSON_COMPACT | JSON_SORT_KEYS);
        test_fail("rows differ:\n want %s\n got  %s", w, g);
    }
    json_decref(want);
    json_decref(got);
    free(text);
}

static void check_attempt(const shoal_task_t *t, const shoal_http_reply_t *reply,
                          const shoal_task_call_t *call)
{
    size_t len = 0;
    json_t *want = shoal_task_attempt_row(t, "w1/9/1", "w1", reply, call);
    char *text = shoal_task_attempt_text(t, "w1/9/1", "w1", reply, call, &len);
    same_row(want, text, len);
}

static void check_result(const shoal_task_t *t, const shoal_model_t *served)
{
    size_t len = 0;
    json_t *want = shoal_task_result_row(t, served, "w1");
    char *text = shoal_task_result_text(t, served, "w1", &len);
    same_row(want, text, len);
}

static void test_rows(void)
{
    shoal_task_t *t = make_task();
    const shoal_model_t *smart = shoal_models_find(models, "smart");
    shoal_http_reply_t reply = {
        .status = 200, .retry_after_ms = -1, .started_unix = 1712345678.25, .latency_ms = 12.5};
    shoal_task_call_t call = {.outcome = "ok",
                              .kind = SHOAL_OUTCOME_OK,
                              .usage = {.input = 120, .output = 30, .cached = 20}};

    t->attempts = 1;
    check_attempt(t, &reply, &call); /* no queue time: received_unix unset */
    t->received_unix = 1712345678.0;
    check_attempt(t, &reply, &call);
    call.error = "";
    check_attempt(t, &reply, &call); /* an empty error is left out */

    reply.status = 429;
    reply.retry_after_ms = 1500;
    call = (shoal_task_call_t){.model = smart,
                               .outcome = "retry",
                               .kind = SHOAL_OUTCOME_RATE_LIMITED,
                               .error = "HTTP 429: \"slow down\"\n\tnow",
                               .usage = {.input = 1000, .cache_write = 300}};
    check_attempt(t, &reply, &call); /* a fallback, an error, a retry-after */
    call.error = "bad \xff utf-8";
    check_attempt(t, &reply, &call); /* error left out, as jansson leaves it */
    reply.latency_ms = NAN;
    check_attempt(t, &reply, &call); /* the row dropped, as json_pack drops it */
    reply.latency_ms = 3.0;
    check_attempt(t, &reply, &call);

    t->state = SHOAL_TASK_DONE;
    t->output = strdup("{\"label\": \"caf\xc3\xa9\", \"n\": [1, 2]}\n");
    t->tokens_in = 120;
    t->tokens_out = 30;
    check_result(t, NULL);
    check_result(t, smart); /* served by a fallback */
    check_result(t, t->model);
    free(t->output);
    t->output = NULL;
    check_result(t, NULL); /* done without output: "" */
    t->output = strdup("bad \xc0\xaf output");
    check_result(t, NULL); /* output left out: the database refuses the row */
    t->state = SHOAL_TASK_FAILED;
    snprintf(t->error, sizeof(t->error), "%s", "HTTP 400: \"no\"");
    check_result(t, NULL);
    snprintf(t->error, sizeof(t->error), "%s", "cut \xe2\x82");
    check_result(t, NULL); /* an error cut inside a character: left out */
    shoal_task_destroy(t);
}

int main(void)
{
    char err[512];
    models = shoal_models_parse(models_text, strlen(models_text), err, sizeof(err));
    if (!models)
        test_fail("models: %s", err);
    test_strings();
    test_numbers();
    test_ints_and_fixed();
    test_cap();
    test_rows();
    test_bodies();
    shoal_models_destroy(models);
    printf("jsontext_test: ok\n");
    return 0;
}
