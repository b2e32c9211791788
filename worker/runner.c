/*
 * The worker loop (see runner.h).
 *
 * A task lives from the moment its message is taken until its result row is
 * committed. `held` maps task_id to the live task, so a second delivery of a
 * task that is still running attaches its Kafka position to the first
 * instead of calling the model again. Positions are released to the offset
 * tracker only after the database write, so a crash at any point leaves the
 * message uncommitted and it is delivered again.
 */
#include "worker/runner.h"

#include <curl/curl.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "common/log.h"
#include "common/pg.h"
#include "common/service.h"
#include "worker/http.h"
#include "worker/offsets.h"
#include "worker/provider.h"
#include "worker/sink.h"
#include "worker/task.h"

#define CHECK_BATCH 512
#define BACKOFF_BASE_MS 250
#define BACKOFF_MAX_MS 20000

struct runner {
    const shoal_runner_conf_t *conf;
    shoal_runner_stats_t *stats;
    rd_kafka_t *consumer;
    rd_kafka_t *producer; /* dead-letter topic */
    rd_kafka_queue_t *queue;
    int wake[2];
    shoal_http_t *http;
    shoal_pg_t *pg;
    shoal_sink_t *sink;
    shoal_offsets_t *offsets;
    json_t *held; /* task_id -> shoal_task_t* as json_integer(intptr) */
    long nheld;
    shoal_task_t **unchecked; /* taken, not yet checked against the database */
    size_t nunchecked, capunchecked;
    struct curl_slist **headers; /* per model, by index */
    shoal_kafka_ack_t dlq_ack;
    double first_result_ms; /* when the oldest unflushed result finished */
    double pg_retry_at_ms;
    unsigned long long seq;
    long long start_ms;
    unsigned rand_state;
};

static shoal_task_t *held_get(struct runner *r, const char *task_id)
{
    json_t *v = json_object_get(r->held, task_id);
    return v ? (shoal_task_t *)(intptr_t)json_integer_value(v) : NULL;
}

static void held_put(struct runner *r, shoal_task_t *t)
{
    json_object_set_new(r->held, t->task_id, json_integer((json_int_t)(intptr_t)t));
    r->nheld++;
}

/* Releases a finished task: its Kafka positions become committable. */
static void release(struct runner *r, shoal_task_t *t)
{
    for (int i = 0; i < t->nrefs; i++)
        shoal_offsets_done(r->offsets, &t->refs[i]);
    if (held_get(r, t->task_id) == t) {
        json_object_del(r->held, t->task_id);
        r->nheld--;
    }
    shoal_task_destroy(t);
}

static void on_durable(void *token, void *arg)
{
    release(arg, token);
}

static const struct curl_slist *headers_for(struct runner *r, const shoal_model_t *m)
{
    for (size_t i = 0; i < shoal_models_count(r->conf->models); i++)
        if (shoal_models_at(r->conf->models, i) == m)
            return r->headers[i];
    return NULL;
}

static void dead_letter(struct runner *r, const void *value, size_t len, const char *key,
                        const char *error)
{
    char err[256];
    json_t *msg = json_object();
    json_t *task = value ? json_loadb(value, len, 0, NULL) : NULL;
    if (task) {
        json_object_set_new(msg, "task", task);
    } else if (value) {
        /* The message as text when it is UTF-8, else its first bytes in hex. */
        size_t keep = len < 4096 ? len : 4096;
        json_t *raw = json_stringn(value, keep);
        if (raw) {
            json_object_set_new(msg, "raw", raw);
        } else {
            char hex[2 * 1024 + 1];
            size_t n = keep < 1024 ? keep : 1024;
            for (size_t i = 0; i < n; i++)
                snprintf(hex + 2 * i, 3, "%02x", ((const unsigned char *)value)[i]);
            hex[2 * n] = '\0';
            json_object_set_new(msg, "raw_hex", json_string(hex));
        }
    }
    json_object_set_new(msg, "error", json_string(error));
    json_object_set_new(msg, "worker_id", json_string(r->conf->worker_id));
    char *text = json_dumps(msg, JSON_COMPACT | JSON_ENSURE_ASCII);
    json_decref(msg);
    if (!text)
        return;
    if (shoal_kafka_produce(r->producer, r->conf->topics->dlq, key, text, strlen(text), &r->dlq_ack,
                            err, sizeof(err)) != SHOAL_OK)
        shoal_log_error("dlq", "could not dead-letter a task error=\"%s\"", err);
    free(text);
}

