/*
 * Result-cache keys: the same inputs give the same key (also when JSON
 * members come in another order, or the system prompt is absent rather than
 * empty); a change of any one input (provider, model name, max_tokens, JSON
 * mode, extra parameters, system, prompt, output schema) gives another key;
 * a task message's key is the key of its rendered prompt and its model's
 * provider and name, so the alias and the endpoint do not matter but the
 * provider's model name does; and the message parser takes a well-formed
 * cache_key and refuses a malformed one.
 */
#include "common/cachekey.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/job.h"
#include "common/render.h"
#include "common/taskmsg.h"
#include "tests/support/check.h"

static const char models_text[] =
    "{\"models\": {"
    " \"fast\": {\"provider\": \"openai\", \"endpoint\": "
    "\"http://127.0.0.1:9/v1/chat/completions\","
    "  \"model\": \"gpt-4o-mini\", \"max_output_tokens\": 512},"
    " \"same\": {\"provider\": \"openai\", \"endpoint\": \"http://10.0.0.1:8/v1/chat/completions\","
    "  \"model\": \"gpt-4o-mini\", \"max_output_tokens\": 512, \"rpm\": 5},"
    " \"other\": {\"provider\": \"openai\", \"endpoint\": "
    "\"http://127.0.0.1:9/v1/chat/completions\","
    "  \"model\": \"gpt-4o\", \"max_output_tokens\": 512},"
    " \"claude\": {\"provider\": \"anthropic\", \"endpoint\": \"http://127.0.0.1:9/v1/messages\","
    "  \"model\": \"gpt-4o-mini\", \"max_output_tokens\": 512}}}";

static void key_of(const shoal_cachekey_parts_t *p, char out[SHOAL_CACHEKEY_HEX])
{
    char err[256];
    if (shoal_cachekey_compute(p, out, err, sizeof(err)) != SHOAL_OK)
        test_fail("compute: %s", err);
    assert_true(shoal_cachekey_valid(out));
}

static void test_parts(void)
{
    json_t *schema = json_loads("{\"type\":\"object\",\"required\":[\"a\"]}", 0, NULL);
    json_t *schema2 = json_loads("{\"required\":[\"a\"],\"type\":\"object\"}", 0, NULL);
    json_t *schema3 = json_loads("{\"type\":\"object\",\"required\":[\"b\"]}", 0, NULL);
    json_t *params = json_loads("{\"temperature\":0.2,\"top_p\":1}", 0, NULL);
    json_t *params2 = json_loads("{\"top_p\":1,\"temperature\":0.2}", 0, NULL);
    json_t *params3 = json_loads("{\"temperature\":0.3,\"top_p\":1}", 0, NULL);
    const char prompt[] = "Echo:\nhello";
    shoal_cachekey_parts_t base = {
        SHOAL_PROVIDER_OPENAI, "gpt-4o-mini", 512, 1, params, "Be brief.", prompt,
        strlen(prompt),        schema};
    char k0[SHOAL_CACHEKEY_HEX], k[SHOAL_CACHEKEY_HEX];

    key_of(&base, k0);
    key_of(&base, k);
    assert_str_eq(k, k0);

    /* member order does not matter */
    shoal_cachekey_parts_t p = base;
    p.output_schema = schema2;
    p.params = params2;
    key_of(&p, k);
    assert_str_eq(k, k0);

    /* every input matters */
    const char other_prompt[] = "Echo:\nhellO";
    for (int field = 0; field < 9; field++) {
        p = base;
        switch (field) {
        case 0:
            p.provider = SHOAL_PROVIDER_ANTHROPIC;
            break;
        case 1:
            p.model = "gpt-4o";
            break;
        case 2:
            p.max_tokens = 1024;
            break;
        case 3:
            p.want_json = 0;
            break;
        case 4:
            p.params = params3;
            break;
        case 5:
            p.system = "Be brief!";
            break;
        case 6:
            p.prompt = other_prompt;
            break;
        case 7:
            p.output_schema = schema3;
            break;
        case 8:
            p.prompt_len--; /* a prefix of the prompt is another prompt */
            break;
        }
        key_of(&p, k);
        if (strcmp(k, k0) == 0)
            test_fail("changing field %d left the key unchanged", field);
    }

    /* fields cannot run into each other: moving a byte between system and
     * prompt changes the key */
    shoal_cachekey_parts_t a = {SHOAL_PROVIDER_OPENAI, "m", 0, 0, NULL, "ab", "c", 1, NULL};
    shoal_cachekey_parts_t b = {SHOAL_PROVIDER_OPENAI, "m", 0, 0, NULL, "a", "bc", 2, NULL};
    char ka[SHOAL_CACHEKEY_HEX], kb[SHOAL_CACHEKEY_HEX];
    key_of(&a, ka);
    key_of(&b, kb);
    assert_true(strcmp(ka, kb) != 0);

    /* no system and an empty system send the same request */
    a.system = NULL;
    key_of(&a, ka);
    a.system = "";
    key_of(&a, kb);
    assert_str_eq(ka, kb);
    /* no params, no schema are not the same as empty ones */
    json_t *empty = json_object();
    a.params = empty;
    key_of(&a, kb);
    assert_true(strcmp(ka, kb) != 0);

    /* a known input gives a known key: the encoding is stable across builds
     * (a change here makes every stored entry a miss: bump KEY_VERSION);
     * recomputed outside shoal from the encoding in cachekey.c */
    shoal_cachekey_parts_t fixed = {
        SHOAL_PROVIDER_OPENAI, "gpt-4o-mini", 0, 0, NULL, NULL, "hi", 2, NULL};
    key_of(&fixed, k);
    assert_str_eq(k, "3cd90181097bb5e054affc123b4f404f817bda7d4577afbd4e417e06251fa56b");

    json_decref(empty);
    json_decref(schema);
    json_decref(schema2);
    json_decref(schema3);
    json_decref(params);
    json_decref(params2);
    json_decref(params3);
}

