/*
 * The worker's series (see wmetrics.h). Names and meanings are listed in the
 * README's Metrics section; a change here changes the dashboard
 * (deploy/grafana/shoal.json) too.
 */
#include "worker/wmetrics.h"

#include <stdlib.h>

#define NOUTCOMES (SHOAL_OUTCOME_MALFORMED + 1)
#define NSTATES (SHOAL_TASK_FAILED + 1)

/* Lane gauges, in the order of lane_gauges[] below. */
enum {
    G_IN_FLIGHT,
    G_WAITING,
    G_WINDOW,
    G_BUCKET_REQUESTS,
    G_BUCKET_TOKENS,
    G_RATE_REQUESTS,
    G_RATE_TOKENS,
    G_LIMIT_REQUESTS,
    G_LIMIT_TOKENS,
    G_LEARNED,
    G_WORKERS,
    G_HOLD,
    G_COOLDOWN,
    G_DOWN,
    NGAUGES
};

static const struct {
    const char *name, *help;
} lane_gauges[NGAUGES] = {
    {"shoal_worker_calls_in_flight", "Model calls running now, per model."},
    {"shoal_worker_lane_waiting_tasks", "Tasks waiting in the model's lane for capacity."},
    {"shoal_worker_lane_concurrency_window",
     "Calls the lane lets run at once (AIMD window: grows on success, shrinks on overload)."},
    {"shoal_worker_lane_bucket_requests",
     "Requests the lane's request bucket holds now; -1 when the lane has no request limit."},
    {"shoal_worker_lane_bucket_tokens",
     "Tokens the lane's token bucket holds now; -1 when the lane has no token limit."},
    {"shoal_worker_lane_requests_per_second",
     "Request rate the lane's bucket refills at (this worker's fleet share); 0 = no limit."},
    {"shoal_worker_lane_tokens_per_second",
     "Token rate the lane's bucket refills at (this worker's fleet share); 0 = no limit."},
    {"shoal_worker_fleet_limit_requests_per_second",
     "Fleet-wide request limit in force for the model (configured, from headers or learned); "
     "0 = none known."},
    {"shoal_worker_fleet_limit_tokens_per_second",
     "Fleet-wide token limit in force for the model; 0 = none known."},
    {"shoal_worker_fleet_limit_learned", "1 when the model's limit was learned from 429s."},
    {"shoal_worker_fleet_workers", "Live workers sharing the model's limit (last known)."},
    {"shoal_worker_lane_hold_seconds",
     "Time until the lane may start calls again after a Retry-After or fleet hold; 0 = none."},
    {"shoal_worker_lane_cooldown_seconds",
     "Time left of the lane's cooldown after repeated failures; 0 = none."},
    {"shoal_worker_lane_down_seconds", "How long the model has been failing without a success."},
};

/* Counters per model, in the order of model_counters[]. */
enum { C_TOKENS_IN, C_TOKENS_OUT, C_LIMITED, C_RETRIES, C_CONNECTS, NCOUNTERS };

static const struct {
    const char *name, *help;
} model_counters[NCOUNTERS] = {
    {"shoal_worker_input_tokens_total", "Prompt tokens the provider reported, per model."},
    {"shoal_worker_output_tokens_total", "Completion tokens the provider reported, per model."},
    {"shoal_worker_rate_limited_total", "Calls answered 429 (rate limited), per model."},
    {"shoal_worker_retries_total", "Tries scheduled again after a backoff, per model that failed."},
    {"shoal_worker_connections_opened_total",
     "Connections opened for the model's calls (each a TCP and, over https, a TLS handshake); "
     "calls reuse open ones."},
};

struct model_series {
    shoal_metrics_series_t *requests[NOUTCOMES];
    shoal_metrics_series_t *latency[NOUTCOMES];
    shoal_metrics_series_t *counter[NCOUNTERS];
    shoal_metrics_series_t *gauge[NGAUGES];
};

