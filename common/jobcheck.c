/*
 * Job checks: decoding a job message, the C twin of schemas/job.schema.json,
 * and the checks a schema cannot express (unique item ids, known models).
 *
 * shoal_job_check_schema() must accept exactly what the schema accepts: the
 * limits below mirror the schema's, string lengths are counted in code points
 * as JSON Schema counts them, and an "integer" is any number with no fraction
 * (5.0 included), as in JSON Schema. tests/unit/job_test.c runs a real JSON
 * Schema validator over the corpus and generated edge cases and fails on any
 * disagreement, so a change here needs the same change there and vice versa.
 *
 * Temporary memory comes from jansson's allocator (json_get_alloc_funcs), so
 * a test that swaps in a failing allocator reaches every error path.
 */
#include "common/jobcheck.h"

#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/tokens.h"

/* The schema's limits; keep in step with schemas/job.schema.json. */
#define KEY_MAX 200 /* job_id and item ids */
#define TENANT_MAX 100
#define MODEL_MAX 100
#define FALLBACK_MAX 5
#define PROMPT_MAX 200000
#define ITEMS_MAX 100000
#define INPUT_MAX 1000000
#define GROUP_MAX 200
#define MAX_TOKENS_MIN 1
#define MAX_TOKENS_MAX 1000000
#define MAX_ITEMS_MIN 1
#define MAX_ITEMS_MAX 1000
#define ATTEMPTS_MIN 1
#define ATTEMPTS_MAX 20
#define TIMEOUT_MIN 100
#define TIMEOUT_MAX 600000

/* Values quoted in messages are cut to this many code points. */
#define QUOTE_CP 40
#define QUOTE_LEN SHOAL_JOBCHECK_QUOTE_LEN

static const char *const top_keys[] = {
    "job_id", "tenant",          "priority",   "model",      "fallback_models",
    "system", "prompt_template", "items",      "chunking",   "output",
    "merge",  "max_attempts",    "timeout_ms", "budget_usd", NULL};
static const char *const top_required[] = {"tenant", "model", "prompt_template", "items", NULL};
static const char *const item_keys[] = {"id", "input", "group", NULL};
static const char *const item_required[] = {"id", "input", NULL};
static const char *const chunking_keys[] = {"max_tokens", "max_items", "group_by", NULL};
static const char *const output_keys[] = {"format", "schema", NULL};
static const char *const priorities[] = {"high", "normal", "low", NULL};
static const char *const formats[] = {"text", "json", NULL};
static const char *const merges[] = {"concat", "json_array", "jsonl", NULL};
static const char *const group_bys[] = {"group", NULL};

/* ---- allocation (through jansson's hooks) ---- */

static void *check_alloc(size_t n, size_t size)
{
    json_malloc_t m;
    json_free_t f;

    if (size && n > SIZE_MAX / size)
        return NULL;
    json_get_alloc_funcs(&m, &f);
    n *= size;
    return m(n ? n : 1);
}

static void check_free(void *p)
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

/* JSON Schema's "integer": any number without a fractional part. */
static int is_integral(const json_t *v)
{
    if (json_is_integer(v))
        return 1;
    if (json_is_real(v)) {
        double d = json_real_value(v);
        return isfinite(d) && floor(d) == d;
    }
    return 0;
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

static const char *number_text(char *buf, size_t len, const json_t *v)
{
    if (json_is_integer(v))
        snprintf(buf, len, "%lld", (long long)json_integer_value(v));
    else
        snprintf(buf, len, "%.15g", json_real_value(v));
    return buf;
}

/* Edit distance of two short strings (for "did you mean"); large if long. */
static size_t edit_distance(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b), row[65], prev;

    if (la > 64 || lb > 64)
        return SIZE_MAX;
    for (size_t j = 0; j <= lb; j++)
        row[j] = j;
    for (size_t i = 1; i <= la; i++) {
        prev = row[0];
        row[0] = i;
        for (size_t j = 1; j <= lb; j++) {
            size_t best = prev + (a[i - 1] != b[j - 1]);
            if (row[j] + 1 < best)
                best = row[j] + 1;
            if (row[j - 1] + 1 < best)
                best = row[j - 1] + 1;
            prev = row[j];
            row[j] = best;
        }
    }
    return row[lb];
}

