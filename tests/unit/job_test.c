/*
 * Jobs. The heart of this test holds the C validator to the JSON Schema: a
 * real validator (tests/schema_check.py, Python's jsonschema) judges every
 * file of tests/data/jobs/ and a set of generated edge cases, and the C
 * verdict must agree on each. It also checks that valid jobs parse, invalid
 * ones fail with the message fragment listed in tests/data/jobs/invalid/EXPECT,
 * that tasks follow the chunking rules and the task schema, that settings
 * carry no prompt text, and every allocation failure path. Prompt rendering
 * is tested in render_test.c, task messages in taskmsg_test.c.
 */
#include "common/job.h"
#include "common/taskmsg.h"

#include <dirent.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "common/models.h"
#include "common/render.h"
#include "common/tokens.h"
#include "tests/support/check.h"
#include "tests/support/textgen.h"

#define PYTHON "/usr/bin/python3"
#define MAX_JOB_BYTES ((size_t)1 << 20)
#define MAX_FILES 512

static shoal_models_t *models;

/* ---- files ---- */

static const char *source_dir(void)
{
    const char *d = getenv("SHOAL_SOURCE_DIR");
    return d && *d ? d : SHOAL_SOURCE_DIR;
}

static char *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    char *buf;
    long n;

    if (!f)
        test_fail("cannot open %s", path);
    assert_true(fseek(f, 0, SEEK_END) == 0);
    n = ftell(f);
    assert_true(n >= 0);
    rewind(f);
    buf = malloc((size_t)n + 1);
    assert_true(buf != NULL);
    assert_int_eq(fread(buf, 1, (size_t)n, f), n);
    buf[n] = '\0';
    fclose(f);
    *len = (size_t)n;
    return buf;
}

static void write_file(const char *dir, const char *name, const char *data, size_t len)
{
    char path[1024];
    FILE *f;

    snprintf(path, sizeof(path), "%s/%s", dir, name);
    f = fopen(path, "wb");
    if (!f)
        test_fail("cannot create %s", path);
    assert_int_eq(fwrite(data, 1, len, f), len);
    assert_true(fclose(f) == 0);
}

static void write_json(const char *dir, const char *name, const json_t *doc)
{
    char *text = json_dumps(doc, JSON_COMPACT | JSON_ENCODE_ANY);

    assert_true(text != NULL);
    write_file(dir, name, text, strlen(text));
    free(text);
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Sorted *.json names in dir; caller frees each and the array. */
static size_t list_json(const char *dir, char ***out)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    char **names = calloc(MAX_FILES, sizeof(*names));
    size_t n = 0;

    if (!d)
        test_fail("cannot open directory %s", dir);
    while ((e = readdir(d))) {
        size_t l = strlen(e->d_name);
        if (l > 5 && strcmp(e->d_name + l - 5, ".json") == 0) {
            assert_true(n < MAX_FILES);
            names[n++] = strdup(e->d_name);
        }
    }
    closedir(d);
    qsort(names, n, sizeof(*names), cmp_str);
    *out = names;
    return n;
}

static void free_list(char **names, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(names[i]);
    free(names);
}

static void remove_dir(const char *dir)
{
    char **names;
    size_t n = list_json(dir, &names);
    char path[1024];

    for (size_t i = 0; i < n; i++) {
        snprintf(path, sizeof(path), "%s/%s", dir, names[i]);
        unlink(path);
    }
    free_list(names, n);
    rmdir(dir);
}

/* ---- the reference validator ---- */

struct verdicts {
    char name[MAX_FILES][128];
    char verdict[MAX_FILES][16];
    size_t n;
};

static void shell_quote(char *out, size_t len, const char *s)
{
    if (strchr(s, '\''))
        test_fail("path has a single quote: %s", s);
    snprintf(out, len, "'%s'", s);
}

/* Runs tests/schema_check.py on dir with the schema schema_name. Fails the
 * test (never skips) when Python or jsonschema is missing. */
static void run_reference(const char *schema_name, const char *dir, struct verdicts *v)
{
    char script[1024], schema[1024], qs[1100], qsc[1100], qd[1100], cmd[4096], line[512];
    FILE *p;
    int status;

    if (access(PYTHON, X_OK) != 0)
        test_fail(PYTHON " is missing: the job schema test needs it and python3-jsonschema "
                         "(apt-get install python3 python3-jsonschema)");
    snprintf(script, sizeof(script), "%s/tests/schema_check.py", source_dir());
    snprintf(schema, sizeof(schema), "%s/schemas/%s", source_dir(), schema_name);
    shell_quote(qs, sizeof(qs), script);
    shell_quote(qsc, sizeof(qsc), schema);
    shell_quote(qd, sizeof(qd), dir);
    snprintf(cmd, sizeof(cmd), PYTHON " %s --schema %s %s", qs, qsc, qd);
    fflush(NULL);
    p = popen(cmd, "r");
    if (!p)
        test_fail("cannot run %s", cmd);
    v->n = 0;
    while (fgets(line, sizeof(line), p)) {
        char *tab = strchr(line, '\t'), *nl = strchr(line, '\n');
        assert_true(tab != NULL && nl != NULL && v->n < MAX_FILES);
        *tab = '\0';
        *nl = '\0';
        snprintf(v->name[v->n], sizeof(v->name[0]), "%.127s", line);
        snprintf(v->verdict[v->n], sizeof(v->verdict[0]), "%.15s", tab + 1);
        v->n++;
    }
    status = pclose(p);
    if (!WIFEXITED(status) || WEXITSTATUS(status) == 3)
        test_fail("python3-jsonschema is missing: install it (apt-get install "
                  "python3-jsonschema); the job schema test cannot run without it");
    if (WEXITSTATUS(status) != 0)
        test_fail("%s failed with status %d", cmd, WEXITSTATUS(status));
}

static const char *verdict_of(const struct verdicts *v, const char *name)
{
    for (size_t i = 0; i < v->n; i++) {
        if (strcmp(v->name[i], name) == 0)
            return v->verdict[i];
    }
    test_fail("the reference validator printed no verdict for %s", name);
    return NULL;
}

/* The C side's verdict in the reference's words. */
static const char *c_verdict(const char *buf, size_t len, char *err, size_t errlen)
{
    json_t *doc;
    shoal_err_t rc;

    err[0] = '\0';
    doc = shoal_job_decode(buf, len, err, errlen);
    if (!doc)
        return "decode-error";
    rc = shoal_job_check_schema(doc, err, errlen);
    json_decref(doc);
    return rc == SHOAL_OK ? "valid" : "invalid";
}

static void check_style(const char *file, const char *err)
{
    size_t n = strlen(err);

    if (n == 0)
        test_fail("%s: empty error message", file);
    if (err[n - 1] == '.')
        test_fail("%s: message ends with a period: %s", file, err);
    if (err[0] >= 'A' && err[0] <= 'Z')
        test_fail("%s: message starts upper case: %s", file, err);
}

/* ---- the corpus ---- */

static void check_no_prompt_text(const shoal_job_t *job, const char *file);
static void check_tasks_shape(const shoal_job_t *job, const json_t *tasks, const char *file);

static void test_valid_corpus(const char *tasks_dir)
{
    char dir[1024], path[1100], err[1024];
    char **names;
    size_t n;
    struct verdicts *ref = calloc(1, sizeof(*ref));

    snprintf(dir, sizeof(dir), "%s/tests/data/jobs/valid", source_dir());
    run_reference("job.schema.json", dir, ref);
    n = list_json(dir, &names);
    assert_int_ge(n, 8);
    assert_int_eq(ref->n, n);
    for (size_t i = 0; i < n; i++) {
        size_t len;
        char *buf, task_file[256];
        shoal_job_t *job;
        json_t *tasks;
        const char *cv;

        snprintf(path, sizeof(path), "%s/%s", dir, names[i]);
        buf = read_file(path, &len);
        if (strcmp(verdict_of(ref, names[i]), "valid") != 0)
            test_fail("valid/%s: the JSON Schema says %s", names[i], verdict_of(ref, names[i]));
        cv = c_verdict(buf, len, err, sizeof(err));
        if (strcmp(cv, "valid") != 0)
            test_fail("valid/%s: shoal_job_check_schema says %s: %s", names[i], cv, err);
        job = shoal_job_parse(buf, len, MAX_JOB_BYTES, models, err, sizeof(err));
        if (!job)
            test_fail("valid/%s: shoal_job_parse rejected it: %s", names[i], err);
        /* the document with defaults still satisfies the schema */
        if (shoal_job_check_schema(shoal_job_json(job), err, sizeof(err)) != SHOAL_OK)
            test_fail("valid/%s: defaults broke the schema: %s", names[i], err);
        if (!shoal_job_id(job))
            assert_int_eq(shoal_job_set_id(job, "corpus-job"), SHOAL_OK);
        tasks = shoal_taskmsg_build_all(job, err, sizeof(err));
        if (!tasks)
            test_fail("valid/%s: shoal_taskmsg_build_all: %s", names[i], err);
        check_tasks_shape(job, tasks, names[i]);
        check_no_prompt_text(job, names[i]);
        for (size_t k = 0; k < json_array_size(tasks); k++) {
            snprintf(task_file, sizeof(task_file), "%.100s.%zu.json", names[i], k);
            write_json(tasks_dir, task_file, json_array_get(tasks, k));
        }
        json_decref(tasks);
        shoal_job_destroy(job);
        free(buf);
    }
    free_list(names, n);
    free(ref);
}

struct expect {
    char file[128];
    char fragment[512];
    char kind[16];
};

static size_t read_expect(const char *dir, struct expect *ex, size_t max)
{
    char path[1100], line[1024];
    FILE *f;
    size_t n = 0;

    snprintf(path, sizeof(path), "%s/EXPECT", dir);
    if (!(f = fopen(path, "r")))
        test_fail("cannot open %s", path);
    while (fgets(line, sizeof(line), f)) {
        char *t1, *t2, *nl;

        if (line[0] == '#' || line[0] == '\n')
            continue;
        t1 = strchr(line, '\t');
        t2 = t1 ? strchr(t1 + 1, '\t') : NULL;
        nl = strchr(line, '\n');
        if (!t1 || !t2 || !nl)
            test_fail("EXPECT: malformed line: %s", line);
        *t1 = *t2 = *nl = '\0';
        assert_true(n < max);
        snprintf(ex[n].file, sizeof(ex[n].file), "%.127s", line);
        snprintf(ex[n].fragment, sizeof(ex[n].fragment), "%.511s", t1 + 1);
        snprintf(ex[n].kind, sizeof(ex[n].kind), "%.15s", t2 + 1);
        if (strcmp(ex[n].kind, "decode") && strcmp(ex[n].kind, "schema") &&
            strcmp(ex[n].kind, "semantic"))
            test_fail("EXPECT: %s: kind \"%s\" is not decode, schema or semantic", ex[n].file,
                      ex[n].kind);
        n++;
    }
    fclose(f);
    return n;
}

