/*
 * Task parsing, rendering and row building (see task.h).
 */
#include "worker/task.h"

#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include "common/itembatch.h"
#include "common/jsonschema.h"
#include "common/pgrow.h"
#include "common/log.h"
#include "common/render.h"
#include "common/taskmsg.h"
#include "worker/itemreq.h"
#include "worker/provider.h"

static double unix_now(void)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (double)tv.tv_sec + (double)tv.tv_usec / 1e6;
}

/* A new object holding doc's values for the keys present (shared, so the
 * strings keep their addresses); NULL when out of memory. */
static json_t *fields_of(const json_t *doc, const char *const *keys, size_t n)
{
    json_t *out = json_object();
    for (size_t i = 0; out && i < n; i++) {
        json_t *v = json_object_get(doc, keys[i]);
        if (v && json_object_set(out, keys[i], v) != 0) {
            json_decref(out);
            out = NULL;
        }
    }
    return out;
}

/* Keeps the message as text and only the fields still read from doc (see
 * task.h); out of memory, the task keeps its whole doc instead. */
static void slim(shoal_task_t *t, const void *value, size_t len)
{
    static const char *const keep[] = {"task_id", "job_id",          "model",
                                       "system",  "fallback_models", "output"};
    char *raw = malloc(len ? len : 1);
    json_t *small = fields_of(t->doc, keep, sizeof(keep) / sizeof(keep[0]));
    if (!raw || !small) {
        free(raw);
        json_decref(small);
        return;
    }
    memcpy(raw, value, len);
    t->message = raw;
    t->message_len = len;
    json_decref(t->doc);
    t->doc = small;
}

/* FAILED: doc becomes the whole message again, for the dead-letter copy;
 * the fields doc held keep their values (and addresses) and their places. */
static void restore_message(shoal_task_t *t)
{
    json_t *full = json_loadb(t->message, t->message_len, JSON_DECODE_ANY, NULL);
    const char *k;
    json_t *v;
    if (!json_is_object(full)) {
        json_decref(full);
        shoal_log_warn("task",
                       "out of memory restoring a failed task's message job_id=%s "
                       "task_id=%s",
                       t->job_id, t->task_id);
        return;
    }
    json_object_foreach(t->doc, k, v)
    {
        if (json_object_set(full, k, v) != 0) {
            json_decref(full);
            return;
        }
    }
    json_decref(t->doc);
    t->doc = full;
}

