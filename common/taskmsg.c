/*
 * Task messages (see taskmsg.h): the builder the scheduler uses and the
 * parser the worker uses, side by side so they cannot drift apart.
 *
 * The parser checks what a worker relies on: every field's type, every
 * number's range, the enums, that task_id is job_id and chunk put together
 * (it keys the task's rows, so a mismatch would write one task's result under
 * another's name), and that items are objects with string ids and inputs.
 * It does not re-check what only the scheduler cares about (code-point string
 * lengths, id patterns inside items); tests/unit/taskmsg_test.c holds every
 * refusal here to the schema's verdict, so the two stay in step.
 *
 * Memory comes from jansson's allocator, so a test that swaps in a failing
 * allocator reaches every error path.
 */
#include "common/taskmsg.h"

#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "common/cachekey.h"
#include "common/jsondesc.h"
#include "common/jsonlex.h"
#include "common/jsontext.h"

/* The task schema's limits; keep in step with schemas/task.schema.json. */
#define CHUNK_MAX 99999L
#define N_CHUNKS_MAX 100000L
#define ITEMS_MAX 1000
#define FALLBACK_MAX 5
#define ATTEMPTS_MIN 1L
#define ATTEMPTS_MAX 20L
#define TIMEOUT_MIN 100L
#define TIMEOUT_MAX 600000L
#define DEADLINE_S_MIN 1L
#define DEADLINE_S_MAX 2592000L

static const char *const priorities[] = {"high", "normal", "low", NULL};
static const char *const formats[] = {"text", "json", NULL};
static const char *const on_truncated[] = {"retry", "fail", NULL};
static const char *const modes[] = {"context", "batch", NULL};

/* ---- building ---- */

shoal_err_t shoal_taskmsg_task_id(const char *job_id, size_t chunk, char *buf, size_t len)
{
    int n;

    if (!shoal_job_id_valid(job_id) || chunk > 999999)
        return SHOAL_ERR_INVALID;
    n = snprintf(buf, len, "%s:%06zu", job_id, chunk);
    if (n < 0 || (size_t)n >= len)
        return SHOAL_ERR_LIMIT;
    return SHOAL_OK;
}

/* The chunk's items as [{id, input}], sharing the strings with the job. */
static json_t *chunk_items(const shoal_job_t *job, size_t k)
{
    const json_t *all = json_object_get(shoal_job_json(job), "items");
    json_t *items = json_array();
    size_t first, end;

    if (!items)
        return NULL;
    shoal_job_chunk_range(job, k, &first, &end);
    for (size_t i = first; i < end; i++) {
        if (json_array_append_new(items, shoal_taskmsg_item(json_array_get(all, i)))) {
            json_decref(items);
            return NULL;
        }
    }
    return items;
}

json_t *shoal_taskmsg_item(const json_t *src)
{
    json_t *item = json_object();
    json_t *model = json_object_get(src, "model"), *body = json_object_get(src, "body");

    if (!item || json_object_set(item, "id", json_object_get(src, "id")) ||
        json_object_set(item, "input", json_object_get(src, "input")) ||
        (model && json_object_set(item, "model", model)) ||
        (body && json_object_set(item, "body", body))) {
        json_decref(item);
        return NULL;
    }
    return item;
}

/* See taskmsg.h. An item carries no more than id, input, group, model and
 * body, and a key reads only its id, input and body, so the job's item
 * objects are shared as they are. */
json_t *shoal_taskmsg_key_view(const shoal_job_t *job, size_t k)
{
    const json_t *doc = shoal_job_json(job);
    json_t *all = json_object_get(doc, "items");
    size_t first, end;
    shoal_job_chunk_range(job, k, &first, &end);
    json_t *own = json_object_get(json_array_get(all, first), "model");
    json_t *system = json_object_get(doc, "system");
    json_t *t = json_object(), *items = json_array();
    int bad = !t || !items;
    for (size_t i = first; i < end && !bad; i++)
        bad = json_array_append(items, json_array_get(all, i));
    if (bad || json_object_set(t, "model", own ? own : json_object_get(doc, "model")) ||
        (system && json_object_set(t, "system", system)) ||
        json_object_set(t, "prompt_template", json_object_get(doc, "prompt_template")) ||
        json_object_set(t, "items", items) ||
        json_object_set(t, "output", json_object_get(doc, "output")) ||
        (strcmp(shoal_job_mode(job), "batch") == 0 &&
         json_object_set_new(t, "mode", json_string("batch")))) {
        json_decref(t);
        t = NULL;
    }
    json_decref(items);
    return t;
}

