/*
 * Jobs: a validated job with its defaults filled in and its chunk plan, and
 * the getters everything else reads it through.
 *
 * Judging the message is common/jobcheck.c's job; this file owns what comes
 * after: the defaults (the only place they live: task messages carry them to
 * the workers, which have none of their own), the chunk plan (the rules are
 * common/chunk.c's; this is the glue that feeds it a job's items) and the
 * settings row. Task messages are built from a job by common/taskmsg.c.
 *
 * Memory for the job comes from jansson's allocator (common/jsonalloc.h), so a
 * test that swaps in a failing allocator reaches every error path.
 */
#include "common/job.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/chunk.h"
#include "common/itembatch.h"
#include "common/jsonalloc.h"
#include "common/jsonlex.h"
#include "common/oaibatch.h"
#include "common/render.h"
#include "common/tokens.h"

/* The defaults of the fields a job may leave out (see job.schema.json). */
#define MAX_TOKENS_DEFAULT 12000
#define MAX_ITEMS_DEFAULT 1
#define ATTEMPTS_DEFAULT 3
#define TIMEOUT_DEFAULT 60000
/* The schema's bound on items (properties/items). */
#define ITEMS_MAX 100000

/* An item of a job rebuilt from a stored part's text: the bodies of its id
 * and input strings as written between the quotes (escapes, never \u, as
 * written), in the text the job owns. */
struct span {
    const char *id, *input;
    size_t id_len, input_len;
    unsigned char id_esc, input_esc; /* the body holds escapes */
    unsigned char input_first;       /* "input" came before "id" */
};

struct shoal_job {
    json_t *doc;   /* owned; defaults filled in */
    json_t *items; /* borrowed from doc; NULL while spans stand in for it */
    /* A job rebuilt by shoal_job_parse_stored_part: its items kept as text,
     * one span each, until someone reads the document (shoal_job_json) */
    char *items_text;
    struct span *spans;
    size_t n_items;
    size_t n_chunks;
    size_t *chunk_start; /* n_chunks + 1 entries; the last is n_items */
    long *chunk_tokens;  /* n_chunks entries */
    long est_tokens;
    long long submitted_unix; /* deadline_s counts from here */
    int priority_given;       /* the message set priority (no default filled in) */
};

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
        set_default(output, "format", json_string("text")) ||
        set_default(output, "on_truncated", json_string("retry")))
        return -1;
    if (as_integer(chunking, "max_tokens") || as_integer(chunking, "max_items") ||
        as_integer(doc, "max_attempts") || as_integer(doc, "timeout_ms") ||
        as_integer(doc, "deadline_s"))
        return -1;
    return 0;
}

static long string_tokens(const json_t *s)
{
    return s ? shoal_tokens_estimate(json_string_value(s), json_string_length(s)) : 0;
}

/* The tokens of a string body as written in JSON text (escapes undone
 * first); -1 when out of memory. */
static long span_tokens(const char *s, size_t n, int escaped)
{
    if (!escaped)
        return shoal_tokens_estimate(s, n);
    char *tmp = shoal_jsonalloc_array(n + 1, 1);
    if (!tmp)
        return -1;
    long t = shoal_tokens_estimate(tmp, shoal_jsonlex_unescape(tmp, s, n));
    shoal_jsonalloc_free(tmp);
    return t;
}

static long add_sat(long a, long b)
{
    return b > 0 && a > LONG_MAX - b ? LONG_MAX : a + b;
}

static long mul_sat(long a, size_t n)
{
    return n && a > LONG_MAX / (long)n ? LONG_MAX : a * (long)n;
}

/* What one item adds to its chunk's prompt, rendered as common/render.c
 * does: its input once per {{input}}, each copy behind an "[id]" line and a
 * blank line when chunks may hold several items, and its id once per
 * {{ids}} with its ", ". Overhead counted for a lone item in a chunk that
 * could hold more errs on the safe side by a few tokens. */