static long backoff_ms(struct runner *r, int attempt, long retry_after_ms)
{
    long cap = BACKOFF_BASE_MS << (attempt > 7 ? 7 : attempt - 1);
    if (cap > BACKOFF_MAX_MS)
        cap = BACKOFF_MAX_MS;
    long wait = cap / 2 + (long)(rand_r(&r->rand_state) % (unsigned)(cap / 2 + 1));
    return retry_after_ms > wait ? retry_after_ms : wait;
}

static void finish(struct runner *r, shoal_task_t *t)
{
    if (t->state == SHOAL_TASK_FAILED) {
        r->stats->tasks_failed++;
        char *v = json_dumps(t->doc, JSON_COMPACT);
        dead_letter(r, v, v ? strlen(v) : 0, t->task_id, t->error);
        free(v);
        shoal_log_warn("task", "task failed job_id=%s task_id=%s attempts=%d error=\"%s\"",
                       t->job_id, t->task_id, t->attempts, t->error);
    } else {
        r->stats->tasks_done++;
    }
    if (shoal_sink_results(r->sink) == 0)
        r->first_result_ms = shoal_service_now_ms();
    if (shoal_sink_add_result(r->sink, shoal_task_result_row(t, NULL, r->conf->worker_id), t) !=
        SHOAL_OK)
        shoal_log_error("task", "out of memory queueing a result task_id=%s", t->task_id);
}

static void start_call(struct runner *r, shoal_task_t *t, long delay_ms)
{
    char err[256];
    if (shoal_http_post(r->http, t->model->endpoint, headers_for(r, t->model), t->request,
                        t->request_len, t->timeout_ms, delay_ms, t, err, sizeof(err)) != SHOAL_OK) {
        t->state = SHOAL_TASK_FAILED;
        snprintf(t->error, sizeof(t->error), "could not start the call: %s", err);
        finish(r, t);
    }
}

static void on_reply(void *user, const shoal_http_reply_t *reply, void *arg)
{
    struct runner *r = arg;
    shoal_task_t *t = user;
    char attempt_id[200], why[512] = "";
    shoal_provider_reply_t out;
    shoal_outcome_t oc = shoal_provider_outcome(t->model, reply, &out, why, sizeof(why));

    t->attempts++;
    r->stats->calls++;
    snprintf(attempt_id, sizeof(attempt_id), "%s/%lld/%llu", r->conf->worker_id, r->start_ms,
             ++r->seq);
    /* a truncated answer is kept as it is: sending it again would cut it again */
    int done = oc == SHOAL_OUTCOME_OK || oc == SHOAL_OUTCOME_TRUNCATED;
    if (done && t->want_json) {
        json_error_t jerr;
        json_t *j = json_loads(out.content, 0, &jerr);
        if (!j) {
            snprintf(why, sizeof(why), "output is not valid JSON: %s", jerr.text);
            oc = SHOAL_OUTCOME_MALFORMED;
            done = 0;
        }
        json_decref(j);
    }
    int retriable = shoal_outcome_retriable(oc);

    int last = t->attempts >= t->max_attempts;
    shoal_log_debug("call",
                    "call ended job_id=%s task_id=%s model=%s attempt=%d status=%ld kind=%s "
                    "latency_ms=%.1f tokens_in=%ld tokens_out=%ld",
                    t->job_id, t->task_id, t->model->alias, t->attempts, reply->status,
                    shoal_outcome_name(oc), reply->latency_ms, out.usage.input, out.usage.output);
    const char *outcome = done ? "ok" : retriable && !last ? "retry" : "failed";
    shoal_task_call_t call = {
        .model = t->model, .outcome = outcome, .kind = oc, .error = why, .usage = out.usage};
    shoal_sink_add_attempt(r->sink,
                           shoal_task_attempt_row(t, attempt_id, r->conf->worker_id, reply, &call));
    if (done) {
        t->state = SHOAL_TASK_DONE;
        t->output = out.content;
        t->tokens_in = out.usage.input;
        t->tokens_out = out.usage.output;
        finish(r, t);
    } else if (retriable && !last && !shoal_service_stopping()) {
        free(out.content);
        r->stats->retries++;
        long wait = backoff_ms(r, t->attempts, reply->retry_after_ms);
        shoal_log_info("task", "retrying job_id=%s task_id=%s attempt=%d wait_ms=%ld why=\"%s\"",
                       t->job_id, t->task_id, t->attempts, wait, why);
        start_call(r, t, wait);
    } else if (retriable && !last) {
        /* Stopping: leave the task unfinished; its message comes again. */
        free(out.content);
        json_object_del(r->held, t->task_id);
        r->nheld--;
        shoal_task_destroy(t);
    } else {
        free(out.content);
        t->state = SHOAL_TASK_FAILED;
        snprintf(t->error, sizeof(t->error), "%.400s after %d attempt%s", why, t->attempts,
                 t->attempts == 1 ? "" : "s");
        finish(r, t);
    }
}