json_t *shoal_taskmsg_build(const shoal_job_t *job, size_t chunk, char *errbuf, size_t errlen)
{
    const json_t *doc = shoal_job_json(job);
    char task_id[SHOAL_TASKMSG_ID_MAX];
    json_t *t, *v;

    if (!shoal_job_id(job)) {
        shoal_err_set(errbuf, errlen, SHOAL_ERR_INVALID,
                      "the job has no job_id (set one with shoal_job_set_id first)");
        return NULL;
    }
    if (chunk >= shoal_job_n_chunks(job)) {
        shoal_err_set(errbuf, errlen, SHOAL_ERR_INVALID,
                      "chunk %zu is out of range: the job has %zu chunks", chunk,
                      shoal_job_n_chunks(job));
        return NULL;
    }
    if (shoal_taskmsg_task_id(shoal_job_id(job), chunk, task_id, sizeof(task_id))) {
        /* unreachable while jobs keep to the job_id rule; said, not assumed */
        shoal_err_set(errbuf, errlen, SHOAL_ERR_INVALID, "cannot make a task_id for chunk %zu",
                      chunk);
        return NULL;
    }
    /* an item with its own model or request is a chunk of its own (jobcheck) */
    size_t first, end;
    shoal_job_chunk_range(job, chunk, &first, &end);
    const json_t *own = json_array_get(json_object_get(doc, "items"), first);
    json_t *own_model = json_object_get(own, "model");
    int version = json_object_get(own, "body") ? SHOAL_TASKMSG_VERSION_MAX : SHOAL_TASKMSG_VERSION;

    if (!(t = json_object()))
        goto nomem;
    int batch = strcmp(shoal_job_mode(job), "batch") == 0;
    if (batch)
        version = SHOAL_TASKMSG_VERSION_MAX;
    if (json_object_set_new(t, "v", json_integer(version)) ||
        (batch && json_object_set_new(t, "mode", json_string("batch"))) ||
        json_object_set_new(t, "task_id", json_string(task_id)) ||
        json_object_set(t, "job_id", json_object_get(doc, "job_id")) ||
        json_object_set_new(t, "chunk", json_integer((json_int_t)chunk)) ||
        json_object_set_new(t, "n_chunks", json_integer((json_int_t)shoal_job_n_chunks(job))) ||
        json_object_set(t, "tenant", json_object_get(doc, "tenant")) ||
        json_object_set(t, "priority", json_object_get(doc, "priority")) ||
        json_object_set(t, "model", own_model ? own_model : json_object_get(doc, "model")) ||
        shoal_job_copy_field(job, "fallback_models", t))
        goto nomem;
    if ((v = json_object_get(doc, "system")) && json_object_set(t, "system", v))
        goto nomem;
    if (json_object_set(t, "prompt_template", json_object_get(doc, "prompt_template")) ||
        json_object_set_new(t, "items", chunk_items(job, chunk)) ||
        shoal_job_copy_field(job, "output", t) || shoal_job_copy_field(job, "max_attempts", t) ||
        shoal_job_copy_field(job, "timeout_ms", t) ||
        json_object_set_new(t, "est_tokens",
                            json_integer((json_int_t)shoal_job_chunk_est_tokens(job, chunk))))
        goto nomem;
    if (shoal_job_deadline_s(job) > 0 &&
        (shoal_job_copy_field(job, "deadline_s", t) ||
         json_object_set_new(t, "deadline_unix",
                             json_integer((json_int_t)shoal_job_deadline_unix(job)))))
        goto nomem;
    return t;
nomem:
    json_decref(t);
    shoal_err_set(errbuf, errlen, SHOAL_ERR_NOMEM, "out of memory");
    return NULL;
}

/* ---- writing as text ---- */

/* A task message's text may not grow past this (Kafka refuses far less). */
#define TEXT_MAX ((size_t)256 << 20)

/* Appends a string literal as it is. */
#define LIT(b, s) shoal_jsontext_raw((b), (s), sizeof(s) - 1)

struct shoal_taskmsg_writer {
    const shoal_job_t *job;
    const json_t *items; /* the job's, borrowed; NULL until an item is read from it */
    long n_chunks;
    int batch;
    /* shared texts, each ",\"key\":value" as json_dumps writes the value */
    char *job_id; /* job_id */
    char *owner;  /* tenant, priority and the start of model */
    char *model;  /* the job's model's value */
    char *prompt; /* fallback_models, system and prompt_template */
    char *limits; /* output, max_attempts and timeout_ms */
    char *tail;   /* deadline_s and deadline_unix, or "" */
    shoal_jsontext_t b;
};

void shoal_taskmsg_writer_destroy(shoal_taskmsg_writer_t *w)
{
    if (!w)
        return;
    free(w->job_id);
    free(w->owner);
    free(w->model);
    free(w->prompt);
    free(w->limits);
    free(w->tail);
    shoal_jsontext_free(&w->b);
    free(w);
}

/* Appends ",\"key\":" and the job's field key as json_dumps writes it;
 * nothing when the job has no such field (as shoal_job_copy_field). -1 when
 * out of memory. */
static int shared_field(shoal_jsontext_t *t, const shoal_job_t *job, const char *key)
{
    const json_t *v = shoal_job_field(job, key);
    if (!v)
        return 0;
    char *text = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
    if (!text)
        return -1;
    LIT(t, ",\"");
    shoal_jsontext_raw(t, key, strlen(key));
    LIT(t, "\":");
    shoal_jsontext_raw(t, text, strlen(text));
    free(text);
    return 0;
}

/* The text t holds, handed over (NULL when it was lost to memory). */
static char *take(shoal_jsontext_t *t)
{
    return shoal_jsontext_detach(t, NULL);
}

