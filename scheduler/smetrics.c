/*
 * The scheduler's series (see smetrics.h). Counters are updated on the
 * scheduler's loop; everything read from PostgreSQL or Kafka is read by the
 * collect callback on the metrics thread, with handles only it uses.
 */
#include "scheduler/smetrics.h"

#include <librdkafka/rdkafka.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "common/pg.h"
#include "common/service.h"

#define NPRIO 3
#define KAFKA_TIMEOUT_MS 2000
#define MAX_STATUSES 16

static const char *const prio_names[NPRIO] = {"high", "normal", "low"};

enum { OUT_ACCEPTED, OUT_DUPLICATE, OUT_REJECTED, OUT_FAILED, NOUT };
static const char *const outcome_names[NOUT] = {"accepted", "duplicate", "rejected", "failed"};

struct shoal_smetrics {
    shoal_metrics_family_t *jobs_family;
    shoal_metrics_series_t *jobs_total[NOUT];
    shoal_metrics_series_t *published[NPRIO];
    shoal_metrics_series_t *lag[NPRIO];
    shoal_metrics_series_t *db_seconds;
    shoal_metrics_series_t *collect_errors[2]; /* postgresql, kafka */
    shoal_pg_t *pg;                            /* metrics thread only */
    rd_kafka_t *kafka;                         /* metrics thread only */
    shoal_topics_t topics;
    double last_warn_s;
};

static void collect(void *arg);

shoal_smetrics_t *shoal_smetrics_new(shoal_metrics_t *m, const shoal_smetrics_conf_t *conf,
                                     char *errbuf, size_t errlen)
{
    static const char *const by_outcome[] = {"outcome", NULL};
    static const char *const by_prio[] = {"priority", NULL};
    static const char *const by_status[] = {"status", NULL};
    static const char *const by_source[] = {"source", NULL};
    static const char *const statuses[] = {"running", "completed", "partial", "failed", "rejected"};
    if (errbuf && errlen)
        *errbuf = '\0';
    if (!m)
        return NULL;
    shoal_smetrics_t *s = calloc(1, sizeof(*s));
    if (!s) {
        shoal_err_set(errbuf, errlen, SHOAL_ERR_NOMEM, "out of memory");
        return NULL;
    }
    s->topics = *conf->topics;
    shoal_metrics_family_t *jt = shoal_metrics_family(
        m, SHOAL_METRICS_COUNTER, "shoal_scheduler_jobs_total",
        "Job messages handled by this scheduler, by outcome (accepted: recorded now; duplicate: "
        "job_id seen before; rejected: invalid; failed: its tasks cannot be published).",
        by_outcome, NULL, 0);
    shoal_metrics_family_t *pub = shoal_metrics_family(
        m, SHOAL_METRICS_COUNTER, "shoal_scheduler_tasks_published_total",
        "Task messages this scheduler published, by priority topic.", by_prio, NULL, 0);
    shoal_metrics_family_t *lag = shoal_metrics_family(
        m, SHOAL_METRICS_GAUGE, "shoal_consumer_lag_messages",
        "Task messages not yet committed by the worker group, per priority topic (high "
        "watermark minus committed offset, summed over partitions; read at scrape time).",
        by_prio, NULL, 0);
    s->jobs_family = shoal_metrics_family(
        m, SHOAL_METRICS_GAUGE, "shoal_jobs",
        "Jobs in PostgreSQL by status (the whole fleet; read at scrape time).", by_status, NULL, 0);
    shoal_metrics_family_t *errs = shoal_metrics_family(
        m, SHOAL_METRICS_COUNTER, "shoal_scheduler_collect_errors_total",
        "Scrapes whose reading of PostgreSQL or Kafka failed (the series keep their last values).",
        by_source, NULL, 0);
    s->db_seconds = shoal_metrics_series(
        shoal_metrics_family(m, SHOAL_METRICS_HISTOGRAM,
                             "shoal_scheduler_db_write_duration_seconds",
                             "Duration of the job intake's database statements (recording a "
                             "job and its tasks, marking tasks queued, failing a job).",
                             NULL, shoal_metrics_latency_buckets, shoal_metrics_latency_nbuckets),
        NULL);
    int ok = s->db_seconds != NULL;
    for (int i = 0; ok && i < NOUT; i++) {
        const char *const v[] = {outcome_names[i]};
        ok = (s->jobs_total[i] = shoal_metrics_series(jt, v)) != NULL;
    }
    for (int i = 0; ok && i < NPRIO; i++) {
        const char *const v[] = {prio_names[i]};
        ok = (s->published[i] = shoal_metrics_series(pub, v)) != NULL &&
             (s->lag[i] = shoal_metrics_series(lag, v)) != NULL;
    }
    for (size_t i = 0; ok && i < sizeof(statuses) / sizeof(statuses[0]); i++) {
        const char *const v[] = {statuses[i]};
        ok = shoal_metrics_series(s->jobs_family, v) != NULL;
    }
    const char *const pgv[] = {"postgresql"}, *const kv[] = {"kafka"};
    ok = ok && (s->collect_errors[0] = shoal_metrics_series(errs, pgv)) &&
         (s->collect_errors[1] = shoal_metrics_series(errs, kv));
    if (!ok) {
        shoal_err_set(errbuf, errlen, SHOAL_ERR_NOMEM, "out of memory");
        shoal_smetrics_destroy(s);
        return NULL;
    }

    s->pg = shoal_pg_new(conf->pg, "shoal-scheduler-metrics");
    if (s->pg)
        shoal_pg_set_on_connect(s->pg, "SET statement_timeout = 5000");
    s->kafka =
        shoal_kafka_reader_new(conf->bootstrap, conf->worker_group, conf->kafka, errbuf, errlen);
    if (!s->pg || !s->kafka || shoal_metrics_on_collect(m, collect, s) != 0) {
        if (errbuf && errlen && !*errbuf)
            shoal_err_set(errbuf, errlen, SHOAL_ERR_NOMEM, "out of memory");
        shoal_smetrics_destroy(s);
        return NULL;
    }
    return s;
}