shoal_task_t *shoal_task_parse(const void *value, size_t len, const shoal_models_t *models,
                               char *errbuf, size_t errlen)
{
    shoal_taskmsg_t m;
    shoal_task_t *t = calloc(1, sizeof(*t));
    if (!t) {
        shoal_err_set(errbuf, errlen, SHOAL_ERR_NOMEM, "out of memory");
        return NULL;
    }
    if (!(t->doc = shoal_taskmsg_parse(value, len, &m, errbuf, errlen)))
        goto fail;
    /* Batch mode: one answer per item (worker/batchtask.h); an item with
     * its own request is always a task of its own, answered as it asks. */
    t->batch = strcmp(m.mode, "batch") == 0 && !m.body;
    t->split_level = m.split_level;
    if (t->batch)
        t->items = json_incref((json_t *)m.items);
    t->task_id = m.task_id;
    t->job_id = m.job_id;
    t->chunk = m.chunk;
    t->max_attempts = m.max_attempts;
    t->timeout_ms = m.timeout_ms;
    t->want_json = strcmp(m.output_format, "json") == 0;
    t->output_schema = m.output_schema;
    t->fallback_models = m.fallback_models;
    t->priority = m.priority;
    t->est_tokens = m.est_tokens;
    t->version = m.version;
    t->deadline_s = m.deadline_s;
    t->deadline_unix = m.deadline_unix;
    t->fail_truncated = strcmp(m.on_truncated, "fail") == 0;
    if (t->output_schema && !(t->schema = shoal_jsonschema_new(t->output_schema, errbuf, errlen)))
        goto fail; /* intake refuses such jobs; a message from elsewhere still cannot run */
    if (!(t->model = shoal_models_find(models, m.model))) {
        char q[SHOAL_JOBCHECK_QUOTE_LEN];
        shoal_err_set(errbuf, errlen, SHOAL_ERR_INVALID,
                      "task.model: %s is not in this worker's models file",
                      shoal_jobcheck_quote(q, m.model, strlen(m.model)));
        goto fail;
    }
    t->requested = t->model;
    t->system = m.system;
    /* an item with its own request is sent as it is: nothing to render */
    if (m.body)
        t->body = json_incref((json_t *)m.body);
    if (!(t->prompt =
              m.body ? strdup("") : shoal_render_prompt(m.prompt_template, m.items, NULL))) {
        /* the items are well formed (parsed above): only memory or the
         * output cap can stop rendering */
        shoal_err_set(errbuf, errlen, SHOAL_ERR_INVALID,
                      "could not render the prompt: out of memory or over %zu bytes",
                      (size_t)SHOAL_RENDER_MAX);
        goto fail;
    }
    if (t->batch) {
        char *asked = shoal_itembatch_prompt(t->prompt, m.items, NULL);
        free(t->prompt);
        if (!(t->prompt = asked)) {
            shoal_err_set(errbuf, errlen, SHOAL_ERR_NOMEM, "out of memory");
            goto fail;
        }
    }
    slim(t, value, len);
    if (shoal_task_build_request(t) != SHOAL_OK) {
        shoal_err_set(errbuf, errlen, SHOAL_ERR_NOMEM, "out of memory");
        goto fail;
    }
    return t;
fail:
    shoal_task_destroy(t);
    return NULL;
}

shoal_err_t shoal_task_build_request(shoal_task_t *t)
{
    free(t->request);
    t->request = t->body ? shoal_itemreq_build(t->model, t->body, &t->request_len)
                         : shoal_provider_request(t->model, t->system, t->prompt,
                                                  t->want_json || t->batch, &t->request_len);
    return t->request ? SHOAL_OK : SHOAL_ERR_NOMEM;
}

shoal_err_t shoal_task_check_output(const shoal_task_t *t, const char *content, char *errbuf,
                                    size_t errlen)
{
    if (!t->want_json && !t->schema)
        return SHOAL_OK;
    json_error_t jerr;
    json_t *j = json_loads(content, JSON_DECODE_ANY, &jerr);
    if (!j)
        return shoal_err_set(errbuf, errlen, SHOAL_ERR_INVALID, "output is not valid JSON: %s",
                             jerr.text);
    char why[400];
    shoal_err_t e =
        t->schema ? shoal_jsonschema_validate(t->schema, j, why, sizeof(why)) : SHOAL_OK;
    json_decref(j);
    if (e == SHOAL_ERR_INVALID)
        return shoal_err_set(errbuf, errlen, e, "output does not match the schema: %s", why);
    return e == SHOAL_OK ? SHOAL_OK : shoal_err_set(errbuf, errlen, e, "%s", why);
}

shoal_err_t shoal_task_begin_repair(shoal_task_t *t, const char *bad_output, const char *problem)
{
    static const char tail[] = "\n\nReply again with only the corrected answer.";
    /* a request of the user's own is not rewritten, nor a batch call, whose
     * items are asked again in a sub-task or a plain retry instead */
    if (t->body || t->batch)
        return SHOAL_ERR_INVALID;
    size_t n = strlen(t->prompt) + strlen(bad_output) + strlen(problem) + sizeof(tail) + 128;
    char *prompt = malloc(n);
    if (!prompt)
        return SHOAL_ERR_NOMEM;
    snprintf(prompt, n, "%s\n\nYour previous answer was:\n%s\n\nIt is not valid: %s%s", t->prompt,
             bad_output, problem, tail);
    size_t len;
    char *req = shoal_provider_request(t->model, t->system, prompt, t->want_json, &len);
    free(prompt);
    if (!req)
        return SHOAL_ERR_NOMEM;
    if (!t->saved_request) {
        t->saved_request = t->request;
        t->saved_len = t->request_len;
    } else {
        free(t->request);
    }
    t->request = req;
    t->request_len = len;
    t->repairing = 1;
    t->repairs++;
    return SHOAL_OK;
}

