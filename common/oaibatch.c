/*
 * OpenAI Batch files (see oaibatch.h).
 *
 * The conversion checks what it can name by line, because a user fixing a
 * 50,000-line file needs the line: the line's own shape, its custom_id
 * (unique, usable as an item id) and its model. What only the job schema
 * says (sizes, the number of items) is still checked when the job is parsed,
 * by path (items[N]), which is line order among the non-blank lines.
 */
#include "common/oaibatch.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/jobcheck.h"
#include "common/jsondesc.h"
#include "common/tokens.h"

/* The schema's items maxItems: a file with more lines cannot be one job. */
#define LINES_MAX 100000

/* Tokens a message costs beyond its text: role and framing. */
#define MESSAGE_OVERHEAD 4

const shoal_model_t *shoal_oaibatch_model(const shoal_models_t *models, const char *name)
{
    const shoal_model_t *m = shoal_models_find(models, name);

    for (size_t i = 0; !m && i < shoal_models_count(models); i++) {
        const shoal_model_t *c = shoal_models_at(models, i);

        if (c->model && strcmp(c->model, name) == 0)
            m = c;
    }
    return m;
}

static long text_tokens(const json_t *content)
{
    long n = 0;

    if (json_is_string(content))
        return shoal_tokens_estimate(json_string_value(content), json_string_length(content));
    for (size_t i = 0; i < json_array_size(content); i++) {
        const json_t *t = json_object_get(json_array_get(content, i), "text");

        if (json_is_string(t))
            n += shoal_tokens_estimate(json_string_value(t), json_string_length(t));
    }
    return n;
}

long shoal_oaibatch_body_tokens(const json_t *body)
{
    const json_t *msgs = json_object_get(body, "messages");
    long n = 0;

    for (size_t i = 0; i < json_array_size(msgs); i++)
        n += MESSAGE_OVERHEAD + text_tokens(json_object_get(json_array_get(msgs, i), "content"));
    return n;
}

/* ---- conversion ---- */

struct conv {
    char *errbuf;
    size_t errlen;
    size_t line;
};