static void test_invalid_corpus(void)
{
    char dir[1024], path[1100], err[1024];
    char **names;
    size_t n, n_ex;
    struct verdicts *ref = calloc(1, sizeof(*ref));
    struct expect *ex = calloc(MAX_FILES, sizeof(*ex));
    size_t kinds[3] = {0, 0, 0};

    snprintf(dir, sizeof(dir), "%s/tests/data/jobs/invalid", source_dir());
    run_reference("job.schema.json", dir, ref);
    n = list_json(dir, &names);
    n_ex = read_expect(dir, ex, MAX_FILES);
    assert_int_ge(n, 24);
    assert_int_eq(ref->n, n);
    assert_int_eq(n_ex, n); /* one line per file ... */
    for (size_t i = 0; i < n; i++) {
        const struct expect *e = NULL;
        const char *rv, *cv, *want;
        size_t len;
        char *buf;
        shoal_job_t *job;

        for (size_t j = 0; j < n_ex; j++) {
            if (strcmp(ex[j].file, names[i]) == 0)
                e = &ex[j];
        }
        if (!e) /* ... and a line for every file */
            test_fail("invalid/%s has no line in EXPECT", names[i]);
        snprintf(path, sizeof(path), "%s/%s", dir, names[i]);
        buf = read_file(path, &len);

        rv = verdict_of(ref, names[i]);
        cv = c_verdict(buf, len, err, sizeof(err));
        if (strcmp(rv, cv) != 0)
            test_fail("invalid/%s: the JSON Schema says %s, shoal_job_check_schema says %s (%s)",
                      names[i], rv, cv, err);
        want = !strcmp(e->kind, "decode")   ? "decode-error"
               : !strcmp(e->kind, "schema") ? "invalid"
                                            : "valid";
        if (strcmp(rv, want) != 0)
            test_fail("invalid/%s: EXPECT says %s but the JSON Schema verdict is %s", names[i],
                      e->kind, rv);
        kinds[!strcmp(e->kind, "decode") ? 0 : !strcmp(e->kind, "schema") ? 1 : 2]++;

        err[0] = '\0';
        job = shoal_job_parse(buf, len, MAX_JOB_BYTES, models, err, sizeof(err));
        if (job)
            test_fail("invalid/%s: shoal_job_parse accepted it", names[i]);
        if (!strstr(err, e->fragment))
            test_fail("invalid/%s: error \"%s\" does not contain \"%s\"", names[i], err,
                      e->fragment);
        check_style(names[i], err);
        free(buf);
    }
    assert_int_ge(kinds[0], 5);
    assert_int_ge(kinds[1], 20);
    assert_int_ge(kinds[2], 3);
    free_list(names, n);
    free(ex);
    free(ref);
}

/* ---- generated edge cases, judged by both validators ---- */

struct gen_case {
    char name[64];
    const char *expect; /* what both must say */
};

static struct gen_case gen_cases[MAX_FILES];
static size_t n_gen;

static json_t *base_job(void)
{
    json_t *j = json_pack("{s:s, s:s, s:s, s:[{s:s, s:s}]}", "tenant", "acme", "model", "sim-small",
                          "prompt_template", "{{input}}", "items", "id", "a", "input", "x");
    assert_true(j != NULL);
    return j;
}

static void gen_json(const char *dir, const char *name, const char *expect, json_t *doc)
{
    assert_true(n_gen < MAX_FILES);
    snprintf(gen_cases[n_gen].name, sizeof(gen_cases[0].name), "%s.json", name);
    gen_cases[n_gen].expect = expect;
    write_json(dir, gen_cases[n_gen].name, doc);
    json_decref(doc);
    n_gen++;
}

static void gen_raw(const char *dir, const char *name, const char *expect, const char *text)
{
    assert_true(n_gen < MAX_FILES);
    snprintf(gen_cases[n_gen].name, sizeof(gen_cases[0].name), "%s.json", name);
    gen_cases[n_gen].expect = expect;
    write_file(dir, gen_cases[n_gen].name, text, strlen(text));
    n_gen++;
}

/* base_job() with key set to value (stolen). */
static void gen_field(const char *dir, const char *name, const char *expect, const char *key,
                      json_t *value)
{
    json_t *j = base_job();
    assert_true(json_object_set_new(j, key, value) == 0);
    gen_json(dir, name, expect, j);
}

/* base_job() with one field of a sub-object ("chunking", "output", or the
 * first item when parent is "item"). */
static void gen_sub(const char *dir, const char *name, const char *expect, const char *parent,
                    const char *key, json_t *value)
{
    json_t *j = base_job(), *p;

    if (strcmp(parent, "item") == 0) {
        p = json_array_get(json_object_get(j, "items"), 0);
    } else {
        p = json_object();
        assert_true(json_object_set_new(j, parent, p) == 0);
    }
    assert_true(json_object_set_new(p, key, value) == 0);
    gen_json(dir, name, expect, j);
}

static void gen_string_limits(const char *dir)
{
    static const struct {
        const char *key;
        size_t max;
    } lim[] = {{"job_id", 200}, {"tenant", 100}, {"model", 100}};
    char name[64];

    for (size_t i = 0; i < sizeof(lim) / sizeof(lim[0]); i++) {
        char *at = textgen_repeat("a", lim[i].max), *over = textgen_repeat("a", lim[i].max + 1);
        snprintf(name, sizeof(name), "%s_at_limit", lim[i].key);
        gen_field(dir, name, "valid", lim[i].key, json_string(at));
        snprintf(name, sizeof(name), "%s_over_limit", lim[i].key);
        gen_field(dir, name, "invalid", lim[i].key, json_string(over));
        free(at);
        free(over);
    }
    /* lengths count code points, not bytes */
    {
        char *e100 = textgen_repeat("\xc3\xa9", 100), *e101 = textgen_repeat("\xc3\xa9", 101);
        char *cjk = textgen_repeat("\xe6\x97\xa5", 100),
             *emoji = textgen_repeat("\xf0\x9f\x9a\x80", 100);
        gen_field(dir, "model_100_two_byte", "valid", "model", json_string(e100));
        gen_field(dir, "model_101_two_byte", "invalid", "model", json_string(e101));
        gen_field(dir, "model_100_cjk", "valid", "model", json_string(cjk));
        gen_field(dir, "model_100_emoji", "valid", "model", json_string(emoji));
        gen_sub(dir, "group_100_emoji", "valid", "item", "group", json_string(emoji));
        free(e100);
        free(e101);
        free(cjk);
        free(emoji);
    }
    {
        char *g200 = textgen_repeat("g", 200), *g201 = textgen_repeat("g", 201);
        gen_sub(dir, "group_at_limit", "valid", "item", "group", json_string(g200));
        gen_sub(dir, "group_over_limit", "invalid", "item", "group", json_string(g201));
        gen_sub(dir, "item_id_at_limit", "valid", "item", "id", json_string(g200));
        gen_sub(dir, "item_id_over_limit", "invalid", "item", "id", json_string(g201));
        free(g200);
        free(g201);
    }
    {
        char *s = textgen_repeat("s", 200000), *s1 = textgen_repeat("s", 200001);
        char *t = textgen_repeat("t", 200000 - 9), *t1 = textgen_repeat("t", 200001 - 9);
        char *tt, *tt1;
        gen_field(dir, "system_at_limit", "valid", "system", json_string(s));
        gen_field(dir, "system_over_limit", "invalid", "system", json_string(s1));
        assert_true(asprintf(&tt, "%s{{input}}", t) > 0);
        assert_true(asprintf(&tt1, "%s{{input}}", t1) > 0);
        gen_field(dir, "template_at_limit", "valid", "prompt_template", json_string(tt));
        gen_field(dir, "template_over_limit", "invalid", "prompt_template", json_string(tt1));
        free(s);
        free(s1);
        free(t);
        free(t1);
        free(tt);
        free(tt1);
    }
    {
        char *in = textgen_repeat("i", 1000000), *in1 = textgen_repeat("i", 1000001);
        char *e = textgen_repeat("\xc3\xa9", 1000000);
        gen_sub(dir, "input_at_limit", "valid", "item", "input", json_string(in));
        gen_sub(dir, "input_over_limit", "invalid", "item", "input", json_string(in1));
        gen_sub(dir, "input_at_limit_two_byte", "valid", "item", "input", json_string(e));
        free(in);
        free(in1);
        free(e);
    }
}

static void gen_patterns(const char *dir)
{
    static const struct {
        const char *value;
        const char *job_id, *tenant;
    } p[] = {
        {"a.b_c-d", "valid", "valid"},
        {"a:b", "valid", "invalid"},
        {"a b", "invalid", "invalid"},
        {"ab\n", "invalid", "invalid"},
        {"\nab", "invalid", "invalid"},
        {"ab\r", "invalid", "invalid"},
        {"a/b", "invalid", "invalid"},
        {"caf\xc3\xa9", "invalid", "invalid"},
        {"a\xe2\x80\x8b", "invalid", "invalid"}, /* zero-width space */
        {"-", "valid", "valid"},
        {":", "valid", "invalid"},
    };
    char name[64];

    for (size_t i = 0; i < sizeof(p) / sizeof(p[0]); i++) {
        snprintf(name, sizeof(name), "job_id_pattern_%zu", i);
        gen_field(dir, name, p[i].job_id, "job_id", json_string(p[i].value));
        snprintf(name, sizeof(name), "tenant_pattern_%zu", i);
        gen_field(dir, name, p[i].tenant, "tenant", json_string(p[i].value));
        snprintf(name, sizeof(name), "item_id_pattern_%zu", i);
        gen_sub(dir, name, p[i].job_id, "item", "id", json_string(p[i].value));
    }
    gen_field(dir, "template_braces_3", "valid", "prompt_template", json_string("{{{input}}}"));
    gen_field(dir, "template_half", "invalid", "prompt_template", json_string("{{input}"));
    gen_field(dir, "template_upper", "invalid", "prompt_template", json_string("{{INPUT}}"));
    gen_field(dir, "template_only_ids", "invalid", "prompt_template", json_string("{{ids}}"));
    gen_field(dir, "priority_case", "invalid", "priority", json_string("High"));
    gen_field(dir, "merge_jsonl", "valid", "merge", json_string("jsonl"));
    gen_field(dir, "merge_null", "invalid", "merge", json_null());
}