static int in_list(const char *const *list, const char *s)
{
    for (size_t i = 0; list[i]; i++) {
        if (strcmp(list[i], s) == 0)
            return 1;
    }
    return 0;
}

/* ---- schema rules ---- */

static shoal_err_t check_string(const char *path, const json_t *v, size_t min, size_t max,
                                char *errbuf, size_t errlen)
{
    size_t n;

    if (!json_is_string(v))
        return fail(errbuf, errlen, path, "expected a string, got %s", type_name(v));
    n = shoal_tokens_codepoints(json_string_value(v), json_string_length(v));
    if (n < min) {
        if (min == 1)
            return fail(errbuf, errlen, path, "must not be empty");
        return fail(errbuf, errlen, path, "too short (%zu characters; the minimum is %zu)", n, min);
    }
    if (n > max)
        return fail(errbuf, errlen, path, "too long (%zu characters; the limit is %zu)", n, max);
    return SHOAL_OK;
}

static int key_char(unsigned char c, int colon)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
           c == '_' || c == '-' || (colon && c == ':');
}

/* An identifier: 1..max characters, all from [A-Za-z0-9._-] (and ':' when
 * colon is set), as the schema's patterns say. */
static shoal_err_t check_ident(const char *path, const json_t *v, size_t max, int colon,
                               char *errbuf, size_t errlen)
{
    shoal_err_t err = check_string(path, v, 1, max, errbuf, errlen);
    const char *s;
    size_t n;
    char q[QUOTE_LEN];

    if (err)
        return err;
    s = json_string_value(v);
    n = json_string_length(v);
    for (size_t i = 0; i < n; i++) {
        if (!key_char((unsigned char)s[i], colon))
            return fail(errbuf, errlen, path, "%s may only contain letters, digits and %s",
                        quoted(q, s, n), colon ? ". _ : -" : ". _ -");
    }
    return SHOAL_OK;
}

static shoal_err_t check_integer(const char *path, const json_t *v, long long min, long long max,
                                 char *errbuf, size_t errlen)
{
    char num[64];
    int low, high;

    if (!is_integral(v))
        return fail(errbuf, errlen, path, "expected an integer, got %s", type_name(v));
    if (json_is_integer(v)) {
        low = json_integer_value(v) < min;
        high = json_integer_value(v) > max;
    } else {
        low = json_real_value(v) < (double)min;
        high = json_real_value(v) > (double)max;
    }
    if (low)
        return fail(errbuf, errlen, path, "%s is less than the minimum %lld",
                    number_text(num, sizeof(num), v), min);
    if (high)
        return fail(errbuf, errlen, path, "%s is more than the maximum %lld",
                    number_text(num, sizeof(num), v), max);
    return SHOAL_OK;
}

static shoal_err_t check_enum(const char *path, const json_t *v, const char *const *values,
                              char *errbuf, size_t errlen)
{
    char list[256] = "", q[QUOTE_LEN];
    size_t o = 0;

    if (json_is_string(v) && in_list(values, json_string_value(v)))
        return SHOAL_OK;
    for (size_t i = 0; values[i] && o < sizeof(list); i++)
        o += (size_t)snprintf(list + o, sizeof(list) - o, "%s%s", i ? ", " : "", values[i]);
    if (!json_is_string(v))
        return fail(errbuf, errlen, path, "expected one of %s, got %s", list, type_name(v));
    return fail(errbuf, errlen, path, "%s is not one of %s", quoted_json(q, v), list);
}

/* Type object, no fields beyond allowed, every required field present. */
static shoal_err_t check_object(const char *path, const json_t *v, const char *const *allowed,
                                const char *const *required, char *errbuf, size_t errlen)
{
    const char *key;
    json_t *val;
    char q[QUOTE_LEN];

    if (!json_is_object(v))
        return fail(errbuf, errlen, path, "expected an object, got %s", type_name(v));
    json_object_foreach((json_t *)v, key, val)
    {
        const char *best = NULL;
        size_t best_d = 3;

        if (in_list(allowed, key))
            continue;
        for (size_t i = 0; allowed[i]; i++) {
            size_t d = edit_distance(key, allowed[i]);
            if (d < best_d) {
                best_d = d;
                best = allowed[i];
            }
        }
        if (best)
            return fail(errbuf, errlen, path, "unknown field %s (did you mean \"%s\"?)",
                        quoted(q, key, strlen(key)), best);
        return fail(errbuf, errlen, path, "unknown field %s", quoted(q, key, strlen(key)));
    }
    for (size_t i = 0; required && required[i]; i++) {
        if (!json_object_get(v, required[i]))
            return fail(errbuf, errlen, path, "missing required field \"%s\"", required[i]);
    }
    return SHOAL_OK;
}