/* The key of chunk k of a job with model alias, system and the items. */
static void task_key(const shoal_models_t *models, const char *alias, const char *system,
                     const char *items, const char *output, size_t k, char out[SHOAL_CACHEKEY_HEX],
                     char *msg, size_t msglen)
{
    char text[2048], err[512];
    snprintf(text, sizeof(text),
             "{\"job_id\":\"ck-1\",\"tenant\":\"t\",\"model\":\"%s\",%s%s%s"
             "\"prompt_template\":\"Sum:\\n{{input}}\",\"items\":%s,\"output\":%s,"
             "\"chunking\":{\"max_items\":2}}",
             alias, system ? "\"system\":\"" : "", system ? system : "", system ? "\"," : "", items,
             output);
    shoal_job_t *job = shoal_job_parse(text, strlen(text), 0, models, err, sizeof(err));
    if (!job)
        test_fail("job: %s", err);
    json_t *task = shoal_taskmsg_build(job, k, err, sizeof(err));
    assert_true(task != NULL);
    if (shoal_cachekey_task(task, models, out, err, sizeof(err)) != SHOAL_OK)
        test_fail("task key: %s", err);
    if (msg) {
        json_object_set_new(task, "cache_key", json_string(out));
        char *m = json_dumps(task, JSON_COMPACT);
        snprintf(msg, msglen, "%s", m);
        free(m);
    }
    json_decref(task);
    shoal_job_destroy(job);
}