static void gen_numbers(const char *dir)
{
    static const struct {
        const char *parent, *key, *text, *expect;
    } n[] = {
        {NULL, "max_attempts", "1", "valid"},
        {NULL, "max_attempts", "20", "valid"},
        {NULL, "max_attempts", "0", "invalid"},
        {NULL, "max_attempts", "2e1", "valid"},
        {NULL, "max_attempts", "2.1e1", "invalid"},
        {NULL, "max_attempts", "-0", "invalid"},
        {NULL, "max_attempts", "3.5", "invalid"},
        {NULL, "max_attempts", "\"3\"", "invalid"},
        {NULL, "max_attempts", "null", "invalid"},
        {NULL, "max_attempts", "false", "invalid"},
        {NULL, "timeout_ms", "100", "valid"},
        {NULL, "timeout_ms", "99", "invalid"},
        {NULL, "timeout_ms", "100.0", "valid"},
        {NULL, "timeout_ms", "99.99999", "invalid"},
        {NULL, "timeout_ms", "600000", "valid"},
        {NULL, "timeout_ms", "6e5", "valid"},
        {NULL, "timeout_ms", "600000.5", "invalid"},
        {NULL, "timeout_ms", "9223372036854775807", "invalid"},
        {NULL, "timeout_ms", "-9223372036854775808", "invalid"},
        {NULL, "budget_usd", "5e-324", "valid"},
        {NULL, "budget_usd", "1e308", "valid"},
        {NULL, "budget_usd", "0.0", "invalid"},
        {NULL, "budget_usd", "-0.0", "invalid"},
        {NULL, "budget_usd", "1", "valid"},
        {NULL, "budget_usd", "true", "invalid"},
        {NULL, "budget_usd", "[1]", "invalid"},
        {"chunking", "max_tokens", "1", "valid"},
        {"chunking", "max_tokens", "1000000", "valid"},
        {"chunking", "max_tokens", "1000001", "invalid"},
        {"chunking", "max_tokens", "1e6", "valid"},
        {"chunking", "max_tokens", "0", "invalid"},
        {"chunking", "max_items", "1000", "valid"},
        {"chunking", "max_items", "1000.0", "valid"},
        {"chunking", "max_items", "1000.000001", "invalid"},
        {"chunking", "max_items", "1e300", "invalid"},
        {"chunking", "max_items", "-1e300", "invalid"},
        {"chunking", "group_by", "\"group\"", "valid"},
        {"chunking", "group_by", "null", "invalid"},
        {"output", "format", "\"json\"", "valid"},
        {"output", "format", "\"JSON\"", "invalid"},
        {"output", "schema", "{}", "invalid"}, /* needs format json */
    };
    char name[64], text[512], *base;
    json_t *b = base_job();

    /* spliced as text so the number keeps its spelling (1e1, 100.0, -0) */
    base = json_dumps(b, JSON_COMPACT);
    json_decref(b);
    base[strlen(base) - 1] = '\0'; /* drop the closing brace */
    for (size_t i = 0; i < sizeof(n) / sizeof(n[0]); i++) {
        snprintf(name, sizeof(name), "number_%02zu_%s", i, n[i].key);
        if (n[i].parent)
            snprintf(text, sizeof(text), "%s,\"%s\":{\"%s\":%s}}", base, n[i].parent, n[i].key,
                     n[i].text);
        else
            snprintf(text, sizeof(text), "%s,\"%s\":%s}", base, n[i].key, n[i].text);
        gen_raw(dir, name, n[i].expect, text);
    }
    free(base);
}

static void gen_shapes(const char *dir)
{
    json_t *j, *items;
    char *deep;

    gen_raw(dir, "top_null", "invalid", "null");
    gen_raw(dir, "top_number", "invalid", "42");
    gen_raw(dir, "top_true", "invalid", "true");
    gen_raw(dir, "top_empty_object", "invalid", "{}");
    gen_raw(dir, "top_empty_array", "invalid", "[]");
    gen_raw(dir, "whitespace_only", "decode-error", " \n\t ");
    gen_raw(dir, "single_quotes", "decode-error", "{'tenant': 'acme'}");
    gen_raw(dir, "trailing_comma", "decode-error",
            "{\"tenant\":\"acme\",\"model\":\"m\",\"prompt_template\":\"{{input}}\","
            "\"items\":[{\"id\":\"a\",\"input\":\"x\"},]}");
    gen_raw(dir, "infinity", "decode-error",
            "{\"tenant\":\"acme\",\"model\":\"m\",\"prompt_template\":\"{{input}}\","
            "\"items\":[{\"id\":\"a\",\"input\":\"x\"}],\"budget_usd\":Infinity}");
    gen_raw(dir, "real_overflow", "decode-error",
            "{\"tenant\":\"acme\",\"model\":\"m\",\"prompt_template\":\"{{input}}\","
            "\"items\":[{\"id\":\"a\",\"input\":\"x\"}],\"budget_usd\":1e400}");
    gen_raw(dir, "raw_control_char", "decode-error",
            "{\"tenant\":\"acme\",\"model\":\"m\",\"prompt_template\":\"{{input}}\","
            "\"items\":[{\"id\":\"a\",\"input\":\"x\ty\"}]}");
    gen_raw(dir, "nul_in_key", "decode-error",
            "{\"tenant\":\"acme\",\"model\":\"m\",\"prompt_template\":\"{{input}}\","
            "\"items\":[{\"id\":\"a\",\"input\":\"x\"}],\"a\\u0000b\":1}");
    gen_raw(dir, "surrogate_pair", "valid",
            "{\"tenant\":\"acme\",\"model\":\"m\",\"prompt_template\":\"{{input}}\","
            "\"items\":[{\"id\":\"a\",\"input\":\"\\ud83d\\ude80\"}]}");
    gen_raw(dir, "lone_low_surrogate", "decode-error",
            "{\"tenant\":\"acme\",\"model\":\"m\",\"prompt_template\":\"{{input}}\","
            "\"items\":[{\"id\":\"a\",\"input\":\"\\udc00\"}]}");
    gen_raw(dir, "duplicate_nested_key", "decode-error",
            "{\"tenant\":\"acme\",\"model\":\"m\",\"prompt_template\":\"{{input}}\","
            "\"items\":[{\"id\":\"a\",\"input\":\"x\",\"id\":\"b\"}]}");
    gen_raw(dir, "utf8_surrogate_bytes", "decode-error",
            "{\"tenant\":\"acme\",\"model\":\"m\",\"prompt_template\":\"{{input}}\","
            "\"items\":[{\"id\":\"a\",\"input\":\"\xed\xa0\x80\"}]}");
    gen_raw(dir, "utf8_above_max", "decode-error",
            "{\"tenant\":\"acme\",\"model\":\"m\",\"prompt_template\":\"{{input}}\","
            "\"items\":[{\"id\":\"a\",\"input\":\"\xf4\x90\x80\x80\"}]}");

    /* nesting: the document itself is level 1, output 2, schema 3 */
    for (int levels = 63; levels <= 64; levels++) {
        json_t *inner = json_object(), *cur;
        cur = inner;
        for (int k = 3; k < levels; k++) {
            json_t *next = json_object();
            json_object_set_new(cur, "a", next);
            cur = next;
        }
        j = base_job();
        json_object_set_new(j, "output",
                            json_pack("{s:s, s:o}", "format", "json", "schema", inner));
        gen_json(dir, levels == 63 ? "depth_63" : "depth_64", "valid", j);
    }
    {
        /* 65 levels: 62 nested arrays inside output.schema's object */
        char *open = textgen_repeat("[", 62), *close = textgen_repeat("]", 62);
        assert_true(
            asprintf(&deep,
                     "{\"tenant\":\"acme\",\"model\":\"m\",\"prompt_template\":\"{{input}}\","
                     "\"items\":[{\"id\":\"a\",\"input\":\"x\"}],\"output\":{\"format\":"
                     "\"json\",\"schema\":{\"a\":%s%s}}}",
                     open, close) > 0);
        gen_raw(dir, "depth_65", "decode-error", deep);
        free(deep);
        free(open);
        free(close);
    }

    /* item counts at and over the limit */
    for (int over = 0; over <= 1; over++) {
        j = base_job();
        items = json_array();
        for (size_t i = 0; i < 100000u + (size_t)over; i++) {
            char id[32];
            snprintf(id, sizeof(id), "i%zu", i);
            json_array_append_new(items, json_pack("{s:s, s:s}", "id", id, "input", ""));
        }
        json_object_set_new(j, "items", items);
        gen_json(dir, over ? "items_over_limit" : "items_at_limit", over ? "invalid" : "valid", j);
    }
    gen_field(dir, "fallback_5", "valid", "fallback_models",
              json_pack("[s,s,s,s,s]", "a", "b", "c", "d", "e"));
    gen_field(dir, "fallback_empty", "valid", "fallback_models", json_array());
    gen_field(dir, "fallback_empty_string", "invalid", "fallback_models", json_pack("[s]", ""));
    gen_field(dir, "fallback_null", "invalid", "fallback_models", json_null());
    gen_field(dir, "items_null", "invalid", "items", json_null());
    gen_sub(dir, "item_input_null", "invalid", "item", "input", json_null());
    gen_sub(dir, "item_group_number", "invalid", "item", "group", json_integer(1));
    gen_field(dir, "output_schema_ok", "valid", "output",
              json_pack("{s:s, s:{s:s}}", "format", "json", "schema", "type", "array"));
    gen_field(dir, "output_schema_array", "invalid", "output",
              json_pack("{s:s, s:[]}", "format", "json", "schema"));
    gen_field(dir, "output_empty", "valid", "output", json_object());
    gen_field(dir, "chunking_empty", "valid", "chunking", json_object());
    gen_field(dir, "system_empty", "valid", "system", json_string(""));
}

static void test_generated(void)
{
    char tmpl[] = "/tmp/shoal-job-test-XXXXXX", err[1024], path[1100];
    struct verdicts *ref = calloc(1, sizeof(*ref));
    const char *dir = mkdtemp(tmpl);

    assert_true(dir != NULL);
    n_gen = 0;
    gen_string_limits(dir);
    gen_patterns(dir);
    gen_numbers(dir);
    gen_shapes(dir);
    run_reference("job.schema.json", dir, ref);
    assert_int_eq(ref->n, n_gen);
    for (size_t i = 0; i < n_gen; i++) {
        size_t len;
        char *buf;
        const char *rv, *cv;

        snprintf(path, sizeof(path), "%s/%s", dir, gen_cases[i].name);
        buf = read_file(path, &len);
        rv = verdict_of(ref, gen_cases[i].name);
        cv = c_verdict(buf, len, err, sizeof(err));
        if (strcmp(rv, cv) != 0)
            test_fail("generated %s: the JSON Schema says %s, shoal_job_check_schema says %s "
                      "(%s)",
                      gen_cases[i].name, rv, cv, err);
        if (strcmp(rv, gen_cases[i].expect) != 0)
            test_fail("generated %s: both validators say %s, the test expects %s",
                      gen_cases[i].name, rv, gen_cases[i].expect);
        if (strcmp(cv, "valid") != 0)
            check_style(gen_cases[i].name, err);
        free(buf);
    }
    printf("job_test: %zu generated cases agree with the JSON Schema\n", n_gen);
    remove_dir(dir);
    free(ref);
}

/* ---- a multi-megabyte message ---- */

static char *big_job(size_t n_items, size_t input_len, size_t *len)
{
    json_t *j = base_job(), *items = json_array();
    char *in = textgen_repeat("w", input_len), *text;

    for (size_t i = 0; i < n_items; i++) {
        char id[32];
        snprintf(id, sizeof(id), "big-%zu", i);
        json_array_append_new(items, json_pack("{s:s, s:s}", "id", id, "input", in));
    }
    json_object_set_new(j, "items", items);
    json_object_set_new(j, "chunking",
                        json_pack("{s:i, s:i}", "max_tokens", 12000, "max_items", 12));
    text = json_dumps(j, JSON_COMPACT);
    assert_true(text != NULL);
    *len = strlen(text);
    json_decref(j);
    free(in);
    return text;
}

static void test_big_message(void)
{
    size_t len;
    char *text = big_job(300, 10000, &len), err[512], want[128];
    shoal_job_t *job;

    assert_int_ge(len, 3000000);
    job = shoal_job_parse(text, len, MAX_JOB_BYTES, models, err, sizeof(err));
    assert_true(job == NULL);
    snprintf(want, sizeof(want), "job is %zu bytes; the limit is %zu (--max-job-bytes)", len,
             MAX_JOB_BYTES);
    assert_str_eq(err, want);

    /* under a larger limit it is fine: about 2800 tokens an item with its
     * "[big-N]" line, 4 a chunk */
    job = shoal_job_parse(text, len, 8u << 20, models, err, sizeof(err));
    if (!job)
        test_fail("big job rejected: %s", err);
    assert_int_eq(shoal_job_n_items(job), 300);
    assert_int_eq(shoal_job_n_chunks(job), 75);
    {
        char *in = textgen_repeat("w", 10000);
        long item = shoal_tokens_estimate(in, 10000) + shoal_tokens_estimate("big-1", 5) + 3;
        assert_int_eq(shoal_job_est_tokens(job), 75 * 3 + 300 * item);
        free(in);
    }
    shoal_job_destroy(job);
    /* and 0 means no limit */
    job = shoal_job_parse(text, len, 0, NULL, err, sizeof(err));
    assert_true(job != NULL);
    shoal_job_destroy(job);
    free(text);
}

