/*
 * shoal-worker: a stateless task executor. Start as many as needed; they share
 * the task topics through one consumer group.
 */
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "common/kafka.h"
#include "common/log.h"
#include "common/metrics_http.h"
#include "common/models.h"
#include "common/opt.h"
#include "common/service.h"
#include "worker/runner.h"

struct worker_conf {
    shoal_service_conf_t svc;
    const char *worker_id;
    long max_inflight;
    long batch_size;
    long flush_ms;
    long grace_ms;
    long retry_after_cap_ms;
    long down_after_ms;
    long max_wait_ms;
    long metrics_port;
    const char *metrics_bind;
};

#define OFF(f) offsetof(struct worker_conf, f)
static const struct shoal_opt worker_opts[] = {
    SHOAL_SERVICE_OPTS(struct worker_conf, "shoal-workers"),
    {"worker-id", SHOAL_OPT_STR, OFF(worker_id), NULL, 0, 0,
     "name recorded with each call (default: hostname-pid)"},
    {"max-inflight", SHOAL_OPT_INT, OFF(max_inflight), "256", 1, 4096,
     "tasks held at once: concurrent model calls plus those waiting to retry"},
    {"batch-size", SHOAL_OPT_INT, OFF(batch_size), "200", 1, 10000,
     "results written to PostgreSQL per transaction"},
    {"flush-ms", SHOAL_OPT_INT, OFF(flush_ms), "50", 0, 60000,
     "longest a finished result waits before it is written"},
    {"grace-ms", SHOAL_OPT_INT, OFF(grace_ms), "10000", 0, 600000,
     "on SIGTERM, how long running calls may finish"},
    {"retry-after-cap-ms", SHOAL_OPT_INT, OFF(retry_after_cap_ms), "600000", 0, 86400000,
     "longest wait a provider's Retry-After is honoured for"},
    {"down-after-ms", SHOAL_OPT_INT, OFF(down_after_ms), "120000", 1000, 86400000,
     "a model failing this long without a success hands its tasks to their fallbacks "
     "(or fails them)"},
    {"max-wait-ms", SHOAL_OPT_INT, OFF(max_wait_ms), "3600000", 1000, 604800000,
     "a task held this long starts no new try (rate limits and outages included)"},
    SHOAL_METRICS_HTTP_OPTS(struct worker_conf, metrics_port, metrics_bind),
    {0},
};

static const char usage[] = "shoal-worker [options]";
static const char summary[] =
    "Runs chunk tasks from the task topics: calls the model over HTTP with many calls\n"
    "in flight, retries transient failures, and writes results and per-call metrics to\n"
    "PostgreSQL before committing its Kafka position.";

int main(int argc, char **argv)
{
    struct worker_conf conf;
    char err[1024], idbuf[300], host[256];

    memset(&conf, 0, sizeof(conf));
    int rc = shoal_service_cmdline("shoal-worker", usage, summary, worker_opts, &conf, argc, argv,
                                   &conf.svc.log_level, &conf.svc.log_format, &conf.svc.kafka);
    if (rc >= 0)
        return rc;
    if (!conf.worker_id || !*conf.worker_id) {
        if (gethostname(host, sizeof(host)) != 0)
            snprintf(host, sizeof(host), "worker");
        host[sizeof(host) - 1] = '\0';
        snprintf(idbuf, sizeof(idbuf), "%s-%d", host, (int)getpid());
        conf.worker_id = idbuf;
    }
    shoal_topics_t topics;
    if (shoal_topics_init(&topics, conf.svc.topic_prefix, err, sizeof(err)) != SHOAL_OK) {
        fprintf(stderr, "shoal-worker: %s\n", err);
        return 2;
    }
    shoal_service_signals();

    /* Every call holds a socket: make sure the descriptor limit allows them. */
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max &&
        rl.rlim_cur < (rlim_t)(conf.max_inflight * 2 + 256)) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }

    shoal_models_t *models = shoal_models_load(conf.svc.models, err, sizeof(err));
    if (!models) {
        shoal_log_error("main", "could not load models file path=\"%s\" error=\"%s\"",
                        conf.svc.models, err);
        return 1;
    }
    /* A missing key would only show as 401s on every call, each retried or
     * handed to a fallback; refusing to start says what to fix at once. */
    if (shoal_models_check_keys(models, err, sizeof(err)) != SHOAL_OK) {
        shoal_log_error("main", "cannot start without an API key path=\"%s\" error=\"%s\"",
                        conf.svc.models, err);
        shoal_models_destroy(models);
        return 1;
    }
    if (shoal_models_check_files(models, err, sizeof(err)) != SHOAL_OK) {
        shoal_log_error("main", "cannot start without a CA file path=\"%s\" error=\"%s\"",
                        conf.svc.models, err);
        shoal_models_destroy(models);
        return 1;
    }
    shoal_pg_t *pg = shoal_pg_new(conf.svc.pg, "shoal-worker");
    shoal_err_t e = shoal_service_migrate(pg, (int)conf.svc.migrate_wait_s, err, sizeof(err));
    shoal_pg_destroy(pg);
    if (e != SHOAL_OK) {
        shoal_log_error("main", "could not prepare the database error=\"%s\"", err);
        shoal_models_destroy(models);
        return 1;
    }

    shoal_metrics_t *metrics;
    shoal_metrics_http_t *mhttp;
    if (shoal_metrics_http_serve(conf.metrics_bind, conf.metrics_port, &metrics, &mhttp, err,
                                 sizeof(err)) != SHOAL_OK) {
        shoal_log_error("main", "cannot serve metrics error=\"%s\"", err);
        shoal_models_destroy(models);
        return 1;
    }
    if (mhttp)
        shoal_log_info("main", "metrics served bind=%s port=%d", conf.metrics_bind,
                       shoal_metrics_http_port(mhttp));
    shoal_runner_conf_t runner = {.bootstrap = conf.svc.bootstrap,
                                  .pg = conf.svc.pg,
                                  .group = conf.svc.group,
                                  .worker_id = conf.worker_id,
                                  .topics = &topics,
                                  .models = models,
                                  .kafka = &conf.svc.kafka,
                                  .max_inflight = conf.max_inflight,
                                  .batch_size = conf.batch_size,
                                  .flush_ms = conf.flush_ms,
                                  .grace_ms = conf.grace_ms,
                                  .retry_after_cap_ms = conf.retry_after_cap_ms,
                                  .down_after_ms = conf.down_after_ms,
                                  .max_wait_ms = conf.max_wait_ms,
                                  .metrics = metrics};
    shoal_runner_stats_t stats;
    e = shoal_runner_run(&runner, &stats, err, sizeof(err));
    shoal_metrics_http_stop(metrics, mhttp);
    shoal_models_destroy(models);
    if (e != SHOAL_OK) {
        shoal_log_error("main", "worker failed error=\"%s\"", err);
        return 1;
    }
    return 0;
}
