/*
 * Task messages: a job with every field builds into messages that parse back
 * into exactly the job's values; every refusal of the parser comes with its
 * exact message, and the JSON Schema (schemas/task.schema.json, judged by
 * tests/schema_check.py) refuses the same messages, except the two
 * consistency rules a schema cannot state; versions (absent is 1, newer is
 * refused); ids from broken messages; unknown fields ignored; every
 * allocation failure of the builder reported or harmless; and the text
 * writer's messages equal the builder's, dumped, byte for byte.
 */
#include "common/taskmsg.h"

#include <dirent.h>
#include <limits.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/models.h"
#include "tests/support/check.h"

#define PYTHON "/usr/bin/python3"

static shoal_models_t *models;

/* Three items in two chunks ([a, b] and [c]) and every field a job has. */
static const char full_job[] =
    "{\"job_id\":\"tm-1\",\"tenant\":\"acme\",\"priority\":\"high\",\"model\":\"sim-small\","
    "\"fallback_models\":[\"sim-large\"],\"system\":\"Be brief.\","
    "\"prompt_template\":\"Sort {{ids}}:\\n{{input}}\","
    "\"items\":[{\"id\":\"a\",\"input\":\"one\",\"group\":\"g1\"},"
    "{\"id\":\"b\",\"input\":\"two\",\"group\":\"g1\"},"
    "{\"id\":\"c\",\"input\":\"three\",\"group\":\"g2\"}],"
    "\"chunking\":{\"max_tokens\":1000,\"max_items\":2,\"group_by\":\"group\"},"
    "\"output\":{\"format\":\"json\",\"schema\":{\"type\":\"object\"},\"on_truncated\":\"fail\"},"
    "\"merge\":\"jsonl\",\"max_attempts\":5,\"timeout_ms\":20000,\"budget_usd\":3,"
    "\"deadline_s\":120}";

static const char *source_dir(void)
{
    const char *d = getenv("SHOAL_SOURCE_DIR");
    return d && *d ? d : SHOAL_SOURCE_DIR;
}

static shoal_job_t *parse_job(const char *text)
{
    char err[512];
    shoal_job_t *job = shoal_job_parse(text, strlen(text), 0, models, err, sizeof(err));

    if (!job)
        test_fail("job rejected: %s", err);
    return job;
}

/* Chunk k of job as JSON text; caller frees. */
static char *built(const shoal_job_t *job, size_t k)
{
    char err[512];
    json_t *t = shoal_taskmsg_build(job, k, err, sizeof(err));
    char *text;

    if (!t)
        test_fail("build chunk %zu: %s", k, err);
    text = json_dumps(t, JSON_COMPACT);
    assert_true(text != NULL);
    json_decref(t);
    return text;
}

static json_t *parse_ok(const char *text, shoal_taskmsg_t *m)
{
    char err[512];
    json_t *doc = shoal_taskmsg_parse(text, strlen(text), m, err, sizeof(err));

    if (!doc)
        test_fail("refused: %s\nmessage: %s", err, text);
    return doc;
}

static char *edit(const char *base, const char *key, const char *value);

/* ---- build -> parse ---- */

