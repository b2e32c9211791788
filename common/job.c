/*
 * Jobs: validation against schemas/job.schema.json plus the checks a schema
 * cannot express, defaults, chunking into tasks and prompt rendering.
 *
 * shoal_job_check_schema() enforces the schema itself through
 * common/jsonschema (the schema is embedded at build time and compiled once),
 * so it accepts exactly what the schema accepts; tests/unit/job_test.c still
 * runs a second, independent validator over the corpus and generated edge
 * cases and fails on any disagreement. A few violations are worded for
 * people who submit jobs rather than in the generic form (a pattern becomes
 * "may only contain letters, digits and ..."); see rewordings below.
 *
 * Memory for the job comes from jansson's allocator (json_get_alloc_funcs), so
 * a test that swaps in a failing allocator reaches every error path.
 */
#include "common/job.h"

#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/chunk.h"
#include "common/jsonschema.h"
#include "common/tokens.h"

/* Defaults the schema documents; fill_defaults() applies them. */
#define KEY_MAX 200 /* job_id, for task id buffers */
#define MAX_TOKENS_DEFAULT 12000
#define MAX_ITEMS_DEFAULT 1
#define ATTEMPTS_DEFAULT 3
#define TIMEOUT_DEFAULT 60000

/* Values quoted in messages are cut to this many code points. */
#define QUOTE_CP 40
#define QUOTE_LEN 256

struct shoal_job {
    json_t *doc;   /* owned; defaults filled in */
    json_t *items; /* borrowed from doc */
    size_t n_items;
    size_t n_chunks;
    size_t *chunk_start; /* n_chunks + 1 entries; the last is n_items */
    long *chunk_tokens;  /* n_chunks entries */
    long est_tokens;
};

/* ---- allocation (through jansson's hooks) ---- */

static void *job_alloc(size_t n, size_t size)
{
    json_malloc_t m;
    json_free_t f;

    if (size && n > SIZE_MAX / size)
        return NULL;
    json_get_alloc_funcs(&m, &f);
    n *= size;
    return m(n ? n : 1);
}

static void job_free(void *p)
{
    json_malloc_t m;
    json_free_t f;

    if (!p)
        return;
    json_get_alloc_funcs(&m, &f);
    f(p);
}

/* ---- message helpers ---- */

static shoal_err_t fail(char *errbuf, size_t errlen, const char *path, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* "path: message", or just the message at the top level. */
static shoal_err_t fail(char *errbuf, size_t errlen, const char *path, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (path && *path)
        return shoal_err_set(errbuf, errlen, SHOAL_ERR_INVALID, "%s: %s", path, msg);
    return shoal_err_set(errbuf, errlen, SHOAL_ERR_INVALID, "%s", msg);
}

/* s as a short double-quoted string: control characters, quotes and
 * backslashes escaped, cut after QUOTE_CP code points. Returns out. */
static const char *quoted(char out[QUOTE_LEN], const char *s, size_t len)
{
    size_t o = 0, cp = 0;

    out[o++] = '"';
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];

        if ((c & 0xC0) != 0x80 && cp++ == QUOTE_CP) {
            memcpy(out + o, "...", 3);
            o += 3;
            break;
        }
        if (c == '"' || c == '\\') {
            out[o++] = '\\';
            out[o++] = (char)c;
        } else if (c == '\n') {
            out[o++] = '\\';
            out[o++] = 'n';
        } else if (c == '\t') {
            out[o++] = '\\';
            out[o++] = 't';
        } else if (c < 0x20 || c == 0x7f) {
            o += (size_t)snprintf(out + o, QUOTE_LEN - o, "\\u%04x", c);
        } else {
            out[o++] = (char)c;
        }
    }
    out[o++] = '"';
    out[o] = '\0';
    return out;
}

static const char *quoted_json(char out[QUOTE_LEN], const json_t *s)
{
    return quoted(out, json_string_value(s), json_string_length(s));
}

static const char *type_name(const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT:
        return "an object";
    case JSON_ARRAY:
        return "an array";
    case JSON_STRING:
        return "a string";
    case JSON_INTEGER:
        return "an integer";
    case JSON_REAL:
        return "a number";
    case JSON_TRUE:
    case JSON_FALSE:
        return "a boolean";
    case JSON_NULL:
        return "null";
    }
    return "an unknown value";
}

