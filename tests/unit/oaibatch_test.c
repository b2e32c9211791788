/*
 * OpenAI Batch files: an input file becomes a job of one item (and one task)
 * per line whose body travels to the worker unchanged and is sent as given
 * (Anthropic: translated); bad lines are refused naming the line; output
 * lines have the OpenAI Batch shape.
 */
#include "common/oaibatch.h"

#include <stdlib.h>
#include <string.h>

#include "common/job.h"
#include "common/taskmsg.h"
#include "tests/support/check.h"
#include "worker/itemreq.h"

static const char models_text[] =
    "{\"models\": {"
    "\"mini\": {\"provider\": \"openai\", \"endpoint\": \"http://127.0.0.1:9/v1/chat/completions\","
    " \"model\": \"gpt-4o-mini\"},"
    "\"claude\": {\"provider\": \"anthropic\", \"endpoint\": \"http://127.0.0.1:9/v1/messages\","
    " \"model\": \"claude-x\", \"max_output_tokens\": 300}}}";

static shoal_models_t *models;

#define LINE(id, model, rest)                                                                      \
    "{\"custom_id\": \"" id "\", \"method\": \"POST\", \"url\": \"/v1/chat/completions\", "        \
    "\"body\": {\"model\": \"" model "\", \"messages\": " rest "}}\n"

static const shoal_oaibatch_opts_t opts = {"acme", "high", "batch-1"};

static json_t *convert_ok(const char *text)
{
    char err[512] = "";
    json_t *job = shoal_oaibatch_to_job(text, strlen(text), models, &opts, err, sizeof(err));
    if (!job)
        test_fail("conversion failed: %s", err);
    return job;
}

static void refused(const char *text, const char *want)
{
    char err[512] = "";
    json_t *job = shoal_oaibatch_to_job(text, strlen(text), models, &opts, err, sizeof(err));
    if (job)
        test_fail("accepted, expected \"%s\"", want);
    assert_str_contains(err, want);
}

static void test_convert(void)
{
    const char *file = LINE(
        "r-1", "gpt-4o-mini",
        "[{\"role\": \"system\", \"content\": \"Be terse.\"}, {\"role\": \"user\", "
        "\"content\": \"Hi\"}], \"max_completion_tokens\": 50, \"temperature\": 0.2, "
        "\"response_format\": {\"type\": \"json_object\"}") "\n   \n" /* blank lines are skipped,
                                                                         and still counted */
        LINE("r-2", "claude", "[{\"role\": \"user\", \"content\": \"Hello\"}]");
    json_t *doc = convert_ok(file);
    json_t *items = json_object_get(doc, "items");

    assert_str_eq(json_string_value(json_object_get(doc, "tenant")), "acme");
    assert_str_eq(json_string_value(json_object_get(doc, "priority")), "high");
    assert_str_eq(json_string_value(json_object_get(doc, "job_id")), "batch-1");
    assert_int_eq(json_array_size(items), 2);
    assert_str_eq(json_string_value(json_object_get(json_array_get(items, 0), "id")), "r-1");
    /* by provider model name, then by alias */
    assert_str_eq(json_string_value(json_object_get(json_array_get(items, 0), "model")), "mini");
    assert_str_eq(json_string_value(json_object_get(json_array_get(items, 1), "model")), "claude");
    json_t *body = json_object_get(json_array_get(items, 0), "body");
    assert_int_eq(json_integer_value(json_object_get(body, "max_completion_tokens")), 50);
    assert_str_eq(json_string_value(json_object_get(body, "model")), "gpt-4o-mini");

    /* the job parses, plans one chunk per line, and its tasks carry the
     * item's model and body in a version-2 message */
    char *text = json_dumps(doc, JSON_COMPACT), err[512] = "";
    shoal_job_t *job = shoal_job_parse(text, strlen(text), 0, models, err, sizeof(err));
    if (!job)
        test_fail("converted job refused: %s", err);
    assert_int_eq(shoal_job_n_chunks(job), 2);
    assert_true(shoal_job_chunk_est_tokens(job, 0) > 0);
    json_t *task = shoal_taskmsg_build(job, 1, err, sizeof(err));
    assert_true(task != NULL);
    assert_int_eq(json_integer_value(json_object_get(task, "v")), 2);
    assert_str_eq(json_string_value(json_object_get(task, "model")), "claude");
    char *msg = json_dumps(task, JSON_COMPACT);
    shoal_taskmsg_t m;
    json_t *parsed = shoal_taskmsg_parse(msg, strlen(msg), &m, err, sizeof(err));
    if (!parsed)
        test_fail("task refused: %s", err);
    assert_true(m.body != NULL);
    assert_str_eq(json_string_value(json_object_get(
                      json_array_get(json_object_get(m.body, "messages"), 0), "content")),
                  "Hello");

    /* the request sent: the body as given (OpenAI) */
    size_t len;
    char *req = shoal_itemreq_build(shoal_models_find(models, "mini"), body, &len);
    json_t *r = json_loads(req, 0, NULL);
    assert_str_eq(json_string_value(json_object_get(r, "model")), "gpt-4o-mini");
    assert_true(json_is_false(json_object_get(r, "stream")));
    assert_int_eq(json_integer_value(json_object_get(r, "max_completion_tokens")), 50);
    assert_true(json_equal(json_object_get(r, "messages"), json_object_get(body, "messages")));
    assert_true(json_equal(json_object_get(r, "response_format"),
                           json_object_get(body, "response_format")));
    json_decref(r);
    free(req);
    /* translated (Anthropic): system moved out, max_tokens from the body */
    req = shoal_itemreq_build(shoal_models_find(models, "claude"), body, &len);
    r = json_loads(req, 0, NULL);
    assert_str_eq(json_string_value(json_object_get(r, "model")), "claude-x");
    assert_str_eq(json_string_value(json_object_get(r, "system")), "Be terse.");
    assert_int_eq(json_array_size(json_object_get(r, "messages")), 1);
    assert_int_eq(json_integer_value(json_object_get(r, "max_tokens")), 50);
    assert_true(json_object_get(r, "response_format") == NULL);
    json_decref(r);
    free(req);

    json_decref(parsed);
    free(msg);
    json_decref(task);
    shoal_job_destroy(job);
    free(text);
    json_decref(doc);
}

