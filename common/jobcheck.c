/*
 * Job checks: decoding a job message, validation against
 * schemas/job.schema.json, and the checks a schema cannot express (unique
 * item ids, known models, an output.schema the worker can enforce).
 *
 * shoal_job_check_schema() enforces the schema itself through
 * common/jsonschema (the schema is embedded at build time and compiled once),
 * so it accepts exactly what the schema accepts; tests/unit/job_test.c still
 * runs a second, independent validator over the corpus and generated edge
 * cases and fails on any disagreement. A few violations are worded for
 * people who submit jobs rather than in the generic form (a pattern becomes
 * "may only contain letters, digits and ..."); see rewordings below.
 *
 * Temporary memory comes from jansson's allocator (common/jsonalloc.h), so a
 * test that swaps in a failing allocator reaches every error path.
 */
#include "common/jobcheck.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/jsonalloc.h"
#include "common/jsondesc.h"
#include "common/jsonlex.h"
#include "common/jsonschema.h"

/* The job_id rule of the schema ($defs/key), for shoal_job_id_valid(). */
#define KEY_MAX 200
/* The schema's bounds on items (properties/items, $defs/item). */
#define ITEMS_MAX 100000
#define ITEM_INPUT_MAX 1000000

#define QUOTE_LEN SHOAL_JSONDESC_QUOTE_LEN

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

static const char *quoted_json(char out[QUOTE_LEN], const json_t *s)
{
    return shoal_jsondesc_quote(out, json_string_value(s), json_string_length(s));
}

static int key_char(unsigned char c, int colon)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
           c == '_' || c == '-' || (colon && c == ':');
}

/* ---- schema rules ---- */

/* schemas/job.schema.json as text, embedded by cmake/embed_file.cmake. */
extern const char shoal_job_schema_text[];

/* The job schema, compiled on first use and kept for the life of the
 * process. A failed attempt (out of memory) is not kept, so a later call
 * tries again. */
static pthread_mutex_t schema_lock = PTHREAD_MUTEX_INITIALIZER;
static shoal_jsonschema_t *job_schema;