/* ---- schema rules ---- */

/* schemas/job.schema.json as text, embedded by cmake/embed_file.cmake. */
extern const char shoal_job_schema_text[];

/* The job schema and its $defs/key (the job_id rule), compiled on first use
 * and kept for the life of the process. A failed attempt (out of memory) is
 * not kept, so a later call tries again. */
static pthread_mutex_t schema_lock = PTHREAD_MUTEX_INITIALIZER;
static shoal_jsonschema_t *job_schema, *key_schema;

static shoal_err_t load_schemas(char *errbuf, size_t errlen)
{
    json_error_t e;
    json_t *doc;
    shoal_jsonschema_t *job = NULL, *key = NULL;
    char why[256] = "";
    shoal_err_t err = SHOAL_OK;

    pthread_mutex_lock(&schema_lock);
    if (job_schema)
        goto out;
    if (!(doc = json_loads(shoal_job_schema_text, 0, &e))) {
        err = json_error_code(&e) == json_error_out_of_memory
                  ? shoal_err_set(errbuf, errlen, SHOAL_ERR_NOMEM, "out of memory")
                  : shoal_err_set(errbuf, errlen, SHOAL_ERR_INVALID,
                                  "cannot load the job schema: %s", e.text);
        goto out;
    }
    key = shoal_jsonschema_new(json_object_get(json_object_get(doc, "$defs"), "key"), why,
                               sizeof(why));
    if (key)
        job = shoal_jsonschema_new(doc, why, sizeof(why));
    json_decref(doc);
    if (!job) {
        shoal_jsonschema_destroy(key);
        if (strcmp(why, "out of memory") == 0)
            err = shoal_err_set(errbuf, errlen, SHOAL_ERR_NOMEM, "out of memory");
        else
            err = shoal_err_set(errbuf, errlen, SHOAL_ERR_INVALID,
                                "cannot compile the job schema: %s", why);
        goto out;
    }
    key_schema = key;
    job_schema = job;
out:
    pthread_mutex_unlock(&schema_lock);
    return err;
}

/* Violations worded for the person who wrote the job, by the schema
 * location of the failing keyword. */
static const struct {
    const char *schema_path;
    const char *path;  /* NULL: the violation's own instance path */
    const char *chars; /* set: "<value> may only contain letters, digits and <chars>" */
    const char *msg;
} rewordings[] = {
    {"/$defs/key/pattern", NULL, ". _ : -", NULL},
    {"/properties/tenant/pattern", NULL, ". _ -", NULL},
    {"/properties/prompt_template/pattern", NULL, NULL, "must contain {{input}}"},
    {"/properties/output/dependentSchemas/schema/required", "output.schema", NULL,
     "needs output.format \"json\""},
    {"/properties/output/dependentSchemas/schema/properties/format/const", "output.schema", NULL,
     "needs output.format \"json\""},
};

shoal_err_t shoal_job_check_schema(const json_t *doc, char *errbuf, size_t errlen)
{
    shoal_jsonschema_error_t d;
    shoal_err_t err;
    char q[QUOTE_LEN];

    if (!json_is_object(doc))
        return fail(errbuf, errlen, "job", "expected an object, got %s",
                    doc ? type_name(doc) : "nothing");
    if ((err = load_schemas(errbuf, errlen)))
        return err;
    if (shoal_jsonschema_validate_ex(job_schema, doc, &d, errbuf, errlen) == SHOAL_OK)
        return SHOAL_OK;
    for (size_t i = 0; d.keyword && i < sizeof(rewordings) / sizeof(rewordings[0]); i++) {
        if (strcmp(d.schema_path, rewordings[i].schema_path) != 0)
            continue;
        if (rewordings[i].chars && json_is_string(d.value))
            return fail(errbuf, errlen, d.instance_path,
                        "%s may only contain letters, digits and %s", quoted_json(q, d.value),
                        rewordings[i].chars);
        if (rewordings[i].msg)
            return fail(errbuf, errlen, rewordings[i].path ? rewordings[i].path : d.instance_path,
                        "%s", rewordings[i].msg);
    }
    return SHOAL_ERR_INVALID;
}

/* output.schema must be one the worker can enforce: refused here, at intake,
 * rather than on every chunk's output. */