static void test_round_trip(void)
{
    shoal_job_t *job = parse_job(full_job);
    shoal_taskmsg_t m;
    char *text;
    json_t *doc, *raw;

    assert_int_eq(shoal_job_n_chunks(job), 2);
    text = built(job, 0);
    raw = json_loads(text, 0, NULL);
    /* a context task stays version 1, which every worker reads */
    assert_int_eq(json_integer_value(json_object_get(raw, "v")), 1);
    assert_true(json_object_get(raw, "mode") == NULL);
    json_decref(raw);

    doc = parse_ok(text, &m);
    assert_int_eq(m.version, 1);
    assert_str_eq(m.task_id, "tm-1:000000");
    assert_str_eq(m.job_id, "tm-1");
    assert_str_eq(m.tenant, "acme");
    assert_str_eq(m.priority, "high");
    assert_str_eq(m.model, "sim-small");
    assert_int_eq(m.chunk, 0);
    assert_int_eq(m.n_chunks, 2);
    assert_int_eq(json_array_size(m.fallback_models), 1);
    assert_str_eq(json_string_value(json_array_get(m.fallback_models, 0)), "sim-large");
    assert_str_eq(m.system, "Be brief.");
    assert_str_eq(m.prompt_template, "Sort {{ids}}:\n{{input}}");
    assert_int_eq(m.n_items, 2);
    assert_int_eq(json_array_size(m.items), 2);
    assert_str_eq(json_string_value(json_object_get(json_array_get(m.items, 1), "id")), "b");
    assert_str_eq(json_string_value(json_object_get(json_array_get(m.items, 1), "input")), "two");
    /* items carry id and input only: group is the scheduler's business */
    assert_int_eq(json_object_size(json_array_get(m.items, 0)), 2);
    assert_str_eq(m.output_format, "json");
    assert_true(json_is_object(m.output_schema));
    assert_str_eq(json_string_value(json_object_get(m.output_schema, "type")), "object");
    assert_int_eq(m.max_attempts, 5);
    assert_int_eq(m.timeout_ms, 20000);
    assert_int_eq(m.est_tokens, shoal_job_chunk_est_tokens(job, 0));
    assert_int_ge(m.est_tokens, 1);
    assert_str_eq(m.on_truncated, "fail");
    assert_int_eq(m.deadline_s, 120);
    assert_int_eq(m.deadline_unix, shoal_job_deadline_unix(job));
    json_decref(doc);
    free(text);

    /* the deadline counts from the submission time the scheduler sets */
    shoal_job_set_submitted(job, 1700000000);
    text = built(job, 0);
    doc = parse_ok(text, &m);
    assert_int_eq(m.deadline_unix, 1700000120LL);
    assert_int_eq(m.deadline_s, 120);
    json_decref(doc);
    {
        /* a message from a scheduler before on_truncated means retry */
        char *old = edit(text, "output", "{\"format\":\"json\"}");
        doc = parse_ok(old, &m);
        assert_str_eq(m.on_truncated, "retry");
        json_decref(doc);
        free(old);
    }
    free(text);

    text = built(job, 1);
    doc = parse_ok(text, &m);
    assert_str_eq(m.task_id, "tm-1:000001");
    assert_int_eq(m.chunk, 1);
    assert_int_eq(m.n_items, 1);
    assert_str_eq(json_string_value(json_object_get(json_array_get(m.items, 0), "id")), "c");
    assert_int_eq(m.est_tokens + shoal_job_chunk_est_tokens(job, 0), shoal_job_est_tokens(job));
    json_decref(doc);
    free(text);

    /* the job's defaults travel: one place decides them */
    shoal_job_destroy(job);
    job =
        parse_job("{\"job_id\":\"d\",\"tenant\":\"t\",\"model\":\"sim-small\","
                  "\"prompt_template\":\"{{input}}\",\"items\":[{\"id\":\"x\",\"input\":\"y\"}]}");
    text = built(job, 0);
    doc = parse_ok(text, &m);
    assert_int_eq(m.max_attempts, shoal_job_max_attempts(job));
    assert_int_eq(m.timeout_ms, shoal_job_timeout_ms(job));
    assert_str_eq(m.output_format, shoal_job_output_format(job));
    assert_str_eq(m.priority, shoal_job_priority(job));
    assert_true(m.system == NULL);
    assert_true(m.output_schema == NULL);
    assert_int_eq(json_array_size(m.fallback_models), 0);
    assert_str_eq(m.on_truncated, "retry");
    /* no deadline_s: no deadline in the message */
    assert_int_eq(m.deadline_s, 0);
    assert_int_eq(m.deadline_unix, 0);
    assert_true(json_object_get(doc, "deadline_unix") == NULL);
    assert_true(json_object_get(doc, "deadline_s") == NULL);
    json_decref(doc);
    free(text);

    /* what the builder refuses */
    {
        char err[256];
        assert_true(shoal_taskmsg_build(job, 1, err, sizeof(err)) == NULL);
        assert_str_eq(err, "chunk 1 is out of range: the job has 1 chunks");
        shoal_job_destroy(job);
        job = parse_job("{\"tenant\":\"t\",\"model\":\"sim-small\",\"prompt_template\":"
                        "\"{{input}}\",\"items\":[{\"id\":\"x\",\"input\":\"y\"}]}");
        assert_true(shoal_taskmsg_build(job, 0, err, sizeof(err)) == NULL);
        assert_str_eq(err, "the job has no job_id (set one with shoal_job_set_id first)");
    }
    shoal_job_destroy(job);
}

static void test_task_id(void)
{
    char buf[SHOAL_TASKMSG_ID_MAX], small[8];
    char long_id[201];

    assert_int_eq(shoal_taskmsg_task_id("j", 7, buf, sizeof(buf)), SHOAL_OK);
    assert_str_eq(buf, "j:000007");
    assert_int_eq(shoal_taskmsg_task_id("j", 999999, buf, sizeof(buf)), SHOAL_OK);
    assert_str_eq(buf, "j:999999");
    assert_int_eq(shoal_taskmsg_task_id("j", 1000000, buf, sizeof(buf)), SHOAL_ERR_INVALID);
    assert_int_eq(shoal_taskmsg_task_id("a b", 0, buf, sizeof(buf)), SHOAL_ERR_INVALID);
    assert_int_eq(shoal_taskmsg_task_id("", 0, buf, sizeof(buf)), SHOAL_ERR_INVALID);
    assert_int_eq(shoal_taskmsg_task_id(NULL, 0, buf, sizeof(buf)), SHOAL_ERR_INVALID);
    assert_int_eq(shoal_taskmsg_task_id("jj", 0, small, sizeof(small)), SHOAL_ERR_LIMIT);
    /* the longest job id fits SHOAL_TASKMSG_ID_MAX */
    memset(long_id, 'x', 200);
    long_id[200] = '\0';
    assert_int_eq(shoal_taskmsg_task_id(long_id, 5, buf, sizeof(buf)), SHOAL_OK);
    assert_int_eq(strlen(buf), 207);
}

/* ---- refusals, each held to the schema ---- */

struct refusal {
    const char *key;   /* top-level field to change */
    const char *value; /* its new JSON value; NULL removes the field */
    const char *want;  /* the whole error message */
    int schema_agrees; /* 0 for the rules a schema cannot state */
};