/* ---- getters, defaults, tasks, settings ---- */

static shoal_job_t *parse_ok(const char *text)
{
    char err[1024];
    shoal_job_t *job = shoal_job_parse(text, strlen(text), MAX_JOB_BYTES, models, err, sizeof(err));

    if (!job)
        test_fail("rejected: %s\njob: %s", err, text);
    return job;
}

static void test_defaults(void)
{
    shoal_job_t *job = parse_ok("{\"tenant\":\"acme\",\"model\":\"sim-small\","
                                "\"prompt_template\":\"{{input}}\","
                                "\"items\":[{\"id\":\"a\",\"input\":\"hello\"}]}");
    const json_t *doc = shoal_job_json(job), *chunking = json_object_get(doc, "chunking");

    assert_true(shoal_job_id(job) == NULL);
    assert_str_eq(shoal_job_tenant(job), "acme");
    assert_str_eq(shoal_job_model(job), "sim-small");
    assert_str_eq(shoal_job_priority(job), "normal");
    assert_str_eq(shoal_job_merge(job), "concat");
    assert_str_eq(shoal_job_output_format(job), "text");
    assert_str_eq(shoal_job_on_truncated(job), "retry");
    assert_int_eq(shoal_job_deadline_s(job), 0);
    assert_int_eq(shoal_job_deadline_unix(job), 0);
    assert_int_eq(shoal_job_max_attempts(job), 3);
    assert_int_eq(shoal_job_timeout_ms(job), 60000);
    assert_true(shoal_job_budget_usd(job) <= 0);
    assert_int_eq(shoal_job_n_items(job), 1);
    assert_int_eq(shoal_job_n_chunks(job), 1);
    assert_int_eq(shoal_job_est_tokens(job), 3 + 1); /* "{{input}}", "hello" */
    assert_int_eq(json_integer_value(json_object_get(chunking, "max_tokens")), 12000);
    assert_int_eq(json_integer_value(json_object_get(chunking, "max_items")), 1);
    assert_true(json_object_get(chunking, "group_by") == NULL);
    assert_true(json_is_array(json_object_get(doc, "fallback_models")));
    assert_int_eq(json_array_size(json_object_get(doc, "fallback_models")), 0);

    /* ids: set, checked, replaced */
    assert_int_eq(shoal_job_set_id(job, "job 1"), SHOAL_ERR_INVALID);
    assert_int_eq(shoal_job_set_id(job, ""), SHOAL_ERR_INVALID);
    assert_int_eq(shoal_job_set_id(job, "\xff"), SHOAL_ERR_INVALID);
    assert_int_eq(shoal_job_set_id(job, NULL), SHOAL_ERR_INVALID);
    assert_true(shoal_job_id(job) == NULL);
    {
        char id[] = "j-1";
        assert_int_eq(shoal_job_set_id(job, id), SHOAL_OK);
        id[0] = 'x'; /* copied */
        assert_str_eq(shoal_job_id(job), "j-1");
    }
    assert_int_eq(shoal_job_set_id(job, "j-2"), SHOAL_OK);
    assert_str_eq(shoal_job_id(job), "j-2");
    shoal_job_destroy(job);
    shoal_job_destroy(NULL);

    /* deadline_s counts from the submission time: parse time until set */
    {
        time_t before = time(NULL);
        job = parse_ok("{\"tenant\":\"acme\",\"model\":\"sim-small\",\"deadline_s\":30.0,"
                       "\"output\":{\"on_truncated\":\"fail\"},\"prompt_template\":\"{{input}}\","
                       "\"items\":[{\"id\":\"a\",\"input\":\"hello\"}]}");
        time_t after = time(NULL);
        assert_int_eq(shoal_job_deadline_s(job), 30);
        assert_true(json_is_integer(json_object_get(shoal_job_json(job), "deadline_s")));
        assert_str_eq(shoal_job_on_truncated(job), "fail");
        assert_str_eq(shoal_job_output_format(job), "text");
        assert_int_ge(shoal_job_deadline_unix(job), (long long)before + 30);
        assert_true(shoal_job_deadline_unix(job) <= (long long)after + 30);
        shoal_job_set_submitted(job, 1000);
        assert_int_eq(shoal_job_deadline_unix(job), 1030);
        shoal_job_destroy(job);
    }

    /* integral reals become integers in the document */
    job = parse_ok("{\"tenant\":\"acme\",\"model\":\"sim-small\",\"prompt_template\":\"{{input}}\","
                   "\"items\":[{\"id\":\"a\",\"input\":\"x\"}],\"max_attempts\":5.0,"
                   "\"timeout_ms\":1e4,\"chunking\":{\"max_items\":2e0},\"budget_usd\":0.25,"
                   "\"priority\":\"low\",\"merge\":\"jsonl\",\"output\":{\"format\":\"json\"}}");
    doc = shoal_job_json(job);
    assert_true(json_is_integer(json_object_get(doc, "max_attempts")));
    assert_true(json_is_integer(json_object_get(doc, "timeout_ms")));
    assert_true(json_is_integer(json_object_get(json_object_get(doc, "chunking"), "max_items")));
    assert_int_eq(shoal_job_max_attempts(job), 5);
    assert_int_eq(shoal_job_timeout_ms(job), 10000);
    assert_true(shoal_job_budget_usd(job) == 0.25);
    assert_str_eq(shoal_job_priority(job), "low");
    assert_str_eq(shoal_job_merge(job), "jsonl");
    assert_str_eq(shoal_job_output_format(job), "json");
    shoal_job_destroy(job);
}

/* Job with n items, item i adding exactly tokens[i] to its chunk's
 * estimate: its input, plus, when extra sets max_items (always above 1
 * here, so chunks may hold several items), the "[id]" line and blank line
 * rendering puts before it (the id's estimate + 3). Template "{{input}}" is
 * 3 tokens. */
static shoal_job_t *token_job(const long *tokens, const char *const *groups, size_t n,
                              const char *extra)
{
    json_t *items = json_array();
    char *items_text, *text;
    shoal_job_t *job;
    int multi = strstr(extra, "max_items") != NULL;

    for (size_t i = 0; i < n; i++) {
        char id[32], *in;
        json_t *item;
        snprintf(id, sizeof(id), "it%zu", i);
        in = textgen_tokens(tokens[i] - (multi ? shoal_tokens_estimate(id, strlen(id)) + 3 : 0));
        item = json_pack("{s:s, s:s}", "id", id, "input", in);
        if (groups && groups[i])
            json_object_set_new(item, "group", json_string(groups[i]));
        json_array_append_new(items, item);
        free(in);
    }
    items_text = json_dumps(items, JSON_COMPACT);
    assert_true(asprintf(&text,
                         "{\"job_id\":\"tj\",\"tenant\":\"acme\",\"model\":\"sim-small\","
                         "\"prompt_template\":\"{{input}}\",\"items\":%s%s}",
                         items_text, extra) > 0);
    job = parse_ok(text);
    free(text);
    free(items_text);
    json_decref(items);
    return job;
}

/* Checks chunk sizes, task ids, order and the per-task fields. */
static void check_chunks(const shoal_job_t *job, const size_t *sizes, size_t n_chunks)
{
    char err[256], want_id[64];
    json_t *tasks = shoal_taskmsg_build_all(job, err, sizeof(err));
    size_t next_item = 0;

    if (!tasks)
        test_fail("shoal_taskmsg_build_all: %s", err);
    assert_int_eq(json_array_size(tasks), n_chunks);
    assert_int_eq(shoal_job_n_chunks(job), n_chunks);
    for (size_t k = 0; k < n_chunks; k++) {
        const json_t *t = json_array_get(tasks, k), *items = json_object_get(t, "items");

        snprintf(want_id, sizeof(want_id), "%s:%06zu", shoal_job_id(job), k);
        assert_str_eq(json_string_value(json_object_get(t, "task_id")), want_id);
        assert_str_eq(json_string_value(json_object_get(t, "job_id")), shoal_job_id(job));
        assert_int_eq(json_integer_value(json_object_get(t, "chunk")), k);
        assert_int_eq(json_integer_value(json_object_get(t, "n_chunks")), n_chunks);
        if (json_array_size(items) != sizes[k])
            test_fail("chunk %zu holds %zu items, expected %zu", k, json_array_size(items),
                      sizes[k]);
        for (size_t i = 0; i < json_array_size(items); i++) {
            char id[32];
            snprintf(id, sizeof(id), "it%zu", next_item++);
            assert_str_eq(json_string_value(json_object_get(json_array_get(items, i), "id")), id);
        }
    }
    assert_int_eq(next_item, shoal_job_n_items(job));
    /* the plan as the getters give it: contiguous ranges, the same sizes */
    {
        size_t first, end, expect_first = 0;
        for (size_t k = 0; k < n_chunks; k++) {
            shoal_job_chunk_range(job, k, &first, &end);
            assert_int_eq(first, expect_first);
            assert_int_eq(end - first, sizes[k]);
            assert_int_eq(
                shoal_job_chunk_est_tokens(job, k),
                json_integer_value(json_object_get(json_array_get(tasks, k), "est_tokens")));
            expect_first = end;
        }
        shoal_job_chunk_range(job, n_chunks, &first, &end);
        assert_int_eq(first, shoal_job_n_items(job));
        assert_int_eq(end, shoal_job_n_items(job));
        assert_int_eq(shoal_job_chunk_est_tokens(job, n_chunks), 0);
    }
    json_decref(tasks);
}