static void test_bad_lines(void)
{
    refused(LINE("a", "mini", "[{\"role\": \"user\", \"content\": \"x\"}]") "{not json}\n",
            "line 2: not a JSON object");
    refused(LINE("a", "mini", "[{\"role\": \"user\", \"content\": \"x\"}]") "[1, 2]\n",
            "line 2: expected a JSON object, got an array");
    refused("{\"custom_id\": \"a\", \"method\": \"POST\", \"url\": \"/v1/embeddings\", "
            "\"body\": {\"model\": \"mini\", \"messages\": [{\"role\": \"user\"}]}}",
            "line 1: url \"/v1/embeddings\": only \"/v1/chat/completions\" is supported");
    refused("{\"custom_id\": \"a\", \"method\": \"GET\", \"url\": \"/v1/chat/completions\", "
            "\"body\": {\"model\": \"mini\", \"messages\": [{\"role\": \"user\"}]}}",
            "line 1: method \"GET\": only \"POST\" is supported");
    refused(LINE("a", "mini", "[{\"role\": \"user\", \"content\": \"x\"}]") "\n" LINE(
                "b", "mini", "[{\"role\": \"user\", \"content\": \"y\"}]")
                LINE("a", "mini", "[{\"role\": \"user\", \"content\": \"z\"}]"),
            "line 4: custom_id \"a\" repeats line 1");
    refused(LINE("a", "gpt-5", "[{\"role\": \"user\", \"content\": \"x\"}]"),
            "line 1: body.model \"gpt-5\" is not in the models file");
    refused(LINE("a", "mini", "[]"), "line 1: body.messages: expected a non-empty array");
    refused(LINE("a", "mini", "[{\"role\": \"robot\", \"content\": \"x\"}]"),
            "line 1: body.messages[0].role");
    refused(LINE("a b", "mini", "[{\"role\": \"user\", \"content\": \"x\"}]"),
            "line 1: custom_id \"a b\"");
    refused(LINE("a", "mini", "[{\"role\": \"user\", \"content\": \"x\"}], \"n\": 2"),
            "line 1: body.n");
    refused("{\"custom_id\": \"a\", \"method\": \"POST\", \"url\": \"/v1/chat/completions\"}",
            "line 1: body: expected an object");
    refused("\n\n", "the file has no requests");
}