static const struct refusal refusals[] = {
    {"task_id", NULL, "task: missing required field \"task_id\"", 1},
    {"task_id", "\"\"", "task.task_id: expected a non-empty string, got \"\"", 1},
    {"task_id", "7", "task.task_id: expected a non-empty string, got 7", 1},
    {"task_id", "\"tm-1:0\"",
     "task.task_id: expected \"tm-1:000000\" (job_id, ':' and chunk as six digits), got "
     "\"tm-1:0\"",
     1},
    {"task_id", "\"other:000000\"",
     "task.task_id: expected \"tm-1:000000\" (job_id, ':' and chunk as six digits), got "
     "\"other:000000\"",
     0},
    {"job_id", NULL, "task: missing required field \"job_id\"", 1},
    {"job_id", "\"a b\"", "task.job_id: expected 1 to 200 letters, digits and . _ : -, got \"a b\"",
     1},
    {"job_id", "5", "task.job_id: expected 1 to 200 letters, digits and . _ : -, got 5", 1},
    {"chunk", NULL, "task: missing required field \"chunk\"", 1},
    {"chunk", "-1", "task.chunk: expected an integer from 0 to 99999, got -1", 1},
    {"chunk", "1.5", "task.chunk: expected an integer from 0 to 99999, got 1.5", 1},
    {"chunk", "\"0\"", "task.chunk: expected an integer from 0 to 99999, got \"0\"", 1},
    {"chunk", "2", "task.chunk: 2 is not less than n_chunks (2)", 0},
    {"n_chunks", "0", "task.n_chunks: expected an integer from 1 to 100000, got 0", 1},
    {"n_chunks", NULL, "task: missing required field \"n_chunks\"", 1},
    {"tenant", NULL, "task: missing required field \"tenant\"", 1},
    {"tenant", "\"\"", "task.tenant: expected a non-empty string, got \"\"", 1},
    {"priority", NULL, "task: missing required field \"priority\"", 1},
    {"priority", "\"urgent\"", "task.priority: expected one of high, normal, low, got \"urgent\"",
     1},
    {"model", NULL, "task: missing required field \"model\"", 1},
    {"model", "null", "task.model: expected a non-empty string, got null", 1},
    {"fallback_models", NULL, "task: missing required field \"fallback_models\"", 1},
    {"fallback_models", "\"sim-large\"",
     "task.fallback_models: expected an array of at most 5 model names, got \"sim-large\"", 1},
    {"fallback_models", "[\"a\",\"b\",\"c\",\"d\",\"e\",\"f\"]",
     "task.fallback_models: expected an array of at most 5 model names, got an array of 6", 1},
    {"fallback_models", "[\"\"]", "task.fallback_models[0]: expected a non-empty string, got \"\"",
     1},
    {"system", "3", "task.system: expected a string, got 3", 1},
    {"prompt_template", NULL, "task: missing required field \"prompt_template\"", 1},
    {"prompt_template", "\"\"", "task.prompt_template: expected a non-empty string, got \"\"", 1},
    {"prompt_template", "\"no placeholder\"", "task.prompt_template: must contain {{input}}", 1},
    {"items", NULL, "task: missing required field \"items\"", 1},
    {"items", "[]", "task.items: expected an array of 1 to 1000 items, got an array of 0", 1},
    {"items", "{}", "task.items: expected an array of 1 to 1000 items, got an object", 1},
    {"items", "[5]", "task.items[0]: expected an object, got 5", 1},
    {"items", "[{\"input\":\"x\"}]", "task.items[0]: missing required field \"id\"", 1},
    {"items", "[{\"id\":\"a\"}]", "task.items[0]: missing required field \"input\"", 1},
    {"items", "[{\"id\":\"a\",\"input\":\"x\"},{\"id\":\"\",\"input\":\"x\"}]",
     "task.items[1].id: expected a non-empty string, got \"\"", 1},
    {"items", "[{\"id\":\"a\",\"input\":null}]", "task.items[0].input: expected a string, got null",
     1},
    {"output", NULL, "task: missing required field \"output\"", 1},
    {"output", "\"json\"", "task.output: expected an object, got \"json\"", 1},
    {"output", "{}", "task.output: missing required field \"format\"", 1},
    {"output", "{\"format\":\"xml\"}",
     "task.output.format: expected one of text, json, got \"xml\"", 1},
    {"output", "{\"format\":\"json\",\"schema\":true}",
     "task.output.schema: expected an object, got true", 1},
    {"output", "{\"format\":\"text\",\"on_truncated\":\"ignore\"}",
     "task.output.on_truncated: expected one of retry, fail, got \"ignore\"", 1},
    {"output", "{\"format\":\"text\",\"on_truncated\":null}",
     "task.output.on_truncated: expected one of retry, fail, got null", 1},
    {"deadline_s", NULL, "task.deadline_unix: present without deadline_s", 1},
    {"deadline_unix", NULL, "task.deadline_s: present without deadline_unix", 1},
    {"deadline_s", "0", "task.deadline_s: expected an integer from 1 to 2592000, got 0", 1},
    {"deadline_s", "2592001", "task.deadline_s: expected an integer from 1 to 2592000, got 2592001",
     1},
    {"deadline_unix", "0", "task.deadline_unix: expected an integer of at least 1, got 0", 1},
    {"deadline_unix", "\"soon\"",
     "task.deadline_unix: expected an integer of at least 1, got \"soon\"", 1},
    {"deadline_unix", "1.5", "task.deadline_unix: expected an integer of at least 1, got 1.5", 1},
    {"max_attempts", NULL, "task: missing required field \"max_attempts\"", 1},
    {"max_attempts", "0", "task.max_attempts: expected an integer from 1 to 20, got 0", 1},
    {"max_attempts", "21", "task.max_attempts: expected an integer from 1 to 20, got 21", 1},
    {"max_attempts", "\"3\"", "task.max_attempts: expected an integer from 1 to 20, got \"3\"", 1},
    {"timeout_ms", NULL, "task: missing required field \"timeout_ms\"", 1},
    {"timeout_ms", "99", "task.timeout_ms: expected an integer from 100 to 600000, got 99", 1},
    {"timeout_ms", "600001", "task.timeout_ms: expected an integer from 100 to 600000, got 600001",
     1},
    {"est_tokens", NULL, "task: missing required field \"est_tokens\"", 1},
    {"est_tokens", "-1", "task.est_tokens: expected an integer of at least 0, got -1", 1},
    {"v", "0", "task.v: expected a positive integer, got 0", 1},
    {"v", "\"1\"", "task.v: expected a positive integer, got \"1\"", 1},
    {"v", "1.5", "task.v: expected a positive integer, got 1.5", 1},
    {"v", "3",
     "task message version 3 is newer than this worker understands (2); upgrade the worker", 1},
};