shoal_taskmsg_writer_t *shoal_taskmsg_writer_new(const shoal_job_t *job, long n_chunks,
                                                 char *errbuf, size_t errlen)
{
    shoal_taskmsg_writer_t *w;
    shoal_jsontext_t t;
    int bad = 0;

    if (!shoal_job_id(job)) {
        shoal_err_set(errbuf, errlen, SHOAL_ERR_INVALID,
                      "the job has no job_id (set one with shoal_job_set_id first)");
        return NULL;
    }
    if (!(w = calloc(1, sizeof(*w)))) {
        shoal_err_set(errbuf, errlen, SHOAL_ERR_NOMEM, "out of memory");
        return NULL;
    }
    w->job = job;
    w->n_chunks = n_chunks;
    w->batch = strcmp(shoal_job_mode(job), "batch") == 0;
    shoal_jsontext_init(&w->b, TEXT_MAX);
    shoal_jsontext_init(&t, TEXT_MAX);
    bad |= shared_field(&t, job, "job_id");
    w->job_id = take(&t);
    bad |= shared_field(&t, job, "tenant") | shared_field(&t, job, "priority");
    LIT(&t, ",\"model\":");
    w->owner = take(&t);
    char *model = json_dumps(shoal_job_field(job, "model"), JSON_COMPACT | JSON_ENCODE_ANY);
    shoal_jsontext_raw(&t, model ? model : "", model ? strlen(model) : 0);
    bad |= !model;
    free(model);
    w->model = take(&t);
    bad |= shared_field(&t, job, "fallback_models") | shared_field(&t, job, "system") |
           shared_field(&t, job, "prompt_template");
    w->prompt = take(&t);
    bad |= shared_field(&t, job, "output") | shared_field(&t, job, "max_attempts") |
           shared_field(&t, job, "timeout_ms");
    w->limits = take(&t);
    if (shoal_job_deadline_s(job) > 0) {
        bad |= shared_field(&t, job, "deadline_s");
        LIT(&t, ",\"deadline_unix\":");
        shoal_jsontext_int(&t, shoal_job_deadline_unix(job));
    }
    w->tail = take(&t);
    if (bad || !w->job_id || !w->owner || !w->model || !w->prompt || !w->limits || !w->tail) {
        shoal_taskmsg_writer_destroy(w);
        shoal_err_set(errbuf, errlen, SHOAL_ERR_NOMEM, "out of memory");
        return NULL;
    }
    return w;
}

/* Appends ",\"key\":" and the string value v (a jansson string). */
static int string_member(shoal_jsontext_t *b, const char *key, const json_t *v)
{
    LIT(b, ",\"");
    shoal_jsontext_raw(b, key, strlen(key));
    LIT(b, "\":");
    return shoal_jsontext_strn(b, json_string_value(v), json_string_length(v));
}

/* One item as shoal_taskmsg_item makes it: id, input, model, body. */
static int write_item(shoal_jsontext_t *b, const json_t *src)
{
    const json_t *id = json_object_get(src, "id"), *input = json_object_get(src, "input");
    const json_t *model = json_object_get(src, "model"), *body = json_object_get(src, "body");

    /* the schema makes both strings; anything else is the builder's to write */
    if (!json_is_string(id) || !json_is_string(input) || (model && !json_is_string(model)))
        return -1;
    LIT(b, "{\"id\":");
    if (shoal_jsontext_strn(b, json_string_value(id), json_string_length(id)) ||
        string_member(b, "input", input) || (model && string_member(b, "model", model)))
        return -1;
    if (body) {
        char *text = json_dumps(body, JSON_COMPACT);
        if (!text)
            return -1;
        LIT(b, ",\"body\":");
        shoal_jsontext_raw(b, text, strlen(text));
        free(text);
    }
    LIT(b, "}");
    return 0;
}

/* Item i of the job: from its text when the job keeps it as text, else as
 * write_item does. */
static int write_job_item(shoal_taskmsg_writer_t *w, size_t i)
{
    shoal_job_text_t id, input;

    if (shoal_job_item_text(w->job, i, &id, &input)) {
        LIT(&w->b, "{\"id\":");
        if (shoal_jsontext_body(&w->b, id.body, id.len, id.escaped))
            return -1;
        LIT(&w->b, ",\"input\":");
        if (shoal_jsontext_body(&w->b, input.body, input.len, input.escaped))
            return -1;
        LIT(&w->b, "}");
        return 0;
    }
    if (!w->items && !(w->items = shoal_job_field(w->job, "items")))
        return -1;
    return write_item(&w->b, json_array_get(w->items, i));
}