void shoal_smetrics_destroy(shoal_smetrics_t *s)
{
    if (!s)
        return;
    shoal_pg_destroy(s->pg);
    if (s->kafka)
        rd_kafka_destroy(s->kafka);
    free(s);
}

void shoal_smetrics_intake(shoal_smetrics_t *s, const shoal_intake_result_t *res)
{
    if (!s)
        return;
    int o = res->outcome == SHOAL_INTAKE_NEW         ? OUT_ACCEPTED
            : res->outcome == SHOAL_INTAKE_DUPLICATE ? OUT_DUPLICATE
            : res->outcome == SHOAL_INTAKE_REJECTED  ? OUT_REJECTED
                                                     : OUT_FAILED;
    shoal_metrics_add(s->jobs_total[o], 1);
}

void shoal_smetrics_published(const char *priority, int n, void *arg)
{
    shoal_smetrics_t *s = arg;
    if (!s || n <= 0)
        return;
    int p = 1; /* shoal_topics_task: an unknown priority goes to normal */
    for (int i = 0; i < NPRIO; i++)
        if (priority && !strcmp(priority, prio_names[i]))
            p = i;
    shoal_metrics_add(s->published[p], n);
}

void shoal_smetrics_db_observe(double seconds, void *arg)
{
    shoal_smetrics_t *s = arg;
    shoal_metrics_observe(s->db_seconds, seconds);
}

/* A failed read keeps the last values and counts; a warning at most once a
 * minute, since Prometheus may scrape every few seconds. */
static void collect_failed(shoal_smetrics_t *s, int source, const char *what, const char *err)
{
    double now = shoal_service_now_ms() / 1000.0;
    shoal_metrics_add(s->collect_errors[source], 1);
    if (now - s->last_warn_s < 60)
        return;
    s->last_warn_s = now;
    shoal_log_warn("metrics", "could not read %s for metrics error=\"%s\"", what, err);
}

static void collect_jobs(shoal_smetrics_t *s)
{
    char err[512];
    PGresult *r;
    if (shoal_pg_exec(s->pg, "SELECT status, count(*) FROM shoal.jobs GROUP BY status", 0, NULL, &r,
                      err, sizeof(err)) != SHOAL_OK) {
        collect_failed(s, 0, "jobs by status", err);
        return;
    }
    /* Statuses with no job read 0 rather than keep an old count. */
    static const char *const known[] = {"running", "completed", "partial", "failed", "rejected"};
    double counts[sizeof(known) / sizeof(known[0])] = {0};
    for (int i = 0; i < PQntuples(r) && i < MAX_STATUSES; i++) {
        const char *st = PQgetvalue(r, i, 0);
        double n = strtod(PQgetvalue(r, i, 1), NULL);
        size_t k = 0;
        while (k < sizeof(known) / sizeof(known[0]) && strcmp(known[k], st) != 0)
            k++;
        if (k < sizeof(known) / sizeof(known[0])) {
            counts[k] = n;
            continue;
        }
        const char *const v[] = {st}; /* a status added by a later migration */
        shoal_metrics_set(shoal_metrics_series(s->jobs_family, v), n);
    }
    PQclear(r);
    for (size_t k = 0; k < sizeof(known) / sizeof(known[0]); k++) {
        const char *const v[] = {known[k]};
        shoal_metrics_set(shoal_metrics_series(s->jobs_family, v), counts[k]);
    }
}

/* The lag of the worker group on one topic, or -1 with the reason in err. */
static long long topic_lag(shoal_smetrics_t *s, const char *topic, char *err, size_t errlen)
{
    rd_kafka_topic_partition_list_t *l =
        shoal_kafka_partitions(s->kafka, topic, KAFKA_TIMEOUT_MS, err, errlen);
    if (!l)
        return -1;
    long long lag = 0;
    rd_kafka_resp_err_t e = rd_kafka_committed(s->kafka, l, KAFKA_TIMEOUT_MS);
    for (int i = 0; !e && i < l->cnt; i++) {
        int64_t lo, hi;
        e = rd_kafka_query_watermark_offsets(s->kafka, topic, l->elems[i].partition, &lo, &hi,
                                             KAFKA_TIMEOUT_MS);
        if (!e) {
            int64_t done = l->elems[i].offset >= 0 ? l->elems[i].offset : lo;
            lag += hi > done ? hi - done : 0;
        }
    }
    rd_kafka_topic_partition_list_destroy(l);
    if (e) {
        snprintf(err, errlen, "offsets of %s: %s", topic, rd_kafka_err2str(e));
        return -1;
    }
    return lag;
}

static void collect(void *arg)
{
    shoal_smetrics_t *s = arg;
    const char *topics[NPRIO] = {s->topics.tasks_high, s->topics.tasks_normal, s->topics.tasks_low};
    char err[512];

    collect_jobs(s);
    for (int p = 0; p < NPRIO; p++) {
        long long lag = topic_lag(s, topics[p], err, sizeof(err));
        if (lag < 0) {
            collect_failed(s, 1, "consumer lag", err);
            continue;
        }
        shoal_metrics_set(s->lag[p], (double)lag);
    }
}
