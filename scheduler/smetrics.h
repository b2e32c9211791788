/*
 * The scheduler's Prometheus series (common/metrics.h): jobs taken in by
 * outcome, tasks published per priority and the latency of the intake's
 * database statements, counted as they happen; and, read at scrape time on
 * the metrics thread, jobs by status (a GROUP BY on shoal.jobs over a
 * connection of its own) and the workers' consumer lag per priority topic.
 *
 * Lag is measured from Kafka itself, the way a lag exporter does: for each
 * partition of shoal.tasks.<priority>, the high watermark
 * (rd_kafka_query_watermark_offsets) minus the worker group's committed
 * offset (rd_kafka_committed; the low watermark when the group has none),
 * summed per topic. The handle used is a consumer with the workers' group id
 * that never subscribes, so it never joins the group or moves its offsets.
 * Committed offsets trail the workers by their auto-commit interval.
 */
#ifndef SHOAL_SCHEDULER_SMETRICS_H
#define SHOAL_SCHEDULER_SMETRICS_H

#include <stddef.h>

#include "common/err.h"
#include "common/kafka.h"
#include "common/metrics.h"
#include "common/opt.h"
#include "scheduler/intake.h"

typedef struct shoal_smetrics shoal_smetrics_t;

typedef struct {
    const char *pg;               /* conninfo for the scrape-time queries; copied */
    const char *bootstrap;        /* Kafka, for the lag */
    const shoal_kprops_t *kafka;  /* -X properties; borrowed during _new */
    const char *worker_group;     /* consumer group whose lag is reported */
    const shoal_topics_t *topics; /* copied */
} shoal_smetrics_conf_t;

/* Registers the series in m (borrowed: it must outlive the handle) and a
 * collect callback. NULL when m is NULL (metrics off), or with the reason in
 * errbuf (a bad Kafka property, no memory); errbuf is "" when m is NULL. */
shoal_smetrics_t *shoal_smetrics_new(shoal_metrics_t *m, const shoal_smetrics_conf_t *conf,
                                     char *errbuf, size_t errlen);

/* Frees the handle; the metrics server must be stopped first, since its
 * collect callback uses it. NULL ok. */
void shoal_smetrics_destroy(shoal_smetrics_t *s);

/* Counts one handled job message. NULL s ok. */
void shoal_smetrics_intake(shoal_smetrics_t *s, const shoal_intake_result_t *res);

/* Counts n task messages published to priority's topic: the intake's
 * on_published hook (arg: the shoal_smetrics_t, NULL ok). */
void shoal_smetrics_published(const char *priority, int n, void *arg);

/* A shoal_pg_set_observer callback (arg: the handle): one intake statement
 * took seconds. */
void shoal_smetrics_db_observe(double seconds, void *arg);

#endif
