/*
 * The worker's loop: takes tasks from the task topics, skips those already
 * finished, runs their model calls concurrently, retries what may succeed
 * later, writes results and call records in batches, and only then lets
 * Kafka's committed position move past them. Runs until a stop is requested
 * (common/service.h), then finishes or abandons in-flight calls within the
 * grace period, flushes what is finished and closes the consumer.
 */
#ifndef SHOAL_WORKER_RUNNER_H
#define SHOAL_WORKER_RUNNER_H

#include <stddef.h>

#include "common/err.h"
#include "common/kafka.h"
#include "common/metrics.h"
#include "common/models.h"
#include "common/opt.h"

typedef struct {
    const char *bootstrap;
    const char *pg;
    const char *group;
    const char *worker_id;
    const shoal_topics_t *topics;
    const shoal_models_t *models;
    const shoal_kprops_t *kafka;
    long max_inflight;        /* tasks held at once (calls in flight + waiting) */
    long batch_size;          /* results per database write */
    long flush_ms;            /* longest a finished result waits for its write */
    long grace_ms;            /* on stop, how long in-flight calls may finish */
    long retry_after_cap_ms;  /* Retry-After is honoured up to this */
    long down_after_ms;       /* a model failing this long hands its tasks on */
    long max_wait_ms;         /* a task taken this long ago starts no new try */
    shoal_metrics_t *metrics; /* series of worker/wmetrics.h go here; NULL = none */
} shoal_runner_conf_t;

typedef struct {
    long tasks_done, tasks_failed, tasks_skipped, calls, retries, poison, flushes;
    long rate_limited, fallbacks, invalid_outputs, repairs;
    long subtasks;       /* batch mode: sub-tasks recorded and produced */
    long budget_refused; /* calls refused: their job's or tenant's budget is spent */
} shoal_runner_stats_t;

/* Runs until stopped. Returns SHOAL_OK on a clean stop. */
shoal_err_t shoal_runner_run(const shoal_runner_conf_t *conf, shoal_runner_stats_t *stats,
                             char *errbuf, size_t errlen);

#endif