static shoal_err_t check_items(const json_t *items, char *errbuf, size_t errlen)
{
    char path[64];
    size_t n;
    shoal_err_t err;

    if (!json_is_array(items))
        return fail(errbuf, errlen, "items", "expected an array, got %s", type_name(items));
    n = json_array_size(items);
    if (n == 0)
        return fail(errbuf, errlen, "items", "must not be empty");
    if (n > ITEMS_MAX)
        return fail(errbuf, errlen, "items", "too many items (%zu; the limit is %d)", n, ITEMS_MAX);
    for (size_t i = 0; i < n; i++) {
        const json_t *item = json_array_get(items, i), *v;

        snprintf(path, sizeof(path), "items[%zu]", i);
        if ((err = check_object(path, item, item_keys, item_required, errbuf, errlen)))
            return err;
        snprintf(path, sizeof(path), "items[%zu].id", i);
        if ((err = check_ident(path, json_object_get(item, "id"), KEY_MAX, 1, errbuf, errlen)))
            return err;
        snprintf(path, sizeof(path), "items[%zu].input", i);
        if ((err =
                 check_string(path, json_object_get(item, "input"), 0, INPUT_MAX, errbuf, errlen)))
            return err;
        if ((v = json_object_get(item, "group"))) {
            snprintf(path, sizeof(path), "items[%zu].group", i);
            if ((err = check_string(path, v, 1, GROUP_MAX, errbuf, errlen)))
                return err;
        }
    }
    return SHOAL_OK;
}

static shoal_err_t check_fallbacks(const json_t *v, char *errbuf, size_t errlen)
{
    char path[64], q[QUOTE_LEN];
    size_t n;
    shoal_err_t err;

    if (!json_is_array(v))
        return fail(errbuf, errlen, "fallback_models", "expected an array, got %s", type_name(v));
    n = json_array_size(v);
    if (n > FALLBACK_MAX)
        return fail(errbuf, errlen, "fallback_models", "too many entries (%zu; the limit is %d)", n,
                    FALLBACK_MAX);
    for (size_t i = 0; i < n; i++) {
        const json_t *m = json_array_get(v, i);

        snprintf(path, sizeof(path), "fallback_models[%zu]", i);
        if ((err = check_string(path, m, 1, MODEL_MAX, errbuf, errlen)))
            return err;
        for (size_t j = 0; j < i; j++) {
            if (json_equal(m, json_array_get(v, j)))
                return fail(errbuf, errlen, path, "%s repeats fallback_models[%zu]",
                            quoted_json(q, m), j);
        }
    }
    return SHOAL_OK;
}

static shoal_err_t check_chunking(const json_t *v, char *errbuf, size_t errlen)
{
    const json_t *f;
    shoal_err_t err;

    if ((err = check_object("chunking", v, chunking_keys, NULL, errbuf, errlen)))
        return err;
    if ((f = json_object_get(v, "max_tokens")) &&
        (err = check_integer("chunking.max_tokens", f, MAX_TOKENS_MIN, MAX_TOKENS_MAX, errbuf,
                             errlen)))
        return err;
    if ((f = json_object_get(v, "max_items")) &&
        (err =
             check_integer("chunking.max_items", f, MAX_ITEMS_MIN, MAX_ITEMS_MAX, errbuf, errlen)))
        return err;
    if ((f = json_object_get(v, "group_by")) &&
        (err = check_enum("chunking.group_by", f, group_bys, errbuf, errlen)))
        return err;
    return SHOAL_OK;
}