static shoal_err_t check_output_schema(const json_t *doc, char *errbuf, size_t errlen)
{
    const json_t *schema = json_object_get(json_object_get(doc, "output"), "schema");
    shoal_jsonschema_t *s;
    char why[512] = "";

    if (!schema)
        return SHOAL_OK;
    if (!(s = shoal_jsonschema_new(schema, why, sizeof(why)))) {
        if (strcmp(why, "out of memory") == 0)
            return shoal_err_set(errbuf, errlen, SHOAL_ERR_NOMEM, "out of memory");
        return fail(errbuf, errlen, "output.schema", "cannot be enforced: %s", why);
    }
    shoal_jsonschema_destroy(s);
    return SHOAL_OK;
}

/* ---- decoding ---- */

static int too_deep(const json_t *v, int depth)
{
    if (!json_is_object(v) && !json_is_array(v))
        return 0;
    if (++depth > SHOAL_JOB_MAX_DEPTH)
        return 1;
    if (json_is_array(v)) {
        for (size_t i = 0; i < json_array_size(v); i++) {
            if (too_deep(json_array_get(v, i), depth))
                return 1;
        }
    } else {
        const char *key;
        json_t *val;

        json_object_foreach((json_t *)v, key, val)
        {
            if (too_deep(val, depth))
                return 1;
        }
    }
    return 0;
}

json_t *shoal_job_decode(const char *buf, size_t len, char *errbuf, size_t errlen)
{
    json_error_t e;
    json_t *doc;

    if (len >= 3 && memcmp(buf, "\xef\xbb\xbf", 3) == 0) {
        shoal_err_set(errbuf, errlen, SHOAL_ERR_INVALID,
                      "invalid JSON at line 1, column 1: remove the byte order mark (U+FEFF) "
                      "before the text");
        return NULL;
    }
    doc = json_loadb(buf, len, JSON_DECODE_ANY | JSON_REJECT_DUPLICATES, &e);
    if (!doc) {
        const char *text = e.text;

        if (json_error_code(&e) == json_error_out_of_memory) {
            shoal_err_set(errbuf, errlen, SHOAL_ERR_NOMEM, "out of memory");
            return NULL;
        }
        /* jansson names its own flag here; say what the user did instead */
        if (strstr(text, "JSON_ALLOW_NUL"))
            text = "\\u0000 is not allowed in strings";
        shoal_err_set(errbuf, errlen, SHOAL_ERR_INVALID, "invalid JSON at line %d, column %d: %s",
                      e.line, e.column, text);
        return NULL;
    }
    if (too_deep(doc, 0)) {
        json_decref(doc);
        shoal_err_set(errbuf, errlen, SHOAL_ERR_INVALID, "job nests deeper than %d levels",
                      SHOAL_JOB_MAX_DEPTH);
        return NULL;
    }
    return doc;
}

/* ---- defaults ---- */

static int set_default(json_t *obj, const char *key, json_t *val)
{
    if (json_object_get(obj, key)) {
        json_decref(val);
        return 0;
    }
    return json_object_set_new(obj, key, val);
}

/* Stores an integral real (5.0) as the integer it is. */
static int as_integer(json_t *obj, const char *key)
{
    json_t *v = json_object_get(obj, key);

    if (!json_is_real(v))
        return 0;
    return json_object_set_new(obj, key, json_integer((json_int_t)json_real_value(v)));
}

static int fill_defaults(json_t *doc)
{
    json_t *chunking, *output;

    if (set_default(doc, "priority", json_string("normal")) ||
        set_default(doc, "fallback_models", json_array()) ||
        set_default(doc, "chunking", json_object()) || set_default(doc, "output", json_object()) ||
        set_default(doc, "merge", json_string("concat")) ||
        set_default(doc, "max_attempts", json_integer(ATTEMPTS_DEFAULT)) ||
        set_default(doc, "timeout_ms", json_integer(TIMEOUT_DEFAULT)))
        return -1;
    chunking = json_object_get(doc, "chunking");
    output = json_object_get(doc, "output");
    if (set_default(chunking, "max_tokens", json_integer(MAX_TOKENS_DEFAULT)) ||
        set_default(chunking, "max_items", json_integer(MAX_ITEMS_DEFAULT)) ||
        set_default(output, "format", json_string("text")))
        return -1;
    if (as_integer(chunking, "max_tokens") || as_integer(chunking, "max_items") ||
        as_integer(doc, "max_attempts") || as_integer(doc, "timeout_ms"))
        return -1;
    return 0;
}

