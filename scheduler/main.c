/*
 * shoal-scheduler: job intake from the jobs topic and the merger stage.
 * Several instances form one consumer group; each job message is handled to
 * the end (recorded, tasks acknowledged by Kafka) before its offset is stored.
 */
#include <jansson.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/kafka.h"
#include "common/log.h"
#include "common/metrics_http.h"
#include "common/models.h"
#include "common/opt.h"
#include "common/pg.h"
#include "common/service.h"
#include "scheduler/dispatch.h"
#include "common/tenants.h"
#include "scheduler/intake.h"
#include "scheduler/merger.h"
#include "scheduler/reconcile.h"
#include "scheduler/smetrics.h"

struct sched_conf {
    shoal_service_conf_t svc;
    long max_job_bytes;
    long metrics_port;
    const char *metrics_bind;
    const char *worker_group;
    long reconcile_after_ms;
    long reconcile_pending_ms;
    long reconcile_every_ms;
    long cache_ttl_s;
    long dispatch_window;
    long dispatch_every_ms;
    long dispatch_pass_limit;
    const char *tenants;
};

static const struct shoal_opt sched_opts[] = {
    SHOAL_SERVICE_OPTS(struct sched_conf, "shoal-scheduler"),
    {"max-job-bytes", SHOAL_OPT_INT, offsetof(struct sched_conf, max_job_bytes), "1048576", 1024,
     1L << 30, "larger job messages are rejected"},
    SHOAL_METRICS_HTTP_OPTS(struct sched_conf, metrics_port, metrics_bind),
    {"worker-group", SHOAL_OPT_STR, offsetof(struct sched_conf, worker_group), "shoal-workers", 0,
     0, "the workers' consumer group, whose lag the metrics report"},
    {"reconcile-after-ms", SHOAL_OPT_INT, offsetof(struct sched_conf, reconcile_after_ms), "600000",
     1000, 86400000L * 7,
     "a queued task with no call for this long is taken as lost and published again"},
    {"reconcile-pending-ms", SHOAL_OPT_INT, offsetof(struct sched_conf, reconcile_pending_ms),
     "60000", 0, 86400000L * 7,
     "without a dispatcher (--dispatch-window 0): a task recorded but not published for this "
     "long is published (resumed tasks: at once)"},
    {"reconcile-every-ms", SHOAL_OPT_INT, offsetof(struct sched_conf, reconcile_every_ms), "5000",
     100, 3600000, "how often PostgreSQL is searched for lost tasks"},
    {"cache-ttl-s", SHOAL_OPT_INT, offsetof(struct sched_conf, cache_ttl_s), "604800", 0,
     86400L * 3650,
     "result cache: an answer is reused for the same call this long (0: cache off; a job "
     "opts out with \"cache\": false)"},
    {"dispatch-window", SHOAL_OPT_INT, offsetof(struct sched_conf, dispatch_window), "2000", 0,
     10000000,
     "tasks per tenant and priority published and unfinished at a time; tasks wait in "
     "PostgreSQL until there is room (0: publish every task at intake, no pacing)"},
    {"dispatch-every-ms", SHOAL_OPT_INT, offsetof(struct sched_conf, dispatch_every_ms), "100", 10,
     60000, "how often the dispatcher tops up the windows"},
    {"dispatch-pass-limit", SHOAL_OPT_INT, offsetof(struct sched_conf, dispatch_pass_limit), "2000",
     1, 1000000,
     "tasks one dispatcher pass publishes at most before Kafka's consumer is polled again"},
    {"tenants", SHOAL_OPT_STR, offsetof(struct sched_conf, tenants), "", 0, 0,
     "tenants file: each tenant's plan (jobs per minute and day, max items, max prompt "
     "tokens, default priority, daily budget); empty: no limits"},
    {0},
};

static const char usage[] = "shoal-scheduler [options]";
static const char summary[] =
    "Takes jobs from the jobs topic, validates them, records them in PostgreSQL, splits\n"
    "them into chunk tasks on the priority task topics, and merges each job's output\n"
    "when its last task ends.";