/* Accepted by both the parser and the schema. */
static const struct refusal acceptable[] = {
    {"v", NULL, NULL, 1},                         /* queued before versions */
    {"v", "1.0", NULL, 1},                        /* an integer, as JSON Schema counts */
    {"chunk", "0.0", NULL, 1},                    /* likewise */
    {"added_later", "{\"x\":[1,2]}", NULL, 1},    /* unknown fields are ignored */
    {"system", "\"\"", NULL, 1},                  /* an empty system prompt is a prompt */
    {"fallback_models", "[]", NULL, 1},           /* no fallbacks */
    {"output", "{\"format\":\"text\"}", NULL, 1}, /* no schema, no on_truncated */
    {"output", "{\"format\":\"text\",\"on_truncated\":\"retry\"}", NULL, 1},
    {"deadline_unix", "4102444800", NULL, 1}, /* any time, past or future */
    {"deadline_s", "2592000", NULL, 1},
};

/* The chunk-0 message of full_job with key set to value (or removed). */
static char *edit(const char *base, const char *key, const char *value)
{
    json_t *doc = json_loads(base, 0, NULL);
    char *text;

    assert_true(doc != NULL);
    if (value) {
        json_error_t e;
        json_t *v = json_loads(value, JSON_DECODE_ANY, &e);
        if (!v)
            test_fail("bad test value %s: %s", value, e.text);
        assert_int_eq(json_object_set_new(doc, key, v), 0);
    } else {
        json_object_del(doc, key);
    }
    text = json_dumps(doc, JSON_COMPACT);
    assert_true(text != NULL);
    json_decref(doc);
    return text;
}

static void write_text(const char *dir, size_t i, const char *text)
{
    char path[1100];
    FILE *f;

    snprintf(path, sizeof(path), "%s/%03zu.json", dir, i);
    if (!(f = fopen(path, "wb")))
        test_fail("cannot create %s", path);
    assert_int_eq(fwrite(text, 1, strlen(text), f), strlen(text));
    assert_true(fclose(f) == 0);
}

/* Judges every file of dir against the task schema: verdict[i] is 1 for
 * valid, 0 for invalid. Fails (never skips) without python3-jsonschema. */
static void reference(const char *dir, int *verdict, size_t n)
{
    char cmd[4096], line[256];
    size_t seen = 0;
    FILE *p;
    int status;

    if (access(PYTHON, X_OK) != 0)
        test_fail(PYTHON " is missing: this test needs it and python3-jsonschema");
    snprintf(cmd, sizeof(cmd), PYTHON " '%s/tests/schema_check.py' --schema '%s/schemas/%s' '%s'",
             source_dir(), source_dir(), "task.schema.json", dir);
    fflush(NULL);
    if (!(p = popen(cmd, "r")))
        test_fail("cannot run %s", cmd);
    while (fgets(line, sizeof(line), p)) {
        size_t i;
        char v[32];
        if (sscanf(line, "%zu.json\t%31s", &i, v) != 2 || i >= n)
            test_fail("unexpected line from the reference validator: %s", line);
        verdict[i] = strcmp(v, "valid") == 0;
        seen++;
    }
    status = pclose(p);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
        test_fail("%s failed (status %d); is python3-jsonschema installed?", cmd,
                  WIFEXITED(status) ? WEXITSTATUS(status) : -1);
    assert_int_eq(seen, n);
}