static void test_tasks(void)
{
    long ten[10] = {7, 7, 7, 7, 7, 7, 7, 7, 7, 7};
    char err[256];

    /* max_items */
    {
        shoal_job_t *job = token_job(ten, NULL, 10, ",\"chunking\":{\"max_items\":3}");
        size_t sizes[] = {3, 2, 3, 2}; /* balanced: no last chunk of one */
        check_chunks(job, sizes, 4);
        shoal_job_destroy(job);
    }
    /* default max_items 1: one task per item */
    {
        shoal_job_t *job = token_job(ten, NULL, 10, "");
        size_t sizes[] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1};
        check_chunks(job, sizes, 10);
        shoal_job_destroy(job);
    }
    /* max_tokens: base 3; 3+10+10 = 23 <= 25, a third item would be 33 */
    {
        long t[5] = {10, 10, 10, 10, 10};
        shoal_job_t *job =
            token_job(t, NULL, 5, ",\"chunking\":{\"max_items\":10,\"max_tokens\":25}");
        size_t sizes[] = {2, 2, 1};
        json_t *tasks;
        check_chunks(job, sizes, 3);
        tasks = shoal_taskmsg_build_all(job, err, sizeof(err));
        assert_int_eq(json_integer_value(json_object_get(json_array_get(tasks, 0), "est_tokens")),
                      23);
        assert_int_eq(json_integer_value(json_object_get(json_array_get(tasks, 2), "est_tokens")),
                      13);
        assert_int_eq(shoal_job_est_tokens(job), 23 + 23 + 13);
        json_decref(tasks);
        shoal_job_destroy(job);
    }
    /* an item exactly filling max_tokens with the template is accepted... */
    {
        long t[2] = {22, 7};
        shoal_job_t *job =
            token_job(t, NULL, 2, ",\"chunking\":{\"max_items\":5,\"max_tokens\":25}");
        size_t sizes[] = {1, 1};
        check_chunks(job, sizes, 2);
        shoal_job_destroy(job);
    }
    /* ... one more token is not: system "abcd" adds one */
    {
        char *in = textgen_tokens(22), *text;
        assert_true(asprintf(&text,
                             "{\"tenant\":\"acme\",\"model\":\"sim-small\",\"system\":\"abcd\","
                             "\"prompt_template\":\"{{input}}\",\"chunking\":{\"max_tokens\":25},"
                             "\"items\":[{\"id\":\"a\",\"input\":\"x\"},{\"id\":\"b\",\"input\":"
                             "\"%s\"}]}",
                             in) > 0);
        assert_true(shoal_job_parse(text, strlen(text), 0, models, err, sizeof(err)) == NULL);
        assert_str_eq(err, "items[1].input is about 22 tokens; chunking.max_tokens is 25 "
                           "(system and prompt_template add 4)");
        free(text);
        free(in);
    }
    /* groups: a change of group closes the chunk, order is kept */
    {
        long t[6] = {7, 7, 7, 7, 7, 7};
        const char *g[6] = {"users", "users", "billing", NULL, NULL, "admin"};
        shoal_job_t *job =
            token_job(t, g, 6, ",\"chunking\":{\"max_items\":10,\"group_by\":\"group\"}");
        size_t sizes[] = {2, 1, 2, 1};
        check_chunks(job, sizes, 4);
        shoal_job_destroy(job);
        /* a group that comes back later joins its first items: the job's item
         * order becomes group by group, in the order groups first appear */
        {
            const char *h[6] = {"users", "billing", NULL, "users", "billing", "users"};
            static const char *const want[6] = {"it0", "it3", "it5", "it1", "it4", "it2"};
            json_t *all;
            job = token_job(t, h, 6, ",\"chunking\":{\"max_items\":10,\"group_by\":\"group\"}");
            assert_int_eq(shoal_job_n_chunks(job), 3);
            all = shoal_taskmsg_build_all(job, err, sizeof(err));
            assert_int_eq(json_array_size(json_object_get(json_array_get(all, 0), "items")), 3);
            assert_int_eq(json_array_size(json_object_get(json_array_get(all, 2), "items")), 1);
            for (size_t i = 0; i < 6; i++)
                assert_str_eq(
                    json_string_value(json_object_get(
                        json_array_get(json_object_get(shoal_job_json(job), "items"), i), "id")),
                    want[i]);
            json_decref(all);
            shoal_job_destroy(job);
        }
        /* without group_by the groups do not matter */
        job = token_job(t, g, 6, ",\"chunking\":{\"max_items\":10}");
        {
            size_t one[] = {6};
            check_chunks(job, one, 1);
        }
        shoal_job_destroy(job);
        /* groups, max_items and max_tokens together */
        {
            long u[6] = {10, 10, 10, 10, 10, 10};
            const char *h[6] = {"a", "a", "a", "b", "b", "b"};
            size_t s[] = {2, 1, 2, 1}; /* closed by tokens, group, tokens */
            job = token_job(u, h, 6,
                            ",\"chunking\":{\"max_items\":3,\"max_tokens\":23,"
                            "\"group_by\":\"group\"}");
            check_chunks(job, s, 4);
            shoal_job_destroy(job);
        }
    }
    /* no job id: no tasks */
    {
        const char *text = "{\"tenant\":\"acme\",\"model\":\"sim-small\","
                           "\"prompt_template\":\"{{input}}\",\"items\":[{\"id\":\"a\","
                           "\"input\":\"x\"}]}";
        shoal_job_t *job = parse_ok(text);
        assert_true(shoal_taskmsg_build_all(job, err, sizeof(err)) == NULL);
        assert_str_contains(err, "no job_id");
        assert_int_eq(shoal_job_set_id(job, "k:1"), SHOAL_OK);
        {
            json_t *tasks = shoal_taskmsg_build_all(job, err, sizeof(err));
            assert_str_eq(json_string_value(json_object_get(json_array_get(tasks, 0), "task_id")),
                          "k:1:000000");
            json_decref(tasks);
        }
        shoal_job_destroy(job);
    }
}

/* A template that uses {{input}} (or {{ids}}) several times pays for each
 * use in the estimate, the chunk limit and the item-size check; a template
 * with more than SHOAL_RENDER_MAX_PLACEHOLDERS placeholders is refused. */
static void test_template_uses(void)
{
    char err[512], *text, *in = textgen_tokens(40), tmpl[256];
    const char *once = "Summarize:\\n{{input}}",
               *twice = "Summarize:\\n{{input}}\\nAgain: {{input}}";
    long t_once = shoal_tokens_estimate("Summarize:\n{{input}}", 20);
    long t_twice = shoal_tokens_estimate("Summarize:\n{{input}}\nAgain: {{input}}", 37);
    shoal_job_t *job;

    /* one item per chunk: the template plus the input once per use */
    for (int k = 0; k < 2; k++) {
        assert_true(
            asprintf(&text,
                     "{\"job_id\":\"u\",\"tenant\":\"acme\",\"model\":\"sim-small\","
                     "\"prompt_template\":\"%s\",\"items\":[{\"id\":\"a\",\"input\":\"%s\"}]}",
                     k ? twice : once, in) > 0);
        job = parse_ok(text);
        assert_int_eq(shoal_job_est_tokens(job), k ? t_twice + 2 * 40 : t_once + 40);
        assert_int_eq(shoal_job_chunk_est_tokens(job, 0), shoal_job_est_tokens(job));
        shoal_job_destroy(job);
        free(text);
    }
    /* {{ids}} adds each id and its separator; several items add their "[id]" lines */
    assert_true(
        asprintf(&text,
                 "{\"job_id\":\"u\",\"tenant\":\"acme\",\"model\":\"sim-small\","
                 "\"prompt_template\":\"{{ids}} {{input}}\",\"chunking\":{\"max_items\":2},"
                 "\"items\":[{\"id\":\"a\",\"input\":\"%s\"},{\"id\":\"b\",\"input\":\"%s\"}]}",
                 in, in) > 0);
    job = parse_ok(text);
    assert_int_eq(shoal_job_n_chunks(job), 1);
    /* per item: (a + 1) for {{ids}}, (40 + a + 3) for {{input}}; "a" is one token */
    assert_int_eq(shoal_job_est_tokens(job),
                  shoal_tokens_estimate("{{ids}} {{input}}", 17) + 2 * ((1 + 1) + (40 + 1 + 3)));
    shoal_job_destroy(job);
    free(text);

    /* the chunk limit sees both uses: 40 fits 60 once, not twice */
    assert_true(
        asprintf(&text,
                 "{\"tenant\":\"acme\",\"model\":\"sim-small\",\"prompt_template\":\"%s\","
                 "\"chunking\":{\"max_tokens\":60},\"items\":[{\"id\":\"a\",\"input\":\"%s\"}]}",
                 twice, in) > 0);
    assert_true(shoal_job_parse(text, strlen(text), 0, models, err, sizeof(err)) == NULL);
    assert_str_contains(err, "items[0].input is about 40 tokens, 80 as prompt_template uses "
                             "{{input}} 2 times; chunking.max_tokens is 60");
    free(text);

    /* the placeholder limit: 16 pass, 17 do not */
    for (int extra = 0; extra < 2; extra++) {
        size_t off = 0;
        for (int i = 0; i < SHOAL_RENDER_MAX_PLACEHOLDERS + extra; i++)
            off += (size_t)snprintf(tmpl + off, sizeof(tmpl) - off, "%s",
                                    i % 4 ? "{{input}}" : "{{ids}}");
        assert_true(
            asprintf(&text,
                     "{\"tenant\":\"acme\",\"model\":\"sim-small\",\"prompt_template\":\"%s\","
                     "\"items\":[{\"id\":\"a\",\"input\":\"x\"}]}",
                     tmpl) > 0);
        job = shoal_job_parse(text, strlen(text), 0, models, err, sizeof(err));
        if (!extra) {
            if (!job)
                test_fail("16 placeholders rejected: %s", err);
            shoal_job_destroy(job);
        } else {
            assert_true(job == NULL);
            assert_str_eq(err, "prompt_template: uses {{input}} and {{ids}} 17 times; at most 16 "
                               "are allowed");
        }
        free(text);
    }
    free(in);
}

/* Every task carries the job's settings; the union of the tasks' items is
 * the job's items in order. */
static void check_tasks_shape(const shoal_job_t *job, const json_t *tasks, const char *file)
{
    const json_t *doc = shoal_job_json(job), *items = json_object_get(doc, "items");
    size_t next = 0;
    long total = 0;

    if (json_array_size(tasks) != shoal_job_n_chunks(job))
        test_fail("%s: %zu tasks, %zu chunks", file, json_array_size(tasks),
                  shoal_job_n_chunks(job));
    for (size_t k = 0; k < json_array_size(tasks); k++) {
        const json_t *t = json_array_get(tasks, k), *ti = json_object_get(t, "items");

        assert_true(json_equal(json_object_get(t, "tenant"), json_object_get(doc, "tenant")));
        assert_true(json_equal(json_object_get(t, "model"), json_object_get(doc, "model")));
        assert_true(json_equal(json_object_get(t, "priority"), json_object_get(doc, "priority")));
        assert_true(json_equal(json_object_get(t, "output"), json_object_get(doc, "output")));
        assert_true(json_equal(json_object_get(t, "fallback_models"),
                               json_object_get(doc, "fallback_models")));
        assert_true(json_equal(json_object_get(t, "prompt_template"),
                               json_object_get(doc, "prompt_template")));
        assert_true((json_object_get(t, "system") != NULL) ==
                    (json_object_get(doc, "system") != NULL));
        assert_int_ge(json_array_size(ti), 1);
        for (size_t i = 0; i < json_array_size(ti); i++, next++) {
            const json_t *a = json_array_get(ti, i), *b = json_array_get(items, next);
            assert_int_eq(json_object_size(a), 2);
            assert_true(json_equal(json_object_get(a, "id"), json_object_get(b, "id")));
            assert_true(json_equal(json_object_get(a, "input"), json_object_get(b, "input")));
        }
        total += json_integer_value(json_object_get(t, "est_tokens"));
    }
    assert_int_eq(next, json_array_size(items));
    assert_int_eq(total, shoal_job_est_tokens(job));
}

static void check_absent(const char *file, const char *dump, const json_t *s)
{
    if (!json_is_string(s) || json_string_length(s) < 6)
        return; /* too short to tell prompt text from a setting */
    if (strstr(dump, json_string_value(s)))
        test_fail("%s: settings contain prompt text \"%s\"", file, json_string_value(s));
}