/* Between the slices of a large job's tasks (scheduler/intake.h): what is
 * recorded is published at once, so the job's first calls run while the
 * rest of it is written. */
static void dispatch_slice(void *arg)
{
    char err[512];
    if (shoal_dispatch_poll(arg, 1, NULL, err, sizeof(err)) != SHOAL_OK)
        shoal_log_warn("dispatch", "could not dispatch, will retry error=\"%s\"", err);
}

static void store_offset(rd_kafka_t *rk, const rd_kafka_message_t *msg)
{
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(l, rd_kafka_topic_name(msg->rkt), msg->partition)->offset =
        msg->offset + 1;
    rd_kafka_resp_err_t e = rd_kafka_offsets_store(rk, l);
    if (e)
        shoal_log_warn("intake", "could not store offset error=\"%s\"", rd_kafka_err2str(e));
    rd_kafka_topic_partition_list_destroy(l);
}

/* Takes one job message; returns 1 when it recorded a new job (or part),
 * whose tasks the dispatcher may publish at once. */
static int handle(const shoal_intake_conf_t *ic, shoal_smetrics_t *sm, rd_kafka_t *consumer,
                  const rd_kafka_message_t *msg)
{
    char err[1024];
    long backoff = 200;
    shoal_intake_result_t res;
    const char *topic = rd_kafka_topic_name(msg->rkt);

    for (;;) {
        shoal_err_t e = shoal_intake_job_ts(ic, topic, msg->partition, msg->offset,
                                            (long long)rd_kafka_message_timestamp(msg, NULL),
                                            msg->payload, msg->len, &res, err, sizeof(err));
        if (e == SHOAL_OK)
            break;
        if (!shoal_err_retriable(e)) {
            shoal_log_error("intake",
                            "cannot handle job message, skipping it source=%s/%d@%lld "
                            "error=\"%s\"",
                            topic, (int)msg->partition, (long long)msg->offset, err);
            store_offset(consumer, msg);
            return 0;
        }
        if (shoal_service_stopping())
            return 0; /* offset not stored: the message comes again */
        shoal_log_warn("intake", "could not handle job, retrying job_id=%s error=\"%s\"",
                       res.job_id, err);
        shoal_service_sleep_ms(backoff);
        backoff = backoff * 2 > 5000 ? 5000 : backoff * 2;
    }
    shoal_smetrics_intake(sm, &res);
    switch (res.outcome) {
    case SHOAL_INTAKE_NEW:
        shoal_log_info("intake", "job accepted job_id=%s tasks=%d", res.job_id, res.tasks);
        break;
    case SHOAL_INTAKE_DUPLICATE:
        if (res.reason[0])
            shoal_log_warn("intake",
                           "job already known, not published from this message "
                           "job_id=%s reason=\"%s\"",
                           res.job_id, res.reason);
        else
            shoal_log_info("intake", "job already known job_id=%s republished=%d", res.job_id,
                           res.published);
        break;
    case SHOAL_INTAKE_REJECTED:
        shoal_log_warn("intake", "job rejected job_id=%s reason=\"%s\"", res.job_id, res.reason);
        break;
    case SHOAL_INTAKE_FAILED:
        shoal_log_error("intake", "job failed job_id=%s reason=\"%s\"", res.job_id, res.reason);
        break;
    }
    /* The job's first event is in the outbox, committed with the job: the
     * main loop's merger pass publishes it. */
    store_offset(consumer, msg);
    return res.outcome == SHOAL_INTAKE_NEW;
}

/* Writes the plans into shoal.tenants (all of them replaced), so workers and
 * SQL read what this scheduler enforces. Without a tenants file the table is
 * left as it is: budgets may be set there by SQL alone (sql/016). */