static shoal_err_t line_fail(struct conv *c, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static shoal_err_t line_fail(struct conv *c, const char *fmt, ...)
{
    va_list ap;
    int n;

    if (!c->errbuf || !c->errlen)
        return SHOAL_ERR_INVALID;
    /* "line N: " and the message, straight into the caller's buffer */
    n = snprintf(c->errbuf, c->errlen, "line %zu: ", c->line);
    if (n >= 0 && (size_t)n < c->errlen) {
        va_start(ap, fmt);
        vsnprintf(c->errbuf + n, c->errlen - (size_t)n, fmt, ap);
        va_end(ap);
    }
    return SHOAL_ERR_INVALID;
}

static const char *quote(char out[SHOAL_JSONDESC_QUOTE_LEN], const json_t *s)
{
    return shoal_jsondesc_quote(out, json_string_value(s), json_string_length(s));
}

/* A non-empty string field of obj, or an error naming it. */
static shoal_err_t need_string(struct conv *c, const json_t *obj, const char *path, const char *key,
                               const json_t **out)
{
    const json_t *v = json_object_get(obj, key);

    if (!v)
        return line_fail(c, "missing %s%s", path, key);
    if (!json_is_string(v) || json_string_length(v) == 0)
        return line_fail(c, "%s%s: expected a non-empty string, got %s", path, key,
                         shoal_jsondesc_type(v));
    *out = v;
    return SHOAL_OK;
}

static shoal_err_t check_messages(struct conv *c, const json_t *body)
{
    static const char *const roles[] = {"system", "developer", "user", "assistant", "tool", NULL};
    const json_t *msgs = json_object_get(body, "messages");
    char q[SHOAL_JSONDESC_QUOTE_LEN];

    if (!json_is_array(msgs) || json_array_size(msgs) == 0)
        return line_fail(c, "body.messages: expected a non-empty array, got %s",
                         msgs ? shoal_jsondesc_type(msgs) : "nothing");
    for (size_t i = 0; i < json_array_size(msgs); i++) {
        const json_t *m = json_array_get(msgs, i), *role = json_object_get(m, "role");
        const json_t *content = json_object_get(m, "content");
        int known = 0;

        if (!json_is_object(m))
            return line_fail(c, "body.messages[%zu]: expected an object, got %s", i,
                             shoal_jsondesc_type(m));
        for (size_t k = 0; json_is_string(role) && roles[k]; k++)
            known |= strcmp(json_string_value(role), roles[k]) == 0;
        if (!known)
            return line_fail(c,
                             "body.messages[%zu].role: expected system, developer, user, "
                             "assistant or tool, got %s",
                             i, json_is_string(role) ? quote(q, role) : "no role");
        if (content && !json_is_string(content) && !json_is_array(content) &&
            !json_is_null(content))
            return line_fail(c,
                             "body.messages[%zu].content: expected a string or an array of "
                             "parts, got %s",
                             i, shoal_jsondesc_type(content));
    }
    return SHOAL_OK;
}

/* One line: checks it and appends its item to items. seen maps custom_id to
 * the line it was first seen on. */
static shoal_err_t convert_line(struct conv *c, const char *text, size_t len,
                                const shoal_models_t *models, json_t *seen, json_t *items,
                                const char **first_alias)
{
    json_error_t e;
    json_t *doc = json_loadb(text, len, JSON_REJECT_DUPLICATES, &e), *item;
    const json_t *cid, *method, *url, *body, *model, *n, *prev;
    const shoal_model_t *m;
    char q[SHOAL_JSONDESC_QUOTE_LEN];
    shoal_err_t err;

    if (!doc) {
        if (json_error_code(&e) == json_error_out_of_memory)
            return shoal_err_set(c->errbuf, c->errlen, SHOAL_ERR_NOMEM, "out of memory");
        return line_fail(c, "not a JSON object: %s (column %d)", e.text, e.column);
    }
    if (!json_is_object(doc)) {
        err = line_fail(c, "expected a JSON object, got %s", shoal_jsondesc_type(doc));
        goto out;
    }
    if ((err = need_string(c, doc, "", "custom_id", &cid)) ||
        (err = need_string(c, doc, "", "method", &method)) ||
        (err = need_string(c, doc, "", "url", &url)))
        goto out;
    if (!shoal_job_id_valid(json_string_value(cid)) ||
        strlen(json_string_value(cid)) != json_string_length(cid)) {
        err = line_fail(c,
                        "custom_id %s: shoal uses it as the item id, which may only be 1 to 200 "
                        "letters, digits and . _ : -",
                        quote(q, cid));
        goto out;
    }
    if ((prev = json_object_get(seen, json_string_value(cid)))) {
        err = line_fail(c, "custom_id %s repeats line %lld", quote(q, cid),
                        (long long)json_integer_value(prev));
        goto out;
    }
    if (strcmp(json_string_value(method), "POST") != 0) {
        err = line_fail(c, "method %s: only \"POST\" is supported", quote(q, method));
        goto out;
    }
    if (strcmp(json_string_value(url), SHOAL_OAIBATCH_URL) != 0) {
        err = line_fail(c, "url %s: only \"%s\" is supported", quote(q, url), SHOAL_OAIBATCH_URL);
        goto out;
    }
    body = json_object_get(doc, "body");
    if (!json_is_object(body)) {
        err = line_fail(c, "body: expected an object, got %s",
                        body ? shoal_jsondesc_type(body) : "nothing");
        goto out;
    }
    if ((err = need_string(c, body, "body.", "model", &model)) || (err = check_messages(c, body)))
        goto out;
    n = json_object_get(body, "n");
    if (n && !(json_is_integer(n) && json_integer_value(n) == 1)) {
        err = line_fail(c, "body.n: only one choice per line is supported");
        goto out;
    }
    if (!(m = shoal_oaibatch_model(models, json_string_value(model)))) {
        char known[512];
        size_t o = 0;

        known[0] = '\0';
        for (size_t i = 0; i < shoal_models_count(models) && o < sizeof(known); i++)
            o += (size_t)snprintf(known + o, sizeof(known) - o, "%s%s", i ? ", " : "",
                                  shoal_models_at(models, i)->alias);
        err = line_fail(c,
                        "body.model %s is not in the models file, as an alias or a provider "
                        "model name (known: %s)",
                        quote(q, model), known);
        goto out;
    }
    if (!*first_alias)
        *first_alias = m->alias;
    item =
        json_pack("{s:O, s:s, s:s, s:O}", "id", cid, "input", "", "model", m->alias, "body", body);
    if (!item || json_array_append_new(items, item) ||
        json_object_set_new(seen, json_string_value(cid), json_integer((json_int_t)c->line))) {
        err = shoal_err_set(c->errbuf, c->errlen, SHOAL_ERR_NOMEM, "out of memory");
        goto out;
    }
    err = SHOAL_OK;
out:
    json_decref(doc);
    return err;
}

static int blank(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (s[i] != ' ' && s[i] != '\t' && s[i] != '\r')
            return 0;
    }
    return 1;
}

/* The job around the converted items: one item per task (max_items 1), the
 * first line's model as the job's model (every item names its own), and a
 * template that is never rendered for items with a body. */
static json_t *wrap(json_t *items, const char *alias, const shoal_oaibatch_opts_t *opts)
{
    json_t *job =
        json_pack("{s:s, s:s, s:s, s:{s:i}, s:s}", "tenant", opts->tenant, "model", alias,
                  "prompt_template", "{{input}}", "chunking", "max_items", 1, "merge", "jsonl");

    if (!job || json_object_set(job, "items", items) ||
        (opts->priority && json_object_set_new(job, "priority", json_string(opts->priority))) ||
        (opts->job_id && json_object_set_new(job, "job_id", json_string(opts->job_id)))) {
        json_decref(job);
        return NULL;
    }
    return job;
}