static void check_no_prompt_text(const shoal_job_t *job, const char *file)
{
    static const char *const keys[] = {"tenant",     "priority", "model", "fallback_models",
                                       "chunking",   "output",   "merge", "max_attempts",
                                       "timeout_ms", "n_items",  NULL};
    const json_t *doc = shoal_job_json(job), *items = json_object_get(doc, "items");
    json_t *s = shoal_job_settings(job);
    char *dump;

    assert_true(s != NULL);
    for (size_t i = 0; keys[i]; i++) {
        if (!json_object_get(s, keys[i]))
            test_fail("%s: settings lack \"%s\"", file, keys[i]);
    }
    assert_true(json_object_get(s, "system") == NULL);
    assert_true(json_object_get(s, "prompt_template") == NULL);
    assert_true(json_object_get(s, "items") == NULL);
    assert_true((json_object_get(s, "budget_usd") != NULL) ==
                (json_object_get(doc, "budget_usd") != NULL));
    assert_true(json_equal(json_object_get(s, "deadline_s"), json_object_get(doc, "deadline_s")) ||
                (!json_object_get(s, "deadline_s") && !json_object_get(doc, "deadline_s")));
    assert_int_eq(json_integer_value(json_object_get(s, "n_items")), shoal_job_n_items(job));
    dump = json_dumps(s, JSON_COMPACT);
    assert_true(dump != NULL);
    check_absent(file, dump, json_object_get(doc, "system"));
    check_absent(file, dump, json_object_get(doc, "prompt_template"));
    for (size_t i = 0; i < json_array_size(items); i++)
        check_absent(file, dump, json_object_get(json_array_get(items, i), "input"));
    free(dump);
    json_decref(s);
}

static void test_settings(void)
{
    shoal_job_t *job = parse_ok(
        "{\"job_id\":\"s1\",\"tenant\":\"acme\",\"model\":\"sim-small\","
        "\"fallback_models\":[\"sim-large\"],\"system\":\"SECRET-SYSTEM\","
        "\"prompt_template\":\"SECRET-TEMPLATE {{input}}\",\"budget_usd\":1.5,\"deadline_s\":90,"
        "\"items\":[{\"id\":\"a\",\"input\":\"SECRET-INPUT-1\"},{\"id\":\"b\","
        "\"input\":\"SECRET-INPUT-2\"}],\"chunking\":{\"max_items\":2,\"group_by\":\"group\"}}");
    json_t *s = shoal_job_settings(job);
    char *dump = json_dumps(s, JSON_COMPACT | JSON_SORT_KEYS);

    assert_true(strstr(dump, "SECRET") == NULL);
    assert_str_eq(dump,
                  "{\"budget_usd\":1.5,\"chunking\":{\"group_by\":\"group\",\"max_items\":2,"
                  "\"max_tokens\":12000},\"deadline_s\":90,\"fallback_models\":[\"sim-large\"],"
                  "\"max_attempts\":3,\"merge\":\"concat\",\"model\":\"sim-small\","
                  "\"n_items\":2,\"output\":{\"format\":\"text\",\"on_truncated\":\"retry\"},"
                  "\"priority\":\"normal\",\"tenant\":\"acme\",\"timeout_ms\":60000}");
    /* a deep copy: changing it leaves the job alone */
    json_object_set_new(json_object_get(s, "chunking"), "max_items", json_integer(9));
    assert_int_eq(json_integer_value(json_object_get(
                      json_object_get(shoal_job_json(job), "chunking"), "max_items")),
                  2);
    free(dump);
    json_decref(s);
    shoal_job_destroy(job);
}

static void test_messages(void)
{
    static const struct {
        const char *text, *want;
    } m[] = {
        {"{\"tenant\":\"acme\",\"model\":\"sim-small\",\"prompt_template\":\"{{input}}\","
         "\"items\":[{\"id\":\"a\",\"input\":\"x\"}],\"priority\":\"urgent\"}",
         "priority: \"urgent\" is not one of high, normal, low"},
        {"{\"tenant\":\"acme\",\"model\":\"gpt-9\",\"prompt_template\":\"{{input}}\","
         "\"items\":[{\"id\":\"a\",\"input\":\"x\"}]}",
         "model \"gpt-9\" is not in the models file (known: sim-small, sim-large)"},
        {"{\"tenant\":\"acme\",\"model\":\"sim-small\",\"prompt_template\":\"x\","
         "\"items\":[{\"id\":\"a\",\"input\":\"x\"}]}",
         "prompt_template: must contain {{input}}"},
        {"{\"tenant\":\"acme\",\"model\":\"sim-small\",\"prompt_template\":\"{{input}}\","
         "\"items\":[]}",
         "items: must not be empty"},
        {"{\"model\":\"sim-small\",\"prompt_template\":\"{{input}}\","
         "\"items\":[{\"id\":\"a\",\"input\":\"x\"}]}",
         "missing required field \"tenant\""},
        {"{\"tenant\":\"acme\",\"model\":\"sim-small\",\"prompt_template\":\"{{input}}\","
         "\"items\":[{\"id\":\"a\",\"input\":\"x\"}],\"tenat\":1}",
         "unknown field \"tenat\" (did you mean \"tenant\"?)"},
        {"{\"tenant\":\"acme\",\"model\":\"sim-small\",\"prompt_template\":\"{{input}}\","
         "\"items\":[{\"id\":\"a\",\"input\":\"x\"},{\"id\":\"a\",\"input\":\"y\"}]}",
         "items[1].id \"a\" repeats items[0].id"},
        {"{\"tenant\":\"acme\",\"model\":\"sim-small\",\"prompt_template\":\"{{input}}\","
         "\"items\":[{\"id\":\"a\",\"input\":\"x\"}],\"job_id\":\"a\\\"b\\nc\"}",
         "job_id: \"a\\\"b\\nc\" may only contain letters, digits and . _ : -"},
        {"{\"tenant\":\"acme\",\"model\":\"sim-small\",\"prompt_template\":\"{{input}}\","
         "\"items\":[{\"id\":\"a\",\"input\":\"x\"}],\"job_id\":\""
         "0123456789012345678901234567890123456789 and then some\"}",
         "job_id: \"0123456789012345678901234567890123456789...\" may only contain"},
        {"[1,", "invalid JSON at line 1, column 3: "},
    };
    char err[1024];

    for (size_t i = 0; i < sizeof(m) / sizeof(m[0]); i++) {
        shoal_job_t *job =
            shoal_job_parse(m[i].text, strlen(m[i].text), 0, models, err, sizeof(err));
        if (job)
            test_fail("accepted: %s", m[i].text);
        assert_str_contains(err, m[i].want);
    }
    /* without a models file the model is not checked */
    {
        const char *t = m[1].text;
        shoal_job_t *job = shoal_job_parse(t, strlen(t), 0, NULL, err, sizeof(err));
        assert_true(job != NULL);
        shoal_job_destroy(job);
    }
    /* a tiny error buffer truncates, a NULL one is allowed */
    {
        char small[8];
        assert_true(shoal_job_parse("[]", 2, 0, NULL, small, sizeof(small)) == NULL);
        assert_str_eq(small, "job: ex");
        assert_true(shoal_job_parse("[]", 2, 0, NULL, NULL, 0) == NULL);
    }
}

/* ---- allocation failures ---- */

static long fail_at = -1; /* the allocation (counting from 0) that fails; -1: none */
static long alloc_count;

/* Fails one allocation only. */
static void *failing_malloc(size_t n)
{
    if (alloc_count++ == fail_at)
        return NULL;
    return malloc(n);
}

/* Fails each allocation of parse + tasks + settings in turn. Nothing may
 * crash or leak (ASan). Past the decoder, every run must either report the
 * failure or produce exactly what a clean run produces, so a failure that
 * was ignored and left a field out shows up as a difference. Inside the
 * decoder that cannot be asked: jansson 2.14's lexer drops a character of a
 * string when growing its buffer fails, and still succeeds. */
static void test_alloc_failures(const char *file)
{
    char path[1100], err[512];
    size_t len, failures = 0;
    char *buf;
    long needed, decoding;
    shoal_job_t *clean;
    json_t *clean_tasks, *clean_settings;

    snprintf(path, sizeof(path), "%s/tests/data/jobs/valid/%s", source_dir(), file);
    buf = read_file(path, &len);
    json_set_alloc_funcs(failing_malloc, free);

    alloc_count = 0;
    json_decref(shoal_job_decode(buf, len, err, sizeof(err)));
    decoding = alloc_count;
    alloc_count = 0;
    clean = shoal_job_parse(buf, len, 0, models, err, sizeof(err));
    assert_true(clean != NULL);
    if (!shoal_job_id(clean))
        assert_int_eq(shoal_job_set_id(clean, "alloc-test"), SHOAL_OK);
    clean_tasks = shoal_taskmsg_build_all(clean, err, sizeof(err));
    clean_settings = shoal_job_settings(clean);
    assert_true(clean_tasks && clean_settings);
    needed = alloc_count;
    assert_int_ge(needed, 20);

    for (long n = 0; n < needed; n++) {
        shoal_job_t *job;
        json_t *t = NULL, *s = NULL;

        alloc_count = 0;
        fail_at = n;
        err[0] = '\0';
        job = shoal_job_parse(buf, len, 0, models, err, sizeof(err));
        if (!job) {
            assert_true(err[0] != '\0');
            failures++;
            continue;
        }
        if (!shoal_job_id(job) && shoal_job_set_id(job, "alloc-test") != SHOAL_OK) {
            failures++;
            shoal_job_destroy(job);
            continue;
        }
        if (!(t = shoal_taskmsg_build_all(job, err, sizeof(err))))
            assert_str_eq(err, "out of memory");
        s = shoal_job_settings(job);
        if (!t || !s) {
            failures++;
        } else if (n >= decoding) {
            if (!json_equal(shoal_job_json(job), shoal_job_json(clean)) ||
                !json_equal(t, clean_tasks) || !json_equal(s, clean_settings))
                test_fail("allocation %ld failed and the result is incomplete", n);
        }
        json_decref(t);
        json_decref(s);
        shoal_job_destroy(job);
    }
    fail_at = -1;
    assert_int_ge(failures, (size_t)needed * 9 / 10);
    json_decref(clean_tasks);
    json_decref(clean_settings);
    shoal_job_destroy(clean);
    json_set_alloc_funcs(malloc, free);
    printf("job_test: %s: %zu of %ld allocation failures reported\n", file, failures, needed);
    free(buf);
}

/* Every problem of a job is named, one per line, not only the first: schema
 * violations in several fields and items, then the checks a schema cannot
 * make (unknown models, a repeated item id) together. */