const char *shoal_taskmsg_writer_text(shoal_taskmsg_writer_t *w, size_t chunk, long number,
                                      const char *cache_key, size_t *len, char *errbuf,
                                      size_t errlen)
{
    const shoal_job_t *job = w->job;
    shoal_jsontext_t *b = &w->b;
    char task_id[SHOAL_TASKMSG_ID_MAX];
    size_t first, end;

    if (chunk >= shoal_job_n_chunks(job) || number < 0 || number >= w->n_chunks) {
        shoal_err_set(errbuf, errlen, SHOAL_ERR_INVALID,
                      "chunk %zu (number %ld) is out of range: the job has %zu chunks of %ld",
                      chunk, number, shoal_job_n_chunks(job), w->n_chunks);
        return NULL;
    }
    if (shoal_taskmsg_task_id(shoal_job_id(job), (size_t)number, task_id, sizeof(task_id))) {
        shoal_err_set(errbuf, errlen, SHOAL_ERR_INVALID, "cannot make a task_id for chunk %ld",
                      number);
        return NULL;
    }
    shoal_job_chunk_range(job, chunk, &first, &end);
    shoal_job_text_t id_text, input_text;
    const json_t *own = NULL;
    /* an item kept as text has neither a model nor a body of its own */
    if (!shoal_job_item_text(job, first, &id_text, &input_text)) {
        if (!w->items && !(w->items = shoal_job_field(job, "items"))) {
            shoal_err_set(errbuf, errlen, SHOAL_ERR_NOMEM, "out of memory");
            return NULL;
        }
        own = json_array_get(w->items, first);
    }
    const json_t *own_model = json_object_get(own, "model");
    int version = w->batch || json_object_get(own, "body") ? SHOAL_TASKMSG_VERSION_MAX
                                                           : SHOAL_TASKMSG_VERSION;
    int bad = 0;

    shoal_jsontext_reset(b);
    LIT(b, "{\"v\":");
    shoal_jsontext_int(b, version);
    if (w->batch)
        LIT(b, ",\"mode\":\"batch\"");
    /* a task_id is job_id (letters, digits and . _ : -), ':' and digits */
    LIT(b, ",\"task_id\":\"");
    shoal_jsontext_raw(b, task_id, strlen(task_id));
    LIT(b, "\"");
    shoal_jsontext_raw(b, w->job_id, strlen(w->job_id));
    LIT(b, ",\"chunk\":");
    shoal_jsontext_int(b, number);
    LIT(b, ",\"n_chunks\":");
    shoal_jsontext_int(b, w->n_chunks);
    shoal_jsontext_raw(b, w->owner, strlen(w->owner));
    if (own_model)
        bad |= !json_is_string(own_model) ||
               shoal_jsontext_strn(b, json_string_value(own_model), json_string_length(own_model));
    else
        shoal_jsontext_raw(b, w->model, strlen(w->model));
    shoal_jsontext_raw(b, w->prompt, strlen(w->prompt));
    LIT(b, ",\"items\":[");
    for (size_t i = first; i < end && !bad; i++) {
        if (i > first)
            LIT(b, ",");
        bad |= write_job_item(w, i);
    }
    LIT(b, "]");
    shoal_jsontext_raw(b, w->limits, strlen(w->limits));
    LIT(b, ",\"est_tokens\":");
    shoal_jsontext_int(b, shoal_job_chunk_est_tokens(job, chunk));
    shoal_jsontext_raw(b, w->tail, strlen(w->tail));
    if (cache_key) {
        LIT(b, ",\"cache_key\":");
        bad |= shoal_jsontext_str(b, cache_key);
    }
    LIT(b, "}");
    const char *text = shoal_jsontext_text(b, len);
    if (bad || !text) {
        shoal_err_set(errbuf, errlen, SHOAL_ERR_NOMEM,
                      bad ? "cannot write the task message of chunk %ld as text"
                          : "out of memory writing the task message of chunk %ld",
                      number);
        return NULL;
    }
    return text;
}

/* ---- parsing ---- */

struct ctx {
    char *errbuf;
    size_t errlen;
};

static shoal_err_t fail(struct ctx *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static shoal_err_t fail(struct ctx *c, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    return shoal_err_set(c->errbuf, c->errlen, SHOAL_ERR_INVALID, "%s", msg);
}

/* v as it appears in a message: numbers and strings by value (strings
 * quoted and cut short), containers by type. */
static const char *describe(char out[SHOAL_JSONDESC_QUOTE_LEN], const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_STRING:
        return shoal_jsondesc_quote(out, json_string_value(v), json_string_length(v));
    case JSON_INTEGER:
        snprintf(out, SHOAL_JSONDESC_QUOTE_LEN, "%lld", (long long)json_integer_value(v));
        return out;
    case JSON_REAL:
        snprintf(out, SHOAL_JSONDESC_QUOTE_LEN, "%.15g", json_real_value(v));
        return out;
    case JSON_OBJECT:
        return "an object";
    case JSON_ARRAY:
        snprintf(out, SHOAL_JSONDESC_QUOTE_LEN, "an array of %zu", json_array_size(v));
        return out;
    case JSON_TRUE:
        return "true";
    case JSON_FALSE:
        return "false";
    case JSON_NULL:
        return "null";
    }
    return "an unknown value";
}

/* "task.<path>: expected <what>, got <v>". */
static shoal_err_t bad(struct ctx *c, const char *path, const char *what, const json_t *v)
{
    char d[SHOAL_JSONDESC_QUOTE_LEN];

    return fail(c, "task.%s: expected %s, got %s", path, what, describe(d, v));
}

/* obj[key], or an error naming the missing field; parent is the path of
 * obj ("" for the message itself). */
static shoal_err_t field(struct ctx *c, const json_t *obj, const char *parent, const char *key,
                         const json_t **out)
{
    if ((*out = json_object_get(obj, key)))
        return SHOAL_OK;
    return fail(c, "task%s%s: missing required field \"%s\"", *parent ? "." : "", parent, key);
}