static void test_refusals(void)
{
    enum { NREF = sizeof(refusals) / sizeof(refusals[0]) };
    enum { NACC = sizeof(acceptable) / sizeof(acceptable[0]) };
    shoal_job_t *job = parse_job(full_job);
    char *base = built(job, 0), dirname[] = "/tmp/shoal-taskmsg-XXXXXX", path[1100];
    int verdict[NREF + NACC + 1];
    const char *dir = mkdtemp(dirname);

    assert_true(dir != NULL);
    for (size_t i = 0; i < NREF; i++) {
        char *text = edit(base, refusals[i].key, refusals[i].value), err[512] = "";
        shoal_taskmsg_t m;
        json_t *doc = shoal_taskmsg_parse(text, strlen(text), &m, err, sizeof(err));

        if (doc)
            test_fail("accepted %s = %s", refusals[i].key,
                      refusals[i].value ? refusals[i].value : "(removed)");
        assert_str_eq(err, refusals[i].want);
        assert_true(m.task_id == NULL && m.items == NULL); /* zeroed on failure */
        write_text(dir, i, text);
        free(text);
    }
    for (size_t i = 0; i < NACC; i++) {
        char *text = edit(base, acceptable[i].key, acceptable[i].value);
        shoal_taskmsg_t m;
        json_decref(parse_ok(text, &m));
        write_text(dir, NREF + i, text);
        free(text);
    }
    write_text(dir, NREF + NACC, base);
    reference(dir, verdict, NREF + NACC + 1);
    for (size_t i = 0; i < NREF; i++) {
        if (verdict[i] == refusals[i].schema_agrees)
            test_fail("%s = %s: the task schema says %s, expected %s", refusals[i].key,
                      refusals[i].value ? refusals[i].value : "(removed)",
                      verdict[i] ? "valid" : "invalid",
                      refusals[i].schema_agrees ? "invalid" : "valid");
    }
    for (size_t i = 0; i < NACC + 1; i++) {
        if (!verdict[NREF + i])
            test_fail("acceptable case %zu: the task schema says invalid", i);
    }
    for (size_t i = 0; i < NREF + NACC + 1; i++) {
        snprintf(path, sizeof(path), "%s/%03zu.json", dir, i);
        assert_int_eq(unlink(path), 0);
    }
    assert_int_eq(rmdir(dir), 0);
    printf("taskmsg_test: %d refusals and %d acceptable messages agree with the task schema\n",
           (int)NREF, (int)NACC + 1);
    free(base);
    shoal_job_destroy(job);
}

/* Not JSON, not an object: the message says so. */
static void test_not_a_task(void)
{
    static const struct {
        const char *text, *want;
    } m[] = {
        {"", "task: invalid JSON at line 1"},
        {"[1,", "task: invalid JSON at line 1, column 3: "},
        {"{\"a\":1,\"a\":2}", "task: invalid JSON at line 1, column 10: duplicate object key"},
        {"{\"a\":\"\\u0000\"}",
         "task: invalid JSON at line 1, column 13: \\u0000 is not allowed in strings"},
        {"[1]", "task: expected a JSON object, got an array of 1"},
        {"\"task\"", "task: expected a JSON object, got \"task\""},
        {"null", "task: expected a JSON object, got null"},
        {"{}", "task: missing required field \"task_id\""},
    };
    char err[512];
    shoal_taskmsg_t out;

    for (size_t i = 0; i < sizeof(m) / sizeof(m[0]); i++) {
        err[0] = '\0';
        assert_true(shoal_taskmsg_parse(m[i].text, strlen(m[i].text), &out, err, sizeof(err)) ==
                    NULL);
        assert_str_contains(err, m[i].want);
        assert_int_eq(out.version, i == sizeof(m) / sizeof(m[0]) - 1 ? 1 : 0);
    }
    /* a NULL payload (a Kafka tombstone) is an empty message */
    assert_true(shoal_taskmsg_parse(NULL, 0, &out, err, sizeof(err)) == NULL);
    assert_str_contains(err, "task: invalid JSON at line 1");
    /* a NULL error buffer is allowed */
    assert_true(shoal_taskmsg_parse("[]", 2, &out, NULL, 0) == NULL);
}

/* ---- versions ---- */

static void test_versions(void)
{
    shoal_job_t *job = parse_job(full_job);
    char *base = built(job, 0), err[512];
    shoal_taskmsg_t m;
    json_t *doc;

    /* the newer version is refused before anything else is looked at: a
     * version 3 message may have changed any field */
    {
        json_t *v2 = json_pack("{s:i, s:s, s:i}", "v", 3, "task_id", "tm-1:000000", "chunk", -5);
        char *text = json_dumps(v2, JSON_COMPACT);
        assert_true(shoal_taskmsg_parse(text, strlen(text), &m, err, sizeof(err)) == NULL);
        assert_str_eq(err, "task message version 3 is newer than this worker understands (2); "
                           "upgrade the worker");
        assert_int_eq(m.version, 3); /* kept, so the caller can tell */
        free(text);
        json_decref(v2);
    }
    {
        char *text = edit(base, "v", "9999999999999");
        assert_true(shoal_taskmsg_parse(text, strlen(text), &m, err, sizeof(err)) == NULL);
        assert_str_contains(err, "task message version 9999999999999 is newer");
        assert_int_eq(m.version, INT_MAX);
        free(text);
    }
    {
        char *text = edit(base, "v", NULL);
        doc = parse_ok(text, &m);
        assert_int_eq(m.version, 1);
        json_decref(doc);
        free(text);
    }
    /* a broken version 1 message still says its version */
    {
        char *text = edit(base, "chunk", "-1");
        assert_true(shoal_taskmsg_parse(text, strlen(text), &m, err, sizeof(err)) == NULL);
        assert_int_eq(m.version, 1);
        free(text);
    }
    free(base);
    shoal_job_destroy(job);
}