static shoal_err_t load_schema(char *errbuf, size_t errlen)
{
    json_error_t e;
    json_t *doc;
    shoal_jsonschema_t *job;
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
    job = shoal_jsonschema_new(doc, why, sizeof(why));
    json_decref(doc);
    if (!job) {
        if (strcmp(why, "out of memory") == 0)
            err = shoal_err_set(errbuf, errlen, SHOAL_ERR_NOMEM, "out of memory");
        else
            err = shoal_err_set(errbuf, errlen, SHOAL_ERR_INVALID,
                                "cannot compile the job schema: %s", why);
        goto out;
    }
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

/* Joins problems, one per line, into a caller's buffer; counts them all but
 * writes at most SHOAL_JOBCHECK_MAX_ERRORS. */
struct problems {
    char *buf;
    size_t len, off;
    size_t n;
};

static void add_problem(struct problems *p, const char *msg)
{
    if (p->n++ >= SHOAL_JOBCHECK_MAX_ERRORS || !p->buf || p->off >= p->len)
        return;
    int w = snprintf(p->buf + p->off, p->len - p->off, "%s%s", p->n > 1 ? "\n" : "", msg);
    if (w > 0)
        p->off += (size_t)w;
}

static void more_problems(struct problems *p, int exact)
{
    if (p->n > SHOAL_JOBCHECK_MAX_ERRORS && p->buf && p->off < p->len)
        snprintf(p->buf + p->off, p->len - p->off,
                 exact ? "\n(%zu more problems not shown)" : "\n(more problems not shown)",
                 p->n - SHOAL_JOBCHECK_MAX_ERRORS);
}

/* One schema violation as the person who wrote the job reads it. */
static void schema_problem(void *arg, const shoal_jsonschema_error_t *d, const char *message)
{
    struct problems *p = arg;
    char q[QUOTE_LEN], line[1024];

    for (size_t i = 0; d->keyword && i < sizeof(rewordings) / sizeof(rewordings[0]); i++) {
        if (strcmp(d->schema_path, rewordings[i].schema_path) != 0)
            continue;
        if (rewordings[i].chars && json_is_string(d->value)) {
            fail(line, sizeof(line), d->instance_path, "%s may only contain letters, digits and %s",
                 quoted_json(q, d->value), rewordings[i].chars);
            add_problem(p, line);
            return;
        }
        if (rewordings[i].msg) {
            fail(line, sizeof(line), rewordings[i].path ? rewordings[i].path : d->instance_path,
                 "%s", rewordings[i].msg);
            add_problem(p, line);
            return;
        }
    }
    add_problem(p, message);
}

int shoal_jobcheck_plain_item(const char *id, size_t id_len, size_t input_len)
{
    if (id_len < 1 || id_len > KEY_MAX || input_len > ITEM_INPUT_MAX)
        return 0;
    for (size_t i = 0; i < id_len; i++)
        if (!key_char((unsigned char)id[i], 1))
            return 0;
    return 1;
}

/* The schema's item rule ($defs/item) for the usual item, {"id", "input"}
 * and maybe "group", judged without the generic validator: 1 when item
 * certainly passes it, 0 when unsure (anything else, such as an item with
 * its own model or body, or a string long enough that its length in code
 * points matters). Lengths in bytes bound lengths in code points from above,
 * so a string within a limit in bytes is within it. */
static int plain_item(const json_t *item)
{
    const char *key;
    const json_t *v;
    int id = 0, input = 0;

    if (!json_is_object(item) || json_object_size(item) > 3)
        return 0;
    json_object_foreach((json_t *)item, key, v)
    {
        size_t n = json_string_length(v);
        if (!json_is_string(v))
            return 0;
        if (!strcmp(key, "id")) {
            if (!shoal_jobcheck_plain_item(json_string_value(v), n, 0))
                return 0;
            id = 1;
        } else if (!strcmp(key, "input")) {
            if (n > ITEM_INPUT_MAX)
                return 0;
            input = 1;
        } else if (!strcmp(key, "group")) {
            if (n < 1 || n > KEY_MAX)
                return 0;
        } else {
            return 0;
        }
    }
    return id && input;
}

/* Into *cut, doc with its items array cut to its first item when every
 * item is a plain one (plain_item) and their number is within the schema's
 * bounds: the schema then judges the copy exactly as it judges doc, at the
 * cost of one item instead of tens of thousands. *cut is NULL when unsure
 * (the caller validates doc itself); -1 when out of memory. */
static int without_plain_items(const json_t *doc, json_t **cut)
{
    const json_t *items = json_object_get(doc, "items");
    size_t n = json_array_size(items);

    *cut = NULL;
    if (!json_is_array(items) || n < 1 || n > ITEMS_MAX)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (!plain_item(json_array_get(items, i)))
            return 0;
    json_t *copy = json_copy((json_t *)doc), *one = json_array();
    if (!copy || !one || json_array_append(one, json_array_get(items, 0)) ||
        json_object_set(copy, "items", one)) {
        json_decref(copy);
        json_decref(one);
        return -1;
    }
    json_decref(one);
    *cut = copy;
    return 0;
}

shoal_err_t shoal_job_check_schema(const json_t *doc, char *errbuf, size_t errlen)
{
    struct problems p = {errbuf, errlen, 0, 0};
    shoal_err_t err;

    if (!json_is_object(doc))
        return fail(errbuf, errlen, "job", "expected an object, got %s",
                    doc ? shoal_jsondesc_type(doc) : "nothing");
    if ((err = load_schema(errbuf, errlen)))
        return err;
    if (errbuf && errlen)
        errbuf[0] = '\0';
    json_t *cut;
    if (without_plain_items(doc, &cut))
        return shoal_err_set(errbuf, errlen, SHOAL_ERR_NOMEM, "out of memory");
    /* one more than shown, to know whether there are more */
    err = shoal_jsonschema_validate_all(job_schema, cut ? cut : doc, SHOAL_JOBCHECK_MAX_ERRORS + 1,
                                        schema_problem, &p, NULL);
    json_decref(cut);
    if (err == SHOAL_OK)
        return SHOAL_OK;
    more_problems(&p, 0);
    return SHOAL_ERR_INVALID;
}

/* ---- decoding ---- */

_Static_assert(SHOAL_JSONLEX_DEPTH_MAX <= SHOAL_JOB_MAX_DEPTH,
               "shoal_job_decode skips the depth walk for what the fast reader took");

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
    /* A job as clients write it is a plain object the fast reader takes
     * (same tree); anything else, and every error, is jansson's. */
    int nomem;
    doc = shoal_jsonlex_load_nomem(buf, len, &nomem);
    if (nomem) {
        shoal_err_set(errbuf, errlen, SHOAL_ERR_NOMEM, "out of memory");
        return NULL;
    }
    /* The fast reader refuses what nests deeper than too_deep allows, so
     * only jansson's trees are walked for depth. */
    int fast = doc != NULL;
    if (!doc)
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
    if (!fast && too_deep(doc, 0)) {
        json_decref(doc);
        shoal_err_set(errbuf, errlen, SHOAL_ERR_INVALID, "job nests deeper than %d levels",
                      SHOAL_JOB_MAX_DEPTH);
        return NULL;
    }
    return doc;
}