void shoal_task_end_repair(shoal_task_t *t)
{
    if (t->saved_request) {
        free(t->request);
        t->request = t->saved_request;
        t->request_len = t->saved_len;
        t->saved_request = NULL;
    }
    t->repairing = 0;
}

const char *shoal_task_state_name(shoal_task_state_t s)
{
    static const char *const names[] = {"taken",     "checking", "waiting",    "reserving",
                                        "in_flight", "backoff",  "validating", "repairing",
                                        "done",      "failed"};
    return (unsigned)s < sizeof(names) / sizeof(names[0]) ? names[s] : "unknown";
}

/* A finished task waits for its result to be written, as long again as it
 * was in flight, so a worker holds about as many finished tasks as running
 * ones. Nothing reads what it was asked after this: the prompt and the
 * requests go, and a done task's doc shrinks to the fields still named
 * (task_id, job_id, model; the strings keep their addresses). A failed task
 * gets its whole message back in doc for the dead-letter topic. */
static void shed(shoal_task_t *t, shoal_task_state_t s)
{
    free(t->prompt);
    t->prompt = NULL;
    json_decref(t->body);
    t->body = NULL;
    free(t->request);
    t->request = NULL;
    t->request_len = 0;
    free(t->saved_request);
    t->saved_request = NULL;
    t->saved_len = 0;
    shoal_jsonschema_destroy(t->schema);
    t->schema = NULL;
    json_decref(t->items);
    t->items = NULL;
    if (s == SHOAL_TASK_FAILED && t->message)
        restore_message(t);
    free(t->message);
    t->message = NULL;
    t->message_len = 0;
    if (s != SHOAL_TASK_DONE || !t->doc)
        return;
    /* doc holds what slim kept; what a finished task no longer reads goes,
     * in place (a copy of the rest cost a new object per task) */
    static const char *const drop[] = {"system", "fallback_models", "output"};
    for (size_t i = 0; i < sizeof(drop) / sizeof(drop[0]); i++)
        json_object_del(t->doc, drop[i]);
    t->system = NULL;
    t->output_schema = NULL;
    t->fallback_models = NULL;
}

void shoal_task_set_state(shoal_task_t *t, shoal_task_state_t s)
{
    shoal_log_debug("task", "task state job_id=%s task_id=%s from=%s to=%s", t->job_id, t->task_id,
                    shoal_task_state_name(t->state), shoal_task_state_name(s));
    t->state = s;
    if (s == SHOAL_TASK_DONE || s == SHOAL_TASK_FAILED)
        shed(t, s);
}

void shoal_task_destroy(shoal_task_t *t)
{
    if (!t)
        return;
    json_decref(t->doc);
    free(t->message);
    free(t->prompt);
    json_decref(t->body);
    free(t->request);
    free(t->saved_request);
    shoal_jsonschema_destroy(t->schema);
    json_decref(t->items);
    free(t->item_rows);
    free(t->output);
    free(t->refs);
    free(t->reservation);
    free(t);
}

shoal_err_t shoal_task_add_ref(shoal_task_t *t, const shoal_offset_ref_t *ref)
{
    if (t->nrefs == t->caprefs) {
        int ncap = t->caprefs ? t->caprefs * 2 : 2;
        shoal_offset_ref_t *n = realloc(t->refs, (size_t)ncap * sizeof(*n));
        if (!n)
            return SHOAL_ERR_NOMEM;
        t->refs = n;
        t->caprefs = ncap;
    }
    t->refs[t->nrefs++] = *ref;
    return SHOAL_OK;
}

/* The model a task names, for a task that never got as far as finding it. */
static const char *model_named(const shoal_task_t *t)
{
    const char *alias = json_string_value(json_object_get(t->doc, "model"));
    return alias ? alias : "";
}

