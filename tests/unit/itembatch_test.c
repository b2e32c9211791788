/*
 * Batch mode's wire format: the prompt carries the ids the simulator and a
 * model read back; answers are read per item, missing, null and
 * schema-invalid items left out with the reason; sub-task ids and messages
 * keep the parent's fields and only the items asked for.
 */
#include "common/itembatch.h"

#include <stdlib.h>

#include "common/job.h"
#include "common/taskmsg.h"
#include "tests/support/check.h"

static json_t *items3(void)
{
    return json_pack("[{s:s, s:s}, {s:s, s:s}, {s:s, s:s}]", "id", "a1", "input", "x", "id", "b.2",
                     "input", "y", "id", "c:3", "input", "z");
}

static void test_prompt(void)
{
    json_t *items = items3(), *ids;
    size_t len = 0;
    char *p = shoal_itembatch_prompt("Describe:\n[a1]\nx", items, &len);

    assert_true(p != NULL);
    assert_int_eq(len, strlen(p));
    assert_str_contains(p, "Describe:\n[a1]\nx\n\n" SHOAL_ITEMBATCH_INSTRUCTION);
    ids = shoal_itembatch_prompt_ids(p);
    assert_true(ids != NULL);
    assert_int_eq(json_array_size(ids), 3);
    assert_str_eq(json_string_value(json_array_get(ids, 1)), "b.2");
    json_decref(ids);
    assert_true(shoal_itembatch_prompt_ids("no instruction here") == NULL);
    assert_true(shoal_itembatch_instruction_tokens() > 10);
    free(p);
    json_decref(items);
}

static void test_parse(void)
{
    json_t *items = items3();
    char *out[3], err[256];
    size_t ok;

    ok = shoal_itembatch_parse("{\"a1\": \"one\", \"b.2\": \"two\", \"c:3\": \"three\"}", items, 0,
                               NULL, out, err, sizeof(err));
    assert_int_eq(ok, 3);
    assert_str_eq(out[0], "one");
    assert_str_eq(out[2], "three");
    for (int i = 0; i < 3; i++)
        free(out[i]);

    /* in a fence, one missing, one null: two missing, the first named */
    ok = shoal_itembatch_parse("```json\n{\"c:3\": {\"n\": 3}, \"a1\": null}\n```", items, 0, NULL,
                               out, err, sizeof(err));
    assert_int_eq(ok, 1);
    assert_true(out[0] == NULL && out[1] == NULL);
    assert_str_eq(out[2], "{\"n\":3}"); /* a non-string answer is its JSON */
    assert_str_eq(err, "no answer for item a1");
    free(out[2]);

    /* not an object at all: nothing answered */
    ok = shoal_itembatch_parse("[1, 2]", items, 0, NULL, out, err, sizeof(err));
    assert_int_eq(ok, 0);
    assert_str_contains(err, "not a JSON object");
    ok = shoal_itembatch_parse("sorry, I cannot", items, 0, NULL, out, err, sizeof(err));
    assert_int_eq(ok, 0);

    /* JSON output under a schema: the invalid item is missing */
    {
        json_t *sch = json_pack("{s:s, s:[s]}", "type", "object", "required", "n");
        shoal_jsonschema_t *s = shoal_jsonschema_new(sch, err, sizeof(err));
        assert_true(s != NULL);
        ok = shoal_itembatch_parse("{\"a1\": {\"n\": 1}, \"b.2\": {\"m\": 2}, \"c:3\": \"s\"}",
                                   items, 1, s, out, err, sizeof(err));
        assert_int_eq(ok, 1);
        assert_str_eq(out[0], "{\"n\":1}");
        assert_true(out[1] == NULL && out[2] == NULL);
        assert_str_contains(err, "answer for item b.2 does not match the schema");
        free(out[0]);
        shoal_jsonschema_destroy(s);
        json_decref(sch);
    }
    json_decref(items);
}

