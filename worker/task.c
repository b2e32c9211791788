/*
 * Task parsing, rendering and row building (see task.h).
 */
#include "worker/task.h"

#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include "common/job.h"
#include "worker/provider.h"

static double unix_now(void)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (double)tv.tv_sec + (double)tv.tv_usec / 1e6;
}

shoal_task_t *shoal_task_parse(const void *value, size_t len, const shoal_models_t *models,
                               char *errbuf, size_t errlen)
{
    json_error_t jerr;
    shoal_task_t *t = calloc(1, sizeof(*t));
    if (!t) {
        shoal_err_set(errbuf, errlen, SHOAL_ERR_NOMEM, "out of memory");
        return NULL;
    }
    t->doc = json_loadb(value, len, 0, &jerr);
    if (!json_is_object(t->doc)) {
        shoal_err_set(errbuf, errlen, SHOAL_ERR_INVALID, "task is not a JSON object: %s",
                      t->doc ? "wrong type" : jerr.text);
        goto fail;
    }
    json_t *d = t->doc;
    t->task_id = json_string_value(json_object_get(d, "task_id"));
    t->job_id = json_string_value(json_object_get(d, "job_id"));
    const char *tmpl = json_string_value(json_object_get(d, "prompt_template"));
    const char *alias = json_string_value(json_object_get(d, "model"));
    json_t *items = json_object_get(d, "items");
    if (!t->task_id || !t->job_id || !tmpl || !alias || !json_is_array(items) ||
        !json_is_integer(json_object_get(d, "chunk"))) {
        shoal_err_set(errbuf, errlen, SHOAL_ERR_INVALID,
                      "task lacks task_id, job_id, chunk, model, prompt_template or items");
        goto fail;
    }
    t->chunk = (long)json_integer_value(json_object_get(d, "chunk"));
    json_t *ma = json_object_get(d, "max_attempts");
    t->max_attempts = json_is_integer(ma) ? (long)json_integer_value(ma) : 3;
    if (t->max_attempts < 1)
        t->max_attempts = 1;
    json_t *to = json_object_get(d, "timeout_ms");
    t->timeout_ms = json_is_integer(to) ? (long)json_integer_value(to) : 60000;
    const char *fmt = json_string_value(json_object_get(json_object_get(d, "output"), "format"));
    t->want_json = fmt && !strcmp(fmt, "json");
    if (!(t->model = shoal_models_find(models, alias))) {
        shoal_err_set(errbuf, errlen, SHOAL_ERR_INVALID,
                      "model \"%s\" is not in this worker's models file", alias);
        goto fail;
    }
    size_t plen;
    char *prompt = shoal_job_render(tmpl, items, &plen);
    if (!prompt) {
        shoal_err_set(errbuf, errlen, SHOAL_ERR_INVALID, "could not render the prompt");
        goto fail;
    }
    t->request = shoal_provider_request(t->model, json_string_value(json_object_get(d, "system")),
                                        prompt, t->want_json, &t->request_len);
    free(prompt);
    if (!t->request) {
        shoal_err_set(errbuf, errlen, SHOAL_ERR_NOMEM, "out of memory");
        goto fail;
    }
    return t;
fail:
    shoal_task_destroy(t);
    return NULL;
}

void shoal_task_destroy(shoal_task_t *t)
{
    if (!t)
        return;
    json_decref(t->doc);
    free(t->request);
    free(t->output);
    free(t->refs);
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
    if (row && m != t->model)
        json_object_set_new(row, "fallback_from", json_string(t->model->alias));
    return row;
}

json_t *shoal_task_result_row(const shoal_task_t *t, const shoal_model_t *served,
                              const char *worker_id)
{
    const shoal_model_t *m = served ? served : t->model;
    json_t *row = json_pack(
        "{s:s, s:s, s:I, s:s, s:s, s:I, s:I, s:s, s:i}", "task_id", t->task_id, "job_id", t->job_id,
        "chunk", (json_int_t)t->chunk, "status", t->state == SHOAL_TASK_DONE ? "done" : "failed",
        "model", m->alias, "tokens_in", (json_int_t)t->tokens_in, "tokens_out",
        (json_int_t)t->tokens_out, "worker_id", worker_id, "attempts", t->attempts);
    if (!row)
        return NULL;
    if (m != t->model)
        json_object_set_new(row, "model_requested", json_string(t->model->alias));
    if (t->state == SHOAL_TASK_DONE)
        json_object_set_new(row, "output", json_string(t->output ? t->output : ""));
    else
        json_object_set_new(row, "error", json_string(t->error));
    return row;
}