/* A JSON Schema integer (5.0 counts) within [min, max]. */
static int integer_in(const json_t *v, long min, long max, long *out)
{
    if (json_is_integer(v)) {
        json_int_t n = json_integer_value(v);
        if (n < min || n > max)
            return 0;
        *out = (long)n;
        return 1;
    }
    if (json_is_real(v)) {
        double d = json_real_value(v);
        if (!isfinite(d) || floor(d) != d || d < (double)min || d > (double)max)
            return 0;
        *out = (long)d;
        return 1;
    }
    return 0;
}

static shoal_err_t get_long(struct ctx *c, const json_t *obj, const char *key, long min, long max,
                            long *out)
{
    const json_t *v;
    char what[96];
    shoal_err_t err;

    if ((err = field(c, obj, "", key, &v)))
        return err;
    if (integer_in(v, min, max, out))
        return SHOAL_OK;
    if (max == LONG_MAX)
        snprintf(what, sizeof(what), "an integer of at least %ld", min);
    else
        snprintf(what, sizeof(what), "an integer from %ld to %ld", min, max);
    return bad(c, key, what, v);
}

/* A string; non-empty when nonempty is set. path names v in messages. */
static shoal_err_t string_at(struct ctx *c, const char *path, const json_t *v, int nonempty,
                             const char **out)
{
    if (!json_is_string(v) || (nonempty && json_string_length(v) == 0))
        return bad(c, path, nonempty ? "a non-empty string" : "a string", v);
    *out = json_string_value(v);
    return SHOAL_OK;
}

static shoal_err_t get_string(struct ctx *c, const json_t *obj, const char *key, int nonempty,
                              const char **out)
{
    const json_t *v;
    shoal_err_t err;

    if ((err = field(c, obj, "", key, &v)))
        return err;
    return string_at(c, key, v, nonempty, out);
}

static shoal_err_t enum_at(struct ctx *c, const char *path, const json_t *v,
                           const char *const *values, const char **out)
{
    char what[128] = "one of ";
    size_t o = strlen(what);

    for (size_t i = 0; values[i]; i++) {
        if (json_is_string(v) && strcmp(json_string_value(v), values[i]) == 0) {
            *out = values[i];
            return SHOAL_OK;
        }
    }
    for (size_t i = 0; values[i] && o < sizeof(what); i++)
        o += (size_t)snprintf(what + o, sizeof(what) - o, "%s%s", i ? ", " : "", values[i]);
    return bad(c, path, what, v);
}

/* The message's version; refuses one newer than this code. */
static shoal_err_t check_version(struct ctx *c, const json_t *doc, shoal_taskmsg_t *out)
{
    const json_t *v = json_object_get(doc, "v");
    long version;

    if (!v) {
        out->version = 1;
        return SHOAL_OK;
    }
    if (!integer_in(v, 1, LONG_MAX, &version))
        return bad(c, "v", "a positive integer", v);
    out->version = version > INT_MAX ? INT_MAX : (int)version;
    if (version > SHOAL_TASKMSG_VERSION_MAX)
        return fail(c,
                    "task message version %ld is newer than this worker understands (%d); "
                    "upgrade the worker",
                    version, SHOAL_TASKMSG_VERSION_MAX);
    return SHOAL_OK;
}

/* A split level: 1 to SHOAL_TASKMSG_SPLIT_MAX in decimal, no leading zero. */
static int split_level(const char *s, long *level)
{
    size_t n = strlen(s);
    long v = 0;

    if (n == 0 || n > 4 || s[0] == '0' || strspn(s, "0123456789") != n)
        return 0;
    for (size_t i = 0; i < n; i++)
        v = v * 10 + (s[i] - '0');
    if (v > SHOAL_TASKMSG_SPLIT_MAX)
        return 0;
    *level = v;
    return 1;
}

/* task_id, job_id, chunk and n_chunks, and that they agree. */
static shoal_err_t check_identity(struct ctx *c, const json_t *doc, shoal_taskmsg_t *out)
{
    const json_t *task_id, *job_id;
    char want[SHOAL_TASKMSG_ID_MAX], d[SHOAL_JSONDESC_QUOTE_LEN];
    shoal_err_t err;

    if ((err = field(c, doc, "", "task_id", &task_id)) ||
        (err = string_at(c, "task_id", task_id, 1, &out->task_id)) ||
        (err = field(c, doc, "", "job_id", &job_id)))
        return err;
    if (!json_is_string(job_id) || !shoal_job_id_valid(json_string_value(job_id)))
        return bad(c, "job_id", "1 to 200 letters, digits and . _ : -", job_id);
    out->job_id = json_string_value(job_id);
    if ((err = get_long(c, doc, "chunk", 0, CHUNK_MAX, &out->chunk)) ||
        (err = get_long(c, doc, "n_chunks", 1, N_CHUNKS_MAX, &out->n_chunks)))
        return err;
    if (out->chunk >= out->n_chunks)
        return fail(c, "task.chunk: %ld is not less than n_chunks (%ld)", out->chunk,
                    out->n_chunks);
    shoal_taskmsg_task_id(out->job_id, (size_t)out->chunk, want, sizeof(want));
    size_t wn = strlen(want);
    /* from version 2 a sub-task's id: the chunk's, '.' and its split level */
    if (out->version >= 2 && json_string_length(task_id) > wn &&
        strncmp(out->task_id, want, wn) == 0 && out->task_id[wn] == '.' &&
        split_level(out->task_id + wn + 1, &out->split_level))
        return SHOAL_OK;
    if (strcmp(out->task_id, want) != 0 || json_string_length(task_id) != wn)
        return fail(c,
                    "task.task_id: expected \"%s\" (job_id, ':' and chunk as six digits), got %s",
                    want, describe(d, task_id));
    return SHOAL_OK;
}