/* The task's own model: the one its message names, before any fallback. */
static const shoal_model_t *own_model(const shoal_task_t *t)
{
    return t->requested ? t->requested : t->model;
}

json_t *shoal_task_attempt_row(const shoal_task_t *t, const char *attempt_id, const char *worker_id,
                               const shoal_http_reply_t *reply, const shoal_task_call_t *call)
{
    double now = unix_now();
    const shoal_model_t *m = call->model ? call->model : t->model;
    const shoal_usage_t *u = &call->usage;
    json_t *row = json_pack(
        "{s:s, s:s, s:s, s:i, s:s, s:s, s:i, s:s, s:s, s:f, s:I, s:I, s:I, s:I, s:f, s:f, s:f}",
        "attempt_id", attempt_id, "task_id", t->task_id, "job_id", t->job_id, "attempt",
        t->attempts, "model", m->alias, "worker_id", worker_id, "http_status", (int)reply->status,
        "outcome", call->outcome, "outcome_kind", shoal_outcome_name(call->kind), "latency_ms",
        reply->latency_ms, "tokens_in", (json_int_t)u->input, "tokens_out", (json_int_t)u->output,
        "tokens_cached", (json_int_t)u->cached, "tokens_cache_write", (json_int_t)u->cache_write,
        "cost_usd", shoal_model_cost(m, u), "started_at", reply->started_unix, "finished_at", now);
    /* Time from taking the message to this call going out: waiting for a
     * slot, the database check and any backoff before this attempt. */
    if (row && t->received_unix > 0 && reply->started_unix >= t->received_unix)
        json_object_set_new(row, "queue_ms",
                            json_real((reply->started_unix - t->received_unix) * 1000.0));
    if (row && call->error && *call->error)
        json_object_set_new(row, "error", json_string(call->error));
    if (row && reply->retry_after_ms >= 0)
        json_object_set_new(row, "retry_after_ms", json_integer(reply->retry_after_ms));
    if (row && m != own_model(t))
        json_object_set_new(row, "fallback_from", json_string(own_model(t)->alias));
    return row;
}

json_t *shoal_task_result_row(const shoal_task_t *t, const shoal_model_t *served,
                              const char *worker_id)
{
    const shoal_model_t *m = served ? served : t->model;
    json_t *row = json_pack(
        "{s:s, s:s, s:I, s:s, s:s, s:I, s:I, s:s, s:i}", "task_id", t->task_id, "job_id", t->job_id,
        "chunk", (json_int_t)t->chunk, "status", t->state == SHOAL_TASK_DONE ? "done" : "failed",
        "model", m ? m->alias : model_named(t), "tokens_in", (json_int_t)t->tokens_in, "tokens_out",
        (json_int_t)t->tokens_out, "worker_id", worker_id, "attempts", t->attempts);
    if (!row)
        return NULL;
    if (m && own_model(t) && m != own_model(t))
        json_object_set_new(row, "model_requested", json_string(own_model(t)->alias));
    if (t->state == SHOAL_TASK_DONE)
        json_object_set_new(row, "output", json_string(t->output ? t->output : ""));
    else
        json_object_set_new(row, "error", json_string(t->error));
    return row;
}

/* Times in text rows: epoch seconds to the microsecond the database keeps,
 * durations in ms to the nanosecond (curl measures microseconds). */
#define TIME_DECIMALS 6

const char *const shoal_task_attempt_fields[SHOAL_TASK_ATTEMPT_FIELDS] = {
    "attempt_id",         "task_id",     "job_id",         "attempt",       "model",
    "worker_id",          "http_status", "outcome",        "outcome_kind",  "error",
    "latency_ms",         "queue_ms",    "tokens_in",      "tokens_out",    "tokens_cached",
    "tokens_cache_write", "cost_usd",    "retry_after_ms", "fallback_from", "started_at",
    "finished_at"};