static long item_tokens(long input, long id, size_t n_input, size_t n_ids, int multi)
{
    long copy = multi ? add_sat(input, add_sat(id, 3)) : input;

    return add_sat(mul_sat(copy, n_input), mul_sat(add_sat(id, 1), n_ids));
}

/* With group_by, the items of each group are brought together (groups in the
 * order of their first item, items of a group in job order; see
 * shoal_chunk_group_order) and that becomes the job's item order: the
 * document's items array is rewritten, so task messages, task rows, stored
 * inputs and the merge all follow it, and parsing the stored document again
 * plans the same chunks. tokens and groups are permuted alike. */
static shoal_err_t group_items(shoal_job_t *job, long *tokens, const char **groups, char *errbuf,
                               size_t errlen)
{
    size_t n = job->n_items, moved = 0;
    size_t *order = shoal_jsonalloc_array(n, sizeof(*order));
    long *t2 = shoal_jsonalloc_array(n, sizeof(*t2));
    const char **g2 = shoal_jsonalloc_array(n, sizeof(*g2));
    json_t *items = NULL;
    shoal_err_t err = SHOAL_OK;

    if (n == 0)
        goto out;
    if (!order || !t2 || !g2 || shoal_chunk_group_order(groups, n, order) == (size_t)-1)
        goto nomem;
    for (size_t i = 0; i < n; i++)
        moved += order[i] != i;
    if (moved == 0)
        goto out;
    if (!(items = json_array()))
        goto nomem;
    for (size_t i = 0; i < n; i++) {
        if (json_array_append(items, json_array_get(job->items, order[i])))
            goto nomem;
        t2[i] = tokens[order[i]];
        g2[i] = groups[order[i]];
    }
    if (json_object_set(job->doc, "items", items))
        goto nomem;
    job->items = items;
    memcpy(tokens, t2, n * sizeof(*tokens));
    memcpy((void *)groups, g2, n * sizeof(*groups));
    goto out;
nomem:
    err = shoal_err_set(errbuf, errlen, SHOAL_ERR_NOMEM, "out of memory");
out:
    json_decref(items);
    shoal_jsonalloc_free(order);
    shoal_jsonalloc_free(t2);
    shoal_jsonalloc_free((void *)g2);
    return err;
}

/* Estimates every item, rejects one that cannot fit a chunk on its own (the
 * same formula shoal_chunk_plan uses) and plans the chunks. */