static shoal_err_t check_fallbacks(struct ctx *c, const json_t *doc, shoal_taskmsg_t *out)
{
    const json_t *v;
    char path[64], what[64];
    const char *s;
    shoal_err_t err;

    if ((err = field(c, doc, "", "fallback_models", &v)))
        return err;
    if (!json_is_array(v) || json_array_size(v) > FALLBACK_MAX) {
        snprintf(what, sizeof(what), "an array of at most %d model names", FALLBACK_MAX);
        return bad(c, "fallback_models", what, v);
    }
    for (size_t i = 0; i < json_array_size(v); i++) {
        snprintf(path, sizeof(path), "fallback_models[%zu]", i);
        if ((err = string_at(c, path, json_array_get(v, i), 1, &s)))
            return err;
    }
    out->fallback_models = v;
    return SHOAL_OK;
}

/* An item's own request: an object with a non-empty messages array, in a
 * task of one item (one call sends one request). */
static shoal_err_t check_body(struct ctx *c, const json_t *item, size_t i, size_t n,
                              shoal_taskmsg_t *out)
{
    const json_t *body = json_object_get(item, "body"), *msgs;
    char path[64];

    if (!body)
        return SHOAL_OK;
    snprintf(path, sizeof(path), "items[%zu].body", i);
    if (!json_is_object(body))
        return bad(c, path, "an object", body);
    msgs = json_object_get(body, "messages");
    snprintf(path, sizeof(path), "items[%zu].body.messages", i);
    if (!json_is_array(msgs) || json_array_size(msgs) == 0)
        return bad(c, path, "a non-empty array", msgs ? msgs : json_null());
    if (n != 1)
        return fail(c, "task.items[%zu].body: only a task of one item may carry a request", i);
    out->body = body;
    return SHOAL_OK;
}

static shoal_err_t check_items(struct ctx *c, const json_t *doc, shoal_taskmsg_t *out)
{
    const json_t *items;
    char path[64], what[64];
    const char *s;
    shoal_err_t err;

    if ((err = field(c, doc, "", "items", &items)))
        return err;
    if (!json_is_array(items) || json_array_size(items) < 1 || json_array_size(items) > ITEMS_MAX) {
        snprintf(what, sizeof(what), "an array of 1 to %d items", ITEMS_MAX);
        return bad(c, "items", what, items);
    }
    for (size_t i = 0; i < json_array_size(items); i++) {
        const json_t *item = json_array_get(items, i), *v;

        /* the usual item (no request of its own), checked without writing
         * the paths an error names */
        if (json_is_string(json_object_get(item, "input")) &&
            json_string_length(json_object_get(item, "id")) > 0 && !json_object_get(item, "body"))
            continue;
        snprintf(path, sizeof(path), "items[%zu]", i);
        if (!json_is_object(item))
            return bad(c, path, "an object", item);
        if ((err = field(c, item, path, "id", &v)))
            return err;
        snprintf(path, sizeof(path), "items[%zu].id", i);
        if ((err = string_at(c, path, v, 1, &s)))
            return err;
        snprintf(path, sizeof(path), "items[%zu]", i);
        if ((err = field(c, item, path, "input", &v)))
            return err;
        snprintf(path, sizeof(path), "items[%zu].input", i);
        if ((err = string_at(c, path, v, 0, &s)))
            return err;
        if ((err = check_body(c, item, i, json_array_size(items), out)))
            return err;
    }
    out->items = items;
    out->n_items = json_array_size(items);
    return SHOAL_OK;
}

static shoal_err_t check_output(struct ctx *c, const json_t *doc, shoal_taskmsg_t *out)
{
    const json_t *output, *v;
    shoal_err_t err;

    if ((err = field(c, doc, "", "output", &output)))
        return err;
    if (!json_is_object(output))
        return bad(c, "output", "an object", output);
    if ((err = field(c, output, "output", "format", &v)) ||
        (err = enum_at(c, "output.format", v, formats, &out->output_format)))
        return err;
    if ((v = json_object_get(output, "schema"))) {
        if (!json_is_object(v))
            return bad(c, "output.schema", "an object", v);
        out->output_schema = v;
    }
    /* absent in messages from schedulers that predate it: the old behaviour */
    out->on_truncated = "retry";
    if ((v = json_object_get(output, "on_truncated")) &&
        (err = enum_at(c, "output.on_truncated", v, on_truncated, &out->on_truncated)))
        return err;
    return SHOAL_OK;
}