json_t *shoal_oaibatch_to_job(const char *buf, size_t len, const shoal_models_t *models,
                              const shoal_oaibatch_opts_t *opts, char *errbuf, size_t errlen)
{
    struct conv c = {errbuf, errlen, 0};
    json_t *seen = json_object(), *items = json_array(), *job = NULL;
    const char *alias = NULL;
    size_t pos = 0, n = 0;

    if (!seen || !items) {
        shoal_err_set(errbuf, errlen, SHOAL_ERR_NOMEM, "out of memory");
        goto out;
    }
    if (!opts || !opts->tenant || !*opts->tenant) {
        shoal_err_set(errbuf, errlen, SHOAL_ERR_INVALID, "a tenant is needed (--tenant)");
        goto out;
    }
    if (len >= 3 && memcmp(buf, "\xef\xbb\xbf", 3) == 0)
        pos = 3; /* editors on Windows add one; it is no part of the JSON */
    while (pos < len) {
        const char *nl = memchr(buf + pos, '\n', len - pos);
        size_t end = nl ? (size_t)(nl - buf) : len;

        c.line++;
        if (!blank(buf + pos, end - pos)) {
            if (++n > LINES_MAX) {
                line_fail(&c, "the file has more than %d requests, the most one job holds",
                          LINES_MAX);
                goto out;
            }
            if (convert_line(&c, buf + pos, end - pos, models, seen, items, &alias))
                goto out;
        }
        pos = end + 1;
    }
    if (n == 0) {
        shoal_err_set(errbuf, errlen, SHOAL_ERR_INVALID, "the file has no requests");
        goto out;
    }
    if (!(job = wrap(items, alias, opts)))
        shoal_err_set(errbuf, errlen, SHOAL_ERR_NOMEM, "out of memory");
out:
    json_decref(seen);
    json_decref(items);
    return job;
}

/* ---- output lines ---- */

/* 64-bit FNV-1a over the parts, each followed by a 0 byte so that ("ab", "c")
 * and ("a", "bc") differ. */
static uint64_t hash_parts(const char *a, const char *b, const char *salt)
{
    const char *parts[] = {a, b, salt};
    uint64_t h = 0xcbf29ce484222325ULL;

    for (size_t i = 0; i < 3; i++) {
        for (const unsigned char *p = (const unsigned char *)(parts[i] ? parts[i] : "");; p++) {
            h ^= *p;
            h *= 0x100000001b3ULL;
            if (!*p)
                break;
        }
    }
    return h;
}

/* prefix and 32 hex digits derived from the item, stable across reads. */
static void derived_id(char *out, size_t len, const char *prefix, const shoal_oaibatch_item_t *it)
{
    snprintf(out, len, "%s%016llx%016llx", prefix,
             (unsigned long long)hash_parts(it->job_id, it->custom_id, prefix),
             (unsigned long long)hash_parts(it->custom_id, it->job_id, prefix));
}

static json_t *completion(const shoal_oaibatch_item_t *it)
{
    char id[64];

    derived_id(id, sizeof(id), "chatcmpl-", it);
    return json_pack("{s:s, s:s, s:I, s:s, s:[{s:i, s:{s:s, s:s, s:n}, s:n, s:s}], "
                     "s:{s:I, s:I, s:I}}",
                     "id", id, "object", "chat.completion", "created", (json_int_t)it->created_unix,
                     "model", it->model ? it->model : "", "choices", "index", 0, "message", "role",
                     "assistant", "content", it->output, "refusal", "logprobs", "finish_reason",
                     "stop", "usage", "prompt_tokens", (json_int_t)it->tokens_in,
                     "completion_tokens", (json_int_t)it->tokens_out, "total_tokens",
                     (json_int_t)(it->tokens_in + it->tokens_out));
}

char *shoal_oaibatch_output_line(const shoal_oaibatch_item_t *it, size_t *len)
{
    char id[64], req[64];
    json_t *line;
    char *text;

    derived_id(id, sizeof(id), "batch_req_", it);
    if (it->output) {
        derived_id(req, sizeof(req), "req_", it);
        line = json_pack("{s:s, s:s, s:{s:i, s:s, s:o}, s:n}", "id", id, "custom_id", it->custom_id,
                         "response", "status_code", 200, "request_id", req, "body", completion(it),
                         "error");
    } else {
        line = json_pack("{s:s, s:s, s:n, s:{s:s, s:s}}", "id", id, "custom_id", it->custom_id,
                         "response", "error", "code", it->error_code ? it->error_code : "failed",
                         "message",
                         it->error_message ? it->error_message : "the request was not answered");
    }
    text = line ? json_dumps(line, JSON_COMPACT) : NULL;
    json_decref(line);
    if (text && len)
        *len = strlen(text);
    return text;
}
