/*
 * OpenAI Batch round trip: tests/data/openai-batch/input.jsonl (12 requests,
 * a blank line, two models named by the provider's model name and by alias,
 * one of them Anthropic, system and developer messages, parameters, one line
 * the simulator refuses with its fail marker) is submitted with
 * `shoal submit --openai-batch` and read back with
 * `shoal results --format openai-batch`:
 * - every request is answered by one line, in input order, each parsing as
 *   an OpenAI Batch output line;
 * - the simulator received each line's messages as given: its answer carries
 *   the hash of exactly those message texts in that order (system included),
 *   and the line asking for response_format json_object got JSON;
 * - the refused line has response null and an invalid_request_error;
 * - --format jsonl gives one line per item too.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sim/sim.h"
#include "tests/support/check.h"
#include "tests/support/harness.h"

static char out[1 << 18];

/* The simulator's hash of a request's message texts, in order. */
static unsigned long long messages_hash(const json_t *msgs)
{
    const char *parts[32];
    size_t n = 0;

    for (size_t i = 0; i < json_array_size(msgs) && n < 32; i++) {
        const json_t *c = json_object_get(json_array_get(msgs, i), "content");

        if (json_is_string(c))
            parts[n++] = json_string_value(c);
        for (size_t k = 0; json_is_array(c) && k < json_array_size(c) && n < 32; k++)
            parts[n++] = json_string_value(json_object_get(json_array_get(c, k), "text"));
    }
    return (unsigned long long)shoal_sim_hash(parts, n);
}