/* ---- forward compatibility ---- */

static void test_unknown_fields(void)
{
    shoal_job_t *job = parse_job(full_job);
    char *base = built(job, 0);
    json_t *doc = json_loads(base, 0, NULL), *clean_doc;
    shoal_taskmsg_t m, clean;
    char *text;

    /* fields a newer scheduler might add, at every level */
    json_object_set_new(doc, "deadline_ms", json_integer(5000));
    json_object_set_new(doc, "trace", json_pack("{s:s}", "id", "abc"));
    json_object_set_new(json_object_get(doc, "output"), "strict", json_true());
    json_object_set_new(json_array_get(json_object_get(doc, "items"), 0), "weight", json_real(0.5));
    text = json_dumps(doc, JSON_COMPACT);
    json_decref(doc);
    clean_doc = parse_ok(base, &clean);
    doc = parse_ok(text, &m);
    assert_str_eq(m.task_id, clean.task_id);
    assert_str_eq(m.output_format, clean.output_format);
    assert_int_eq(m.n_items, clean.n_items);
    assert_int_eq(m.max_attempts, clean.max_attempts);
    assert_int_eq(m.est_tokens, clean.est_tokens);
    json_decref(doc);
    json_decref(clean_doc);
    free(text);
    free(base);
    shoal_job_destroy(job);
}

/* ---- ids from messages that fail ---- */

static void check_ids(const char *text, int want, const char *want_task, const char *want_job)
{
    char task_id[SHOAL_TASKMSG_ID_MAX] = "junk", job_id[SHOAL_TASKMSG_ID_MAX] = "junk";
    int got =
        shoal_taskmsg_ids(text, strlen(text), task_id, sizeof(task_id), job_id, sizeof(job_id));

    if (got != want)
        test_fail("shoal_taskmsg_ids gave %d, expected %d, for %s", got, want, text);
    assert_str_eq(task_id, want ? want_task : "");
    assert_str_eq(job_id, want ? want_job : "");
}

static void test_ids(void)
{
    shoal_job_t *job = parse_job(full_job);
    char *base = built(job, 1), *text;

    /* a good message, and ones that fail parsing but name their task */
    check_ids(base, 1, "tm-1:000001", "tm-1");
    text = edit(base, "max_attempts", "0");
    check_ids(text, 1, "tm-1:000001", "tm-1");
    free(text);
    text = edit(base, "items", NULL);
    check_ids(text, 1, "tm-1:000001", "tm-1");
    free(text);
    text = edit(base, "v", "2");
    check_ids(text, 1, "tm-1:000001", "tm-1");
    free(text);
    /* without a job_id, the task_id names the job */
    text = edit(base, "job_id", NULL);
    check_ids(text, 1, "tm-1:000001", "tm-1");
    free(text);
    check_ids("{\"task_id\":\"a:b:000042\"}", 1, "a:b:000042", "a:b");
    /* ids that cannot be trusted */
    text = edit(base, "job_id", "\"tm-2\"");
    check_ids(text, 0, NULL, NULL);
    free(text);
    text = edit(base, "task_id", NULL);
    check_ids(text, 0, NULL, NULL);
    free(text);
    check_ids("{\"task_id\":\"tm-1:1\",\"job_id\":\"tm-1\"}", 0, NULL, NULL);
    check_ids("{\"task_id\":\"tm-1:00000x\",\"job_id\":\"tm-1\"}", 0, NULL, NULL);
    check_ids("{\"task_id\":\"a b:000001\"}", 0, NULL, NULL);
    check_ids("{\"task_id\":\":000001\"}", 0, NULL, NULL);
    check_ids("{\"task_id\":7,\"job_id\":\"tm-1\"}", 0, NULL, NULL);
    check_ids("not json", 0, NULL, NULL);
    check_ids("[\"tm-1:000001\"]", 0, NULL, NULL);
    check_ids("", 0, NULL, NULL);
    /* buffers too small: nothing half-written */
    {
        char t[11], j[5];
        assert_int_eq(shoal_taskmsg_ids(base, strlen(base), t, sizeof(t), j, sizeof(j)), 0);
        assert_str_eq(t, "");
        assert_str_eq(j, "");
        assert_int_eq(shoal_taskmsg_ids(base, strlen(base), t, 12, j, 4), 0);
        assert_int_eq(shoal_taskmsg_ids(NULL, 0, t, sizeof(t), j, sizeof(j)), 0);
    }
    free(base);
    shoal_job_destroy(job);
}

/* ---- allocation failures ---- */

static long fail_at = -1, alloc_count;

static void *failing_malloc(size_t n)
{
    if (alloc_count++ == fail_at)
        return NULL;
    return malloc(n);
}