static shoal_err_t plan_chunks(shoal_job_t *job, char *errbuf, size_t errlen)
{
    const json_t *doc = job->doc, *chunking = json_object_get(doc, "chunking");
    shoal_chunk_limits_t limits;
    long base, *tokens = NULL;
    const char **groups = NULL;
    size_t n = job->n_items, n_input, n_ids, n_ph;
    int batch = strcmp(shoal_job_mode(job), "batch") == 0;
    shoal_err_t err = SHOAL_OK;

    limits.max_tokens = (long)json_integer_value(json_object_get(chunking, "max_tokens"));
    limits.max_items = (size_t)json_integer_value(json_object_get(chunking, "max_items"));
    limits.by_group = json_object_get(chunking, "group_by") != NULL;
    n_ph = shoal_render_placeholders(json_string_value(json_object_get(doc, "prompt_template")),
                                     &n_input, &n_ids);
    if (n_ph > SHOAL_RENDER_MAX_PLACEHOLDERS)
        return shoal_err_set(errbuf, errlen, SHOAL_ERR_INVALID,
                             "prompt_template: uses {{input}} and {{ids}} %zu times; at most %d "
                             "are allowed",
                             n_ph, SHOAL_RENDER_MAX_PLACEHOLDERS);
    /* the placeholders' own text is counted too: a few tokens too many */
    base = string_tokens(json_object_get(doc, "system")) +
           string_tokens(json_object_get(doc, "prompt_template"));
    if (batch)
        base = add_sat(base, shoal_itembatch_instruction_tokens());
    if (base > limits.max_tokens)
        return shoal_err_set(errbuf, errlen, SHOAL_ERR_INVALID,
                             "system and prompt_template are about %ld tokens; "
                             "chunking.max_tokens is %ld",
                             base, limits.max_tokens);

    tokens = shoal_jsonalloc_array(n, sizeof(*tokens));
    groups = limits.by_group ? shoal_jsonalloc_array(n, sizeof(*groups)) : NULL;
    job->chunk_start = shoal_jsonalloc_array(n + 1, sizeof(*job->chunk_start));
    job->chunk_tokens = shoal_jsonalloc_array(n, sizeof(*job->chunk_tokens));
    if (!tokens || (limits.by_group && !groups) || !job->chunk_start || !job->chunk_tokens) {
        err = shoal_err_set(errbuf, errlen, SHOAL_ERR_NOMEM, "out of memory");
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        const json_t *item = json_array_get(job->items, i);
        long input, id;

        if (job->spans) {
            input =
                span_tokens(job->spans[i].input, job->spans[i].input_len, job->spans[i].input_esc);
            id = span_tokens(job->spans[i].id, job->spans[i].id_len, job->spans[i].id_esc);
            if (input < 0 || id < 0) {
                err = shoal_err_set(errbuf, errlen, SHOAL_ERR_NOMEM, "out of memory");
                goto out;
            }
        } else {
            /* an item with its own request sends its body, not the template */
            const json_t *body = json_object_get(item, "body");
            input = body ? shoal_oaibatch_body_tokens(body)
                         : string_tokens(json_object_get(item, "input"));
            id = string_tokens(json_object_get(item, "id"));
        }

        tokens[i] = item_tokens(input, id, n_input, n_ids, limits.max_items > 1);
        /* batch mode: the id again in the instruction's list of ids */
        if (batch)
            tokens[i] = add_sat(tokens[i], add_sat(id, 1));
        if (shoal_chunk_estimate(base, &tokens[i], 1) > limits.max_tokens) {
            if (n_input > 1)
                err = shoal_err_set(errbuf, errlen, SHOAL_ERR_INVALID,
                                    "items[%zu].input is about %ld tokens, %ld as prompt_template "
                                    "uses {{input}} %zu times; chunking.max_tokens is %ld "
                                    "(system and prompt_template add %ld)",
                                    i, input, tokens[i], n_input, limits.max_tokens, base);
            else
                err = shoal_err_set(errbuf, errlen, SHOAL_ERR_INVALID,
                                    "items[%zu].input is about %ld tokens; chunking.max_tokens is "
                                    "%ld (system and prompt_template add %ld)",
                                    i, input, limits.max_tokens, base);
            goto out;
        }
        if (groups)
            groups[i] = json_string_value(json_object_get(item, "group"));
    }
    if (groups && (err = group_items(job, tokens, groups, errbuf, errlen)) != SHOAL_OK)
        goto out;
    job->n_chunks =
        shoal_chunk_plan(tokens, groups, n, base, &limits, job->chunk_start, job->chunk_tokens);
    job->chunk_start[job->n_chunks] = n;
    job->est_tokens = 0;
    for (size_t k = 0; k < job->n_chunks; k++)
        job->est_tokens = shoal_chunk_estimate(job->est_tokens, &job->chunk_tokens[k], 1);
out:
    shoal_jsonalloc_free(tokens);
    shoal_jsonalloc_free((void *)groups);
    return err;
}

/* ---- the job ---- */

void shoal_job_destroy(shoal_job_t *job)
{
    if (!job)
        return;
    json_decref(job->doc);
    shoal_jsonalloc_free(job->items_text);
    shoal_jsonalloc_free(job->spans);
    shoal_jsonalloc_free(job->chunk_start);
    shoal_jsonalloc_free(job->chunk_tokens);
    shoal_jsonalloc_free(job);
}