static shoal_err_t check_output(const json_t *v, char *errbuf, size_t errlen)
{
    const json_t *format, *schema;
    shoal_err_t err;

    if ((err = check_object("output", v, output_keys, NULL, errbuf, errlen)))
        return err;
    format = json_object_get(v, "format");
    if (format && (err = check_enum("output.format", format, formats, errbuf, errlen)))
        return err;
    if ((schema = json_object_get(v, "schema"))) {
        if (!json_is_object(schema))
            return fail(errbuf, errlen, "output.schema", "expected an object, got %s",
                        type_name(schema));
        if (!format || strcmp(json_string_value(format), "json") != 0)
            return fail(errbuf, errlen, "output.schema", "needs output.format \"json\"");
    }
    return SHOAL_OK;
}

shoal_err_t shoal_job_check_schema(const json_t *doc, char *errbuf, size_t errlen)
{
    const json_t *v;
    char num[64];
    shoal_err_t err;

    if (!json_is_object(doc))
        return fail(errbuf, errlen, "job", "expected an object, got %s",
                    doc ? type_name(doc) : "nothing");
    if ((err = check_object("", doc, top_keys, top_required, errbuf, errlen)))
        return err;
    if ((v = json_object_get(doc, "job_id")) &&
        (err = check_ident("job_id", v, KEY_MAX, 1, errbuf, errlen)))
        return err;
    if ((err =
             check_ident("tenant", json_object_get(doc, "tenant"), TENANT_MAX, 0, errbuf, errlen)))
        return err;
    if ((v = json_object_get(doc, "priority")) &&
        (err = check_enum("priority", v, priorities, errbuf, errlen)))
        return err;
    if ((err = check_string("model", json_object_get(doc, "model"), 1, MODEL_MAX, errbuf, errlen)))
        return err;
    if ((v = json_object_get(doc, "fallback_models")) && (err = check_fallbacks(v, errbuf, errlen)))
        return err;
    if ((v = json_object_get(doc, "system")) &&
        (err = check_string("system", v, 0, PROMPT_MAX, errbuf, errlen)))
        return err;
    v = json_object_get(doc, "prompt_template");
    if ((err = check_string("prompt_template", v, 1, PROMPT_MAX, errbuf, errlen)))
        return err;
    if (!strstr(json_string_value(v), "{{input}}"))
        return fail(errbuf, errlen, "prompt_template", "must contain {{input}}");
    if ((err = check_items(json_object_get(doc, "items"), errbuf, errlen)))
        return err;
    if ((v = json_object_get(doc, "chunking")) && (err = check_chunking(v, errbuf, errlen)))
        return err;
    if ((v = json_object_get(doc, "output")) && (err = check_output(v, errbuf, errlen)))
        return err;
    if ((v = json_object_get(doc, "merge")) &&
        (err = check_enum("merge", v, merges, errbuf, errlen)))
        return err;
    if ((v = json_object_get(doc, "max_attempts")) &&
        (err = check_integer("max_attempts", v, ATTEMPTS_MIN, ATTEMPTS_MAX, errbuf, errlen)))
        return err;
    if ((v = json_object_get(doc, "timeout_ms")) &&
        (err = check_integer("timeout_ms", v, TIMEOUT_MIN, TIMEOUT_MAX, errbuf, errlen)))
        return err;
    if ((v = json_object_get(doc, "budget_usd"))) {
        if (!json_is_number(v))
            return fail(errbuf, errlen, "budget_usd", "expected a number, got %s", type_name(v));
        if (!(json_number_value(v) > 0))
            return fail(errbuf, errlen, "budget_usd", "must be more than 0, got %s",
                        number_text(num, sizeof(num), v));
    }
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
    struct id_ref *refs = check_alloc(n, sizeof(*refs));
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
    check_free(refs);
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

shoal_err_t shoal_jobcheck_semantics(const json_t *doc, const shoal_models_t *models, char *errbuf,
                                     size_t errlen)
{
    const json_t *items = json_object_get(doc, "items");
    shoal_err_t err;

    if ((err = check_unique_ids(items, json_array_size(items), errbuf, errlen)))
        return err;
    if (models && (err = check_models(doc, models, errbuf, errlen)))
        return err;
    return SHOAL_OK;
}

/* Every allowed character is ASCII, so bytes are code points here and
 * invalid UTF-8 fails on its first non-ASCII byte; no allocation, so the
 * answer never depends on memory. */
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
    return quoted(out, s, len);
}