/* deadline_s and deadline_unix: both or neither. */
static shoal_err_t check_deadline(struct ctx *c, const json_t *doc, shoal_taskmsg_t *out)
{
    int has_s = json_object_get(doc, "deadline_s") != NULL;
    int has_unix = json_object_get(doc, "deadline_unix") != NULL;
    long unix_s;
    shoal_err_t err;

    if (has_s != has_unix)
        return fail(c, "task.%s: present without %s", has_s ? "deadline_s" : "deadline_unix",
                    has_s ? "deadline_unix" : "deadline_s");
    if (!has_s)
        return SHOAL_OK;
    if ((err = get_long(c, doc, "deadline_s", DEADLINE_S_MIN, DEADLINE_S_MAX, &out->deadline_s)) ||
        (err = get_long(c, doc, "deadline_unix", 1, LONG_MAX, &unix_s)))
        return err;
    out->deadline_unix = unix_s;
    return SHOAL_OK;
}

static shoal_err_t check_task(struct ctx *c, const json_t *doc, shoal_taskmsg_t *out)
{
    const json_t *v;
    shoal_err_t err;

    if ((err = check_version(c, doc, out)) || (err = check_identity(c, doc, out)) ||
        (err = get_string(c, doc, "tenant", 1, &out->tenant)) ||
        (err = field(c, doc, "", "priority", &v)) ||
        (err = enum_at(c, "priority", v, priorities, &out->priority)) ||
        (err = get_string(c, doc, "model", 1, &out->model)) || (err = check_fallbacks(c, doc, out)))
        return err;
    if ((v = json_object_get(doc, "system")) && (err = string_at(c, "system", v, 0, &out->system)))
        return err;
    if ((err = get_string(c, doc, "prompt_template", 1, &out->prompt_template)))
        return err;
    if (!strstr(out->prompt_template, "{{input}}"))
        return fail(c, "task.prompt_template: must contain {{input}}");
    if ((err = check_items(c, doc, out)) || (err = check_output(c, doc, out)) ||
        (err = get_long(c, doc, "max_attempts", ATTEMPTS_MIN, ATTEMPTS_MAX, &out->max_attempts)) ||
        (err = get_long(c, doc, "timeout_ms", TIMEOUT_MIN, TIMEOUT_MAX, &out->timeout_ms)) ||
        (err = get_long(c, doc, "est_tokens", 0, LONG_MAX, &out->est_tokens)) ||
        (err = check_deadline(c, doc, out)))
        return err;
    out->mode = "context";
    if (out->version >= 2 && (v = json_object_get(doc, "mode")) &&
        (err = enum_at(c, "mode", v, modes, &out->mode)))
        return err;
    /* added within version 1: messages of older schedulers have none */
    if ((v = json_object_get(doc, "cache_key"))) {
        if (!json_is_string(v) || !shoal_cachekey_valid(json_string_value(v)))
            return bad(c, "cache_key", "64 lower-case hex digits", v);
        out->cache_key = json_string_value(v);
    }
    return SHOAL_OK;
}

/* The message as a JSON object, or NULL with the reason. */
static json_t *decode(const void *value, size_t len, struct ctx *c)
{
    json_error_t e;
    json_t *doc;
    char d[SHOAL_JSONDESC_QUOTE_LEN];

    /* Messages are plain JSON as schedulers write them: the fast reader
     * takes those; anything else (and every error) is jansson's. */
    if ((doc = shoal_jsonlex_load(value, len)) != NULL)
        return doc;
    doc = json_loadb(value ? value : "", value ? len : 0, JSON_DECODE_ANY | JSON_REJECT_DUPLICATES,
                     &e);
    if (!doc) {
        const char *text = e.text;

        if (json_error_code(&e) == json_error_out_of_memory) {
            shoal_err_set(c->errbuf, c->errlen, SHOAL_ERR_NOMEM, "out of memory");
            return NULL;
        }
        /* jansson names its own flag here; say what the message holds */
        if (strstr(text, "JSON_ALLOW_NUL"))
            text = "\\u0000 is not allowed in strings";
        fail(c, "task: invalid JSON at line %d, column %d: %s", e.line, e.column, text);
        return NULL;
    }
    if (!json_is_object(doc)) {
        fail(c, "task: expected a JSON object, got %s", describe(d, doc));
        json_decref(doc);
        return NULL;
    }
    return doc;
}

json_t *shoal_taskmsg_parse(const void *value, size_t len, shoal_taskmsg_t *out, char *errbuf,
                            size_t errlen)
{
    struct ctx c = {errbuf, errlen};
    json_t *doc;

    memset(out, 0, sizeof(*out));
    if (!(doc = decode(value, len, &c)))
        return NULL;
    if (check_task(&c, doc, out)) {
        int version = out->version;

        json_decref(doc);
        memset(out, 0, sizeof(*out));
        out->version = version;
        return NULL;
    }
    return doc;
}