/* ---- semantic checks ---- */

struct id_ref {
    const char *id;
    size_t index;
};

static int cmp_id_ref(const void *a, const void *b)
{
    const struct id_ref *x = a, *y = b;
    int c = strcmp(x->id, y->id);

    if (c)
        return c;
    return x->index < y->index ? -1 : x->index > y->index;
}

/* Names the first item (in job order) whose id an earlier item already has. */
static shoal_err_t check_unique_ids(const json_t *items, size_t n, char *errbuf, size_t errlen)
{
    struct id_ref *refs = job_alloc(n, sizeof(*refs));
    size_t repeat = SIZE_MAX, original = 0, group_first = 0;
    char q[QUOTE_LEN];

    if (!refs)
        return shoal_err_set(errbuf, errlen, SHOAL_ERR_NOMEM, "out of memory");
    for (size_t i = 0; i < n; i++) {
        refs[i].id = json_string_value(json_object_get(json_array_get(items, i), "id"));
        refs[i].index = i;
    }
    qsort(refs, n, sizeof(*refs), cmp_id_ref);
    if (n > 0)
        group_first = refs[0].index;
    for (size_t k = 1; k < n; k++) {
        if (strcmp(refs[k].id, refs[k - 1].id) != 0) {
            group_first = refs[k].index;
            continue;
        }
        if (refs[k].index < repeat) {
            repeat = refs[k].index;
            original = group_first;
        }
    }
    job_free(refs);
    if (repeat == SIZE_MAX)
        return SHOAL_OK;
    {
        const json_t *id = json_object_get(json_array_get(items, repeat), "id");
        return shoal_err_set(errbuf, errlen, SHOAL_ERR_INVALID,
                             "items[%zu].id %s repeats items[%zu].id", repeat, quoted_json(q, id),
                             original);
    }
}

static shoal_err_t check_model(const shoal_models_t *models, const char *path, const char *alias,
                               char *errbuf, size_t errlen)
{
    char known[512], q[QUOTE_LEN];
    size_t o = 0, n;

    if (shoal_models_find(models, alias))
        return SHOAL_OK;
    known[0] = '\0';
    n = shoal_models_count(models);
    for (size_t i = 0; i < n && o < sizeof(known); i++)
        o += (size_t)snprintf(known + o, sizeof(known) - o, "%s%s", i ? ", " : "",
                              shoal_models_at(models, i)->alias);
    return shoal_err_set(errbuf, errlen, SHOAL_ERR_INVALID,
                         "%s %s is not in the models file (known: %s)", path,
                         quoted(q, alias, strlen(alias)), known);
}

static shoal_err_t check_models(const json_t *doc, const shoal_models_t *models, char *errbuf,
                                size_t errlen)
{
    const json_t *fallbacks = json_object_get(doc, "fallback_models");
    char path[64];
    shoal_err_t err;

    if ((err = check_model(models, "model", json_string_value(json_object_get(doc, "model")),
                           errbuf, errlen)))
        return err;
    for (size_t i = 0; i < json_array_size(fallbacks); i++) {
        snprintf(path, sizeof(path), "fallback_models[%zu]", i);
        if ((err = check_model(models, path, json_string_value(json_array_get(fallbacks, i)),
                               errbuf, errlen)))
            return err;
    }
    return SHOAL_OK;
}

static long string_tokens(const json_t *s)
{
    return s ? shoal_tokens_estimate(json_string_value(s), json_string_length(s)) : 0;
}

/* Estimates every item, rejects one that cannot fit a chunk on its own (the
 * same formula shoal_chunk_plan uses) and plans the chunks. */
