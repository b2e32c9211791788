/*
 * The worker's Prometheus series (common/metrics.h): what its calls did, per
 * model and outcome, how long its database writes take, where its tasks are,
 * and the state of each model's lane and fleet share. Every series is created
 * by shoal_wmetrics_new, so the loop's updates never allocate; the loop
 * thread calls everything here, and the metrics thread only reads atomics.
 * Every function accepts a NULL handle (metrics off) and then does nothing.
 */
#ifndef SHOAL_WORKER_WMETRICS_H
#define SHOAL_WORKER_WMETRICS_H

#include <stddef.h>

#include "common/metrics.h"
#include "common/models.h"
#include "worker/fleet.h"
#include "worker/lane.h"
#include "worker/provider.h"
#include "worker/task.h"

typedef struct shoal_wmetrics shoal_wmetrics_t;

/* Registers the worker's series in m for every model of models (both
 * borrowed: they must outlive the handle). NULL when m is NULL or out of
 * memory. */
shoal_wmetrics_t *shoal_wmetrics_new(shoal_metrics_t *m, const shoal_models_t *models);
void shoal_wmetrics_destroy(shoal_wmetrics_t *w); /* NULL ok; the series stay in m */

/* One call to model (an index into models) ended with outcome oc after
 * latency_s, using these tokens. */
void shoal_wmetrics_call(shoal_wmetrics_t *w, size_t model, shoal_outcome_t oc, double latency_s,
                         long tokens_in, long tokens_out);

/* A task will try model again after a backoff. */
void shoal_wmetrics_retry(shoal_wmetrics_t *w, size_t model);

/* A call to model opened n connections (0 when it reused an open one). */
void shoal_wmetrics_connects(shoal_wmetrics_t *w, size_t model, long n);

/* One batch of results and attempts took seconds to write. */
void shoal_wmetrics_db_write(shoal_wmetrics_t *w, double seconds);

/* Tasks held now in each state (counts indexed by shoal_task_state_t,
 * SHOAL_TASK_FAILED + 1 of them). */
void shoal_wmetrics_tasks(shoal_wmetrics_t *w, const long *counts);

/* The state of model's lane at now_ms and the fleet share it runs on. */
void shoal_wmetrics_lane(shoal_wmetrics_t *w, size_t model, const shoal_lane_t *l,
                         const shoal_fleet_share_t *share, double now_ms);

#endif
