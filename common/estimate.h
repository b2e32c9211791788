/*
 * A job's estimate before any model is called: chunks, calls, tokens in and
 * out, cost and the expected duration under the models' rate limits, for the
 * job's model and each of its fallbacks as if the whole job ran on it. The
 * scheduler stores the first model's figures on the job; `shoal estimate`
 * prints them all. Same inputs, same numbers: nothing is measured.
 *
 * Assumptions, stated once here:
 * - calls: one per chunk. Retries, repairs and fallbacks are not counted.
 * - tokens in: the chunks' prompt estimates (common/tokens.h, common/job.h).
 * - tokens out: each call produces as many tokens as its prompt, capped at
 *   the model's max_output_tokens (SHOAL_ESTIMATE_OUTPUT_CAP when the model
 *   sets none); tokens_out_max and cost_max_usd assume every call uses its
 *   whole cap, the most the job can cost when nothing is retried.
 * - duration: the slowest of rpm (calls / rpm), tpm (what the worker
 *   reserves per call, prompt plus output cap, over tpm), Anthropic's
 *   input_tpm and output_tpm, and concurrency (rounds of call_s seconds with
 *   workers x calls in flight per worker). Rate limits are per API key, so
 *   they hold for the whole fleet; concurrency grows with workers. Steady
 *   state: no 429s, no start-up. A model with no limits and no concurrency
 *   cap is bound by concurrency alone.
 * Pure: no I/O, no allocation except shoal_estimate_json(); any thread.
 */
#ifndef SHOAL_COMMON_ESTIMATE_H
#define SHOAL_COMMON_ESTIMATE_H

#include <stddef.h>

#include <jansson.h>

#include "common/err.h"
#include "common/job.h"
#include "common/models.h"

/* The job's model and up to five fallback models (job.schema.json). */
#define SHOAL_ESTIMATE_MAX_MODELS 6

/* Output tokens a call may use when the model sets no max_output_tokens:
 * what the worker reserves against tpm for such a call. */
#define SHOAL_ESTIMATE_OUTPUT_CAP 1024

/* Defaults of shoal_estimate_conf_t fields left at 0. */
#define SHOAL_ESTIMATE_WORKERS 1
#define SHOAL_ESTIMATE_INFLIGHT 256 /* the worker's --max-inflight default */
#define SHOAL_ESTIMATE_CALL_S 10.0

typedef struct {
    long workers;             /* worker processes; <= 0: SHOAL_ESTIMATE_WORKERS */
    long inflight_per_worker; /* a worker's --max-inflight; <= 0: SHOAL_ESTIMATE_INFLIGHT */
    double call_s;            /* seconds one call takes; <= 0: SHOAL_ESTIMATE_CALL_S */
} shoal_estimate_conf_t;

/* The job run on one model. */
typedef struct {
    const shoal_model_t *model; /* borrowed from the models */
    long output_cap;            /* output tokens a call may use */
    long tokens_out;            /* expected output tokens */
    long tokens_out_max;        /* output_cap x calls */
    double cost_usd;            /* tokens in and tokens_out at the model's prices */
    double cost_max_usd;        /* tokens in and tokens_out_max */
    double duration_s;          /* expected wall-clock time */
    const char *bound;          /* what sets duration_s: "rpm", "tpm", "input_tpm",
                                   "output_tpm" or "concurrency" (static string) */
} shoal_estimate_model_t;

typedef struct {
    size_t chunks;
    size_t calls;
    long tokens_in;
    long workers, inflight_per_worker; /* the assumptions used, defaults filled in */
    double call_s;
    size_t n_models;
    shoal_estimate_model_t models[SHOAL_ESTIMATE_MAX_MODELS]; /* [0]: the job's model */
} shoal_estimate_t;

/* Estimates job on its model and fallbacks from models. conf may be NULL
 * (all defaults). SHOAL_ERR_INVALID naming the alias when a model is not in
 * models (or models is NULL). out borrows from job and models. */
shoal_err_t shoal_estimate_job(const shoal_job_t *job, const shoal_models_t *models,
                               const shoal_estimate_conf_t *conf, shoal_estimate_t *out,
                               char *errbuf, size_t errlen);

/* The estimate as a JSON object (the shape `shoal estimate --json` prints):
 * chunks, calls, tokens_in, assumptions {workers, inflight_per_worker,
 * call_s, output}, models [{alias, model, tokens_out, tokens_out_max,
 * cost_usd, cost_max_usd, duration_s, bound}]. Caller owns the reference;
 * NULL when out of memory. */
json_t *shoal_estimate_json(const shoal_estimate_t *e);

#endif
