/*
 * scheduler/merger and scheduler/events on a throwaway PostgreSQL and
 * librdkafka's mock cluster. A job whose last task another connection records
 * is merged on the merger's notification (its connection is never replaced);
 * a job finished while no merger listened is found by the sweep on connect,
 * also after the server restarted; two mergers on one finished job close it
 * once; the outbox ends empty with the job's accepted and completed events on
 * the events topic, keyed by job_id; a merge that fails for good ends the job
 * failed with a failed event. A queued task that ends is announced on
 * shoal_room and brings the dispatcher's next pass forward. An outbox drain that Kafka's client
 * refuses part of keeps every row and leaves no delivery outstanding.
 */
#include "scheduler/merger.h"

#include <jansson.h>
#include <librdkafka/rdkafka.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "stack/mockkafka.h"
#include "stack/pgcluster.h"
#include "common/kafka.h"
#include "common/log.h"
#include "common/migrate.h"
#include "common/pg.h"
#include "scheduler/dispatch.h"
#include "scheduler/events.h"
#include "tests/support/check.h"
#include "tests/support/sqlcheck.h"

static shoal_pgcluster_t *cluster;
static shoal_mockkafka_t *kafka;
static shoal_topics_t topics;

static rd_kafka_t *producer_new(const char *prop)
{
    char err[512];
    shoal_kprops_t props = {prop ? 1 : 0, {prop}};
    rd_kafka_t *p =
        shoal_kafka_producer_new(shoal_mockkafka_bootstraps(kafka), &props, err, sizeof(err));
    if (!p)
        test_fail("producer: %s", err);
    return p;
}

static void producer_destroy(rd_kafka_t *p)
{
    assert_int_eq(rd_kafka_flush(p, 10000), RD_KAFKA_RESP_ERR_NO_ERROR);
    rd_kafka_destroy(p);
}

/* Records job id with n tasks "<id>:<chunk>" through shoal.record_job. */
static void record_job(shoal_pg_t *pg, const char *id, int n, const char *merge, const char *fmt)
{
    char err[512];
    json_t *tasks = json_array();
    for (int k = 0; k < n; k++) {
        char tid[128], item[16];
        snprintf(tid, sizeof(tid), "%s:%06d", id, k);
        snprintf(item, sizeof(item), "it%d", k);
        json_array_append_new(tasks, json_pack("{s:s, s:i, s:[s], s:i}", "task_id", tid, "chunk", k,
                                               "item_ids", item, "est_tokens", 10));
    }
    json_t *job = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:i}", "job_id", id, "tenant", "acme",
                            "priority", "normal", "model", "fast", "merge", merge, "output_format",
                            fmt, "items_total", n);
    char *a = json_dumps(job, JSON_COMPACT), *b = json_dumps(tasks, JSON_COMPACT);
    const char *params[] = {a, b};
    PGresult *r;
    if (shoal_pg_exec(pg, "SELECT shoal.record_job($1::jsonb, $2::jsonb)", 2, params, &r, err,
                      sizeof(err)) != SHOAL_OK)
        test_fail("record_job: %s", err);
    assert_str_eq(PQgetvalue(r, 0, 0), "new");
    PQclear(r);
    free(a);
    free(b);
    json_decref(job);
    json_decref(tasks);
}

/* Records chunk of job id as done with output through shoal.record_batch, as
 * a worker does; returns how many jobs that ended. */