/* shoal_job_parse, and with checked 0 shoal_job_parse_stored. */
static shoal_job_t *parse(const char *buf, size_t len, size_t max_bytes, int checked,
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
    if (!checked && !json_is_object(doc)) {
        shoal_err_set(errbuf, errlen, SHOAL_ERR_INVALID, "job: expected an object, got %s",
                      shoal_jsondesc_type(doc));
        json_decref(doc);
        return NULL;
    }
    if (checked && shoal_job_check_schema(doc, errbuf, errlen)) {
        json_decref(doc);
        return NULL;
    }
    int priority_given = json_object_get(doc, "priority") != NULL;
    if (fill_defaults(doc) || !(job = shoal_jsonalloc_array(1, sizeof(*job)))) {
        json_decref(doc);
        shoal_err_set(errbuf, errlen, SHOAL_ERR_NOMEM, "out of memory");
        return NULL;
    }
    memset(job, 0, sizeof(*job));
    job->doc = doc;
    job->items = json_object_get(doc, "items");
    job->n_items = json_array_size(job->items);
    job->priority_given = priority_given;
    /* until the scheduler says when it accepted the job (shoal_job_set_submitted) */
    job->submitted_unix = (long long)time(NULL);
    if ((checked && shoal_jobcheck_semantics(doc, models, errbuf, errlen)) ||
        plan_chunks(job, errbuf, errlen)) {
        shoal_job_destroy(job);
        return NULL;
    }
    return job;
}

shoal_job_t *shoal_job_parse(const char *buf, size_t len, size_t max_bytes,
                             const shoal_models_t *models, char *errbuf, size_t errlen)
{
    return parse(buf, len, max_bytes, 1, models, errbuf, errlen);
}

shoal_job_t *shoal_job_parse_stored(const char *buf, size_t len, char *errbuf, size_t errlen)
{
    return parse(buf, len, 0, 0, NULL, errbuf, errlen);
}

/* One string member value at p (its opening quote): its body into *body,
 * *len, *escaped; returns where it ends, NULL when it is not plainly valid
 * (shoal_jsonlex_string). */
static const char *string_at(const char *p, const char *end, const char **body, size_t *len,
                             unsigned char *escaped)
{
    int esc;
    const char *after = p < end && *p == '"' ? shoal_jsonlex_string(p, end, &esc) : NULL;
    if (!after)
        return NULL;
    *body = p + 1;
    *len = (size_t)(after - 1 - *body);
    *escaped = (unsigned char)esc;
    return after;
}

/* A plain item at p, {"id": "...", "input": "..."} in either order and
 * nothing else, into *sp; returns where it ends, NULL for anything else (an
 * item with a group, a model or a body, other values, \u escapes). */
static const char *scan_item(const char *p, const char *end, struct span *sp)
{
    int have_id = 0, have_input = 0;

    p = shoal_jsonlex_ws(p, end);
    if (p >= end || *p++ != '{')
        return NULL;
    for (;;) {
        const char *key, *body;
        size_t klen, len;
        unsigned char kesc, esc;
        p = string_at(shoal_jsonlex_ws(p, end), end, &key, &klen, &kesc);
        if (!p || kesc || (p = shoal_jsonlex_ws(p, end)) >= end || *p++ != ':')
            return NULL;
        if (!(p = string_at(shoal_jsonlex_ws(p, end), end, &body, &len, &esc)))
            return NULL;
        if (klen == 2 && !memcmp(key, "id", 2) && !have_id) {
            have_id = 1;
            sp->id = body;
            sp->id_len = len;
            sp->id_esc = esc;
        } else if (klen == 5 && !memcmp(key, "input", 5) && !have_input) {
            have_input = 1;
            sp->input = body;
            sp->input_len = len;
            sp->input_esc = esc;
            sp->input_first = !have_id;
        } else {
            return NULL;
        }
        if ((p = shoal_jsonlex_ws(p, end)) >= end)
            return NULL;
        if (*p == '}')
            return have_id && have_input ? p + 1 : NULL;
        if (*p++ != ',')
            return NULL;
    }
}