static void test_all_errors(void)
{
    char err[4096];
    const char *bad = "{\"tenant\": \"a b\", \"priority\": \"urgent\", \"model\": \"fast\","
                      " \"prompt_template\": \"no placeholder\", \"items\": [{\"id\": \"1\","
                      " \"input\": 5}, {\"input\": \"x\"}], \"colour\": 1}";
    assert_true(shoal_job_parse(bad, strlen(bad), 0, models, err, sizeof(err)) == NULL);
    assert_str_contains(err, "colour");
    assert_str_contains(err, "tenant: \"a b\" may only contain letters, digits and . _ -");
    assert_str_contains(err, "priority: \"urgent\" is not one of");
    assert_str_contains(err, "prompt_template: must contain {{input}}");
    assert_str_contains(err, "items[0].input: expected a string, got an integer");
    assert_str_contains(err, "items[1]: missing required field \"id\"");
    int lines = 1;
    for (const char *p = err; *p; p++)
        lines += *p == '\n';
    assert_int_eq(lines, 6);

    const char *sem = "{\"tenant\": \"a\", \"model\": \"nope\", \"fallback_models\": [\"nah\"],"
                      " \"prompt_template\": \"{{input}}\", \"items\": [{\"id\": \"1\","
                      " \"input\": \"x\"}, {\"id\": \"1\", \"input\": \"y\"}]}";
    assert_true(shoal_job_parse(sem, strlen(sem), 0, models, err, sizeof(err)) == NULL);
    assert_str_contains(err, "items[1].id \"1\" repeats items[0].id\n");
    assert_str_contains(err, "model \"nope\" is not in the models file");
    assert_str_contains(err, "fallback_models[0] \"nah\" is not in the models file");

    /* bounded: 30 bad items name 20 and say there are more */
    char text[8192];
    size_t o = (size_t)snprintf(text, sizeof(text),
                                "{\"tenant\": \"a\", \"model\": \"fast\", \"prompt_template\":"
                                " \"{{input}}\", \"items\": [");
    for (int i = 0; i < 30; i++)
        o += (size_t)snprintf(text + o, sizeof(text) - o, "%s{\"id\": \"i%d\", \"input\": %d}",
                              i ? "," : "", i, i);
    snprintf(text + o, sizeof(text) - o, "]}");
    assert_true(shoal_job_parse(text, strlen(text), 0, models, err, sizeof(err)) == NULL);
    assert_str_contains(err, "items[19].input");
    assert_true(strstr(err, "items[20].input") == NULL);
    assert_str_contains(err, "(more problems not shown)");
}

/* A job of n items "i0".."i<n-1>", except that items[dup[k][0]] takes the
 * id of items[dup[k][1]]. Caller frees. */
static char *job_with_ids(size_t n, const size_t (*dup)[2], size_t ndup)
{
    size_t cap = n * 40 + 256, len;
    char *buf = malloc(cap);
    assert_true(buf != NULL);
    len = (size_t)snprintf(buf, cap,
                           "{\"tenant\":\"acme\",\"model\":\"sim-small\",\"prompt_template\":"
                           "\"{{input}}\",\"chunking\":{\"max_items\":10},\"items\":[");
    for (size_t i = 0; i < n; i++) {
        size_t id = i;
        for (size_t k = 0; k < ndup; k++)
            if (dup[k][0] == i)
                id = dup[k][1];
        len += (size_t)snprintf(buf + len, cap - len, "%s{\"id\":\"i%zu\",\"input\":\"x %zu\"}",
                                i ? "," : "", id, i);
    }
    snprintf(buf + len, cap - len, "]}");
    return buf;
}

/* Item ids are judged in one pass: the first item (in job order) whose id
 * an earlier one has is named, with the earliest item that has it. */
static void test_unique_ids(void)
{
    static const size_t one[][2] = {{25000, 7}};
    static const size_t two[][2] = {{29000, 3}, {20000, 19999}};
    static const size_t last[][2] = {{29999, 29998}};
    char err[512];
    char *text = job_with_ids(30000, NULL, 0);
    shoal_job_t *job = shoal_job_parse(text, strlen(text), 0, models, err, sizeof(err));
    if (!job)
        test_fail("unique ids refused: %s", err);
    assert_int_eq(shoal_job_n_items(job), 30000);
    shoal_job_destroy(job);
    free(text);

    text = job_with_ids(30000, one, 1);
    assert_true(shoal_job_parse(text, strlen(text), 0, models, err, sizeof(err)) == NULL);
    assert_str_eq(err, "items[25000].id \"i7\" repeats items[7].id");
    free(text);
    text = job_with_ids(30000, two, 2);
    assert_true(shoal_job_parse(text, strlen(text), 0, models, err, sizeof(err)) == NULL);
    assert_str_eq(err, "items[20000].id \"i19999\" repeats items[19999].id");
    free(text);
    text = job_with_ids(30000, last, 1);
    assert_true(shoal_job_parse(text, strlen(text), 0, models, err, sizeof(err)) == NULL);
    assert_str_eq(err, "items[29999].id \"i29998\" repeats items[29998].id");
    free(text);
}

/* A stored job rebuilds as shoal_job_parse built it (same chunks, same
 * task messages), without the checks it passed; what no longer decodes is
 * still refused with the reason. */
static void test_parse_stored(void)
{
    static const char *const files[] = {"all_fields.json", "groups.json", "multi_item_chunks.json",
                                        "unicode.json", "deadline_truncation.json"};
    char path[1100], err[512], err2[512];

    for (size_t f = 0; f < sizeof(files) / sizeof(files[0]); f++) {
        size_t len;
        snprintf(path, sizeof(path), "%s/tests/data/jobs/valid/%s", source_dir(), files[f]);
        char *buf = read_file(path, &len);
        shoal_job_t *a = shoal_job_parse(buf, len, 0, models, err, sizeof(err));
        if (!a)
            test_fail("%s: %s", files[f], err);
        if (!shoal_job_id(a))
            assert_int_eq(shoal_job_set_id(a, "stored-1"), SHOAL_OK);
        /* what the scheduler stores: the parsed document */
        char *doc = json_dumps(shoal_job_json(a), JSON_COMPACT);
        shoal_job_t *b = shoal_job_parse_stored(doc, strlen(doc), err, sizeof(err));
        if (!b)
            test_fail("%s stored: %s", files[f], err);
        assert_int_eq(shoal_job_n_chunks(b), shoal_job_n_chunks(a));
        assert_int_eq(shoal_job_n_items(b), shoal_job_n_items(a));
        assert_int_eq(shoal_job_est_tokens(b), shoal_job_est_tokens(a));
        shoal_job_set_submitted(b, 1700000000);
        shoal_job_set_submitted(a, 1700000000);
        shoal_taskmsg_writer_t *wa = shoal_taskmsg_writer_new(a, 100000, err, sizeof(err));
        shoal_taskmsg_writer_t *wb = shoal_taskmsg_writer_new(b, 100000, err, sizeof(err));
        assert_true(wa != NULL && wb != NULL);
        for (size_t k = 0; k < shoal_job_n_chunks(a); k++) {
            size_t la, lb;
            const char *ta = shoal_taskmsg_writer_text(wa, k, (long)k, NULL, &la, err, sizeof(err));
            assert_true(ta != NULL);
            char *copy = strdup(ta);
            const char *tb =
                shoal_taskmsg_writer_text(wb, k, (long)k, NULL, &lb, err2, sizeof(err2));
            assert_true(tb != NULL);
            assert_str_eq(tb, copy);
            free(copy);
        }
        shoal_taskmsg_writer_destroy(wa);
        shoal_taskmsg_writer_destroy(wb);
        shoal_job_destroy(a);
        shoal_job_destroy(b);
        free(doc);
        free(buf);
    }

    /* the checks it passed are not made again: a repeated id and a model the
     * models file does not know (the stored job is rebuilt without it) */
    const char *again =
        "{\"tenant\":\"acme\",\"model\":\"gpt-9\",\"prompt_template\":\"{{input}}\","
        "\"items\":[{\"id\":\"a\",\"input\":\"x\"},{\"id\":\"a\",\"input\":\"y\"}]}";
    assert_true(shoal_job_parse(again, strlen(again), 0, models, err, sizeof(err)) == NULL);
    shoal_job_t *job = shoal_job_parse_stored(again, strlen(again), err, sizeof(err));
    if (!job)
        test_fail("stored job refused: %s", err);
    assert_int_eq(shoal_job_n_chunks(job), 2);
    shoal_job_destroy(job);

    /* what does not decode, or is not a job, still fails with the reason */
    assert_true(shoal_job_parse_stored("{\"items\":[", 10, err, sizeof(err)) == NULL);
    assert_str_contains(err, "invalid JSON at line 1");
    assert_true(shoal_job_parse_stored("[1]", 3, err, sizeof(err)) == NULL);
    assert_str_eq(err, "job: expected an object, got an array");
}

/* Every chunk's task message from a and from b, as text, is the same. */
static void same_messages(const shoal_job_t *a, const shoal_job_t *b)
{
    char err[512];
    shoal_taskmsg_writer_t *wa = shoal_taskmsg_writer_new(a, 1000, err, sizeof(err));
    shoal_taskmsg_writer_t *wb = shoal_taskmsg_writer_new(b, 1000, err, sizeof(err));
    assert_true(wa != NULL && wb != NULL);
    assert_int_eq(shoal_job_n_chunks(b), shoal_job_n_chunks(a));
    for (size_t k = 0; k < shoal_job_n_chunks(a); k++) {
        size_t la, lb;
        const char *key =
            k % 2 ? "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef" : NULL;
        assert_int_eq(shoal_job_chunk_est_tokens(b, k), shoal_job_chunk_est_tokens(a, k));
        const char *ta = shoal_taskmsg_writer_text(wa, k, (long)k + 7, key, &la, err, sizeof(err));
        if (!ta)
            test_fail("chunk %zu: %s", k, err);
        char *copy = strdup(ta);
        const char *tb = shoal_taskmsg_writer_text(wb, k, (long)k + 7, key, &lb, err, sizeof(err));
        if (!tb)
            test_fail("chunk %zu: %s", k, err);
        assert_str_eq(tb, copy);
        assert_int_eq(lb, la);
        free(copy);
    }
    shoal_taskmsg_writer_destroy(wa);
    shoal_taskmsg_writer_destroy(wb);
}

/* An item {"id": "a", "input": "word word ..."} of words words into buf. */
static void big_item(char *buf, size_t cap, int words)
{
    size_t n = (size_t)snprintf(buf, cap, "{\"id\":\"a\",\"input\":\"");
    for (int i = 0; i < words && n + 8 < cap; i++)
        n += (size_t)snprintf(buf + n, cap - n, "word ");
    snprintf(buf + n, cap - n, "\"}");
}

static const char one_item[] = "{\"id\":\"a\",\"input\":\"x\"}";

/* A stored part whose items stay text: the same job, chunks and task
 * messages as the part decoded, before and after its document is read; and
 * anything but plain items is left to the decoding path. */