static int finish(shoal_pg_t *pg, const char *id, int chunk, const char *output)
{
    char err[512], tid[128], aid[160];
    snprintf(tid, sizeof(tid), "%s:%06d", id, chunk);
    snprintf(aid, sizeof(aid), "w1/%s", tid);
    json_t *res =
        json_pack("[{s:s, s:s, s:i, s:s, s:s, s:s, s:i, s:i, s:s, s:i}]", "task_id", tid, "job_id",
                  id, "chunk", chunk, "status", "done", "output", output, "model", "fast",
                  "tokens_in", 10, "tokens_out", 5, "worker_id", "w1", "attempts", 1);
    json_t *att =
        json_pack("[{s:s, s:s, s:s, s:i, s:s, s:s, s:i, s:s, s:f, s:f, s:f, s:f}]", "attempt_id",
                  aid, "task_id", tid, "job_id", id, "attempt", 1, "model", "fast", "worker_id",
                  "w1", "http_status", 200, "outcome", "ok", "latency_ms", 5.0, "cost_usd", 0.001,
                  "started_at", 1700000000.0, "finished_at", 1700000000.5);
    char *a = json_dumps(res, JSON_COMPACT), *b = json_dumps(att, JSON_COMPACT);
    const char *params[] = {a, b};
    PGresult *r;
    if (shoal_pg_exec(pg, "SELECT * FROM shoal.record_batch($1::jsonb, $2::jsonb)", 2, params, &r,
                      err, sizeof(err)) != SHOAL_OK)
        test_fail("record_batch: %s", err);
    int ended = PQntuples(r);
    if (ended)
        assert_str_eq(PQgetvalue(r, 0, 0), id);
    PQclear(r);
    free(a);
    free(b);
    json_decref(res);
    json_decref(att);
    return ended;
}

/* Polls m until its merged counts add up to want (waiting on its socket in
 * between), then once more; fails after 10 s or if they add up to more. */
static void poll_until_merged(shoal_merger_t *m, int want)
{
    char err[512];
    int total = 0;
    double deadline = check_now_s() + 10;
    while (total < want) {
        int merged = -1;
        shoal_err_t e = shoal_merger_poll(m, &merged, err, sizeof(err));
        if (e != SHOAL_OK)
            test_fail("merger poll: %s: %s", shoal_err_name(e), err);
        assert_true(merged >= 0);
        total += merged;
        if (total >= want)
            break;
        if (check_now_s() > deadline)
            test_fail("merged %d of %d jobs in 10 s", total, want);
        struct pollfd pfd = {shoal_merger_fd(m), POLLIN, 0};
        assert_true(pfd.fd >= 0);
        poll(&pfd, 1, 100);
    }
    int merged = -1;
    assert_int_eq(shoal_merger_poll(m, &merged, err, sizeof(err)), SHOAL_OK);
    total += merged;
    assert_int_eq(total, want);
}

/* Every event on the events topic for job_id, read from the beginning to the
 * end of each partition, as an array of payloads (caller decrefs); each
 * message's key must be the job id. */
static json_t *read_events(const char *job_id)
{
    char errstr[512];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    const char *props[][2] = {{"bootstrap.servers", shoal_mockkafka_bootstraps(kafka)},
                              {"group.id", "merger-test-reader"},
                              {"enable.auto.commit", "false"},
                              {"enable.partition.eof", "true"},
                              {"fetch.wait.max.ms", "10"}};
    for (size_t i = 0; i < sizeof(props) / sizeof(props[0]); i++)
        if (rd_kafka_conf_set(conf, props[i][0], props[i][1], errstr, sizeof(errstr)) !=
            RD_KAFKA_CONF_OK)
            test_fail("%s: %s", props[i][0], errstr);
    rd_kafka_t *c = rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, sizeof(errstr));
    if (!c)
        test_fail("consumer: %s", errstr);
    rd_kafka_poll_set_consumer(c);

    rd_kafka_topic_t *rkt = rd_kafka_topic_new(c, topics.events, NULL);
    const struct rd_kafka_metadata *md;
    rd_kafka_resp_err_t e = rd_kafka_metadata(c, 0, rkt, &md, 10000);
    if (e)
        test_fail("metadata: %s", rd_kafka_err2str(e));
    int parts = md->topics[0].partition_cnt;
    assert_true(parts > 0 && parts <= 64);
    rd_kafka_metadata_destroy(md);
    rd_kafka_topic_destroy(rkt);

    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(parts);
    for (int p = 0; p < parts; p++)
        rd_kafka_topic_partition_list_add(l, topics.events, p)->offset = RD_KAFKA_OFFSET_BEGINNING;
    assert_int_eq(rd_kafka_assign(c, l), RD_KAFKA_RESP_ERR_NO_ERROR);
    rd_kafka_topic_partition_list_destroy(l);

    json_t *out = json_array();
    char eof[64] = {0};
    int eofs = 0;
    double deadline = check_now_s() + 10;
    while (eofs < parts) {
        if (check_now_s() > deadline)
            test_fail("events: reached the end of %d of %d partitions in 10 s", eofs, parts);
        rd_kafka_message_t *m = rd_kafka_consumer_poll(c, 100);
        if (!m)
            continue;
        if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
            if (!eof[m->partition]++)
                eofs++;
        } else if (m->err) {
            test_fail("events: %s", rd_kafka_message_errstr(m));
        } else {
            json_t *ev = json_loadb(m->payload, m->len, 0, NULL);
            if (!json_is_object(ev))
                test_fail("event is not a JSON object: %.*s", (int)m->len,
                          (const char *)m->payload);
            const char *jid = json_string_value(json_object_get(ev, "job_id"));
            assert_true(jid != NULL);
            assert_true(m->key != NULL && m->key_len == strlen(jid) &&
                        !memcmp(m->key, jid, m->key_len));
            if (!strcmp(jid, job_id))
                json_array_append(out, ev);
            json_decref(ev);
        }
        rd_kafka_message_destroy(m);
    }
    rd_kafka_consumer_close(c);
    rd_kafka_destroy(c);
    return out;
}