int shoal_taskmsg_ids(const void *value, size_t len, char *task_id, size_t task_id_len,
                      char *job_id, size_t job_id_len)
{
    json_t *doc = json_loadb(value ? value : "", value ? len : 0, JSON_REJECT_DUPLICATES, NULL);
    const char *tid = json_string_value(json_object_get(doc, "task_id"));
    const json_t *jid = json_object_get(doc, "job_id");
    char prefix[SHOAL_TASKMSG_ID_MAX];
    size_t n;
    int ok = 0;

    if (task_id_len)
        task_id[0] = '\0';
    if (job_id_len)
        job_id[0] = '\0';
    /* task_id must be "<job id>:" and six digits, maybe followed by a
     * sub-task's '.' and split level; the job id is its prefix */
    n = tid ? strlen(tid) : 0;
    size_t full = n;
    const char *dot = tid ? strrchr(tid, '.') : NULL;
    long level;
    if (dot && (size_t)(dot - tid) >= 8 && tid[dot - tid - 7] == ':' &&
        split_level(dot + 1, &level))
        n = (size_t)(dot - tid);
    if (n < 8 || n >= sizeof(prefix) || tid[n - 7] != ':' || strspn(tid + n - 6, "0123456789") != 6)
        goto out;
    memcpy(prefix, tid, n - 7);
    prefix[n - 7] = '\0';
    if (!shoal_job_id_valid(prefix))
        goto out;
    /* a job_id of its own must agree; without one the prefix names the job */
    if (json_is_string(jid) && strcmp(json_string_value(jid), prefix) != 0)
        goto out;
    if (full >= task_id_len || n - 7 >= job_id_len)
        goto out;
    memcpy(task_id, tid, full + 1);
    memcpy(job_id, prefix, n - 6);
    ok = 1;
out:
    json_decref(doc);
    return ok;
}

json_t *shoal_taskmsg_build_all(const shoal_job_t *job, char *errbuf, size_t errlen)
{
    json_t *tasks;

    if (!shoal_job_id(job)) {
        shoal_err_set(errbuf, errlen, SHOAL_ERR_INVALID,
                      "the job has no job_id (set one with shoal_job_set_id first)");
        return NULL;
    }
    if (!(tasks = json_array()))
        goto nomem;
    for (size_t k = 0; k < shoal_job_n_chunks(job); k++) {
        json_t *t = shoal_taskmsg_build(job, k, errbuf, errlen);

        if (!t) {
            json_decref(tasks);
            return NULL;
        }
        if (json_array_append_new(tasks, t))
            goto nomem;
    }
    return tasks;
nomem:
    json_decref(tasks);
    shoal_err_set(errbuf, errlen, SHOAL_ERR_NOMEM, "out of memory");
    return NULL;
}

shoal_err_t shoal_taskmsg_subtask_id(const char *task_id, long level, char *buf, size_t len)
{
    size_t n = strlen(task_id);
    const char *dot = strrchr(task_id, '.');
    int w;

    if (level < 1 || level > SHOAL_TASKMSG_SPLIT_MAX)
        return SHOAL_ERR_LIMIT;
    /* the chunk's own id: cut a parent's ".<level>" */
    if (dot && n - (size_t)(dot - task_id) <= 5 && (size_t)(dot - task_id) >= 8 && dot[-7] == ':')
        n = (size_t)(dot - task_id);
    if (n < 8 || task_id[n - 7] != ':' || n > INT_MAX)
        return SHOAL_ERR_INVALID;
    w = snprintf(buf, len, "%.*s.%ld", (int)n, task_id, level);
    if (w < 0 || (size_t)w >= len)
        return SHOAL_ERR_LIMIT;
    return SHOAL_OK;
}

json_t *shoal_taskmsg_build_subtask(const json_t *msg, const char *task_id,
                                    const unsigned char *keep, char *errbuf, size_t errlen)
{
    const json_t *items = json_object_get(msg, "items");
    json_t *t = json_object(), *sub = json_array();
    size_t n = json_array_size(items), kept = 0;
    long est = (long)json_integer_value(json_object_get(msg, "est_tokens"));
    const char *key;
    json_t *v;

    if (!t || !sub)
        goto nomem;
    json_object_foreach((json_t *)msg, key, v)
    {
        if (strcmp(key, "items") != 0 && json_object_set(t, key, v))
            goto nomem;
    }
    for (size_t i = 0; i < n; i++) {
        if (keep[i] && json_array_append(sub, json_array_get(items, i)))
            goto nomem;
        kept += keep[i] != 0;
    }
    if (kept == 0) {
        shoal_err_set(errbuf, errlen, SHOAL_ERR_INVALID, "a sub-task needs at least one item");
        goto fail;
    }
    /* the estimate shrinks with the items; the shared prefix is not split
     * off, so this errs a little low, as a budget's settlement corrects */
    if (n > 0)
        est = (long)((double)est * (double)kept / (double)n);
    if (json_object_set_new(t, "items", sub) ||
        json_object_set_new(t, "v", json_integer(SHOAL_TASKMSG_VERSION_MAX)) ||
        json_object_set_new(t, "task_id", json_string(task_id)) ||
        json_object_set_new(t, "est_tokens", json_integer((json_int_t)est)))
        goto nomem_sub_given;
    return t;
nomem:
    json_decref(sub);
nomem_sub_given:
    shoal_err_set(errbuf, errlen, SHOAL_ERR_NOMEM, "out of memory");
    json_decref(t);
    return NULL;
fail:
    json_decref(sub);
    json_decref(t);
    return NULL;
}
