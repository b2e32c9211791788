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
#include "common/oaibatch.h"
#include "common/render.h"
#include "common/tokens.h"

/* The defaults of the fields a job may leave out (see job.schema.json). */
#define MAX_TOKENS_DEFAULT 12000
#define MAX_ITEMS_DEFAULT 1
#define ATTEMPTS_DEFAULT 3
#define TIMEOUT_DEFAULT 60000

struct shoal_job {
    json_t *doc;   /* owned; defaults filled in */
    json_t *items; /* borrowed from doc */
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

        /* an item with its own request sends its body, not the template */
        const json_t *body = json_object_get(item, "body");
        long input =
            body ? shoal_oaibatch_body_tokens(body) : string_tokens(json_object_get(item, "input"));

        long id = string_tokens(json_object_get(item, "id"));

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

const json_t *shoal_job_json(const shoal_job_t *job)
{
    return job->doc;
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
    const json_t *v = json_object_get(job->doc, key);

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