/* ---- semantic checks ---- */

/* FNV-1a: ids are short, and the table only needs them spread. */
static size_t id_hash(const char *s, size_t n)
{
    uint64_t h = 1469598103934665603ULL;
    for (size_t i = 0; i < n; i++)
        h = (h ^ (unsigned char)s[i]) * 1099511628211ULL;
    return (size_t)(h ^ (h >> 32));
}

int shoal_jobcheck_first_repeat(size_t n, shoal_jobcheck_id_fn id_of, void *arg, size_t *repeat,
                                size_t *original)
{
    struct seen {
        const char *s; /* NULL: empty */
        size_t len, index;
    } * slot;
    size_t cap = 16;

    while (cap < 2 * n)
        cap *= 2;
    if (!(slot = shoal_jsonalloc_array(cap, sizeof(*slot))))
        return -1;
    memset(slot, 0, cap * sizeof(*slot));
    for (size_t i = 0; i < n; i++) {
        size_t len;
        const char *s = id_of(arg, i, &len);
        if (!s)
            continue; /* the schema requires one */
        for (size_t h = id_hash(s, len) & (cap - 1);; h = (h + 1) & (cap - 1)) {
            if (!slot[h].s) {
                slot[h].s = s;
                slot[h].len = len;
                slot[h].index = i;
                break;
            }
            if (slot[h].len == len && !memcmp(slot[h].s, s, len)) {
                *repeat = i;
                *original = slot[h].index;
                shoal_jsonalloc_free(slot);
                return 1;
            }
        }
    }
    shoal_jsonalloc_free(slot);
    return 0;
}

static const char *json_item_id(void *arg, size_t i, size_t *len)
{
    const json_t *id = json_object_get(json_array_get(arg, i), "id");
    *len = json_string_length(id);
    return json_string_value(id);
}

/* Names the first item (in job order) whose id an earlier item already has,
 * and that earlier item. */
static shoal_err_t check_unique_ids(const json_t *items, size_t n, char *errbuf, size_t errlen)
{
    size_t repeat, original;
    char q[QUOTE_LEN];
    int r = shoal_jobcheck_first_repeat(n, json_item_id, (void *)items, &repeat, &original);

    if (r < 0)
        return shoal_err_set(errbuf, errlen, SHOAL_ERR_NOMEM, "out of memory");
    if (r == 0)
        return SHOAL_OK;
    return shoal_err_set(
        errbuf, errlen, SHOAL_ERR_INVALID, "items[%zu].id %s repeats items[%zu].id", repeat,
        quoted_json(q, json_object_get(json_array_get(items, repeat), "id")), original);
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
                         shoal_jsondesc_quote(q, alias, strlen(alias)), known);
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