static shoal_err_t mirror_tenants(shoal_pg_t *pg, const shoal_tenants_t *tenants, char *err,
                                  size_t errlen)
{
    if (!tenants)
        return SHOAL_OK;
    json_t *rows = shoal_tenants_rows(tenants);
    char *text = rows ? json_dumps(rows, JSON_COMPACT) : NULL;
    const char *params[] = {text};
    shoal_err_t e = text ? shoal_pg_exec(pg, "SELECT shoal.set_tenants($1::jsonb)", 1, params, NULL,
                                         err, errlen)
                         : shoal_err_set(err, errlen, SHOAL_ERR_NOMEM, "out of memory");
    if (e == SHOAL_OK)
        shoal_log_info("main", "tenant plans mirrored plans=%zu", json_array_size(rows));
    free(text);
    json_decref(rows);
    return e;
}

int main(int argc, char **argv)
{
    struct sched_conf conf;
    char err[1024];

    memset(&conf, 0, sizeof(conf));
    int rc = shoal_service_cmdline("shoal-scheduler", usage, summary, sched_opts, &conf, argc, argv,
                                   &conf.svc.log_level, &conf.svc.log_format, &conf.svc.kafka);
    if (rc >= 0)
        return rc;
    shoal_topics_t topics;
    if (shoal_topics_init(&topics, conf.svc.topic_prefix, err, sizeof(err)) != SHOAL_OK) {
        fprintf(stderr, "shoal-scheduler: %s\n", err);
        return 2;
    }
    shoal_service_signals();

    shoal_models_t *models = shoal_models_load(conf.svc.models, err, sizeof(err));
    if (!models) {
        shoal_log_error("main", "could not load models file path=\"%s\" error=\"%s\"",
                        conf.svc.models, err);
        return 1;
    }
    shoal_tenants_t *tenants = NULL;
    if (*conf.tenants && !(tenants = shoal_tenants_load(conf.tenants, err, sizeof(err)))) {
        shoal_log_error("main", "cannot load tenants file path=\"%s\" error=\"%s\"", conf.tenants,
                        err);
        shoal_models_destroy(models);
        return 1;
    }
    shoal_pg_t *pg = shoal_pg_new(conf.svc.pg, "shoal-scheduler");
    if (shoal_service_migrate(pg, (int)conf.svc.migrate_wait_s, err, sizeof(err)) != SHOAL_OK ||
        mirror_tenants(pg, tenants, err, sizeof(err)) != SHOAL_OK) {
        shoal_log_error("main", "could not prepare the database error=\"%s\"", err);
        shoal_pg_destroy(pg);
        shoal_tenants_destroy(tenants);
        shoal_models_destroy(models);
        return 1;
    }

    rd_kafka_t *producer =
        shoal_kafka_producer_new(conf.svc.bootstrap, &conf.svc.kafka, err, sizeof(err));
    const char *subs[] = {topics.jobs};
    /* The jobs consumer may hold a few whole job messages: with its local
     * queue capped below that (the consumers' 1 MiB default), each part of a
     * job sent in parts waited for a fetch of its own and parts came in at
     * three a second. The user's setting (-X or environment) wins. */
    shoal_kprops_t cprops = conf.svc.kafka;
    char qmax[64];
    int qset = getenv("SHOAL_KAFKA_QUEUED_MAX_MESSAGES_KBYTES") != NULL;
    for (int i = 0; i < cprops.n; i++)
        qset |= !strncmp(cprops.kv[i], "queued.max.messages.kbytes=", 27);
    long qkb = 4 * (conf.max_job_bytes / 1024 + 1);
    snprintf(qmax, sizeof(qmax), "queued.max.messages.kbytes=%ld",
             qkb < 2097151 ? qkb : 2097151); /* librdkafka's most */
    if (!qset && cprops.n < SHOAL_KPROPS_MAX)
        cprops.kv[cprops.n++] = qmax;
    rd_kafka_t *consumer =
        producer ? shoal_kafka_consumer_new(conf.svc.bootstrap, conf.svc.group, &cprops, subs, 1,
                                            NULL, NULL, err, sizeof(err))
                 : NULL;
    shoal_merger_t *merger = shoal_merger_new(conf.svc.pg, producer, topics.events);
    if (!producer || !consumer || !merger) {
        shoal_log_error("main", "could not start error=\"%s\"", err);
        return 1;
    }

    shoal_metrics_t *metrics = NULL;
    shoal_metrics_http_t *mhttp = NULL;
    shoal_smetrics_t *sm = NULL;
    if (conf.metrics_port > 0) {
        /* The series and their collect callback exist before the first
         * scrape can come. */
        shoal_smetrics_conf_t smc = {conf.svc.pg, conf.svc.bootstrap, &conf.svc.kafka,
                                     conf.worker_group, &topics};
        metrics = shoal_metrics_new();
        snprintf(err, sizeof(err), "out of memory");
        sm = metrics ? shoal_smetrics_new(metrics, &smc, err, sizeof(err)) : NULL;
        mhttp = sm ? shoal_metrics_http_new(metrics, conf.metrics_bind, (int)conf.metrics_port, err,
                                            sizeof(err))
                   : NULL;
        if (!mhttp) {
            shoal_log_error("main", "cannot serve metrics error=\"%s\"", err);
            return 1;
        }
        shoal_pg_set_observer(pg, shoal_smetrics_db_observe, sm);
        shoal_log_info("main", "metrics served bind=%s port=%d", conf.metrics_bind,
                       shoal_metrics_http_port(mhttp));
    }
    /* Part of every derived job id: ids stay unique when the fleet moves to
     * another Kafka cluster. */
    char *cluster_id = rd_kafka_clusterid(producer, 10000);
    if (!cluster_id)
        shoal_log_warn("main", "could not read the Kafka cluster id; job ids derived for jobs "
                               "without job_id rest on topic, offset, timestamp and content");
    shoal_intake_conf_t ic = {.pg = pg,
                              .producer = producer,
                              .topics = &topics,
                              .models = models,
                              .max_job_bytes = (size_t)conf.max_job_bytes,
                              .cache_ttl_s = conf.cache_ttl_s,
                              .tenants = tenants,
                              .cluster_id = cluster_id,
                              .on_published = sm ? shoal_smetrics_published : NULL,
                              .on_published_arg = sm};
    const char *fault = getenv("SHOAL_FAULT_KILL_AFTER_PUBLISH");
    if (fault)
        ic.fault_kill_after = strtol(fault, NULL, 10);
    ic.paced = conf.dispatch_window > 0;

    shoal_reconcile_conf_t rconf = {conf.reconcile_every_ms, conf.reconcile_pending_ms,
                                    conf.reconcile_after_ms, ic.paced};
    shoal_reconcile_t *reconciler = shoal_reconcile_new(conf.svc.pg, &ic, &rconf);
    shoal_dispatch_conf_t dconf = {conf.dispatch_every_ms, conf.dispatch_window,
                                   conf.dispatch_pass_limit};
    shoal_dispatch_t *dispatcher = ic.paced ? shoal_dispatch_new(conf.svc.pg, &ic, &dconf) : NULL;
    if (!reconciler || (ic.paced && !dispatcher)) {
        shoal_log_error("main", "could not start error=\"out of memory\"");
        return 1;
    }
    if (dispatcher) {
        ic.on_slice = dispatch_slice;
        ic.on_slice_arg = dispatcher;
    }

    shoal_log_info("main", "scheduler started group=%s jobs_topic=%s", conf.svc.group, topics.jobs);
    double last_merge_err = 0, last_reconcile_err = 0, last_dispatch_err = 0;
    /* Sleep on both Kafka and the merger's connection, so a job's last
     * result is merged the moment its NOTIFY arrives, not at the next tick. */
    int wake[2] = {-1, -1};
    rd_kafka_queue_t *cq = rd_kafka_queue_get_consumer(consumer);
    if (pipe2(wake, O_NONBLOCK | O_CLOEXEC) == 0)
        rd_kafka_queue_io_event_enable(cq, wake[1], "1", 1);
    while (!shoal_service_stopping()) {
        rd_kafka_message_t *msg = rd_kafka_consumer_poll(consumer, 0);
        int fresh = 0;
        if (!msg) {
            struct pollfd fds[2] = {{wake[0], POLLIN, 0}, {shoal_merger_fd(merger), POLLIN, 0}};
            /* Not past a due dispatcher pass: after a full one, not at all. */
            long due = dispatcher ? shoal_dispatch_due_ms(dispatcher) : 100;
            poll(fds, fds[1].fd >= 0 ? 2 : 1, due < 100 ? (int)due : 100);
            char buf[64];
            while (wake[0] >= 0 && read(wake[0], buf, sizeof(buf)) > 0)
                ;
            msg = rd_kafka_consumer_poll(consumer, 0);
        }
        if (msg) {
            if (msg->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
                /* nothing */
            } else if (msg->err) {
                shoal_log_warn("kafka", "consumer error error=\"%s\"",
                               rd_kafka_message_errstr(msg));
            } else {
                fresh = handle(&ic, sm, consumer, msg);
            }
            rd_kafka_message_destroy(msg);
        }
        int merged;
        if (shoal_merger_poll(merger, &merged, err, sizeof(err)) != SHOAL_OK) {
            double now = shoal_service_now_ms();
            if (now - last_merge_err > 5000) {
                shoal_log_warn("merger", "could not merge, will retry error=\"%s\"", err);
                last_merge_err = now;
            }
        }
        /* Between messages, bounded per pass: Kafka is polled again soon. */
        int republished, lost_failed;
        if (shoal_reconcile_poll(reconciler, 0, &republished, &lost_failed, err, sizeof(err)) !=
            SHOAL_OK) {
            double now = shoal_service_now_ms();
            if (now - last_reconcile_err > 5000) {
                shoal_log_warn("reconcile", "could not reconcile, will retry error=\"%s\"", err);
                last_reconcile_err = now;
            }
        }
        /* Bounded per pass as well; a full pass runs again at once, and a
         * new job's first tasks go out now, not at the next tick; ended
         * tasks bring the next pass forward. */
        if (dispatcher && shoal_merger_room(merger))
            shoal_dispatch_room(dispatcher);
        if (dispatcher &&
            shoal_dispatch_poll(dispatcher, fresh, NULL, err, sizeof(err)) != SHOAL_OK) {
            double now = shoal_service_now_ms();
            if (now - last_dispatch_err > 5000) {
                shoal_log_warn("dispatch", "could not dispatch, will retry error=\"%s\"", err);
                last_dispatch_err = now;
            }
        }
        rd_kafka_poll(producer, 0);
    }

    rd_kafka_queue_io_event_enable(cq, -1, NULL, 0);
    rd_kafka_queue_destroy(cq);
    for (int i = 0; i < 2; i++)
        if (wake[i] >= 0)
            close(wake[i]);
    shoal_log_info("main", "scheduler stopping");
    shoal_service_shutdown_deadline(30);
    rd_kafka_consumer_close(consumer);
    rd_kafka_destroy(consumer);
    rd_kafka_flush(producer, 10000);
    rd_kafka_destroy(producer);
    shoal_merger_destroy(merger);
    shoal_reconcile_destroy(reconciler);
    shoal_dispatch_destroy(dispatcher);
    shoal_pg_destroy(pg);
    shoal_metrics_http_destroy(mhttp); /* before the handle its scrapes use */
    shoal_smetrics_destroy(sm);
    shoal_metrics_destroy(metrics);
    shoal_models_destroy(models);
    shoal_tenants_destroy(tenants);
    if (cluster_id)
        rd_kafka_mem_free(NULL, cluster_id);
    return 0;
}