static shoal_err_t plan_chunks(shoal_job_t *job, char *errbuf, size_t errlen)
{
    const json_t *doc = job->doc, *chunking = json_object_get(doc, "chunking");
    shoal_chunk_limits_t limits;
    long base, *tokens = NULL;
    const char **groups = NULL;
    size_t n = job->n_items;
    shoal_err_t err = SHOAL_OK;

    limits.max_tokens = (long)json_integer_value(json_object_get(chunking, "max_tokens"));
    limits.max_items = (size_t)json_integer_value(json_object_get(chunking, "max_items"));
    limits.by_group = json_object_get(chunking, "group_by") != NULL;
    base = string_tokens(json_object_get(doc, "system")) +
           string_tokens(json_object_get(doc, "prompt_template"));
    if (base > limits.max_tokens)
        return shoal_err_set(errbuf, errlen, SHOAL_ERR_INVALID,
                             "system and prompt_template are about %ld tokens; "
                             "chunking.max_tokens is %ld",
                             base, limits.max_tokens);

    tokens = job_alloc(n, sizeof(*tokens));
    groups = limits.by_group ? job_alloc(n, sizeof(*groups)) : NULL;
    job->chunk_start = job_alloc(n + 1, sizeof(*job->chunk_start));
    job->chunk_tokens = job_alloc(n, sizeof(*job->chunk_tokens));
    if (!tokens || (limits.by_group && !groups) || !job->chunk_start || !job->chunk_tokens) {
        err = shoal_err_set(errbuf, errlen, SHOAL_ERR_NOMEM, "out of memory");
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        const json_t *item = json_array_get(job->items, i);

        tokens[i] = string_tokens(json_object_get(item, "input"));
        if (shoal_chunk_estimate(base, &tokens[i], 1) > limits.max_tokens) {
            err = shoal_err_set(errbuf, errlen, SHOAL_ERR_INVALID,
                                "items[%zu].input is about %ld tokens; chunking.max_tokens is "
                                "%ld (system and prompt_template add %ld)",
                                i, tokens[i], limits.max_tokens, base);
            goto out;
        }
        if (groups)
            groups[i] = json_string_value(json_object_get(item, "group"));
    }
    job->n_chunks =
        shoal_chunk_plan(tokens, groups, n, base, &limits, job->chunk_start, job->chunk_tokens);
    job->chunk_start[job->n_chunks] = n;
    job->est_tokens = 0;
    for (size_t k = 0; k < job->n_chunks; k++)
        job->est_tokens = shoal_chunk_estimate(job->est_tokens, &job->chunk_tokens[k], 1);
out:
    job_free(tokens);
    job_free((void *)groups);
    return err;
}

/* ---- the job ---- */

void shoal_job_destroy(shoal_job_t *job)
{
    if (!job)
        return;
    json_decref(job->doc);
    job_free(job->chunk_start);
    job_free(job->chunk_tokens);
    job_free(job);
}

shoal_job_t *shoal_job_parse(const char *buf, size_t len, size_t max_bytes,
                             const shoal_models_t *models, char *errbuf, size_t errlen)
{
    shoal_job_t *job;
    json_t *doc;

    if (max_bytes && len > max_bytes) {
        shoal_err_set(errbuf, errlen, SHOAL_ERR_LIMIT,
                      "job is %zu bytes; the limit is %zu (--max-job-bytes)", len, max_bytes);
        return NULL;
    }
    if (!(doc = shoal_job_decode(buf, len, errbuf, errlen)))
        return NULL;
    if (shoal_job_check_schema(doc, errbuf, errlen)) {
        json_decref(doc);
        return NULL;
    }
    if (fill_defaults(doc) || !(job = job_alloc(1, sizeof(*job)))) {
        json_decref(doc);
        shoal_err_set(errbuf, errlen, SHOAL_ERR_NOMEM, "out of memory");
        return NULL;
    }
    memset(job, 0, sizeof(*job));
    job->doc = doc;
    job->items = json_object_get(doc, "items");
    job->n_items = json_array_size(job->items);
    if (check_unique_ids(job->items, job->n_items, errbuf, errlen) ||
        (models && check_models(doc, models, errbuf, errlen)) ||
        check_output_schema(doc, errbuf, errlen) || plan_chunks(job, errbuf, errlen)) {
        shoal_job_destroy(job);
        return NULL;
    }
    return job;
}

static const char *get_str(const shoal_job_t *job, const char *key)
{
    return json_string_value(json_object_get(job->doc, key));
}

const char *shoal_job_id(const shoal_job_t *job)
{
    return get_str(job, "job_id");
}

const char *shoal_job_tenant(const shoal_job_t *job)
{
    return get_str(job, "tenant");
}

const char *shoal_job_priority(const shoal_job_t *job)
{
    return get_str(job, "priority");
}