/* Items with their own model or request (items[].model, items[].body) are
 * tasks of their own: a chunk has one model and one request. Their models
 * are checked like the job's. */
static shoal_err_t check_item_requests(const json_t *doc, const shoal_models_t *models,
                                       char *errbuf, size_t errlen)
{
    const json_t *items = json_object_get(doc, "items");
    const json_t *max_items = json_object_get(json_object_get(doc, "chunking"), "max_items");
    int single = !max_items || json_number_value(max_items) == 1;
    char path[64];
    shoal_err_t err;

    for (size_t i = 0; i < json_array_size(items); i++) {
        const json_t *item = json_array_get(items, i), *model = json_object_get(item, "model");

        if (!model && !json_object_get(item, "body"))
            continue;
        if (!single)
            return fail(errbuf, errlen, "items",
                        "an item with its own %s needs "
                        "chunking.max_items 1 (items[%zu] has one)",
                        model ? "model" : "body", i);
        snprintf(path, sizeof(path), "items[%zu].model", i);
        if (model && models &&
            (err = check_model(models, path, json_string_value(model), errbuf, errlen)))
            return err;
    }
    return SHOAL_OK;
}

shoal_err_t shoal_jobcheck_semantics(const json_t *doc, const shoal_models_t *models, char *errbuf,
                                     size_t errlen)
{
    const json_t *items = json_object_get(doc, "items");
    struct problems p = {errbuf, errlen, 0, 0};
    char why[1024];
    shoal_err_t err, first = SHOAL_OK;
    const json_t *fallbacks = json_object_get(doc, "fallback_models");
    char path[64];

    /* each check on its own, so that every problem is named at once */
    for (int k = 0; k < 4 + (int)json_array_size(fallbacks); k++) {
        if (k == 0)
            err = check_unique_ids(items, json_array_size(items), why, sizeof(why));
        else if (k == 1)
            err = check_output_schema(doc, why, sizeof(why));
        else if (k == 2)
            err = check_item_requests(doc, models, why, sizeof(why));
        else if (!models)
            continue;
        else if (k == 3)
            err = check_model(models, "model", json_string_value(json_object_get(doc, "model")),
                              why, sizeof(why));
        else {
            snprintf(path, sizeof(path), "fallback_models[%d]", k - 4);
            err = check_model(models, path, json_string_value(json_array_get(fallbacks, k - 4)),
                              why, sizeof(why));
        }
        if (err == SHOAL_ERR_NOMEM)
            return shoal_err_set(errbuf, errlen, SHOAL_ERR_NOMEM, "out of memory");
        if (err == SHOAL_OK)
            continue;
        if (first == SHOAL_OK && errbuf && errlen)
            errbuf[0] = '\0';
        first = first == SHOAL_OK ? err : first;
        add_problem(&p, why);
    }
    more_problems(&p, 1);
    return first;
}

/* The schema's $defs/key rule, spelled out rather than run through the
 * compiled schema so that the answer never depends on memory (no
 * allocation). Every allowed character is ASCII, so bytes are code points
 * here and invalid UTF-8 fails on its first non-ASCII byte. */
int shoal_job_id_valid(const char *id)
{
    size_t n = id ? strlen(id) : 0;

    if (n < 1 || n > KEY_MAX)
        return 0;
    for (size_t i = 0; i < n; i++) {
        if (!key_char((unsigned char)id[i], 1))
            return 0;
    }
    return 1;
}

const char *shoal_jobcheck_quote(char out[SHOAL_JOBCHECK_QUOTE_LEN], const char *s, size_t len)
{
    return shoal_jsondesc_quote(out, s, len);
}