static void test_stored_part(void)
{
    static const char header[] =
        "{\"job_id\":\"p-1\",\"tenant\":\"acme\",\"model\":\"sim-small\",\"system\":\"be brief\","
        "\"prompt_template\":\"Echo:\\n{{input}} ({{ids}})\",\"chunking\":{\"max_items\":3},"
        "\"deadline_s\":600,\"parts\":2}";
    static const char items[] =
        " {\"id\":\"a\",\"input\":\"plain\"} ,\n{\"input\":\"tab\\tq\\\"uote\\\\ slash\\/ "
        "\xc3\xa9 \xe2\x9c\x93\",\"id\":\"b\"},{\"id\":\"c\",\"input\":\"\"},"
        "{ \"id\" : \"d.e:f\" , \"input\" : \"line\\nbreak\\r\\b\\f\" "
        "},{\"id\":\"g\",\"input\":\"x\"}";
    char err[512], text[2048];
    int unsure;
    json_t *hdr = json_loads(header, 0, NULL);
    assert_true(hdr != NULL);

    /* the part as shoal_job_parse_stored rebuilds it: the header without
     * "parts", the items after its members */
    json_t *h2 = json_deep_copy(hdr);
    json_object_del(h2, "parts");
    char *head = json_dumps(h2, JSON_COMPACT);
    snprintf(text, sizeof(text), "%.*s,\"items\":[%s]}", (int)strlen(head) - 1, head, items);
    free(head);
    json_decref(h2);
    shoal_job_t *ref = shoal_job_parse_stored(text, strlen(text), err, sizeof(err));
    if (!ref)
        test_fail("reference: %s", err);

    shoal_job_t *job =
        shoal_job_parse_stored_part(hdr, items, strlen(items), &unsure, err, sizeof(err));
    if (!job)
        test_fail("stored part refused (unsure %d): %s", unsure, err);
    assert_int_eq(shoal_job_n_items(job), 5);
    assert_int_eq(shoal_job_n_chunks(job), 2);
    assert_int_eq(shoal_job_est_tokens(job), shoal_job_est_tokens(ref));
    assert_str_eq(shoal_job_id(job), "p-1");
    assert_int_eq(shoal_job_deadline_s(job), 600);
    shoal_job_set_submitted(job, 1700000000);
    shoal_job_set_submitted(ref, 1700000000);
    shoal_job_text_t id, input;
    assert_int_eq(shoal_job_item_text(job, 1, &id, &input), 1);
    assert_int_eq(id.len, 1);
    assert_int_eq(input.escaped, 1);
    assert_true(shoal_job_field(job, "parts") == NULL);
    same_messages(ref, job);
    /* the key view (the result cache) reads the document: decoded then,
     * equal to the reference's, and the messages stay the same */
    const json_t *doc = shoal_job_json(job);
    assert_true(doc != NULL);
    assert_true(json_equal(doc, shoal_job_json(ref)));
    assert_int_eq(shoal_job_item_text(job, 1, &id, &input), 0);
    same_messages(ref, job);
    json_t *va = shoal_taskmsg_key_view(ref, 1), *vb = shoal_taskmsg_key_view(job, 1);
    assert_true(va && vb && json_equal(va, vb));
    json_decref(va);
    json_decref(vb);
    shoal_job_destroy(job);
    shoal_job_destroy(ref);

    /* anything but plain items, or grouping, is left to the caller */
    static const char *const unsure_items[] = {
        "{\"id\":\"a\",\"input\":\"x\",\"group\":\"g\"}",
        "{\"id\":\"a\",\"input\":\"x\",\"model\":\"sim-small\"}",
        "{\"id\":\"a\",\"input\":\"caf\\u00e9\"}",
        "{\"id\":\"a\",\"input\":5}",
        "{\"id\":\"a\",\"input\":\"x\"},",
        "{\"id\":\"a\",\"input\":\"x\"} {\"id\":\"b\",\"input\":\"y\"}",
        "{\"id\":\"a\"}",
        "{\"id\":\"a\",\"id\":\"b\",\"input\":\"x\"}",
        "{\"id\":\"a\",\"input\":\"x\"",
    };
    for (size_t i = 0; i < sizeof(unsure_items) / sizeof(unsure_items[0]); i++) {
        unsure = 0;
        job = shoal_job_parse_stored_part(hdr, unsure_items[i], strlen(unsure_items[i]), &unsure,
                                          err, sizeof(err));
        if (job || !unsure)
            test_fail("taken as plain: %s", unsure_items[i]);
    }
    json_t *grouped = json_deep_copy(hdr);
    json_object_set_new(json_object_get(grouped, "chunking"), "group_by", json_string("group"));
    unsure = 0;
    assert_true(shoal_job_parse_stored_part(grouped, one_item, strlen(one_item), &unsure, err,
                                            sizeof(err)) == NULL);
    assert_int_eq(unsure, 1);
    json_decref(grouped);

    /* what cannot be planned still fails with the reason */
    json_t *small = json_deep_copy(hdr);
    json_object_set_new(json_object_get(small, "chunking"), "max_tokens", json_integer(30));
    char big[8192];
    big_item(big, sizeof(big), 300);
    unsure = 1;
    assert_true(shoal_job_parse_stored_part(small, big, strlen(big), &unsure, err, sizeof(err)) ==
                NULL);
    assert_int_eq(unsure, 0);
    assert_str_contains(err, "items[0].input is about");
    json_decref(small);
    json_decref(hdr);
}

/* A part judged as text at intake: accepted exactly when shoal_job_parse
 * accepts the part's job, with the same chunks and task messages; any
 * failure is left to shoal_job_parse to word (unsure). */
static void test_parse_part(void)
{
    static const char header[] =
        "{\"job_id\":\"p-2\",\"tenant\":\"acme\",\"model\":\"sim-small\","
        "\"prompt_template\":\"Echo:\\n{{input}}\",\"chunking\":{\"max_items\":2,\"max_tokens\":"
        "400},\"parts\":3}";
    static const struct {
        const char *items;
        int ok;
    } cases[] = {
        {"{\"id\":\"a\",\"input\":\"one\"},{\"input\":\"t\\\"wo\\n\",\"id\":\"b-2\"},"
         "{\"id\":\"c\",\"input\":\"\xc3\xa9t\xc3\xa9\"}",
         1},
        {"{\"id\":\"a\",\"input\":\"one\"},{\"id\":\"a\",\"input\":\"two\"}", 0},
        {"{\"id\":\"a b\",\"input\":\"one\"}", 0},
        {"{\"id\":\"\",\"input\":\"one\"}", 0},
        {"{\"id\":\"a\\/b\",\"input\":\"one\"}", 0},
        {"", 0},
    };
    char err[512], text[4096];
    json_t *hdr = json_loads(header, 0, NULL);
    assert_true(hdr != NULL);

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        int unsure = 0;
        shoal_job_t *job = shoal_job_parse_part(hdr, cases[i].items, strlen(cases[i].items), models,
                                                &unsure, err, sizeof(err));
        snprintf(text, sizeof(text),
                 "{\"job_id\":\"p-2\",\"tenant\":\"acme\",\"model\":\"sim-small\","
                 "\"prompt_template\":\"Echo:\\n{{input}}\",\"chunking\":{\"max_items\":2,"
                 "\"max_tokens\":400},\"items\":[%s]}",
                 cases[i].items);
        shoal_job_t *ref = shoal_job_parse(text, strlen(text), 0, models, err, sizeof(err));
        assert_int_eq(ref != NULL, cases[i].ok);
        if (!cases[i].ok) {
            if (job || !unsure)
                test_fail("case %zu: judged as text: %s", i, cases[i].items);
            continue;
        }
        if (!job)
            test_fail("case %zu refused (unsure %d): %s", i, unsure, err);
        shoal_job_text_t id, input;
        assert_int_eq(shoal_job_item_text(job, 0, &id, &input), 1);
        assert_int_eq(shoal_job_est_tokens(job), shoal_job_est_tokens(ref));
        shoal_job_set_submitted(job, 1700000000);
        shoal_job_set_submitted(ref, 1700000000);
        same_messages(ref, job);
        assert_true(json_equal(shoal_job_json(job), shoal_job_json(ref)));
        shoal_job_destroy(job);
        shoal_job_destroy(ref);
    }

    /* the header's own faults (a model the models file lacks) and an item
     * too large for a chunk are worded by shoal_job_parse */
    json_t *other = json_deep_copy(hdr);
    json_object_set_new(other, "model", json_string("gpt-9"));
    int unsure = 0;
    assert_true(shoal_job_parse_part(other, one_item, strlen(one_item), models, &unsure, err,
                                     sizeof(err)) == NULL);
    assert_int_eq(unsure, 1);
    json_decref(other);
    char big[8192];
    big_item(big, sizeof(big), 1000);
    unsure = 0;
    assert_true(shoal_job_parse_part(hdr, big, strlen(big), models, &unsure, err, sizeof(err)) ==
                NULL);
    assert_int_eq(unsure, 1);
    json_decref(hdr);
}

/* Every allocation of a part's job kept as text, failed in turn: out of
 * memory is said (or, while judging, left to shoal_job_parse), nothing
 * leaks, and the job the first clean run makes reads back whole. */
static void test_part_alloc_failures(void)
{
    static const char header[] =
        "{\"job_id\":\"p-3\",\"tenant\":\"acme\",\"model\":\"sim-small\","
        "\"prompt_template\":\"{{input}}\",\"chunking\":{\"max_items\":2},\"parts\":2}";
    static const char items[] =
        "{\"id\":\"a\",\"input\":\"one\\n\"},{\"id\":\"b\",\"input\":\"two\"},"
        "{\"input\":\"three\",\"id\":\"c\"}";
    char err[512];
    json_t *hdr = json_loads(header, 0, NULL);
    assert_true(hdr != NULL);

    json_set_alloc_funcs(failing_malloc, free);
    for (int checked = 0; checked < 2; checked++) {
        for (fail_at = 0;; fail_at++) {
            int unsure = 0;
            alloc_count = 0;
            shoal_job_t *job = checked ? shoal_job_parse_part(hdr, items, strlen(items), models,
                                                              &unsure, err, sizeof(err))
                                       : shoal_job_parse_stored_part(hdr, items, strlen(items),
                                                                     &unsure, err, sizeof(err));
            if (!job) {
                if (!unsure)
                    assert_str_eq(err, "out of memory");
                else
                    assert_int_eq(checked, 1);
                continue;
            }
            /* the document decoded from the text, failing in turn too */
            const json_t *doc = shoal_job_json(job);
            if (doc) {
                assert_int_eq(json_array_size(json_object_get(doc, "items")), 3);
                assert_str_eq(json_string_value(json_object_get(
                                  json_array_get(json_object_get(doc, "items"), 0), "input")),
                              "one\n");
            }
            shoal_job_destroy(job);
            if (fail_at >= alloc_count)
                break; /* a run with no failure */
        }
    }
    json_set_alloc_funcs(malloc, free);
    fail_at = -1;
    json_decref(hdr);
}

int main(void)
{
    char tmpl[] = "/tmp/shoal-job-tasks-XXXXXX", path[1100], err[512];
    const char *tasks_dir;

    snprintf(path, sizeof(path), "%s/tests/data/models.json", source_dir());
    setenv("SHOAL_SIM_URL", "http://127.0.0.1:9", 1);
    models = shoal_models_load(path, err, sizeof(err));
    if (!models)
        test_fail("cannot load %s: %s", path, err);

    tasks_dir = mkdtemp(tmpl);
    assert_true(tasks_dir != NULL);
    test_valid_corpus(tasks_dir);
    {
        /* every task the corpus produced satisfies the task schema */
        struct verdicts *ref = calloc(1, sizeof(*ref));
        run_reference("task.schema.json", tasks_dir, ref);
        assert_int_ge(ref->n, 8);
        for (size_t i = 0; i < ref->n; i++) {
            if (strcmp(ref->verdict[i], "valid") != 0)
                test_fail("task %s: the task schema says %s", ref->name[i], ref->verdict[i]);
        }
        free(ref);
        remove_dir(tasks_dir);
    }
    test_invalid_corpus();
    test_generated();
    test_big_message();
    test_defaults();
    test_template_uses();
    test_all_errors();
    test_tasks();
    test_settings();
    test_messages();
    test_unique_ids();
    test_parse_stored();
    test_stored_part();
    test_parse_part();
    test_part_alloc_failures();
    test_alloc_failures("all_fields.json");
    test_alloc_failures("minimal.json");
    shoal_models_destroy(models);
    printf("job_test: ok\n");
    return 0;
}