/* The items' text as spans into job->items_text (a copy); 0, 1 when an item
 * is not a plain one, -1 when out of memory. */
static int scan_items(shoal_job_t *job, const char *text, size_t len)
{
    /* the shortest item, {"id":"","input":""}, is 20 bytes */
    size_t cap = len / 20 + 1, n = 0;

    if (!(job->items_text = shoal_jsonalloc_array(len + 1, 1)) ||
        !(job->spans = shoal_jsonalloc_array(cap, sizeof(*job->spans))))
        return -1;
    memcpy(job->items_text, text, len);
    const char *p = shoal_jsonlex_ws(job->items_text, job->items_text + len),
               *end = job->items_text + len;
    while (p < end) {
        if (n == cap || !(p = scan_item(p, end, &job->spans[n++])))
            return 1;
        if ((p = shoal_jsonlex_ws(p, end)) < end &&
            (*p++ != ',' || (p = shoal_jsonlex_ws(p, end)) >= end))
            return 1;
    }
    job->n_items = n;
    return 0;
}

/* A string body as written in JSON text, as a jansson string. */
static json_t *span_string(const char *s, size_t n, int escaped)
{
    if (!escaped)
        return json_stringn_nocheck(s, n);
    char *tmp = shoal_jsonalloc_array(n + 1, 1);
    json_t *v = tmp ? json_stringn_nocheck(tmp, shoal_jsonlex_unescape(tmp, s, n)) : NULL;
    shoal_jsonalloc_free(tmp);
    return v;
}

/* An item kept as text, decoded as shoal_job_parse decodes it; NULL when
 * out of memory. */
static json_t *span_item(const struct span *sp)
{
    json_t *item = json_object();
    json_t *id = span_string(sp->id, sp->id_len, sp->id_esc);
    json_t *input = span_string(sp->input, sp->input_len, sp->input_esc);
    int bad = !item || !id || !input;
    if (!bad && sp->input_first)
        bad = json_object_set(item, "input", input) || json_object_set(item, "id", id);
    else if (!bad)
        bad = json_object_set(item, "id", id) || json_object_set(item, "input", input);
    json_decref(id);
    json_decref(input);
    if (bad) {
        json_decref(item);
        return NULL;
    }
    return item;
}

static const char *span_id(void *arg, size_t i, size_t *len)
{
    const struct span *sp = (const struct span *)arg + i;
    *len = sp->id_len;
    return sp->id;
}

/* What shoal_job_parse judges of a job of plain items, judged on the spans
 * and on doc (the header's members, no defaults yet) with the first item:
 * the schema's item rule and the item count (which let the schema judge the
 * document by its first item, as shoal_job_check_schema does), unique ids,
 * then the schema and shoal_jobcheck_semantics on that document. 0 when all
 * pass, 1 when anything fails (the caller parses the text to word it), -1
 * when out of memory. doc gets its defaults. */
static int judge_plain(shoal_job_t *job, json_t *doc, const shoal_models_t *models)
{
    size_t repeat, original;
    char why[1024];
    int r;

    if (job->n_items < 1 || job->n_items > ITEMS_MAX)
        return 1;
    for (size_t i = 0; i < job->n_items; i++)
        if (job->spans[i].id_esc ||
            !shoal_jobcheck_plain_item(job->spans[i].id, job->spans[i].id_len,
                                       job->spans[i].input_len))
            return 1;
    if ((r = shoal_jobcheck_first_repeat(job->n_items, span_id, job->spans, &repeat, &original)))
        return r;
    json_t *one = json_array();
    if (!one || json_array_append_new(one, span_item(&job->spans[0]))) {
        json_decref(one);
        return -1;
    }
    if (json_object_set_new(doc, "items", one))
        return -1;
    shoal_err_t err = shoal_job_check_schema(doc, why, sizeof(why));
    if (err == SHOAL_OK && fill_defaults(doc))
        err = SHOAL_ERR_NOMEM;
    if (err == SHOAL_OK)
        err = shoal_jobcheck_semantics(doc, models, why, sizeof(why));
    if (json_object_del(doc, "items") && err == SHOAL_OK)
        err = SHOAL_ERR_NOMEM;
    return err == SHOAL_OK ? 0 : err == SHOAL_ERR_NOMEM ? -1 : 1;
}