const char *const shoal_task_result_fields[SHOAL_TASK_RESULT_FIELDS] = {
    "task_id",         "job_id",    "chunk",      "status",    "output", "model",
    "model_requested", "tokens_in", "tokens_out", "worker_id", "error",  "attempts"};

char *shoal_task_attempt_text(const shoal_task_t *t, const char *attempt_id, const char *worker_id,
                              const shoal_http_reply_t *reply, const shoal_task_call_t *call,
                              size_t *len)
{
    double now = unix_now();
    const shoal_model_t *m = call->model ? call->model : t->model;
    const shoal_usage_t *u = &call->usage;
    shoal_pgrow_t r;
    shoal_pgrow_init(&r, SHOAL_TASK_ROW_MAX);
    /* shoal_task_attempt_fields, in order */
    shoal_pgrow_open(&r);
    shoal_pgrow_str(&r, attempt_id);
    shoal_pgrow_str(&r, t->task_id);
    shoal_pgrow_str(&r, t->job_id);
    shoal_pgrow_int(&r, t->attempts);
    shoal_pgrow_str(&r, m->alias);
    shoal_pgrow_str(&r, worker_id);
    shoal_pgrow_int(&r, (int)reply->status);
    shoal_pgrow_str(&r, call->outcome);
    shoal_pgrow_str(&r, shoal_outcome_name(call->kind));
    shoal_pgrow_str(&r, call->error && *call->error ? call->error : NULL);
    shoal_pgrow_fixed(&r, reply->latency_ms, TIME_DECIMALS);
    /* Time from taking the message to this call going out: waiting for a
     * slot, the database check and any backoff before this attempt. */
    if (t->received_unix > 0 && reply->started_unix >= t->received_unix)
        shoal_pgrow_fixed(&r, (reply->started_unix - t->received_unix) * 1000.0, TIME_DECIMALS);
    else
        shoal_pgrow_null(&r);
    shoal_pgrow_int(&r, u->input);
    shoal_pgrow_int(&r, u->output);
    shoal_pgrow_int(&r, u->cached);
    shoal_pgrow_int(&r, u->cache_write);
    shoal_pgrow_real(&r, shoal_model_cost(m, u));
    if (reply->retry_after_ms >= 0)
        shoal_pgrow_int(&r, reply->retry_after_ms);
    else
        shoal_pgrow_null(&r);
    shoal_pgrow_str(&r, m != own_model(t) ? own_model(t)->alias : NULL);
    shoal_pgrow_fixed(&r, reply->started_unix, TIME_DECIMALS);
    shoal_pgrow_fixed(&r, now, TIME_DECIMALS);
    shoal_pgrow_close(&r);
    return shoal_pgrow_detach(&r, len);
}

char *shoal_task_result_text(const shoal_task_t *t, const shoal_model_t *served,
                             const char *worker_id, size_t *len)
{
    const shoal_model_t *m = served ? served : t->model;
    int done = t->state == SHOAL_TASK_DONE;
    shoal_pgrow_t r;
    shoal_pgrow_init(&r, SHOAL_TASK_ROW_MAX);
    /* shoal_task_result_fields, in order */
    shoal_pgrow_open(&r);
    shoal_pgrow_str(&r, t->task_id);
    shoal_pgrow_str(&r, t->job_id);
    shoal_pgrow_int(&r, t->chunk);
    shoal_pgrow_str(&r, done ? "done" : "failed");
    shoal_pgrow_str(&r, done ? (t->output ? t->output : "") : NULL);
    shoal_pgrow_str(&r, m ? m->alias : model_named(t));
    shoal_pgrow_str(&r, m && own_model(t) && m != own_model(t) ? own_model(t)->alias : NULL);
    shoal_pgrow_int(&r, t->tokens_in);
    shoal_pgrow_int(&r, t->tokens_out);
    shoal_pgrow_str(&r, worker_id);
    shoal_pgrow_str(&r, done ? NULL : t->error);
    shoal_pgrow_int(&r, t->attempts);
    shoal_pgrow_close(&r);
    return shoal_pgrow_detach(&r, len);
}
