/*
 * Job estimates (see estimate.h for every assumption).
 */
#include "common/estimate.h"

#include <limits.h>
#include <string.h>

static long add_sat(long a, long b)
{
    return b > 0 && a > LONG_MAX - b ? LONG_MAX : a + b;
}

/* Seconds to pass amount units through a per-minute limit (0: no limit). */
static double per_minute(double amount, long limit)
{
    return limit > 0 ? amount * 60.0 / (double)limit : 0;
}

static void one_model(const shoal_job_t *job, const shoal_model_t *m, shoal_estimate_t *e,
                      shoal_estimate_model_t *r)
{
    long in = e->tokens_in, reserved;
    long slots = e->inflight_per_worker;
    double t;

    memset(r, 0, sizeof(*r));
    r->model = m;
    r->output_cap = m->max_output_tokens > 0 ? m->max_output_tokens : SHOAL_ESTIMATE_OUTPUT_CAP;
    for (size_t k = 0; k < e->chunks; k++) {
        long ck = shoal_job_chunk_est_tokens(job, k);
        shoal_usage_t u = {.input = ck, .output = ck < r->output_cap ? ck : r->output_cap};
        r->tokens_out = add_sat(r->tokens_out, u.output);
        r->cost_usd += shoal_model_cost(m, &u);
        u.output = r->output_cap;
        r->tokens_out_max = add_sat(r->tokens_out_max, u.output);
        r->cost_max_usd += shoal_model_cost(m, &u);
    }
    reserved = add_sat(in, r->tokens_out_max);

    /* the slowest limit sets the pace; concurrency first so a tie names it */
    if (m->max_concurrency > 0 && m->max_concurrency < slots)
        slots = m->max_concurrency;
    slots = slots > LONG_MAX / e->workers ? LONG_MAX : slots * e->workers;
    r->bound = "concurrency";
    r->duration_s =
        e->calls ? (double)((e->calls + (size_t)slots - 1) / (size_t)slots) * e->call_s : 0;
    if ((t = per_minute((double)e->calls, m->rpm)) > r->duration_s) {
        r->duration_s = t;
        r->bound = "rpm";
    }
    if ((t = per_minute((double)reserved, m->tpm)) > r->duration_s) {
        r->duration_s = t;
        r->bound = "tpm";
    }
    if ((t = per_minute((double)in, m->input_tpm)) > r->duration_s) {
        r->duration_s = t;
        r->bound = "input_tpm";
    }
    if ((t = per_minute((double)r->tokens_out, m->output_tpm)) > r->duration_s) {
        r->duration_s = t;
        r->bound = "output_tpm";
    }
}

shoal_err_t shoal_estimate_job(const shoal_job_t *job, const shoal_models_t *models,
                               const shoal_estimate_conf_t *conf, shoal_estimate_t *out,
                               char *errbuf, size_t errlen)
{
    const json_t *fallbacks = shoal_job_field(job, "fallback_models");
    const char *aliases[SHOAL_ESTIMATE_MAX_MODELS];
    size_t n = 0;

    memset(out, 0, sizeof(*out));
    out->workers = conf && conf->workers > 0 ? conf->workers : SHOAL_ESTIMATE_WORKERS;
    out->inflight_per_worker =
        conf && conf->inflight_per_worker > 0 ? conf->inflight_per_worker : SHOAL_ESTIMATE_INFLIGHT;
    out->call_s = conf && conf->call_s > 0 ? conf->call_s : SHOAL_ESTIMATE_CALL_S;
    out->chunks = out->calls = shoal_job_n_chunks(job);
    out->tokens_in = shoal_job_est_tokens(job);

    aliases[n++] = shoal_job_model(job);
    for (size_t i = 0; i < json_array_size(fallbacks) && n < SHOAL_ESTIMATE_MAX_MODELS; i++)
        aliases[n++] = json_string_value(json_array_get(fallbacks, i));
    for (size_t i = 0; i < n; i++) {
        const shoal_model_t *m =
            models && aliases[i] ? shoal_models_find(models, aliases[i]) : NULL;

        if (!m)
            return shoal_err_set(errbuf, errlen, SHOAL_ERR_INVALID,
                                 "model \"%s\" is not in the models file",
                                 aliases[i] ? aliases[i] : "");
        one_model(job, m, out, &out->models[i]);
    }
    out->n_models = n;
    return SHOAL_OK;
}

json_t *shoal_estimate_json(const shoal_estimate_t *e)
{
    json_t *models = json_array(), *doc;

    for (size_t i = 0; models && i < e->n_models; i++) {
        const shoal_estimate_model_t *r = &e->models[i];

        if (json_array_append_new(
                models,
                json_pack("{s:s, s:s, s:I, s:I, s:I, s:f, s:f, s:f, s:s}", "alias", r->model->alias,
                          "model", r->model->model, "output_cap", (json_int_t)r->output_cap,
                          "tokens_out", (json_int_t)r->tokens_out, "tokens_out_max",
                          (json_int_t)r->tokens_out_max, "cost_usd", r->cost_usd, "cost_max_usd",
                          r->cost_max_usd, "duration_s", r->duration_s, "bound", r->bound))) {
            json_decref(models);
            return NULL;
        }
    }
    if (!models)
        return NULL;
    /* "o" hands models over even when packing fails */
    doc = json_pack("{s:I, s:I, s:I, s:{s:I, s:I, s:f, s:s}, s:o}", "chunks", (json_int_t)e->chunks,
                    "calls", (json_int_t)e->calls, "tokens_in", (json_int_t)e->tokens_in,
                    "assumptions", "workers", (json_int_t)e->workers, "inflight_per_worker",
                    (json_int_t)e->inflight_per_worker, "call_s", e->call_s, "output",
                    "as many tokens as the prompt, up to the model's output cap", "models", models);
    return doc;
}