/* The events' types joined by ",". */
static void event_types(const json_t *events, char *out, size_t outlen)
{
    size_t i, n = 0;
    json_t *ev;
    out[0] = '\0';
    json_array_foreach((json_t *)events, i, ev)
    {
        n += (size_t)snprintf(out + n, outlen - n, "%s%s", i ? "," : "",
                              json_string_value(json_object_get(ev, "type")));
        assert_true(n < outlen);
    }
}

/* Backends of mergers (application_name shoal-merger). */
static long merger_backends(shoal_pg_t *pg)
{
    return sqlcheck_long(
        pg, "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'shoal-merger'", NULL);
}

static void test_notify(shoal_pg_t *pg, shoal_pg_t *worker, rd_kafka_t *producer)
{
    char v[256];
    record_job(pg, "m-1", 2, "concat", "text");
    shoal_merger_t *m = shoal_merger_new(shoal_pgcluster_url(cluster), producer, topics.events);
    assert_true(m != NULL);
    assert_int_eq(shoal_merger_fd(m), -1); /* connects on the first poll */
    poll_until_merged(m, 0);
    assert_true(shoal_merger_fd(m) >= 0);
    /* the accepted event went out with that poll */
    assert_int_eq(sqlcheck_long(pg, "SELECT count(*) FROM shoal.event_outbox", NULL), 0);
    assert_int_eq(merger_backends(pg), 1);
    long pid = sqlcheck_long(
        pg, "SELECT pid FROM pg_stat_activity WHERE application_name = 'shoal-merger'", NULL);

    /* the last chunk lands first; outputs still merge in chunk order */
    assert_int_eq(finish(worker, "m-1", 1, "second"), 0);
    assert_int_eq(finish(worker, "m-1", 0, "first"), 1);
    poll_until_merged(m, 1);

    /* the same session all along: no reconnect, so no sweep found it */
    assert_int_eq(merger_backends(pg), 1);
    assert_int_eq(
        sqlcheck_long(
            pg, "SELECT pid FROM pg_stat_activity WHERE application_name = 'shoal-merger'", NULL),
        pid);
    sqlcheck_text(
        pg,
        "SELECT status || '|' || output || '|' || (finished_at IS NOT NULL) FROM shoal.jobs "
        "WHERE job_id = $1",
        "m-1", v, sizeof(v));
    assert_str_eq(v, "completed|first\nsecond|true");
    assert_int_eq(sqlcheck_long(pg, "SELECT count(*) FROM shoal.event_outbox", NULL), 0);

    json_t *evs = read_events("m-1");
    event_types(evs, v, sizeof(v));
    assert_str_eq(v, "accepted,completed");
    json_t *done = json_array_get(evs, 1);
    assert_int_eq(json_integer_value(json_object_get(done, "tasks")), 2);
    assert_int_eq(json_integer_value(json_object_get(done, "tasks_done")), 2);
    assert_int_eq(json_integer_value(json_object_get(done, "tasks_failed")), 0);
    json_decref(evs);
    shoal_merger_destroy(m);
    shoal_merger_destroy(NULL);
}