/* Takes one message: tracks its position, then parks the task for the
 * database check (or attaches it to a live duplicate). */
static void take(struct runner *r, rd_kafka_message_t *m)
{
    char err[512];
    shoal_offset_ref_t ref;
    const char *topic = rd_kafka_topic_name(m->rkt);

    if (shoal_offsets_track(r->offsets, topic, m->partition, m->offset, &ref) != SHOAL_OK) {
        shoal_log_error("kafka", "out of memory tracking offsets");
        return;
    }
    shoal_task_t *t = shoal_task_parse(m->payload, m->len, r->conf->models, err, sizeof(err));
    if (!t) {
        r->stats->poison++;
        shoal_log_error("task", "dead-lettering a bad task message source=%s/%d@%lld error=\"%s\"",
                        topic, (int)m->partition, (long long)m->offset, err);
        dead_letter(r, m->payload, m->len, NULL, err);
        shoal_offsets_done(r->offsets, &ref);
        return;
    }
    shoal_task_t *live = held_get(r, t->task_id);
    if (live) {
        shoal_task_add_ref(live, &ref);
        shoal_task_destroy(t);
        return;
    }
    shoal_task_add_ref(t, &ref);
    t->received_ms = shoal_service_now_ms();
    struct timeval tv;
    gettimeofday(&tv, NULL);
    t->received_unix = (double)tv.tv_sec + (double)tv.tv_usec / 1e6;
    held_put(r, t);
    if (r->nunchecked == r->capunchecked) {
        size_t ncap = r->capunchecked ? r->capunchecked * 2 : CHECK_BATCH;
        shoal_task_t **n = realloc(r->unchecked, ncap * sizeof(*n));
        if (!n) {
            shoal_log_error("task", "out of memory");
            return;
        }
        r->unchecked = n;
        r->capunchecked = ncap;
    }
    r->unchecked[r->nunchecked++] = t;
}

/* Skips tasks the database already finished (a redelivery after a crash or
 * a rebalance), then starts calls for the rest. */
static void check_and_start(struct runner *r)
{
    char err[512];
    if (r->nunchecked == 0 || shoal_service_now_ms() < r->pg_retry_at_ms)
        return;
    json_t *ids = json_array();
    for (size_t i = 0; i < r->nunchecked; i++)
        json_array_append_new(ids, json_string(r->unchecked[i]->task_id));
    char *text = json_dumps(ids, JSON_COMPACT);
    json_decref(ids);
    const char *params[] = {text};
    PGresult *res;
    shoal_err_t e = shoal_pg_exec(r->pg,
                                  "SELECT task_id FROM shoal.tasks WHERE task_id IN (SELECT "
                                  "jsonb_array_elements_text($1::jsonb)) AND status IN "
                                  "('done', 'failed')",
                                  1, params, &res, err, sizeof(err));
    free(text);
    if (e != SHOAL_OK) {
        shoal_log_warn("db", "could not check tasks, will retry error=\"%s\"", err);
        r->pg_retry_at_ms = shoal_service_now_ms() + 1000;
        return;
    }
    json_t *finished = json_object();
    for (int i = 0; i < PQntuples(res); i++)
        json_object_set_new(finished, PQgetvalue(res, i, 0), json_true());
    PQclear(res);
    for (size_t i = 0; i < r->nunchecked; i++) {
        shoal_task_t *t = r->unchecked[i];
        if (json_object_get(finished, t->task_id)) {
            r->stats->tasks_skipped++;
            release(r, t);
        } else {
            start_call(r, t, 0);
        }
    }
    json_decref(finished);
    r->nunchecked = 0;
}

static void store_one(const char *topic, int32_t partition, int64_t next, void *arg)
{
    rd_kafka_topic_partition_list_t *l = arg;
    rd_kafka_topic_partition_list_add(l, topic, partition)->offset = next;
}