int main(void)
{
    harness_conf_t conf = {.workers = 1,
                           .schedulers = 1,
                           .extra_models = "\"mini\": {\"provider\": \"openai\", \"endpoint\": "
                                           "\"${SHOAL_SIM_URL}/v1/chat/completions\", "
                                           "\"model\": \"gpt-4o-mini\"}"};
    char path[1024], status[64];
    json_t *inputs = json_array();

    snprintf(path, sizeof(path), "%s/tests/data/openai-batch/input.jsonl", SHOAL_SOURCE_DIR);
    /* the requests, as the file has them */
    FILE *f = fopen(path, "r");
    assert_true(f != NULL);
    char line[8192];
    while (fgets(line, sizeof(line), f)) {
        json_t *l = json_loads(line, 0, NULL);
        if (l)
            json_array_append_new(inputs, l);
    }
    fclose(f);
    assert_int_eq(json_array_size(inputs), 12);

    harness_t *h = harness_start(&conf);
    int rc = harness_sh(h, out, sizeof(out),
                        "%s submit --openai-batch --tenant acme --priority high --job-id ob-1 %s",
                        harness_bin("shoal"), path);
    fprintf(stderr, "submit (exit %d): %s", rc, out);
    assert_int_eq(rc, 0);
    assert_str_eq(out, "ob-1\n");
    harness_wait_job(h, "ob-1", 300, status, sizeof(status));
    assert_str_eq(status, "partial");
    assert_int_eq(
        harness_long(h, "SELECT tasks_total FROM shoal.jobs WHERE job_id = $1", "ob-1", NULL), 12);

    rc = harness_sh(h, out, sizeof(out), "%s results --format openai-batch ob-1",
                    harness_bin("shoal"));
    fprintf(stderr, "results --format openai-batch (exit %d):\n%s", rc, out);
    assert_int_eq(rc, 3); /* partial */

    size_t i = 0;
    for (char *p = out, *nl; (nl = strchr(p, '\n')); p = nl + 1, i++) {
        *nl = '\0';
        json_t *l = json_loads(p, 0, NULL), *in = json_array_get(inputs, i);
        if (!l || !in)
            test_fail("line %zu does not parse or is one too many: %s", i + 1, p);
        const char *cid = json_string_value(json_object_get(in, "custom_id"));
        assert_str_eq(json_string_value(json_object_get(l, "custom_id")), cid);
        assert_true(strncmp(json_string_value(json_object_get(l, "id")), "batch_req_", 10) == 0);
        json_t *resp = json_object_get(l, "response"), *err = json_object_get(l, "error");
        if (strcmp(cid, "request-7") == 0) {
            assert_true(json_is_null(resp));
            assert_str_eq(json_string_value(json_object_get(err, "code")), "invalid_request_error");
            assert_str_contains(json_string_value(json_object_get(err, "message")), "SIM_FAIL_400");
            json_decref(l);
            continue;
        }
        assert_true(json_is_null(err));
        assert_int_eq(json_integer_value(json_object_get(resp, "status_code")), 200);
        json_t *body = json_object_get(resp, "body"), *inbody = json_object_get(in, "body");
        assert_str_eq(json_string_value(json_object_get(body, "object")), "chat.completion");
        /* the model as the provider names it */
        assert_str_eq(json_string_value(json_object_get(body, "model")),
                      json_string_value(json_object_get(inbody, "model")));
        json_t *usage = json_object_get(body, "usage");
        assert_true(json_integer_value(json_object_get(usage, "prompt_tokens")) > 0);
        assert_int_eq(json_integer_value(json_object_get(usage, "total_tokens")),
                      json_integer_value(json_object_get(usage, "prompt_tokens")) +
                          json_integer_value(json_object_get(usage, "completion_tokens")));
        const char *content = json_string_value(json_object_get(
            json_object_get(json_array_get(json_object_get(body, "choices"), 0), "message"),
            "content"));
        assert_true(content != NULL);
        char want[64];
        unsigned long long hash = messages_hash(json_object_get(inbody, "messages"));
        if (json_object_get(inbody, "response_format")) {
            json_t *answer = json_loads(content, 0, NULL);
            snprintf(want, sizeof(want), "%016llx", hash);
            assert_true(answer != NULL);
            assert_str_eq(json_string_value(json_object_get(answer, "sim")), want);
            json_decref(answer);
        } else {
            snprintf(want, sizeof(want), "sim %016llx ", hash);
            if (strncmp(content, want, strlen(want)) != 0)
                test_fail("%s: the simulator did not get the line's messages: \"%s\" does not "
                          "start with \"%s\"",
                          cid, content, want);
        }
        json_decref(l);
    }
    assert_int_eq(i, 12);

    rc = harness_sh(h, out, sizeof(out), "%s results --format jsonl ob-1", harness_bin("shoal"));
    assert_int_eq(rc, 3);
    i = 0;
    for (char *p = out, *nl; (nl = strchr(p, '\n')); p = nl + 1, i++) {
        *nl = '\0';
        json_t *l = json_loads(p, 0, NULL);
        assert_true(l != NULL);
        assert_str_eq(json_string_value(json_object_get(l, "id")),
                      json_string_value(json_object_get(json_array_get(inputs, i), "custom_id")));
        assert_str_eq(json_string_value(json_object_get(l, "status")), i == 6 ? "failed" : "done");
        json_decref(l);
    }
    assert_int_eq(i, 12);

    /* a bad file is refused locally, naming the line */
    rc = harness_sh(h, out, sizeof(out),
                    "printf '%%s\\n' '{\"custom_id\": \"x\", \"method\": \"POST\", \"url\": "
                    "\"/v1/chat/completions\", \"body\": {\"model\": \"gpt-9\", \"messages\": "
                    "[{\"role\": \"user\", \"content\": \"hi\"}]}}' | %s submit --openai-batch "
                    "--tenant acme - 2>&1",
                    harness_bin("shoal"));
    fprintf(stderr, "bad file (exit %d): %s", rc, out);
    assert_int_eq(rc, 2);
    assert_str_contains(out, "line 1: body.model \"gpt-9\" is not in the models file");

    json_decref(inputs);
    harness_stop(h);
    fprintf(stderr, "0045-openai_batch: ok\n");
    return 0;
}