static void test_task(void)
{
    char err[512];
    shoal_models_t *models = shoal_models_parse(models_text, strlen(models_text), err, sizeof(err));
    if (!models)
        test_fail("models: %s", err);
    const char *items = "[{\"id\":\"a\",\"input\":\"one\"},{\"id\":\"b\",\"input\":\"two\"},"
                        "{\"id\":\"c\",\"input\":\"three\"}]";
    const char *text = "{\"format\":\"text\"}";
    char k0[SHOAL_CACHEKEY_HEX], k[SHOAL_CACHEKEY_HEX], msg[4096];

    task_key(models, "fast", "Be brief.", items, text, 0, k0, msg, sizeof(msg));
    /* the same as computing it from the rendered prompt */
    json_t *its =
        json_loads("[{\"id\":\"a\",\"input\":\"one\"},{\"id\":\"b\",\"input\":\"two\"}]", 0, NULL);
    size_t len;
    char *prompt = shoal_render_prompt("Sum:\n{{input}}", its, &len);
    shoal_cachekey_parts_t p = {SHOAL_PROVIDER_OPENAI, "gpt-4o-mini", 512, 0,   NULL,
                                "Be brief.",           prompt,        len, NULL};
    key_of(&p, k);
    assert_str_eq(k, k0);
    free(prompt);
    json_decref(its);

    /* same provider and model name under another alias and endpoint */
    task_key(models, "same", "Be brief.", items, text, 0, k, NULL, 0);
    assert_str_eq(k, k0);
    /* another provider model name, another provider */
    task_key(models, "other", "Be brief.", items, text, 0, k, NULL, 0);
    assert_true(strcmp(k, k0) != 0);
    task_key(models, "claude", "Be brief.", items, text, 0, k, NULL, 0);
    assert_true(strcmp(k, k0) != 0);
    /* system, an item's input, an item's id (it is in a 2-item prompt), the
     * output format and schema */
    task_key(models, "fast", NULL, items, text, 0, k, NULL, 0);
    assert_true(strcmp(k, k0) != 0);
    task_key(models, "fast", "Be brief.",
             "[{\"id\":\"a\",\"input\":\"one\"},{\"id\":\"b\",\"input\":\"TWO\"},"
             "{\"id\":\"c\",\"input\":\"three\"}]",
             text, 0, k, NULL, 0);
    assert_true(strcmp(k, k0) != 0);
    task_key(models, "fast", "Be brief.",
             "[{\"id\":\"a\",\"input\":\"one\"},{\"id\":\"x\",\"input\":\"two\"},"
             "{\"id\":\"c\",\"input\":\"three\"}]",
             text, 0, k, NULL, 0);
    assert_true(strcmp(k, k0) != 0);
    task_key(models, "fast", "Be brief.", items, "{\"format\":\"json\"}", 0, k, NULL, 0);
    assert_true(strcmp(k, k0) != 0);
    char kj[SHOAL_CACHEKEY_HEX];
    task_key(models, "fast", "Be brief.", items, "{\"format\":\"json\"}", 0, kj, NULL, 0);
    task_key(models, "fast", "Be brief.", items,
             "{\"format\":\"json\",\"schema\":{\"type\":\"object\"}}", 0, k, NULL, 0);
    assert_true(strcmp(k, kj) != 0);
    /* the other chunk has other items */
    task_key(models, "fast", "Be brief.", items, text, 1, k, NULL, 0);
    assert_true(strcmp(k, k0) != 0);

    /* the message carries the key to the worker */
    shoal_taskmsg_t m;
    json_t *doc = shoal_taskmsg_parse(msg, strlen(msg), &m, err, sizeof(err));
    if (!doc)
        test_fail("parse: %s", err);
    assert_str_eq(m.cache_key, k0);
    json_decref(doc);
    char *at = strstr(msg, k0);
    assert_true(at != NULL);
    at[0] = 'G';
    assert_true(shoal_taskmsg_parse(msg, strlen(msg), &m, err, sizeof(err)) == NULL);
    assert_str_contains(err, "task.cache_key: expected 64 lower-case hex digits, got \"G");

    /* items with their own request render an empty prompt: their bodies,
     * and batch mode, still tell the keys apart */
    json_t *b1 =
        json_pack("{s:s, s:s, s:[{s:s, s:s, s:{s:[{s:s, s:s}]}}], s:{s:s}}", "model", "fast",
                  "prompt_template", "{{input}}", "items", "id", "a", "input", "", "body",
                  "messages", "role", "user", "content", "one", "output", "format", "text");
    json_t *b2 = json_deep_copy(b1);
    json_t *msgs = json_object_get(
        json_object_get(json_array_get(json_object_get(b2, "items"), 0), "body"), "messages");
    json_object_set_new(json_array_get(msgs, 0), "content", json_string("two"));
    char kb1[SHOAL_CACHEKEY_HEX], kb2[SHOAL_CACHEKEY_HEX], kb3[SHOAL_CACHEKEY_HEX];
    assert_int_eq(shoal_cachekey_task(b1, models, kb1, err, sizeof(err)), SHOAL_OK);
    assert_int_eq(shoal_cachekey_task(b2, models, kb2, err, sizeof(err)), SHOAL_OK);
    assert_true(strcmp(kb1, kb2) != 0);
    json_object_del(json_array_get(json_object_get(b1, "items"), 0), "body");
    assert_int_eq(shoal_cachekey_task(b1, models, kb3, err, sizeof(err)), SHOAL_OK);
    assert_true(strcmp(kb1, kb3) != 0);
    json_object_set_new(b1, "mode", json_string("batch"));
    assert_int_eq(shoal_cachekey_task(b1, models, kb2, err, sizeof(err)), SHOAL_OK);
    assert_true(strcmp(kb2, kb3) != 0);
    json_decref(b1);
    json_decref(b2);

    /* a model the models file does not have */
    json_t *task = json_pack("{s:s, s:s, s:[], s:{s:s}}", "model", "gone", "prompt_template",
                             "{{input}}", "items", "output", "format", "text");
    assert_int_eq(shoal_cachekey_task(task, models, k, err, sizeof(err)), SHOAL_ERR_INVALID);
    assert_str_contains(err, "\"gone\" is not in the models file");
    json_decref(task);
    shoal_models_destroy(models);
}

int main(void)
{
    assert_true(!shoal_cachekey_valid(NULL));
    assert_true(!shoal_cachekey_valid("abc"));
    assert_true(
        !shoal_cachekey_valid("C2d3a7e7a6cc0ac2b0c0c1e7c4a1b0f2a7c9f3e0b3b5a6d4c3d2e1f0a9b8c7d6"));
    test_parts();
    test_task();
    printf("cachekey_test: ok\n");
    return 0;
}