struct shoal_wmetrics {
    size_t nmodels;
    struct model_series *models;
    shoal_metrics_series_t *db_write;
    shoal_metrics_series_t *tasks[NSTATES];
};

static shoal_metrics_family_t *family(shoal_metrics_t *m, shoal_metrics_type_t type,
                                      const char *name, const char *help, const char *const *labels)
{
    const double *b = type == SHOAL_METRICS_HISTOGRAM ? shoal_metrics_latency_buckets : NULL;
    size_t nb = type == SHOAL_METRICS_HISTOGRAM ? shoal_metrics_latency_nbuckets : 0;
    return shoal_metrics_family(m, type, name, help, labels, b, nb);
}

shoal_wmetrics_t *shoal_wmetrics_new(shoal_metrics_t *m, const shoal_models_t *models)
{
    static const char *const by_model[] = {"model", NULL};
    static const char *const by_outcome[] = {"model", "outcome", NULL};
    static const char *const by_state[] = {"state", NULL};
    if (!m)
        return NULL;
    shoal_wmetrics_t *w = calloc(1, sizeof(*w));
    size_t n = shoal_models_count(models);
    if (!w || !(w->models = calloc(n ? n : 1, sizeof(*w->models)))) {
        free(w);
        return NULL;
    }
    w->nmodels = n;
    shoal_metrics_family_t *req =
        family(m, SHOAL_METRICS_COUNTER, "shoal_worker_requests_total",
               "Model calls that ended, by model and outcome (ok, truncated, rate_limited, "
               "overloaded, server_error, timeout, connection, permanent, malformed).",
               by_outcome);
    shoal_metrics_family_t *lat =
        family(m, SHOAL_METRICS_HISTOGRAM, "shoal_worker_call_duration_seconds",
               "Duration of model calls, by model and outcome.", by_outcome);
    shoal_metrics_family_t *c[NCOUNTERS], *g[NGAUGES];
    for (int i = 0; i < NCOUNTERS; i++)
        c[i] = family(m, SHOAL_METRICS_COUNTER, model_counters[i].name, model_counters[i].help,
                      by_model);
    for (int i = 0; i < NGAUGES; i++)
        g[i] = family(m, SHOAL_METRICS_GAUGE, lane_gauges[i].name, lane_gauges[i].help, by_model);
    int ok = 1;
    for (size_t i = 0; ok && i < n; i++) {
        struct model_series *s = &w->models[i];
        const char *alias = shoal_models_at(models, i)->alias;
        const char *const mv[] = {alias};
        for (int o = 0; o < NOUTCOMES; o++) {
            const char *const ov[] = {alias, shoal_outcome_name((shoal_outcome_t)o)};
            s->requests[o] = shoal_metrics_series(req, ov);
            s->latency[o] = shoal_metrics_series(lat, ov);
            ok = ok && s->requests[o] && s->latency[o];
        }
        for (int k = 0; k < NCOUNTERS; k++)
            ok = ok && (s->counter[k] = shoal_metrics_series(c[k], mv)) != NULL;
        for (int k = 0; k < NGAUGES; k++)
            ok = ok && (s->gauge[k] = shoal_metrics_series(g[k], mv)) != NULL;
    }
    w->db_write = shoal_metrics_series(
        family(m, SHOAL_METRICS_HISTOGRAM, "shoal_worker_db_write_duration_seconds",
               "Time to make one batch of results and attempts durable in PostgreSQL (from "
               "handing it to the database thread to its commit).",
               NULL),
        NULL);
    shoal_metrics_family_t *st =
        family(m, SHOAL_METRICS_GAUGE, "shoal_worker_tasks",
               "Tasks this worker holds, by state (worker/task.h).", by_state);
    for (int i = 0; i < NSTATES; i++) {
        const char *const sv[] = {shoal_task_state_name((shoal_task_state_t)i)};
        ok = ok && (w->tasks[i] = shoal_metrics_series(st, sv)) != NULL;
    }
    if (!ok || !w->db_write) {
        shoal_wmetrics_destroy(w);
        return NULL;
    }
    return w;
}