static void store_offsets(struct runner *r)
{
    if (r->dlq_ack.pending > 0)
        return; /* dead letters must be in Kafka before their source moves on */
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(8);
    shoal_offsets_commit_list(r->offsets, store_one, l);
    if (l->cnt > 0) {
        rd_kafka_resp_err_t e = rd_kafka_offsets_store(r->consumer, l);
        if (e && e != RD_KAFKA_RESP_ERR__STATE)
            shoal_log_warn("kafka", "could not store offsets error=\"%s\"", rd_kafka_err2str(e));
    }
    rd_kafka_topic_partition_list_destroy(l);
}

static void flush(struct runner *r, int force)
{
    char err[512];
    int ended;
    size_t n = shoal_sink_results(r->sink);
    double now = shoal_service_now_ms();

    if (now < r->pg_retry_at_ms)
        return;
    if (!force && (long)n < r->conf->batch_size &&
        (n == 0 || now - r->first_result_ms < r->conf->flush_ms) &&
        shoal_sink_attempts(r->sink) < 4 * (size_t)r->conf->batch_size)
        return;
    if (shoal_sink_flush(r->sink, on_durable, r, &ended, err, sizeof(err)) != SHOAL_OK) {
        shoal_log_warn("db", "could not write results, will retry results=%zu error=\"%s\"", n,
                       err);
        r->pg_retry_at_ms = now + 500;
        return;
    }
    r->stats->flushes++;
    shoal_log_debug("db", "results written results=%zu jobs_ended=%d", n, ended);
    store_offsets(r);
}

static void rebalance(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                      rd_kafka_topic_partition_list_t *parts, void *opaque)
{
    struct runner *r = opaque;
    if (err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS) {
        shoal_log_info("kafka", "partitions assigned count=%d", parts->cnt);
        rd_kafka_assign(rk, parts);
        return;
    }
    store_offsets(r);
    for (int i = 0; i < parts->cnt; i++)
        shoal_offsets_forget(r->offsets, parts->elems[i].topic, parts->elems[i].partition);
    shoal_log_info("kafka", "partitions revoked count=%d", parts->cnt);
    rd_kafka_assign(rk, NULL);
}

static void drain_wake(int fd)
{
    char buf[256];
    while (read(fd, buf, sizeof(buf)) > 0)
        ;
}

static shoal_err_t setup(struct runner *r, char *errbuf, size_t errlen)
{
    const shoal_runner_conf_t *c = r->conf;
    const char *topics[] = {c->topics->tasks_high, c->topics->tasks_normal, c->topics->tasks_low};
    struct timeval tv;

    gettimeofday(&tv, NULL);
    r->start_ms = (long long)tv.tv_sec * 1000 + tv.tv_usec / 1000;
    r->rand_state = (unsigned)(tv.tv_usec ^ getpid());
    r->wake[0] = r->wake[1] = -1;
    if (!(r->held = json_object()) || !(r->offsets = shoal_offsets_new()) ||
        !(r->pg = shoal_pg_new(c->pg, "shoal-worker")) || !(r->sink = shoal_sink_new(r->pg)))
        return shoal_err_set(errbuf, errlen, SHOAL_ERR_NOMEM, "out of memory");
    size_t nm = shoal_models_count(c->models);
    if (!(r->headers = calloc(nm ? nm : 1, sizeof(*r->headers))))
        return shoal_err_set(errbuf, errlen, SHOAL_ERR_NOMEM, "out of memory");
    for (size_t i = 0; i < nm; i++)
        if (!(r->headers[i] = shoal_provider_headers(shoal_models_at(c->models, i))))
            return shoal_err_set(errbuf, errlen, SHOAL_ERR_NOMEM, "out of memory");
    if (!(r->http = shoal_http_new(on_reply, r, errbuf, errlen)))
        return SHOAL_ERR_NOMEM;
    if (!(r->producer = shoal_kafka_producer_new(c->bootstrap, c->kafka, errbuf, errlen)))
        return SHOAL_ERR_INVALID;
    if (!(r->consumer = shoal_kafka_consumer_new(c->bootstrap, c->group, c->kafka, topics, 3,
                                                 rebalance, r, errbuf, errlen)))
        return SHOAL_ERR_INVALID;
    /* Kafka writes to this pipe when messages arrive, waking curl_multi_poll. */
    if (pipe2(r->wake, O_NONBLOCK | O_CLOEXEC) != 0)
        return shoal_err_set(errbuf, errlen, SHOAL_ERR_IO, "could not create a pipe");
    r->queue = rd_kafka_queue_get_consumer(r->consumer);
    rd_kafka_queue_io_event_enable(r->queue, r->wake[1], "1", 1);
    return SHOAL_OK;
}