/* Polls m for up to 2 s (waiting on its socket) until it has heard of ended
 * tasks; returns whether it did. */
static int heard_room(shoal_merger_t *m)
{
    char err[512];
    double deadline = check_now_s() + 2;
    do {
        if (shoal_merger_poll(m, NULL, err, sizeof(err)) != SHOAL_OK)
            test_fail("merger poll: %s", err);
        if (shoal_merger_room(m))
            return 1;
        struct pollfd pfd = {shoal_merger_fd(m), POLLIN, 0};
        poll(&pfd, 1, 50);
    } while (check_now_s() < deadline);
    return 0;
}

/* A queued task that ends is announced on shoal_room, once, and brings the
 * dispatcher's next pass forward to 10 ms after its last; tasks that end
 * without having been queued, or tasks being queued, announce nothing. */
static void test_room(shoal_pg_t *pg, shoal_pg_t *worker, rd_kafka_t *producer)
{
    char err[512];
    shoal_merger_t *m = shoal_merger_new(shoal_pgcluster_url(cluster), producer, topics.events);
    assert_true(m != NULL);
    assert_true(!heard_room(m)); /* connected; nothing ended */

    record_job(pg, "room-1", 3, "concat", "text");
    sqlcheck_exec(pg, "SELECT shoal.mark_queued($1, '{0,1}')", "room-1");
    assert_true(!heard_room(m)); /* queued, not ended */
    assert_int_eq(finish(worker, "room-1", 0, "a"), 0);
    assert_true(heard_room(m));
    assert_int_eq(shoal_merger_room(m), 0);             /* told once */
    assert_int_eq(finish(worker, "room-1", 2, "c"), 0); /* ends still pending: no room made */
    assert_true(!heard_room(m));

    /* The dispatcher: a pass now, the next one every_ms later, or 10 ms
     * after it once room was announced; that pass clears it. */
    shoal_intake_conf_t ic;
    memset(&ic, 0, sizeof(ic));
    shoal_dispatch_conf_t dc = {60000, 2000, 2000};
    shoal_dispatch_t *d = shoal_dispatch_new(shoal_pgcluster_url(cluster), &ic, &dc);
    assert_true(d != NULL);
    int published = -1;
    if (shoal_dispatch_poll(d, 1, &published, err, sizeof(err)) != SHOAL_OK)
        test_fail("dispatch: %s", err);
    assert_true(shoal_dispatch_due_ms(d) > 50000);
    shoal_dispatch_room(d);
    assert_true(shoal_dispatch_due_ms(d) <= 11);
    while (shoal_dispatch_due_ms(d) > 0)
        poll(NULL, 0, 2);
    if (shoal_dispatch_poll(d, 0, &published, err, sizeof(err)) != SHOAL_OK)
        test_fail("dispatch: %s", err);
    assert_true(shoal_dispatch_due_ms(d) > 50000);
    shoal_dispatch_destroy(d);
    shoal_merger_destroy(m);
}

/* Finished while no merger listened: the notification is lost, the sweep on
 * connect finds the job. */