static void test_subtask(void)
{
    char id[SHOAL_TASKMSG_ID_MAX], err[256];

    static const struct {
        const char *parent;
        long level;
        shoal_err_t err;
        const char *want;
    } ids[] = {{"job-1:000004", 1, SHOAL_OK, "job-1:000004.1"},
               {"job-1:000004.1", 2, SHOAL_OK, "job-1:000004.2"},
               {"job.7:000004", 3, SHOAL_OK, "job.7:000004.3"},
               {"job-1:000004", 0, SHOAL_ERR_LIMIT, NULL}};
    for (size_t i = 0; i < sizeof(ids) / sizeof(ids[0]); i++) {
        assert_int_eq(shoal_taskmsg_subtask_id(ids[i].parent, ids[i].level, id, sizeof(id)),
                      ids[i].err);
        if (ids[i].want)
            assert_str_eq(id, ids[i].want);
    }
    assert_int_eq(shoal_taskmsg_subtask_id("nonsense", 1, id, sizeof(id)), SHOAL_ERR_INVALID);

    /* a sub-task message parses, keeps the parent's fields and only its items */
    {
        json_t *parent = json_pack(
            "{s:i, s:s, s:s, s:s, s:i, s:i, s:s, s:s, s:s, s:[], s:s, s:o, s:{s:s}, s:i, s:i, s:i}",
            "v", 2, "mode", "batch", "task_id", "j1:000002", "job_id", "j1", "chunk", 2, "n_chunks",
            3, "tenant", "acme", "priority", "normal", "model", "sim-small", "fallback_models",
            "prompt_template", "{{input}}", "items", items3(), "output", "format", "text",
            "max_attempts", 3, "timeout_ms", 1000, "est_tokens", 300);
        unsigned char keep[3] = {0, 1, 1};
        shoal_taskmsg_t m;
        char *text;
        json_t *sub, *doc;

        assert_int_eq(shoal_taskmsg_subtask_id("j1:000002", 1, id, sizeof(id)), SHOAL_OK);
        sub = shoal_taskmsg_build_subtask(parent, id, keep, err, sizeof(err));
        assert_true(sub != NULL);
        text = json_dumps(sub, JSON_COMPACT);
        doc = shoal_taskmsg_parse(text, strlen(text), &m, err, sizeof(err));
        if (!doc)
            test_fail("sub-task refused: %s", err);
        assert_str_eq(m.task_id, "j1:000002.1");
        assert_int_eq(m.split_level, 1);
        assert_str_eq(m.mode, "batch");
        assert_int_eq(m.chunk, 2);
        assert_int_eq(m.n_items, 2);
        assert_int_eq(m.est_tokens, 200);
        assert_str_eq(json_string_value(json_object_get(json_array_get(m.items, 0), "id")), "b.2");
        /* the ids of a sub-task are read back as well (dead-lettering a poison one) */
        {
            char tid[SHOAL_TASKMSG_ID_MAX], jid[SHOAL_TASKMSG_ID_MAX];
            assert_int_eq(shoal_taskmsg_ids(text, strlen(text), tid, sizeof(tid), jid, sizeof(jid)),
                          1);
            assert_str_eq(tid, "j1:000002.1");
            assert_str_eq(jid, "j1");
        }
        json_decref(doc);
        free(text);
        /* a version-1 message cannot carry a sub-task id */
        json_object_set_new(sub, "v", json_integer(1));
        text = json_dumps(sub, JSON_COMPACT);
        assert_true(shoal_taskmsg_parse(text, strlen(text), &m, err, sizeof(err)) == NULL);
        assert_str_contains(err, "task.task_id: expected \"j1:000002\"");
        free(text);
        json_decref(sub);
        /* no item kept: no sub-task */
        memset(keep, 0, sizeof(keep));
        assert_true(shoal_taskmsg_build_subtask(parent, id, keep, err, sizeof(err)) == NULL);
        json_decref(parent);
    }
}

/* A batch job's tasks are version 2 with mode batch, and their estimate
 * counts the instruction and the ids; a context job's stay version 1. */
static void test_job(void)
{
    static const char fmt[] =
        "{\"job_id\":\"bj\",\"tenant\":\"acme\",\"model\":\"m\",\"prompt_template\":"
        "\"{{input}}\",\"chunking\":{\"max_items\":5}%s,\"items\":[{\"id\":\"a\",\"input\":"
        "\"one\"},{\"id\":\"b\",\"input\":\"two\"},{\"id\":\"c\",\"input\":\"three\"}]}";
    char text[512], err[256];
    shoal_job_t *jobs[2];
    json_t *t[2];

    for (int b = 0; b < 2; b++) {
        snprintf(text, sizeof(text), fmt, b ? ",\"answer_mode\":\"batch\"" : "");
        jobs[b] = shoal_job_parse(text, strlen(text), 0, NULL, err, sizeof(err));
        if (!jobs[b])
            test_fail("job refused: %s", err);
        assert_int_eq(shoal_job_n_chunks(jobs[b]), 1);
        t[b] = shoal_taskmsg_build(jobs[b], 0, err, sizeof(err));
        assert_true(t[b] != NULL);
    }
    assert_str_eq(shoal_job_mode(jobs[0]), "context");
    assert_str_eq(shoal_job_mode(jobs[1]), "batch");
    assert_int_eq(json_integer_value(json_object_get(t[0], "v")), 1);
    assert_int_eq(json_integer_value(json_object_get(t[1], "v")), 2);
    assert_str_eq(json_string_value(json_object_get(t[1], "mode")), "batch");
    assert_int_ge(shoal_job_est_tokens(jobs[1]),
                  shoal_job_est_tokens(jobs[0]) + shoal_itembatch_instruction_tokens() + 3);
    for (int b = 0; b < 2; b++) {
        json_decref(t[b]);
        shoal_job_destroy(jobs[b]);
    }
}

int main(void)
{
    test_job();
    test_prompt();
    test_parse();
    test_subtask();
    printf("itembatch_test: ok\n");
    return 0;
}