static void test_output_lines(void)
{
    shoal_oaibatch_item_t ok = {.job_id = "j",
                                .custom_id = "r-1",
                                .output = "Hello.",
                                .model = "gpt-4o-mini",
                                .tokens_in = 22,
                                .tokens_out = 2,
                                .created_unix = 1711652795};
    size_t len;
    char *text = shoal_oaibatch_output_line(&ok, &len);
    json_t *l = json_loads(text, 0, NULL);

    assert_true(l != NULL);
    assert_int_eq(len, strlen(text));
    assert_true(strchr(text, '\n') == NULL);
    assert_true(strncmp(json_string_value(json_object_get(l, "id")), "batch_req_", 10) == 0);
    assert_str_eq(json_string_value(json_object_get(l, "custom_id")), "r-1");
    assert_true(json_is_null(json_object_get(l, "error")));
    json_t *resp = json_object_get(l, "response"), *body = json_object_get(resp, "body");
    assert_int_eq(json_integer_value(json_object_get(resp, "status_code")), 200);
    assert_true(strncmp(json_string_value(json_object_get(resp, "request_id")), "req_", 4) == 0);
    assert_str_eq(json_string_value(json_object_get(body, "object")), "chat.completion");
    assert_str_eq(json_string_value(json_object_get(body, "model")), "gpt-4o-mini");
    assert_int_eq(json_integer_value(json_object_get(body, "created")), 1711652795);
    json_t *choice = json_array_get(json_object_get(body, "choices"), 0);
    assert_int_eq(json_integer_value(json_object_get(choice, "index")), 0);
    assert_str_eq(json_string_value(json_object_get(choice, "finish_reason")), "stop");
    assert_str_eq(json_string_value(json_object_get(json_object_get(choice, "message"), "role")),
                  "assistant");
    assert_str_eq(json_string_value(json_object_get(json_object_get(choice, "message"), "content")),
                  "Hello.");
    json_t *usage = json_object_get(body, "usage");
    assert_int_eq(json_integer_value(json_object_get(usage, "prompt_tokens")), 22);
    assert_int_eq(json_integer_value(json_object_get(usage, "completion_tokens")), 2);
    assert_int_eq(json_integer_value(json_object_get(usage, "total_tokens")), 24);

    /* the same item again: the same ids; another item: others */
    char *again = shoal_oaibatch_output_line(&ok, NULL);
    assert_str_eq(again, text);
    free(again);
    ok.custom_id = "r-2";
    again = shoal_oaibatch_output_line(&ok, NULL);
    json_t *l2 = json_loads(again, 0, NULL);
    assert_true(strcmp(json_string_value(json_object_get(l2, "id")),
                       json_string_value(json_object_get(l, "id"))) != 0);
    json_decref(l2);
    free(again);
    json_decref(l);
    free(text);

    shoal_oaibatch_item_t bad = {.job_id = "j",
                                 .custom_id = "r-3",
                                 .error_code = "invalid_request_error",
                                 .error_message = "prompt contains \"SIM_FAIL_400\""};
    text = shoal_oaibatch_output_line(&bad, NULL);
    l = json_loads(text, 0, NULL);
    assert_true(l != NULL);
    assert_str_eq(json_string_value(json_object_get(l, "custom_id")), "r-3");
    assert_true(json_is_null(json_object_get(l, "response")));
    assert_str_eq(json_string_value(json_object_get(json_object_get(l, "error"), "code")),
                  "invalid_request_error");
    assert_str_eq(json_string_value(json_object_get(json_object_get(l, "error"), "message")),
                  "prompt contains \"SIM_FAIL_400\"");
    json_decref(l);
    free(text);
}

/* A job written by hand may use item bodies only one item per chunk. */
static void test_job_rules(void)
{
    const char *job = "{\"tenant\": \"t\", \"model\": \"mini\", \"prompt_template\": "
                      "\"{{input}}\", \"chunking\": {\"max_items\": 2}, \"items\": [{\"id\": "
                      "\"a\", \"input\": \"\", \"body\": {\"messages\": [{\"role\": \"user\", "
                      "\"content\": \"x\"}]}}]}";
    char err[512] = "";
    shoal_job_t *j = shoal_job_parse(job, strlen(job), 0, models, err, sizeof(err));
    assert_true(j == NULL);
    assert_str_contains(err, "needs chunking.max_items 1");
    job = "{\"tenant\": \"t\", \"model\": \"mini\", \"prompt_template\": \"{{input}}\", "
          "\"items\": [{\"id\": \"a\", \"input\": \"x\", \"model\": \"nope\"}]}";
    j = shoal_job_parse(job, strlen(job), 0, models, err, sizeof(err));
    assert_true(j == NULL);
    assert_str_contains(err, "items[0].model \"nope\" is not in the models file");
}

int main(void)
{
    char err[512];

    models = shoal_models_parse(models_text, strlen(models_text), err, sizeof(err));
    if (!models)
        test_fail("models: %s", err);
    test_convert();
    test_bad_lines();
    test_output_lines();
    test_job_rules();
    shoal_models_destroy(models);
    return 0;
}