/* Fails each allocation of parsing text in turn: NULL with a reason or a
 * parse equal to the clean one (jansson 2.14's lexer can drop a character of
 * a string when growing its buffer fails and still succeed, so string
 * contents are not compared). Returns how many runs gave NULL. */
static long parse_failures(const char *text)
{
    shoal_taskmsg_t m;
    char err[512];
    long needed, failures = 0;

    json_set_alloc_funcs(failing_malloc, free);
    alloc_count = 0;
    json_decref(shoal_taskmsg_parse(text, strlen(text), &m, err, sizeof(err)));
    needed = alloc_count;
    assert_int_ge(needed, 10);
    /* fail_at stays set past the parse: the count has gone by it then */
    for (fail_at = 0; fail_at < needed; fail_at++) {
        alloc_count = 0;
        err[0] = '\0';
        json_t *doc = shoal_taskmsg_parse(text, strlen(text), &m, err, sizeof(err));
        if (!doc) {
            if (err[0] == '\0')
                test_fail("allocation %ld failed: NULL without a reason", fail_at);
            failures++;
        } else {
            assert_int_eq(m.chunk, 0);
            assert_int_eq(m.n_items, 2);
            assert_int_eq(m.max_attempts, 5);
        }
        json_decref(doc);
    }
    fail_at = -1;
    json_set_alloc_funcs(malloc, free);
    printf("taskmsg_test: %ld of %ld parse allocation failures reported\n", failures, needed);
    return failures;
}

/* Fails each allocation of building a message in turn: each run reports
 * "out of memory" or builds exactly the clean message. Then each
 * allocation of parsing it (parse_failures). ASan checks that nothing
 * leaks. */
static void test_alloc_failures(void)
{
    shoal_job_t *job = parse_job(full_job);
    char err[512], *text = built(job, 0);
    json_t *clean = shoal_taskmsg_build(job, 0, err, sizeof(err));
    long needed, failures = 0;

    json_set_alloc_funcs(failing_malloc, free);
    alloc_count = 0;
    json_decref(shoal_taskmsg_build(job, 0, err, sizeof(err)));
    needed = alloc_count;
    assert_int_ge(needed, 10);
    for (long i = 0; i < needed; i++) {
        json_t *t;
        alloc_count = 0;
        fail_at = i;
        err[0] = '\0';
        t = shoal_taskmsg_build(job, 0, err, sizeof(err));
        fail_at = -1;
        if (!t) {
            assert_str_eq(err, "out of memory");
            failures++;
        } else if (!json_equal(t, clean)) {
            test_fail("allocation %ld failed and the message is incomplete", i);
        }
        json_decref(t);
    }
    assert_int_eq(failures, needed);

    json_set_alloc_funcs(malloc, free);

    /* A plain message takes the fast reader (common/jsonlex.h), which hands
     * the text to jansson when an allocation fails; the same message with a
     * \u escape is jansson's alone, whose failures are reported. */
    parse_failures(text);
    const char *tenant = strstr(text, "\"tenant\":\"");
    assert_true(tenant != NULL);
    size_t at = (size_t)(tenant - text) + 10, len = strlen(text);
    char *escaped = malloc(len + 6);
    memcpy(escaped, text, at);
    snprintf(escaped + at, 7, "\\u%04x", (unsigned char)text[at]);
    memcpy(escaped + at + 6, text + at + 1, len - at);
    assert_int_ge(parse_failures(escaped), 1);
    free(escaped);
    json_decref(clean);
    free(text);
    shoal_job_destroy(job);
}

/* ---- the text writer ---- */

/* Every chunk of job, written as text numbered from base of n_chunks and
 * with key, equals the built message renumbered, keyed and dumped. */
static void check_writer(const shoal_job_t *job, long base, long n_chunks, const char *key)
{
    char err[512], task_id[SHOAL_TASKMSG_ID_MAX];
    shoal_taskmsg_writer_t *w = shoal_taskmsg_writer_new(job, n_chunks, err, sizeof(err));

    if (!w)
        test_fail("writer: %s", err);
    for (size_t k = 0; k < shoal_job_n_chunks(job); k++) {
        json_t *t = shoal_taskmsg_build(job, k, err, sizeof(err));
        assert_true(t != NULL);
        long number = base + (long)k;
        assert_int_eq(
            shoal_taskmsg_task_id(shoal_job_id(job), (size_t)number, task_id, sizeof(task_id)),
            SHOAL_OK);
        assert_int_eq(json_object_set_new(t, "task_id", json_string(task_id)), 0);
        assert_int_eq(json_object_set_new(t, "chunk", json_integer(number)), 0);
        assert_int_eq(json_object_set_new(t, "n_chunks", json_integer(n_chunks)), 0);
        if (key)
            assert_int_eq(json_object_set_new(t, "cache_key", json_string(key)), 0);
        char *want = json_dumps(t, JSON_COMPACT);
        size_t len;
        const char *got = shoal_taskmsg_writer_text(w, k, number, key, &len, err, sizeof(err));
        if (!got)
            test_fail("chunk %zu: %s", k, err);
        assert_str_eq(got, want);
        assert_int_eq(len, strlen(want));
        shoal_taskmsg_t m;
        json_decref(parse_ok(got, &m));
        free(want);
        json_decref(t);
    }
    /* out of range, either way */
    size_t len;
    assert_true(shoal_taskmsg_writer_text(w, shoal_job_n_chunks(job), base, NULL, &len, err,
                                          sizeof(err)) == NULL);
    assert_true(shoal_taskmsg_writer_text(w, 0, n_chunks, NULL, &len, err, sizeof(err)) == NULL);
    shoal_taskmsg_writer_destroy(w);
}