const char *shoal_job_model(const shoal_job_t *job)
{
    return get_str(job, "model");
}

const char *shoal_job_merge(const shoal_job_t *job)
{
    return get_str(job, "merge");
}

const char *shoal_job_output_format(const shoal_job_t *job)
{
    return json_string_value(json_object_get(json_object_get(job->doc, "output"), "format"));
}

int shoal_job_max_attempts(const shoal_job_t *job)
{
    return (int)json_integer_value(json_object_get(job->doc, "max_attempts"));
}

long shoal_job_timeout_ms(const shoal_job_t *job)
{
    return (long)json_integer_value(json_object_get(job->doc, "timeout_ms"));
}

size_t shoal_job_n_items(const shoal_job_t *job)
{
    return job->n_items;
}

double shoal_job_budget_usd(const shoal_job_t *job)
{
    return json_number_value(json_object_get(job->doc, "budget_usd"));
}

size_t shoal_job_n_chunks(const shoal_job_t *job)
{
    return job->n_chunks;
}

long shoal_job_est_tokens(const shoal_job_t *job)
{
    return job->est_tokens;
}

const json_t *shoal_job_json(const shoal_job_t *job)
{
    return job->doc;
}

int shoal_job_id_valid(const char *id)
{
    json_t *s = id ? json_string(id) : NULL; /* NULL for invalid UTF-8 as well */
    int ok = s && load_schemas(NULL, 0) == SHOAL_OK &&
             shoal_jsonschema_validate(key_schema, s, NULL, 0) == SHOAL_OK;
    json_decref(s);
    return ok;
}

shoal_err_t shoal_job_set_id(shoal_job_t *job, const char *id)
{
    json_t *s;

    if (!shoal_job_id_valid(id) || !(s = json_string(id)))
        return SHOAL_ERR_INVALID;
    if (json_object_set_new(job->doc, "job_id", s))
        return SHOAL_ERR_NOMEM;
    return SHOAL_OK;
}

/* Copies doc[key] into obj (a deep copy) when it exists. */
static int copy_field(json_t *obj, const json_t *doc, const char *key)
{
    const json_t *v = json_object_get(doc, key);

    if (!v)
        return 0;
    return json_object_set_new(obj, key, json_deep_copy(v));
}

json_t *shoal_job_settings(const shoal_job_t *job)
{
    static const char *const keys[] = {"tenant",     "priority",   "model", "fallback_models",
                                       "chunking",   "output",     "merge", "max_attempts",
                                       "timeout_ms", "budget_usd", NULL};
    json_t *s = json_object();

    if (!s)
        return NULL;
    for (size_t i = 0; keys[i]; i++) {
        if (copy_field(s, job->doc, keys[i])) {
            json_decref(s);
            return NULL;
        }
    }
    if (json_object_set_new(s, "n_items", json_integer((json_int_t)job->n_items))) {
        json_decref(s);
        return NULL;
    }
    return s;
}

static json_t *make_task(const shoal_job_t *job, size_t k)
{
    const json_t *doc = job->doc;
    json_t *t = json_object(), *items = NULL, *v;
    char task_id[KEY_MAX + 32];

    if (!t)
        return NULL;
    snprintf(task_id, sizeof(task_id), "%s:%06zu", shoal_job_id(job), k);
    if (json_object_set_new(t, "task_id", json_string(task_id)) ||
        json_object_set(t, "job_id", json_object_get(doc, "job_id")) ||
        json_object_set_new(t, "chunk", json_integer((json_int_t)k)) ||
        json_object_set_new(t, "n_chunks", json_integer((json_int_t)job->n_chunks)) ||
        json_object_set(t, "tenant", json_object_get(doc, "tenant")) ||
        json_object_set(t, "priority", json_object_get(doc, "priority")) ||
        json_object_set(t, "model", json_object_get(doc, "model")) ||
        copy_field(t, doc, "fallback_models"))
        goto fail;
    if ((v = json_object_get(doc, "system")) && json_object_set(t, "system", v))
        goto fail;
    if (json_object_set(t, "prompt_template", json_object_get(doc, "prompt_template")))
        goto fail;
    if (!(items = json_array()))
        goto fail;
    for (size_t i = job->chunk_start[k]; i < job->chunk_start[k + 1]; i++) {
        const json_t *src = json_array_get(job->items, i);
        json_t *item = json_object();

        if (json_array_append_new(items, item) ||
            json_object_set(item, "id", json_object_get(src, "id")) ||
            json_object_set(item, "input", json_object_get(src, "input")))
            goto fail;
    }
    if (json_object_set_new(t, "items", items)) {
        items = NULL;
        goto fail;
    }
    items = NULL;
    if (copy_field(t, doc, "output") || copy_field(t, doc, "max_attempts") ||
        copy_field(t, doc, "timeout_ms") ||
        json_object_set_new(t, "est_tokens", json_integer(job->chunk_tokens[k])))
        goto fail;
    return t;
fail:
    json_decref(items);
    json_decref(t);
    return NULL;
}

