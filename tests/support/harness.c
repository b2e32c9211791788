/*
 * Integration-test harness (see harness.h).
 */
#include "tests/support/harness.h"

#include <curl/curl.h>
#include <librdkafka/rdkafka.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "common/kafka.h"
#include "common/log.h"
#include "tests/support/check.h"

struct harness {
    shoal_devstack_t *ds;
    shoal_pg_t *pg;
    rd_kafka_t *producer;
    char env[2048];
};

const char *harness_bin(const char *name)
{
    static char buf[4][1024];
    static int i;
    const char *dir = getenv("SHOAL_BINARY_DIR");
    i = (i + 1) % 4;
    snprintf(buf[i], sizeof(buf[i]), "%s/%s", dir ? dir : SHOAL_BINARY_DIR, name);
    return buf[i];
}

static int env_true(const char *name)
{
    const char *v = getenv(name);
    return v && (!strcmp(v, "1") || !strcmp(v, "true") || !strcmp(v, "yes"));
}

harness_t *harness_start(const harness_conf_t *conf)
{
    char err[1024];
    harness_t *h = calloc(1, sizeof(*h));
    assert_true(h != NULL);
    const char *dir = getenv("SHOAL_BINARY_DIR");
    shoal_log_init("test", SHOAL_LOG_WARN, 0);
    /* the schedulers this stack starts inherit it */
    setenv("SHOAL_CACHE_TTL_S", conf->cache ? "604800" : "0", 1);
    shoal_devstack_conf_t dc = {NULL,
                                dir ? dir : SHOAL_BINARY_DIR,
                                conf->workers,
                                conf->schedulers,
                                conf->sim_latency_ms,
                                conf->worker_args,
                                "info",
                                conf->extra_models,
                                conf->sim_args,
                                NULL,
                                conf->unsafe_fast || env_true("SHOAL_UNSAFE_FAST")};
    h->ds = shoal_devstack_new(&dc, err, sizeof(err));
    if (!h->ds)
        test_fail("could not start the stack: %s", err);
    h->pg = shoal_pg_new(shoal_devstack_pg_url(h->ds), "shoal-test");
    h->producer = shoal_kafka_producer_new(shoal_devstack_bootstrap(h->ds), NULL, err, sizeof(err));
    if (!h->producer)
        test_fail("could not create a producer: %s", err);
    snprintf(h->env, sizeof(h->env),
             "export SHOAL_BOOTSTRAP='%s' SHOAL_PG='%s' SHOAL_MODELS='%s' SHOAL_SIM_URL='%s' "
             "SHOAL_HOME='%s';",
             shoal_devstack_bootstrap(h->ds), shoal_devstack_pg_url(h->ds),
             shoal_devstack_models_path(h->ds), shoal_devstack_sim_url(h->ds),
             shoal_devstack_workdir(h->ds));
    fprintf(stderr, "stack up: kafka=%s workdir=%s\n", shoal_devstack_bootstrap(h->ds),
            shoal_devstack_workdir(h->ds));
    return h;
}

void harness_stop(harness_t *h)
{
    if (!h)
        return;
    rd_kafka_flush(h->producer, 5000);
    rd_kafka_destroy(h->producer);
    shoal_pg_destroy(h->pg);
    /* Every process must stop cleanly when asked, with no sanitizer report. */
    char report[2048];
    int bad = shoal_devstack_stop_procs(h->ds, report, sizeof(report));
    if (bad)
        test_fail("%d processes ended badly: %s (logs in %s/logs)", bad, report,
                  shoal_devstack_workdir(h->ds));
    shoal_devstack_destroy(h->ds);
    free(h);
}

shoal_devstack_t *harness_stack(harness_t *h)
{
    return h->ds;
}

shoal_pg_t *harness_pg(harness_t *h)
{
    return h->pg;
}

void harness_produce(harness_t *h, const char *topic, const char *key, const void *value,
                     size_t len)
{
    char err[512];
    if (shoal_kafka_produce_sync(h->producer, topic, key, value, len, 30000, err, sizeof(err)) !=
        SHOAL_OK)
        test_fail("could not produce to %s: %s", topic, err);
}