/* The writer against the builder: every valid job of the corpus, the job
 * with every field, escapes of every kind, own models and bodies, batch
 * mode; numbered as the whole job and as a part of a larger one, with and
 * without a cache key. */
static void test_writer(void)
{
    static const char key[] = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    char dir[1100], path[1400];
    size_t files = 0;
    snprintf(dir, sizeof(dir), "%s/tests/data/jobs/valid", source_dir());
    DIR *d = opendir(dir);
    assert_true(d != NULL);
    for (struct dirent *e; (e = readdir(d));) {
        if (!strstr(e->d_name, ".json"))
            continue;
        snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
        /* the file's job, as jansson reads and writes it */
        json_t *doc = json_load_file(path, 0, NULL);
        char *text = doc ? json_dumps(doc, JSON_COMPACT) : NULL, err[512];
        json_decref(doc);
        if (!text)
            test_fail("cannot read %s", path);
        shoal_job_t *job = shoal_job_parse(text, strlen(text), 0, NULL, err, sizeof(err));
        if (!job)
            test_fail("%s: %s", e->d_name, err);
        if (!shoal_job_id(job))
            assert_int_eq(shoal_job_set_id(job, "writer-1"), SHOAL_OK);
        long n = (long)shoal_job_n_chunks(job);
        check_writer(job, 0, n, NULL);
        check_writer(job, 7, n + 20, key);
        shoal_job_destroy(job);
        free(text);
        files++;
    }
    closedir(d);
    assert_int_ge(files, 10);

    static const char *const jobs[] = {
        full_job,
        /* every control character, quotes, backslashes, '/', multibyte and
         * escaped text in ids' company */
        "{\"job_id\":\"w-2\",\"tenant\":\"t\",\"model\":\"sim-small\","
        "\"system\":\"a\\u0001b\\\"c\\\\d/e\\u007f\","
        "\"prompt_template\":\"\\t{{input}}\\n\\u2028\","
        "\"items\":[{\"id\":\"x\",\"input\":\"\\b\\f\\n\\r\\t\\u0002\"},"
        "{\"id\":\"y\",\"input\":\"caf\\u00e9 \\ud83d\\ude00 \\u001f\\u000b\"}],"
        "\"chunking\":{\"max_items\":2}}",
        /* an item with its own model, one with its own request */
        "{\"job_id\":\"w-3\",\"tenant\":\"t\",\"model\":\"sim-small\","
        "\"prompt_template\":\"{{input}}\",\"items\":[{\"id\":\"a\",\"input\":\"1\","
        "\"model\":\"sim-large\"},{\"id\":\"b\",\"input\":\"\",\"body\":{\"messages\":"
        "[{\"role\":\"user\",\"content\":\"hi \\u0007\"}],\"temperature\":0.25}}]}",
        /* batch mode */
        "{\"job_id\":\"w-4\",\"tenant\":\"t\",\"model\":\"sim-small\","
        "\"prompt_template\":\"{{input}}\",\"answer_mode\":\"batch\","
        "\"items\":[{\"id\":\"a\",\"input\":\"1\"},{\"id\":\"b\",\"input\":\"2\"}],"
        "\"chunking\":{\"max_items\":5}}",
    };
    for (size_t i = 0; i < sizeof(jobs) / sizeof(jobs[0]); i++) {
        shoal_job_t *job = parse_job(jobs[i]);
        shoal_job_set_submitted(job, 1700000000);
        long n = (long)shoal_job_n_chunks(job);
        check_writer(job, 0, n, NULL);
        check_writer(job, 99990, 100000 - 10 + n, key);
        shoal_job_destroy(job);
    }

    /* no job id, no writer */
    shoal_job_t *job = parse_job("{\"tenant\":\"t\",\"model\":\"sim-small\","
                                 "\"prompt_template\":\"{{input}}\","
                                 "\"items\":[{\"id\":\"a\",\"input\":\"1\"}]}");
    char err[256];
    assert_true(shoal_taskmsg_writer_new(job, 1, err, sizeof(err)) == NULL);
    assert_true(strstr(err, "job_id") != NULL);
    shoal_job_destroy(job);
    shoal_taskmsg_writer_destroy(NULL);
}

int main(void)
{
    char path[1100], err[512];

    snprintf(path, sizeof(path), "%s/tests/data/models.json", source_dir());
    setenv("SHOAL_SIM_URL", "http://127.0.0.1:9", 1);
    models = shoal_models_load(path, err, sizeof(err));
    if (!models)
        test_fail("cannot load %s: %s", path, err);

    test_round_trip();
    test_task_id();
    test_refusals();
    test_not_a_task();
    test_versions();
    test_unknown_fields();
    test_ids();
    test_alloc_failures();
    test_writer();

    shoal_models_destroy(models);
    printf("taskmsg_test: ok\n");
    return 0;
}