void shoal_wmetrics_destroy(shoal_wmetrics_t *w)
{
    if (!w)
        return;
    free(w->models);
    free(w);
}

void shoal_wmetrics_call(shoal_wmetrics_t *w, size_t model, shoal_outcome_t oc, double latency_s,
                         long tokens_in, long tokens_out)
{
    if (!w || model >= w->nmodels || (int)oc < 0 || (int)oc >= NOUTCOMES)
        return;
    struct model_series *s = &w->models[model];
    shoal_metrics_add(s->requests[oc], 1);
    shoal_metrics_observe(s->latency[oc], latency_s);
    if (tokens_in > 0)
        shoal_metrics_add(s->counter[C_TOKENS_IN], (double)tokens_in);
    if (tokens_out > 0)
        shoal_metrics_add(s->counter[C_TOKENS_OUT], (double)tokens_out);
    if (oc == SHOAL_OUTCOME_RATE_LIMITED)
        shoal_metrics_add(s->counter[C_LIMITED], 1);
}

void shoal_wmetrics_retry(shoal_wmetrics_t *w, size_t model)
{
    if (w && model < w->nmodels)
        shoal_metrics_add(w->models[model].counter[C_RETRIES], 1);
}

void shoal_wmetrics_connects(shoal_wmetrics_t *w, size_t model, long n)
{
    if (w && model < w->nmodels && n > 0)
        shoal_metrics_add(w->models[model].counter[C_CONNECTS], (double)n);
}

void shoal_wmetrics_db_write(shoal_wmetrics_t *w, double seconds)
{
    if (w)
        shoal_metrics_observe(w->db_write, seconds);
}

void shoal_wmetrics_tasks(shoal_wmetrics_t *w, const long *counts)
{
    if (!w)
        return;
    for (int i = 0; i < NSTATES; i++)
        shoal_metrics_set(w->tasks[i], (double)counts[i]);
}

void shoal_wmetrics_lane(shoal_wmetrics_t *w, size_t model, const shoal_lane_t *l,
                         const shoal_fleet_share_t *share, double now_ms)
{
    if (!w || model >= w->nmodels)
        return;
    shoal_metrics_series_t **g = w->models[model].gauge;
    shoal_lane_levels_t lv;
    shoal_lane_levels(l, now_ms, &lv);
    shoal_metrics_set(g[G_IN_FLIGHT], (double)shoal_lane_in_flight(l));
    shoal_metrics_set(g[G_WAITING], (double)shoal_lane_waiting(l));
    shoal_metrics_set(g[G_WINDOW], shoal_lane_window(l));
    shoal_metrics_set(g[G_BUCKET_REQUESTS], lv.requests);
    shoal_metrics_set(g[G_BUCKET_TOKENS], lv.tokens);
    shoal_metrics_set(g[G_RATE_REQUESTS], lv.rps);
    shoal_metrics_set(g[G_RATE_TOKENS], lv.tps);
    shoal_metrics_set(g[G_LIMIT_REQUESTS], share->limit_rps > 0 ? share->limit_rps : 0);
    shoal_metrics_set(g[G_LIMIT_TOKENS], share->limit_tps > 0 ? share->limit_tps : 0);
    shoal_metrics_set(g[G_LEARNED], share->learned ? 1 : 0);
    shoal_metrics_set(g[G_WORKERS], share->workers);
    shoal_metrics_set(g[G_HOLD], lv.hold_ms / 1000.0);
    shoal_metrics_set(g[G_COOLDOWN], lv.cooldown_ms / 1000.0);
    shoal_metrics_set(g[G_DOWN], shoal_lane_down_ms(l, now_ms) / 1000.0);
}