/* shoal_job_parse_part, and with checked 0 shoal_job_parse_stored_part. */
static shoal_job_t *from_text(const json_t *header, const char *items, size_t len, int checked,
                              const shoal_models_t *models, int *unsure, char *errbuf,
                              size_t errlen)
{
    shoal_job_t *job;
    json_t *doc = NULL;
    int r;

    *unsure = 0;
    /* Grouping would reorder the items: such a job is rebuilt from its
     * decoded document. */
    if (!json_is_object(header) ||
        json_object_get(json_object_get(header, "chunking"), "group_by")) {
        *unsure = 1;
        return NULL;
    }
    if (!(job = shoal_jsonalloc_array(1, sizeof(*job)))) {
        shoal_err_set(errbuf, errlen, SHOAL_ERR_NOMEM, "out of memory");
        return NULL;
    }
    memset(job, 0, sizeof(*job));
    /* 0: planned; 1: unsure; -1: out of memory; -2: refused, the reason in errbuf */
    if (!(r = scan_items(job, items, len))) {
        /* the header's members as shoal_job_parse would decode them, but items */
        r = !(job->doc = doc = json_deep_copy(header)) ||
                    (json_object_get(doc, "parts") && json_object_del(doc, "parts")) ||
                    (json_object_get(doc, "items") && json_object_del(doc, "items"))
                ? -1
                : 0;
    }
    if (!r) {
        job->priority_given = json_object_get(doc, "priority") != NULL;
        job->submitted_unix = (long long)time(NULL);
        if (checked)
            r = judge_plain(job, doc, models);
    }
    if (!r && fill_defaults(doc))
        r = -1;
    /* a job being judged gets the reason a plan fails for from shoal_job_parse */
    if (!r && plan_chunks(job, errbuf, errlen))
        r = checked ? 1 : -2;
    if (!r)
        return job;
    shoal_job_destroy(job);
    if (r == -1)
        shoal_err_set(errbuf, errlen, SHOAL_ERR_NOMEM, "out of memory");
    *unsure = r == 1;
    return NULL;
}

shoal_job_t *shoal_job_parse_part(const json_t *header, const char *items, size_t len,
                                  const shoal_models_t *models, int *unsure, char *errbuf,
                                  size_t errlen)
{
    return from_text(header, items, len, 1, models, unsure, errbuf, errlen);
}