void harness_produce_to(harness_t *h, const char *topic, int partition, const char *key,
                        const void *value, size_t len)
{
    char err[512];
    shoal_kafka_ack_t ack = {0, 0};
    rd_kafka_resp_err_t e = rd_kafka_producev(
        h->producer, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_PARTITION(partition),
        RD_KAFKA_V_KEY(key, key ? strlen(key) : 0), RD_KAFKA_V_VALUE((void *)value, len),
        RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_OPAQUE(&ack), RD_KAFKA_V_END);
    if (e)
        test_fail("could not produce to %s/%d: %s", topic, partition, rd_kafka_err2str(e));
    ack.pending++;
    if (shoal_kafka_ack_wait(h->producer, &ack, 30000, err, sizeof(err)) != SHOAL_OK)
        test_fail("could not produce to %s/%d: %s", topic, partition, err);
}

static PGresult *query(harness_t *h, const char *sql, va_list ap)
{
    const char *params[16];
    int n = 0;
    const char *p;
    char err[1024];
    PGresult *r = NULL;
    while ((p = va_arg(ap, const char *)) != NULL && n < 16)
        params[n++] = p;
    /* The server may be restarting in a fault test: retry briefly. */
    for (int tries = 0; tries < 100; tries++) {
        shoal_err_t e = shoal_pg_exec(h->pg, sql, n, params, &r, err, sizeof(err));
        if (e == SHOAL_OK)
            return r;
        if (e != SHOAL_ERR_RETRY)
            break;
        struct timespec ts = {0, 200 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    test_fail("query failed: %s: %s", sql, err);
    return NULL;
}

long harness_long(harness_t *h, const char *sql, ...)
{
    va_list ap;
    va_start(ap, sql);
    PGresult *r = query(h, sql, ap);
    va_end(ap);
    long v = PQntuples(r) && !PQgetisnull(r, 0, 0) ? strtol(PQgetvalue(r, 0, 0), NULL, 10) : -1;
    PQclear(r);
    return v;
}

void harness_str(harness_t *h, char *out, size_t outlen, const char *sql, ...)
{
    va_list ap;
    va_start(ap, sql);
    PGresult *r = query(h, sql, ap);
    va_end(ap);
    snprintf(out, outlen, "%s", PQntuples(r) && !PQgetisnull(r, 0, 0) ? PQgetvalue(r, 0, 0) : "");
    PQclear(r);
}

/* Where each task topic's partitions stand for the workers' group: the
 * committed offset against the end of the log. A committed offset short of
 * the end is a message no worker finished; at the end, every message was
 * taken and finished by a worker. */
static void dump_offsets(harness_t *h)
{
    char err[512];
    rd_kafka_t *rk = shoal_kafka_reader_new(shoal_devstack_bootstrap(h->ds), "shoal-workers", NULL,
                                            err, sizeof(err));
    if (!rk) {
        fprintf(stderr, "  offsets: %s\n", err);
        return;
    }
    static const char *const topics[] = {"shoal.tasks.high", "shoal.tasks.normal",
                                         "shoal.tasks.low"};
    int shown = 0, partitions = 0;
    for (size_t k = 0; k < sizeof(topics) / sizeof(topics[0]); k++) {
        rd_kafka_topic_partition_list_t *l =
            shoal_kafka_partitions(rk, topics[k], 5000, err, sizeof(err));
        rd_kafka_resp_err_t e = l ? rd_kafka_committed(rk, l, 5000) : RD_KAFKA_RESP_ERR__FAIL;
        if (e)
            fprintf(stderr, "  offsets: %s\n", l ? rd_kafka_err2str(e) : err);
        for (int i = 0; !e && i < l->cnt; i++, partitions++) {
            int64_t lo = -1, hi = -1;
            rd_kafka_query_watermark_offsets(rk, topics[k], l->elems[i].partition, &lo, &hi, 5000);
            if (hi > 0 && ++shown)
                fprintf(stderr, "  %s/%d committed=%lld end=%lld%s\n", topics[k],
                        (int)l->elems[i].partition, (long long)l->elems[i].offset, (long long)hi,
                        l->elems[i].offset < hi ? "  <- not all finished" : "");
        }
        if (l)
            rd_kafka_topic_partition_list_destroy(l);
    }
    if (!shown)
        fprintf(stderr, "  no messages on the %d partitions\n", partitions);
    rd_kafka_destroy(rk);
}

void harness_print_lanes(harness_t *h)
{
    char rows[4096];
    harness_str(h, rows, sizeof(rows),
                "SELECT coalesce(string_agg(format('  %s limit=%s/s (%s) learned=%s/s "
                "decreases=%s noise=%s measuring=%s sent=%s 429=%s', model, "
                "round(s.limit_rps::numeric, 2), s.limit_source, "
                "round(s.learned_rps::numeric, 2), "
                "s.decreases, round(s.noise_share::numeric, 3), l.level_at IS NOT NULL, "
                "s.sent_total, s.rate_limited_total), E'\\n' ORDER BY model), '  none') "
                "FROM shoal.lane_status s JOIN shoal.lanes l USING (model)",
                NULL);
    fprintf(stderr, "lanes:\n%s\n", rows);
}

/* What a test that timed out waiting for a job prints, so a failure in CI
 * (where the work directory is gone) says where the job's tasks stand. */
static void dump_stuck(harness_t *h, const char *job_id)
{
    char rows[8192], out[16384];
    harness_str(h, rows, sizeof(rows),
                "SELECT coalesce(string_agg(format('  %s %s queued_at=%s calls=%s', t.task_id, "
                "t.status, coalesce(t.queued_at::text, '-'), (SELECT count(*) FROM "
                "shoal.attempts a WHERE a.task_id = t.task_id)), E'\\n'), '') FROM (SELECT * FROM "
                "shoal.tasks WHERE job_id = $1 AND status NOT IN ('done', 'failed', 'cancelled') "
                "ORDER BY task_id LIMIT 20) t",
                job_id, NULL);
    fprintf(stderr, "tasks of %s not ended (at most 20):\n%s\n", job_id, rows);
    fprintf(stderr, "task topics for the workers' group:\n");
    dump_offsets(h);
    harness_print_lanes(h);
    harness_sh(h, out, sizeof(out),
               "grep -h -e '%s' -e 'module=kafka' -e 'level=error' -e 'level=warn' "
               "\"$SHOAL_HOME\"/logs/*.log | tail -n 60",
               job_id);
    fprintf(stderr, "log lines naming the job, Kafka, warnings and errors (last 60):\n%s\n", out);
}

void harness_wait_job(harness_t *h, const char *job_id, double timeout_s, char *status, size_t len)
{
    harness_wait_job_every(h, job_id, timeout_s, 100, status, len);
}

void harness_wait_job_every(harness_t *h, const char *job_id, double timeout_s, long every_ms,
                            char *status, size_t len)
{
    double deadline = check_now_s() + timeout_s;
    for (;;) {
        harness_str(h, status, len, "SELECT status FROM shoal.jobs WHERE job_id = $1", job_id,
                    NULL);
        if (*status && strcmp(status, "running") != 0)
            return;
        if (check_now_s() > deadline) {
            long done = harness_long(h, "SELECT tasks_done FROM shoal.jobs WHERE job_id = $1",
                                     job_id, NULL);
            if (!strcmp(status, "running"))
                dump_stuck(h, job_id);
            test_fail("job %s still \"%s\" after %.0f s (%ld tasks done)", job_id,
                      *status ? status : "absent", timeout_s, done);
        }
        struct timespec ts = {every_ms / 1000, (every_ms % 1000) * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
}

static size_t collect(char *data, size_t size, size_t n, void *arg)
{
    json_t **buf = arg;
    const char *old = json_string_value(*buf);
    size_t ol = json_string_length(*buf);
    char *joined = malloc(ol + size * n + 1);
    memcpy(joined, old, ol);
    memcpy(joined + ol, data, size * n);
    joined[ol + size * n] = '\0';
    json_decref(*buf);
    *buf = json_stringn(joined, ol + size * n);
    free(joined);
    return size * n;
}

json_t *harness_sim_stats(harness_t *h)
{
    char url[256];
    json_t *text = json_string("");
    snprintf(url, sizeof(url), "%s/stats", shoal_devstack_sim_url(h->ds));
    CURL *c = curl_easy_init();
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, collect);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &text);
    CURLcode rc = curl_easy_perform(c);
    curl_easy_cleanup(c);
    if (rc != CURLE_OK)
        test_fail("GET %s failed: %s", url, curl_easy_strerror(rc));
    json_t *doc = json_loads(json_string_value(text), 0, NULL);
    json_decref(text);
    assert_true(json_is_object(doc));
    return doc;
}

json_t *harness_events(harness_t *h, const char *job_id, int want, double timeout_s)
{
    char err[512], group[64];
    shoal_topics_t topics;
    shoal_topics_init(&topics, NULL, NULL, 0);
    const char *subs[] = {topics.events};
    snprintf(group, sizeof(group), "test-events-%d-%ld", (int)getpid(),
             (long)(check_now_s() * 1000));
    shoal_kprops_t kp = {1, {"session.timeout.ms=6000"}};
    rd_kafka_t *c = shoal_kafka_consumer_new(shoal_devstack_bootstrap(h->ds), group, &kp, subs, 1,
                                             NULL, NULL, err, sizeof(err));
    if (!c)
        test_fail("could not read events: %s", err);
    json_t *out = json_array();
    double deadline = check_now_s() + timeout_s;
    while (check_now_s() < deadline && (want == 0 || (int)json_array_size(out) < want)) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(c, 200);
        if (!m)
            continue;
        if (!m->err) {
            json_t *ev = json_loadb(m->payload, m->len, 0, NULL);
            const char *jid = json_string_value(json_object_get(ev, "job_id"));
            if (ev && (!job_id || (jid && !strcmp(jid, job_id))))
                json_array_append(out, ev);
            json_decref(ev);
        }
        rd_kafka_message_destroy(m);
    }
    rd_kafka_consumer_close(c);
    rd_kafka_destroy(c);
    return out;
}

char *harness_job(const char *job_id, int n, int max_items, const char *extra_fields)
{
    json_t *items = json_array();
    char id[32], input[64];
    for (int i = 0; i < n; i++) {
        snprintf(id, sizeof(id), "i%05d", i);
        snprintf(input, sizeof(input), "item-%05d", i);
        json_array_append_new(items, json_pack("{s:s, s:s}", "id", id, "input", input));
    }
    json_t *job = json_pack("{s:s, s:s, s:s, s:o, s:{s:i, s:i}}", "tenant", "test", "model",
                            "sim-small", "prompt_template", "Echo:\n{{input}}", "items", items,
                            "chunking", "max_items", max_items, "max_tokens", 12000);
    if (job_id)
        json_object_set_new(job, "job_id", json_string(job_id));
    if (extra_fields) {
        json_t *extra = json_loads(extra_fields, 0, NULL);
        assert_true(json_is_object(extra));
        json_object_update(job, extra);
        json_decref(extra);
    }
    char *text = json_dumps(job, JSON_COMPACT);
    json_decref(job);
    return text;
}

char *harness_job_changed(const char *job_id, int n, const int *changed, int nchanged,
                          const char *extra_fields)
{
    char *text = harness_job(job_id, n, 1, extra_fields);
    json_t *job = json_loads(text, 0, NULL);
    free(text);
    assert_true(job != NULL);
    for (int i = 0; i < nchanged; i++) {
        char input[64];
        snprintf(input, sizeof(input), "changed item %d", changed[i]);
        json_t *item = json_array_get(json_object_get(job, "items"), (size_t)changed[i]);
        assert_true(item != NULL);
        json_object_set_new(item, "input", json_string(input));
    }
    text = json_dumps(job, JSON_COMPACT);
    json_decref(job);
    assert_true(text != NULL);
    return text;
}

long harness_sim_requests(harness_t *h)
{
    json_t *stats = harness_sim_stats(h);
    long n = (long)json_integer_value(json_object_get(stats, "requests"));
    json_decref(stats);
    return n;
}

long harness_run_job(harness_t *h, const char *job_id, const char *job, double timeout_s,
                     double *ms)
{
    char status[64];
    long before = harness_sim_requests(h);
    double t0 = check_now_s();
    harness_produce(h, "shoal.jobs", job_id, job, strlen(job));
    harness_wait_job(h, job_id, timeout_s, status, sizeof(status));
    if (ms)
        *ms = (check_now_s() - t0) * 1000.0;
    assert_str_eq(status, "completed");
    return harness_sim_requests(h) - before;
}

int harness_sh(harness_t *h, char *out, size_t outlen, const char *fmt, ...)
{
    char cmd[8192], user[6000];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(user, sizeof(user), fmt, ap);
    va_end(ap);
    snprintf(cmd, sizeof(cmd), "%s %s", h->env, user);
    FILE *p = popen(cmd, "r");
    assert_true(p != NULL);
    size_t n = 0, got;
    if (out && outlen)
        out[0] = '\0';
    char scratch[4096];
    while ((got = fread(out && outlen ? out + n : scratch, 1,
                        out && outlen ? outlen - 1 - n : sizeof(scratch), p)) > 0) {
        if (out && outlen) {
            n += got;
            out[n] = '\0';
            if (n + 1 >= outlen)
                break;
        }
    }
    /* Drain whatever did not fit so the child is not blocked on a full pipe. */
    while (fread(scratch, 1, sizeof(scratch), p) > 0)
        ;
    int st = pclose(p);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}