static void test_sweep(shoal_pg_t *pg, shoal_pg_t *worker, rd_kafka_t *producer)
{
    char v[256];
    assert_wait(merger_backends(pg) == 0, 10, "the previous merger's session to end");
    record_job(pg, "m-2", 2, "json_array", "json");
    assert_int_eq(finish(worker, "m-2", 0, "{\"a\": 1}"), 0);
    assert_int_eq(finish(worker, "m-2", 1, "not json"), 1);

    shoal_merger_t *m = shoal_merger_new(shoal_pgcluster_url(cluster), producer, topics.events);
    assert_true(m != NULL);
    int merged = -1;
    char err[512];
    if (shoal_merger_poll(m, &merged, err, sizeof(err)) != SHOAL_OK)
        test_fail("merger poll: %s", err);
    assert_int_eq(merged, 1);
    sqlcheck_text(pg, "SELECT status || '|' || output FROM shoal.jobs WHERE job_id = $1", "m-2", v,
                  sizeof(v));
    assert_str_eq(v, "completed|[{\"a\": 1}, \"not json\"]");
    assert_int_eq(sqlcheck_long(pg, "SELECT count(*) FROM shoal.event_outbox", NULL), 0);
    json_t *evs = read_events("m-2");
    event_types(evs, v, sizeof(v));
    assert_str_eq(v, "accepted,completed");
    json_decref(evs);

    /* the server restarts; a job finished meanwhile is found by the sweep
     * after the merger reconnects */
    assert_int_eq(shoal_pgcluster_stop(cluster, SHOAL_PGCLUSTER_FAST), SHOAL_OK);
    assert_int_eq(shoal_merger_poll(m, &merged, err, sizeof(err)), SHOAL_ERR_RETRY);
    assert_true(err[0] != '\0');
    assert_int_eq(merged, 0);
    assert_int_eq(shoal_merger_fd(m), -1);
    if (shoal_pgcluster_start(cluster, err, sizeof(err)) != SHOAL_OK)
        test_fail("restart: %s", err);
    /* the test's own handles lost their sessions too: one failure each */
    shoal_pg_exec(pg, "SELECT 1", 0, NULL, NULL, NULL, 0);
    shoal_pg_exec(worker, "SELECT 1", 0, NULL, NULL, NULL, 0);
    record_job(pg, "m-4", 1, "concat", "text");
    assert_int_eq(finish(worker, "m-4", 0, "after restart"), 1);
    assert_int_eq(merger_backends(pg), 0);
    poll_until_merged(m, 1);
    sqlcheck_text(pg, "SELECT status || '|' || output FROM shoal.jobs WHERE job_id = $1", "m-4", v,
                  sizeof(v));
    assert_str_eq(v, "completed|after restart");
    shoal_merger_destroy(m);
}

/* A merge that fails for good (here: a merge strategy this version does not
 * know) ends the job failed with the reason and a failed event on the events
 * topic; it is not left running for the next sweep to fail again. */
static void test_merge_fails(shoal_pg_t *pg, shoal_pg_t *worker, rd_kafka_t *producer)
{
    char v[512], err[512];
    assert_wait(merger_backends(pg) == 0, 10, "the previous merger's session to end");
    record_job(pg, "m-5", 1, "concat", "text");
    sqlcheck_exec(pg, "UPDATE shoal.jobs SET merge = 'xml' WHERE job_id = $1", "m-5");
    assert_int_eq(finish(worker, "m-5", 0, "lost"), 1);

    shoal_merger_t *m = shoal_merger_new(shoal_pgcluster_url(cluster), producer, topics.events);
    assert_true(m != NULL);
    int merged = -1;
    if (shoal_merger_poll(m, &merged, err, sizeof(err)) != SHOAL_OK)
        test_fail("merger poll: %s", err);
    assert_int_eq(merged, 1);
    sqlcheck_text(
        pg, "SELECT status || '|' || error || '|' || output FROM shoal.jobs WHERE job_id = $1",
        "m-5", v, sizeof(v));
    assert_str_contains(v, "failed|the merge failed: ");
    assert_str_contains(v, "unknown merge strategy \"xml\"|");
    assert_int_eq(sqlcheck_long(pg, "SELECT count(*) FROM shoal.event_outbox", NULL), 0);
    json_t *evs = read_events("m-5");
    event_types(evs, v, sizeof(v));
    assert_str_eq(v, "accepted,failed");
    json_t *failed = json_array_get(evs, 1);
    assert_str_contains(json_string_value(json_object_get(failed, "error")),
                        "unknown merge strategy");
    assert_int_eq(json_integer_value(json_object_get(failed, "tasks_done")), 1);
    json_decref(evs);
    /* a later sweep finds nothing to do */
    assert_int_eq(shoal_merger_poll(m, &merged, err, sizeof(err)), SHOAL_OK);
    assert_int_eq(merged, 0);
    shoal_merger_destroy(m);
}