shoal_job_t *shoal_job_parse_stored_part(const json_t *header, const char *items, size_t len,
                                         int *unsure, char *errbuf, size_t errlen)
{
    return from_text(header, items, len, 0, NULL, unsure, errbuf, errlen);
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

const char *shoal_job_mode(const shoal_job_t *job)
{
    const char *m = get_str(job, "answer_mode");

    return m ? m : "context";
}

size_t shoal_job_n_items(const shoal_job_t *job)
{
    return job->n_items;
}

const char *shoal_job_on_truncated(const shoal_job_t *job)
{
    return json_string_value(json_object_get(json_object_get(job->doc, "output"), "on_truncated"));
}

long shoal_job_deadline_s(const shoal_job_t *job)
{
    return (long)json_integer_value(json_object_get(job->doc, "deadline_s"));
}

void shoal_job_set_submitted(shoal_job_t *job, long long unix_s)
{
    job->submitted_unix = unix_s;
}

long long shoal_job_deadline_unix(const shoal_job_t *job)
{
    long deadline_s = shoal_job_deadline_s(job);

    return deadline_s > 0 ? job->submitted_unix + deadline_s : 0;
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

/* The items of a job rebuilt from stored text, decoded into its document
 * as shoal_job_parse would have them; -1 when out of memory (the job stays
 * as it was). */
static int decode_spans(shoal_job_t *job)
{
    json_t *items = json_array();
    for (size_t i = 0; items && i < job->n_items; i++) {
        if (json_array_append_new(items, span_item(&job->spans[i]))) {
            json_decref(items);
            items = NULL;
        }
    }
    if (!items || json_object_set_new(job->doc, "items", items))
        return -1;
    job->items = items;
    shoal_jsonalloc_free(job->spans);
    shoal_jsonalloc_free(job->items_text);
    job->spans = NULL;
    job->items_text = NULL;
    return 0;
}

const json_t *shoal_job_json(const shoal_job_t *job)
{
    /* A job rebuilt from stored text decodes its items the first time its
     * document is read: the job is read-only to its users, this is a cache. */
    if (job->spans && decode_spans((shoal_job_t *)job))
        return NULL;
    return job->doc;
}

const json_t *shoal_job_field(const shoal_job_t *job, const char *key)
{
    if (!strcmp(key, "items")) {
        const json_t *doc = shoal_job_json(job);
        return doc ? json_object_get(doc, "items") : NULL;
    }
    return json_object_get(job->doc, key);
}

int shoal_job_item_text(const shoal_job_t *job, size_t i, shoal_job_text_t *id,
                        shoal_job_text_t *input)
{
    if (!job->spans || i >= job->n_items)
        return 0;
    const struct span *sp = &job->spans[i];
    id->body = sp->id;
    id->len = sp->id_len;
    id->escaped = sp->id_esc;
    input->body = sp->input;
    input->len = sp->input_len;
    input->escaped = sp->input_esc;
    return 1;
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

int shoal_job_priority_given(const shoal_job_t *job)
{
    return job->priority_given;
}

shoal_err_t shoal_job_set_priority(shoal_job_t *job, const char *priority)
{
    if (!priority ||
        (strcmp(priority, "high") && strcmp(priority, "normal") && strcmp(priority, "low")))
        return SHOAL_ERR_INVALID;
    return json_object_set_new(job->doc, "priority", json_string(priority)) ? SHOAL_ERR_NOMEM
                                                                            : SHOAL_OK;
}

int shoal_job_copy_field(const shoal_job_t *job, const char *key, json_t *obj)
{
    const json_t *v = shoal_job_field(job, key);

    if (!v)
        return 0;
    return json_object_set_new(obj, key, json_deep_copy(v));
}

json_t *shoal_job_settings(const shoal_job_t *job)
{
    static const char *const keys[] = {"tenant",      "priority",   "model",      "fallback_models",
                                       "chunking",    "output",     "merge",      "max_attempts",
                                       "timeout_ms",  "deadline_s", "budget_usd", "store_inputs",
                                       "answer_mode", "cache",      NULL};
    json_t *s = json_object();

    if (!s)
        return NULL;
    for (size_t i = 0; keys[i]; i++) {
        if (shoal_job_copy_field(job, keys[i], s)) {
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

void shoal_job_chunk_range(const shoal_job_t *job, size_t chunk, size_t *first, size_t *end)
{
    if (chunk >= job->n_chunks) {
        *first = *end = job->n_items;
        return;
    }
    *first = job->chunk_start[chunk];
    *end = job->chunk_start[chunk + 1];
}

long shoal_job_chunk_est_tokens(const shoal_job_t *job, size_t chunk)
{
    return chunk < job->n_chunks ? job->chunk_tokens[chunk] : 0;
}