static void teardown(struct runner *r)
{
    if (r->queue) {
        rd_kafka_queue_io_event_enable(r->queue, -1, NULL, 0);
        rd_kafka_queue_destroy(r->queue);
    }
    if (r->consumer) {
        rd_kafka_consumer_close(r->consumer);
        rd_kafka_destroy(r->consumer);
    }
    if (r->producer) {
        rd_kafka_flush(r->producer, 10000);
        rd_kafka_destroy(r->producer);
    }
    shoal_http_destroy(r->http); /* abandons calls still running */
    /* Tasks still held were never made durable: their messages come again. */
    const char *k;
    json_t *v;
    json_object_foreach(r->held, k, v)
        shoal_task_destroy((shoal_task_t *)(intptr_t)json_integer_value(v));
    json_decref(r->held);
    free(r->unchecked);
    for (size_t i = 0; r->headers && i < shoal_models_count(r->conf->models); i++)
        curl_slist_free_all(r->headers[i]);
    free(r->headers);
    shoal_sink_destroy(r->sink);
    shoal_pg_destroy(r->pg);
    shoal_offsets_destroy(r->offsets);
    if (r->wake[0] >= 0)
        close(r->wake[0]);
    if (r->wake[1] >= 0)
        close(r->wake[1]);
}

shoal_err_t shoal_runner_run(const shoal_runner_conf_t *conf, shoal_runner_stats_t *stats,
                             char *errbuf, size_t errlen)
{
    struct runner r;
    shoal_err_t err;

    memset(&r, 0, sizeof(r));
    memset(stats, 0, sizeof(*stats));
    r.conf = conf;
    r.stats = stats;
    if ((err = setup(&r, errbuf, errlen)) != SHOAL_OK) {
        teardown(&r);
        return err;
    }
    shoal_log_info("main", "worker started worker_id=%s max_inflight=%ld", conf->worker_id,
                   conf->max_inflight);

    while (!shoal_service_stopping()) {
        /* Take what fits; hold back while results wait for the database. */
        while (r.nheld < conf->max_inflight &&
               (long)shoal_sink_results(r.sink) < 4 * conf->batch_size) {
            rd_kafka_message_t *m = rd_kafka_consumer_poll(r.consumer, 0);
            if (!m)
                break;
            if (!m->err)
                take(&r, m);
            else if (m->err != RD_KAFKA_RESP_ERR__PARTITION_EOF)
                shoal_log_warn("kafka", "consumer error error=\"%s\"", rd_kafka_message_errstr(m));
            rd_kafka_message_destroy(m);
        }
        check_and_start(&r);

        long wait = 200;
        if (shoal_sink_results(r.sink) > 0) {
            double due = r.first_result_ms + (double)conf->flush_ms - shoal_service_now_ms();
            wait = due < 1 ? 0 : (long)due;
        }
        if (r.nunchecked > 0 && wait > 50)
            wait = 50;
        if (shoal_http_run(r.http, (int)wait, r.wake[0], errbuf, errlen) != SHOAL_OK)
            shoal_log_error("http", "transfer loop failed error=\"%s\"", errbuf);
        drain_wake(r.wake[0]);
        rd_kafka_poll(r.producer, 0);
        flush(&r, 0);
        if (shoal_sink_results(r.sink) == 0)
            store_offsets(&r);
    }

    /* Stop: let running calls end within the grace period, write what is done. */
    shoal_log_info("main", "worker stopping held=%ld", r.nheld);
    shoal_service_shutdown_deadline((unsigned)(conf->grace_ms / 1000) + 30);
    double deadline = shoal_service_now_ms() + (double)conf->grace_ms;
    while (shoal_http_pending(r.http) > 0 && shoal_service_now_ms() < deadline)
        shoal_http_run(r.http, 100, -1, errbuf, errlen);
    for (int i = 0; i < 20 && shoal_sink_results(r.sink) + shoal_sink_attempts(r.sink) > 0; i++) {
        r.pg_retry_at_ms = 0;
        flush(&r, 1);
        if (shoal_sink_results(r.sink) + shoal_sink_attempts(r.sink) > 0)
            usleep(250000);
    }
    shoal_kafka_ack_wait(r.producer, &r.dlq_ack, 10000, NULL, 0);
    store_offsets(&r);
    teardown(&r);
    shoal_log_info("main", "worker stopped done=%ld failed=%ld skipped=%ld calls=%ld",
                   stats->tasks_done, stats->tasks_failed, stats->tasks_skipped, stats->calls);
    return SHOAL_OK;
}