struct racer {
    shoal_merger_t *m;
    int merged;
    shoal_err_t err;
    char why[512];
};

static void *race(void *arg)
{
    struct racer *r = arg;
    r->err = shoal_merger_poll(r->m, &r->merged, r->why, sizeof(r->why));
    return NULL;
}

/* Two mergers find the same finished job at once (each by its sweep) and
 * both call merge_job while a third session holds the job's row: when it
 * lets go, one closes the job and the other finds it closed. */
static void test_race(shoal_pg_t *pg, shoal_pg_t *worker)
{
    char v[256];
    assert_wait(merger_backends(pg) == 0, 10, "the previous merger's session to end");
    record_job(pg, "m-3", 1, "concat", "text");
    assert_int_eq(finish(worker, "m-3", 0, "only"), 1);

    shoal_pg_t *holder = shoal_pg_new(shoal_pgcluster_url(cluster), "merger_test_holder");
    assert_true(holder != NULL);
    sqlcheck_exec(holder, "BEGIN", NULL);
    sqlcheck_exec(holder, "SELECT 1 FROM shoal.jobs WHERE job_id = $1 FOR UPDATE", "m-3");

    rd_kafka_t *producers[2];
    struct racer rs[2];
    pthread_t th[2];
    for (int i = 0; i < 2; i++) {
        producers[i] = producer_new(NULL);
        memset(&rs[i], 0, sizeof(rs[i]));
        rs[i].merged = -1;
        rs[i].m = shoal_merger_new(shoal_pgcluster_url(cluster), producers[i], topics.events);
        assert_true(rs[i].m != NULL);
        assert_int_eq(pthread_create(&th[i], NULL, race, &rs[i]), 0);
    }
    assert_wait(sqlcheck_long(pg,
                              "SELECT count(*) FROM pg_stat_activity WHERE application_name = "
                              "'shoal-merger' AND wait_event_type = 'Lock'",
                              NULL) == 2,
                10, "both mergers to wait for the job's row");
    sqlcheck_exec(holder, "COMMIT", NULL);
    for (int i = 0; i < 2; i++) {
        assert_int_eq(pthread_join(th[i], NULL), 0);
        if (rs[i].err != SHOAL_OK)
            test_fail("merger %d: %s: %s", i, shoal_err_name(rs[i].err), rs[i].why);
    }
    assert_int_eq(rs[0].merged + rs[1].merged, 1);
    sqlcheck_text(pg, "SELECT status || '|' || output FROM shoal.jobs WHERE job_id = $1", "m-3", v,
                  sizeof(v));
    assert_str_eq(v, "completed|only");
    assert_int_eq(sqlcheck_long(pg, "SELECT count(*) FROM shoal.event_outbox", NULL), 0);
    json_t *evs = read_events("m-3");
    event_types(evs, v, sizeof(v));
    assert_str_eq(v, "accepted,completed");
    json_decref(evs);
    for (int i = 0; i < 2; i++) {
        shoal_merger_destroy(rs[i].m);
        producer_destroy(producers[i]);
    }
    shoal_pg_destroy(holder);
}

/* shoal_events_drain on its own: rows go out keyed by job_id and leave the
 * outbox; when the client refuses one (over message.max.bytes) after another
 * was produced, the drain fails, keeps both rows, and returns only once the
 * first one's delivery report was served (it points at the drain's stack). */