json_t *shoal_job_tasks(const shoal_job_t *job, char *errbuf, size_t errlen)
{
    json_t *tasks;

    if (!shoal_job_id(job)) {
        shoal_err_set(errbuf, errlen, SHOAL_ERR_INVALID,
                      "the job has no job_id (set one with shoal_job_set_id first)");
        return NULL;
    }
    if (!(tasks = json_array()))
        goto nomem;
    for (size_t k = 0; k < job->n_chunks; k++) {
        if (json_array_append_new(tasks, make_task(job, k)))
            goto nomem;
    }
    return tasks;
nomem:
    json_decref(tasks);
    shoal_err_set(errbuf, errlen, SHOAL_ERR_NOMEM, "out of memory");
    return NULL;
}

/* ---- rendering ---- */

/* Output of one rendering pass: counts when buf is NULL, writes otherwise. */
struct sink {
    char *buf;
    size_t len;
    int over;
};

static void put(struct sink *s, const char *data, size_t n)
{
    if (s->over || n > SHOAL_JOB_RENDER_MAX - s->len) {
        s->over = 1;
        return;
    }
    if (s->buf)
        memcpy(s->buf + s->len, data, n);
    s->len += n;
}

static void put_inputs(struct sink *s, const json_t *items)
{
    size_t n = json_array_size(items);

    for (size_t i = 0; i < n; i++) {
        const json_t *item = json_array_get(items, i);
        const json_t *id = json_object_get(item, "id"), *in = json_object_get(item, "input");

        if (n > 1) {
            put(s, i ? "\n\n[" : "[", i ? 3 : 1);
            put(s, json_string_value(id), json_string_length(id));
            put(s, "]\n", 2);
        }
        put(s, json_string_value(in), json_string_length(in));
    }
}

static void put_ids(struct sink *s, const json_t *items)
{
    for (size_t i = 0; i < json_array_size(items); i++) {
        const json_t *id = json_object_get(json_array_get(items, i), "id");

        if (i)
            put(s, ", ", 2);
        put(s, json_string_value(id), json_string_length(id));
    }
}

static void render_pass(struct sink *s, const char *tmpl, const json_t *items)
{
    const char *p = tmpl;

    while (*p && !s->over) {
        const char *brace = strstr(p, "{{");

        if (!brace) {
            put(s, p, strlen(p));
            break;
        }
        put(s, p, (size_t)(brace - p));
        if (strncmp(brace, "{{input}}", 9) == 0) {
            put_inputs(s, items);
            p = brace + 9;
        } else if (strncmp(brace, "{{ids}}", 7) == 0) {
            put_ids(s, items);
            p = brace + 7;
        } else {
            put(s, brace, 1);
            p = brace + 1;
        }
    }
}

char *shoal_job_render(const char *tmpl, const json_t *items, size_t *len_out)
{
    struct sink s = {NULL, 0, 0};

    if (len_out)
        *len_out = 0;
    if (!tmpl || !json_is_array(items))
        return NULL;
    for (size_t i = 0; i < json_array_size(items); i++) {
        const json_t *item = json_array_get(items, i);

        if (!json_is_string(json_object_get(item, "id")) ||
            !json_is_string(json_object_get(item, "input")))
            return NULL;
    }
    render_pass(&s, tmpl, items);
    if (s.over)
        return NULL;
    if (!(s.buf = malloc(s.len + 1)))
        return NULL;
    s.len = 0;
    render_pass(&s, tmpl, items);
    s.buf[s.len] = '\0';
    if (len_out)
        *len_out = s.len;
    return s.buf;
}