static void test_drain(shoal_pg_t *pg, rd_kafka_t *producer)
{
    char err[512], v[256];
    int sent = -1;

    sqlcheck_exec(pg,
                  "INSERT INTO shoal.event_outbox (job_id, payload) VALUES "
                  "('d-1', '{\"type\": \"note\", \"job_id\": \"d-1\", \"n\": 1}'), "
                  "('d-1', '{\"type\": \"note\", \"job_id\": \"d-1\", \"n\": 2}'), "
                  "('d-1', '{\"type\": \"note\", \"job_id\": \"d-1\", \"n\": 3}')",
                  NULL);
    if (shoal_events_drain(pg, producer, topics.events, &sent, err, sizeof(err)) != SHOAL_OK)
        test_fail("drain: %s", err);
    assert_int_eq(sent, 3);
    assert_int_eq(sqlcheck_long(pg, "SELECT count(*) FROM shoal.event_outbox", NULL), 0);
    assert_int_eq(shoal_events_drain(pg, producer, topics.events, &sent, err, sizeof(err)),
                  SHOAL_OK);
    assert_int_eq(sent, 0);
    json_t *evs = read_events("d-1");
    assert_int_eq(json_array_size(evs), 3);
    for (size_t i = 0; i < 3; i++) /* one key, one partition: in order */
        assert_int_eq(json_integer_value(json_object_get(json_array_get(evs, i), "n")), i + 1);
    json_decref(evs);

    rd_kafka_t *small = producer_new("message.max.bytes=2000");
    sqlcheck_exec(
        pg,
        "INSERT INTO shoal.event_outbox (job_id, payload) VALUES "
        "('d-2', '{\"type\": \"note\", \"job_id\": \"d-2\"}'), "
        "('d-2', jsonb_build_object('type', 'note', 'job_id', 'd-2', 'pad', repeat('x', 3000)))",
        NULL);
    err[0] = '\0';
    assert_true(shoal_events_drain(pg, small, topics.events, &sent, err, sizeof(err)) != SHOAL_OK);
    assert_true(err[0] != '\0');
    assert_int_eq(sent, 0);
    assert_int_eq(rd_kafka_outq_len(small), 0);
    assert_int_eq(
        sqlcheck_long(pg, "SELECT count(*) FROM shoal.event_outbox WHERE job_id = $1", "d-2"), 2);
    /* the session is usable again: nothing left of the failed transaction */
    sqlcheck_text(pg, "SELECT 40 + 2", NULL, v, sizeof(v));
    assert_str_eq(v, "42");
    assert_int_eq(PQtransactionStatus(shoal_pg_conn(pg)), PQTRANS_IDLE);
    producer_destroy(small);

    /* a producer that takes both sends both (the first one again) */
    if (shoal_events_drain(pg, producer, topics.events, &sent, err, sizeof(err)) != SHOAL_OK)
        test_fail("drain: %s", err);
    assert_int_eq(sent, 2);
    assert_int_eq(sqlcheck_long(pg, "SELECT count(*) FROM shoal.event_outbox", NULL), 0);
}

int main(void)
{
    char err[512];

    shoal_log_init("merger_test", SHOAL_LOG_ERROR, 0);
    assert_int_eq(shoal_topics_init(&topics, NULL, err, sizeof(err)), SHOAL_OK);
    cluster = shoal_pgcluster_new(NULL, err, sizeof(err));
    if (!cluster)
        test_fail("cannot start PostgreSQL: %s", err);
    kafka = shoal_mockkafka_new(1, err, sizeof(err));
    if (!kafka)
        test_fail("cannot start the mock Kafka cluster: %s", err);
    if (shoal_mockkafka_create_default_topics(kafka, NULL, err, sizeof(err)) != SHOAL_OK)
        test_fail("topics: %s", err);
    shoal_pg_t *pg = shoal_pg_new(shoal_pgcluster_url(cluster), "merger_test");
    shoal_pg_t *worker = shoal_pg_new(shoal_pgcluster_url(cluster), "merger_test_worker");
    assert_true(pg != NULL && worker != NULL);
    if (shoal_migrate_apply(pg, NULL, err, sizeof(err)) != SHOAL_OK)
        test_fail("migrate: %s", err);
    rd_kafka_t *producer = producer_new(NULL);

    test_notify(pg, worker, producer);
    test_room(pg, worker, producer);
    test_sweep(pg, worker, producer);
    test_race(pg, worker);
    test_merge_fails(pg, worker, producer);
    test_drain(pg, producer);

    producer_destroy(producer);
    shoal_pg_destroy(worker);
    shoal_pg_destroy(pg);
    shoal_mockkafka_destroy(kafka);
    shoal_pgcluster_destroy(cluster);
    printf("merger_test: ok\n");
    return 0;
}
