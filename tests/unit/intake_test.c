/*
 * scheduler/intake on a throwaway PostgreSQL and librdkafka's mock cluster:
 * a valid job is recorded with its tasks queued, one message per task on the
 * topic of its priority (keyed by task_id, each a task a worker parses) and
 * an 'accepted' event in the outbox; the same message again publishes
 * nothing; a job without job_id is named by a hash of its Kafka position and
 * bytes (common/jobid.h); bad JSON
 * and a job over its budget are stored as rejected with the reason (a message
 * over the size limit under the job_id it names, read without loading it); tasks
 * left pending by a crash between recording and publishing are published by
 * the redelivery; a redelivery whose chunk plan no longer matches the
 * recorded tasks fails the job; a large job's tasks are recorded in slices,
 * and an admission cut short between them is completed by the redelivery; a
 * database that is down makes the message retriable.
 */
#include "scheduler/intake.h"

#include <jansson.h>
#include <librdkafka/rdkafka.h>
#include <stdlib.h>
#include <string.h>

#include "common/estimate.h"
#include "common/jobid.h"
#include "stack/mockkafka.h"
#include "stack/pgcluster.h"
#include "common/log.h"
#include "common/migrate.h"
#include "common/pg.h"
#include "worker/task.h"
#include "tests/support/check.h"
#include "tests/support/sqlcheck.h"

static const char models_text[] =
    "{\"models\": {\"fast\": {\"provider\": \"openai\","
    " \"endpoint\": \"http://127.0.0.1:9/v1/chat/completions\", \"model\": \"gpt-4o-mini\","
    " \"input_usd_per_mtok\": 1, \"output_usd_per_mtok\": 2}}}";

static shoal_pgcluster_t *cluster;
static shoal_mockkafka_t *kafka;
static shoal_models_t *models;
static shoal_topics_t topics;

/* Every message on topic, read from the beginning to the end of each
 * partition, as [{"key": ..., "value": ...}] (caller decrefs). */
static json_t *read_topic(const char *topic)
{
    char errstr[512];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    const char *props[][2] = {{"bootstrap.servers", shoal_mockkafka_bootstraps(kafka)},
                              {"group.id", "intake-test-reader"},
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

    rd_kafka_topic_t *rkt = rd_kafka_topic_new(c, topic, NULL);
    const struct rd_kafka_metadata *md;
    rd_kafka_resp_err_t e = rd_kafka_metadata(c, 0, rkt, &md, 10000);
    if (e)
        test_fail("metadata of %s: %s", topic, rd_kafka_err2str(e));
    assert_int_eq(md->topic_cnt, 1);
    int parts = md->topics[0].partition_cnt;
    assert_true(parts > 0);
    rd_kafka_metadata_destroy(md);
    rd_kafka_topic_destroy(rkt);

    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(parts);
    for (int p = 0; p < parts; p++)
        rd_kafka_topic_partition_list_add(l, topic, p)->offset = RD_KAFKA_OFFSET_BEGINNING;
    assert_int_eq(rd_kafka_assign(c, l), RD_KAFKA_RESP_ERR_NO_ERROR);
    rd_kafka_topic_partition_list_destroy(l);

    json_t *out = json_array();
    int eofs = 0;
    double deadline = check_now_s() + 10;
    char *seen_eof = calloc((size_t)parts, 1);
    assert_true(seen_eof != NULL);
    while (eofs < parts) {
        if (check_now_s() > deadline)
            test_fail("%s: reached the end of %d of %d partitions in 10 s", topic, eofs, parts);
        rd_kafka_message_t *m = rd_kafka_consumer_poll(c, 100);
        if (!m)
            continue;
        if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
            if (!seen_eof[m->partition]++)
                eofs++;
        } else if (m->err) {
            test_fail("%s: %s", topic, rd_kafka_message_errstr(m));
        } else {
            json_array_append_new(
                out, json_pack("{s:s%, s:s%}", "key", m->key ? (const char *)m->key : "",
                               m->key ? m->key_len : 0, "value", (const char *)m->payload, m->len));
        }
        rd_kafka_message_destroy(m);
    }
    free(seen_eof);
    rd_kafka_consumer_close(c);
    rd_kafka_destroy(c);
    return out;
}

/* Messages of msgs whose key starts with prefix. */
static int count_prefix(const json_t *msgs, const char *prefix)
{
    int n = 0;
    size_t i;
    json_t *m;
    json_array_foreach((json_t *)msgs, i, m)
    {
        if (!strncmp(json_string_value(json_object_get(m, "key")), prefix, strlen(prefix)))
            n++;
    }
    return n;
}

/* A job of n one-item chunks; extra (JSON members, may be NULL) is merged in. */
static char *job_text(const char *job_id, int n, const char *extra)
{
    json_t *items = json_array();
    for (int i = 0; i < n; i++) {
        char id[16], input[64];
        snprintf(id, sizeof(id), "it%d", i);
        snprintf(input, sizeof(input), "input number %d", i);
        json_array_append_new(items, json_pack("{s:s, s:s}", "id", id, "input", input));
    }
    json_t *job = json_pack("{s:s, s:s, s:s, s:o}", "tenant", "acme", "model", "fast",
                            "prompt_template", "Answer {{input}}", "items", items);
    if (job_id)
        json_object_set_new(job, "job_id", json_string(job_id));
    if (extra) {
        json_t *x = json_loads(extra, 0, NULL);
        assert_true(json_is_object(x));
        json_object_update(job, x);
        json_decref(x);
    }
    char *text = json_dumps(job, JSON_COMPACT);
    json_decref(job);
    return text;
}

static shoal_err_t deliver(const shoal_intake_conf_t *c, int partition, long long offset,
                           const char *text, shoal_intake_result_t *res)
{
    char err[512] = "";
    shoal_err_t e = shoal_intake_job(c, topics.jobs, partition, offset, text, strlen(text), res,
                                     err, sizeof(err));
    if (e != SHOAL_OK && e != SHOAL_ERR_RETRY)
        test_fail("intake: %s: %s", shoal_err_name(e), err);
    if (e == SHOAL_ERR_RETRY)
        assert_true(err[0] != '\0');
    return e;
}

static void test_new_and_duplicate(const shoal_intake_conf_t *c, shoal_pg_t *pg)
{
    shoal_intake_result_t res;
    char v[512];
    char *text = job_text("job-a", 5, "{\"priority\": \"high\"}");

    assert_int_eq(deliver(c, 2, 41, text, &res), SHOAL_OK);
    assert_int_eq(res.outcome, SHOAL_INTAKE_NEW);
    assert_str_eq(res.job_id, "job-a");
    assert_int_eq(res.tasks, 5);
    assert_int_eq(res.published, 5);

    sqlcheck_text(pg,
                  "SELECT status || ' ' || source || ' ' || tasks_total || ' ' || items_total "
                  "FROM shoal.jobs WHERE job_id = $1",
                  "job-a", v, sizeof(v));
    assert_str_eq(v, "running shoal.jobs/2@41 5 5");
    assert_int_eq(sqlcheck_long(pg, "SELECT count(*) FROM shoal.tasks WHERE job_id = $1", "job-a"),
                  5);
    assert_int_eq(
        sqlcheck_long(pg,
                      "SELECT count(*) FROM shoal.tasks WHERE job_id = $1 AND status = 'queued' "
                      "AND queued_at IS NOT NULL",
                      "job-a"),
        5);
    assert_int_eq(sqlcheck_long(pg,
                                "SELECT count(*) FROM shoal.event_outbox WHERE job_id = $1 AND "
                                "payload->>'type' = 'accepted' AND (payload->>'tasks')::int = 5",
                                "job-a"),
                  1);
    assert_int_eq(
        sqlcheck_long(pg, "SELECT count(*) FROM shoal.event_outbox WHERE job_id = $1", "job-a"), 1);

    /* five messages on the high topic, keyed by task_id, each a task */
    json_t *msgs = read_topic(topics.tasks_high);
    assert_int_eq(json_array_size(msgs), 5);
    int seen[5] = {0};
    size_t i;
    json_t *m;
    json_array_foreach(msgs, i, m)
    {
        char err[512];
        const char *value = json_string_value(json_object_get(m, "value"));
        shoal_task_t *t = shoal_task_parse(value, strlen(value), models, err, sizeof(err));
        if (!t)
            test_fail("message %zu is not a task: %s", i, err);
        assert_str_eq(json_string_value(json_object_get(m, "key")), t->task_id);
        assert_str_eq(t->job_id, "job-a");
        assert_true(t->chunk >= 0 && t->chunk < 5);
        seen[t->chunk]++;
        char want[64];
        snprintf(want, sizeof(want), "job-a:%06ld", t->chunk);
        assert_str_eq(t->task_id, want);
        shoal_task_destroy(t);
    }
    for (int k = 0; k < 5; k++)
        assert_int_eq(seen[k], 1);
    json_decref(msgs);
    msgs = read_topic(topics.tasks_normal);
    assert_int_eq(count_prefix(msgs, "job-a:"), 0);
    json_decref(msgs);

    /* the same message again: recognized, nothing published or recorded */
    assert_int_eq(deliver(c, 2, 41, text, &res), SHOAL_OK);
    assert_int_eq(res.outcome, SHOAL_INTAKE_DUPLICATE);
    assert_str_eq(res.job_id, "job-a");
    assert_int_eq(res.tasks, 5);
    assert_int_eq(res.published, 0);
    msgs = read_topic(topics.tasks_high);
    assert_int_eq(json_array_size(msgs), 5);
    json_decref(msgs);
    assert_int_eq(
        sqlcheck_long(pg, "SELECT count(*) FROM shoal.event_outbox WHERE job_id = $1", "job-a"), 1);
    assert_int_eq(sqlcheck_long(pg, "SELECT count(*) FROM shoal.jobs WHERE job_id = $1", "job-a"),
                  1);
    free(text);
}

static void test_derived_id(const shoal_intake_conf_t *c, shoal_pg_t *pg)
{
    shoal_intake_result_t res;
    char *text = job_text(NULL, 2, NULL), id[SHOAL_JOBID_LEN], prefix[SHOAL_JOBID_LEN + 1];

    /* the id hashes the cluster, topic, partition, offset, timestamp and bytes */
    shoal_jobid_derive(c->cluster_id, topics.jobs, 3, 77, -1, text, strlen(text), id);
    snprintf(prefix, sizeof(prefix), "%s:", id);
    assert_int_eq(deliver(c, 3, 77, text, &res), SHOAL_OK);
    assert_int_eq(res.outcome, SHOAL_INTAKE_NEW);
    assert_str_eq(res.job_id, id);
    assert_int_eq(res.published, 2);
    assert_int_eq(
        sqlcheck_long(
            pg, "SELECT count(*) FROM shoal.tasks WHERE job_id = $1 AND status = 'queued'", id),
        2);
    /* the default priority is normal */
    json_t *msgs = read_topic(topics.tasks_normal);
    assert_int_eq(count_prefix(msgs, prefix), 2);
    json_decref(msgs);

    /* the redelivery of that message finds the same job */
    assert_int_eq(deliver(c, 3, 77, text, &res), SHOAL_OK);
    assert_int_eq(res.outcome, SHOAL_INTAKE_DUPLICATE);
    assert_str_eq(res.job_id, id);
    assert_int_eq(res.published, 0);
    free(text);
}

static void test_rejected(const shoal_intake_conf_t *c, shoal_pg_t *pg)
{
    shoal_intake_result_t res;
    char v[1024];

    /* not JSON: stored under its Kafka position with the reason */
    const char *bad = "{\"job_id\": \"x\", oops";
    char id[SHOAL_JOBID_LEN];
    shoal_jobid_derive(c->cluster_id, topics.jobs, 1, 9, -1, bad, strlen(bad), id);
    assert_int_eq(deliver(c, 1, 9, bad, &res), SHOAL_OK);
    assert_int_eq(res.outcome, SHOAL_INTAKE_REJECTED);
    assert_str_eq(res.job_id, id);
    assert_true(res.reason[0] != '\0');
    assert_int_eq(res.published, 0);
    sqlcheck_text(pg, "SELECT status FROM shoal.jobs WHERE job_id = $1", res.job_id, v, sizeof(v));
    assert_str_eq(v, "rejected");
    sqlcheck_text(pg, "SELECT error FROM shoal.jobs WHERE job_id = $1", res.job_id, v, sizeof(v));
    assert_str_eq(v, res.reason);
    sqlcheck_text(pg, "SELECT source FROM shoal.jobs WHERE job_id = $1", res.job_id, v, sizeof(v));
    assert_str_eq(v, "shoal.jobs/1@9");
    assert_int_eq(
        sqlcheck_long(pg, "SELECT count(*) FROM shoal.tasks WHERE job_id = $1", res.job_id), 0);
    sqlcheck_text(pg,
                  "SELECT payload->>'type' || '|' || (payload->>'error') FROM shoal.event_outbox "
                  "WHERE job_id = $1",
                  res.job_id, v, sizeof(v));
    char want[1100];
    snprintf(want, sizeof(want), "rejected|%s", res.reason);
    assert_str_eq(v, want);
    /* delivered again: still rejected, stored and announced once */
    assert_int_eq(deliver(c, 1, 9, "{\"job_id\": \"x\", oops", &res), SHOAL_OK);
    assert_int_eq(res.outcome, SHOAL_INTAKE_REJECTED);
    assert_int_eq(
        sqlcheck_long(pg, "SELECT count(*) FROM shoal.jobs WHERE job_id = $1", res.job_id), 1);
    assert_int_eq(
        sqlcheck_long(pg, "SELECT count(*) FROM shoal.event_outbox WHERE job_id = $1", res.job_id),
        1);

    /* valid JSON that is not a valid job keeps its own id and tenant */
    assert_int_eq(deliver(c, 0, 3, "{\"job_id\": \"bad-1\", \"tenant\": \"acme\"}", &res),
                  SHOAL_OK);
    assert_int_eq(res.outcome, SHOAL_INTAKE_REJECTED);
    assert_str_eq(res.job_id, "bad-1");
    sqlcheck_text(pg, "SELECT status || ' ' || tenant FROM shoal.jobs WHERE job_id = $1", "bad-1",
                  v, sizeof(v));
    assert_str_eq(v, "rejected acme");

    /* Over the size limit: not loaded, but its top-level job_id, tenant and
     * model are read, past a large value and not from a nested object. */
    size_t fill = c->max_job_bytes + 1000;
    char *big = malloc(fill + 512);
    assert_true(big != NULL);
    int head = snprintf(big, 512,
                        "{\"meta\": {\"job_id\": \"nested-1\", \"model\": [1, true]}, "
                        "\"items\": [{\"id\": \"a\", \"input\": \"");
    memset(big + head, 'x', fill);
    snprintf(big + head + fill, 512,
             "\"}], \"job_id\": \"big-1\", \"tenant\": \"acme\", \"model\": \"fast\"}");
    assert_int_eq(deliver(c, 0, 5, big, &res), SHOAL_OK);
    assert_int_eq(res.outcome, SHOAL_INTAKE_REJECTED);
    assert_str_eq(res.job_id, "big-1");
    assert_str_contains(res.reason, "the limit is 1048576");
    sqlcheck_text(
        pg, "SELECT status || ' ' || tenant || ' ' || model FROM shoal.jobs WHERE job_id = $1",
        "big-1", v, sizeof(v));
    assert_str_eq(v, "rejected acme fast");
    /* a job_id that is not plain JSON (an escape) is not guessed at: the
     * message keeps the id derived from its position */
    snprintf(big + head + fill, 512, "\"}], \"job_id\": \"big\\u002d2\"}");
    shoal_jobid_derive(c->cluster_id, topics.jobs, 0, 6, -1, big, strlen(big), id);
    assert_int_eq(deliver(c, 0, 6, big, &res), SHOAL_OK);
    assert_int_eq(res.outcome, SHOAL_INTAKE_REJECTED);
    assert_str_eq(res.job_id, id);
    free(big);

    /* over budget: rejected before any task exists, naming budget_usd */
    char *text = job_text("job-rich", 4, "{\"budget_usd\": 0.0000001}");
    assert_int_eq(deliver(c, 0, 4, text, &res), SHOAL_OK);
    assert_int_eq(res.outcome, SHOAL_INTAKE_REJECTED);
    assert_str_eq(res.job_id, "job-rich");
    assert_str_contains(res.reason, "budget_usd");
    assert_int_eq(res.published, 0);
    sqlcheck_text(pg, "SELECT status FROM shoal.jobs WHERE job_id = $1", "job-rich", v, sizeof(v));
    assert_str_eq(v, "rejected");
    sqlcheck_text(pg, "SELECT error FROM shoal.jobs WHERE job_id = $1", "job-rich", v, sizeof(v));
    assert_str_contains(v, "budget_usd");
    assert_int_eq(
        sqlcheck_long(pg, "SELECT count(*) FROM shoal.tasks WHERE job_id = $1", "job-rich"), 0);
    assert_int_eq(sqlcheck_long(pg,
                                "SELECT count(*) FROM shoal.event_outbox WHERE job_id = $1 AND "
                                "payload->>'type' = 'rejected'",
                                "job-rich"),
                  1);
    json_t *msgs = read_topic(topics.tasks_normal);
    assert_int_eq(count_prefix(msgs, "job-rich:"), 0);
    json_decref(msgs);
    free(text);

    /* a budget the estimate fits in is accepted */
    text = job_text("job-thrifty", 2, "{\"budget_usd\": 10}");
    assert_int_eq(deliver(c, 0, 5, text, &res), SHOAL_OK);
    assert_int_eq(res.outcome, SHOAL_INTAKE_NEW);
    /* and the job row holds the estimate `shoal estimate` prints for it */
    {
        char err[256], stored[256];
        shoal_job_t *job = shoal_job_parse(text, strlen(text), 0, models, err, sizeof(err));
        shoal_estimate_t e;
        assert_true(job != NULL);
        assert_int_eq(shoal_estimate_job(job, models, NULL, &e, err, sizeof(err)), SHOAL_OK);
        snprintf(stored, sizeof(stored), "(%ld,%.9f,%zu,%ld,%.3f)", e.tokens_in,
                 e.models[0].cost_usd, e.calls, e.models[0].tokens_out, e.models[0].duration_s);
        sqlcheck_text(pg,
                      "SELECT row(est_tokens, round(est_cost_usd::numeric, 9), est_calls, "
                      "est_tokens_out, round(est_duration_s::numeric, 3))::text "
                      "FROM shoal.jobs WHERE job_id = $1",
                      "job-thrifty", v, sizeof(v));
        assert_str_eq(v, stored);
        assert_int_eq(e.calls, 2);
        shoal_job_destroy(job);
    }
    free(text);
}

/* A crash after record_job and before every task was published leaves tasks
 * pending; the redelivered message publishes exactly those. */
static void test_pending_republished(const shoal_intake_conf_t *c, shoal_pg_t *pg)
{
    shoal_intake_result_t res;
    char *text = job_text("job-crash", 4, "{\"priority\": \"low\"}");

    assert_int_eq(deliver(c, 0, 10, text, &res), SHOAL_OK);
    assert_int_eq(res.outcome, SHOAL_INTAKE_NEW);
    assert_int_eq(res.published, 4);
    sqlcheck_exec(pg,
                  "UPDATE shoal.tasks SET status = 'pending', queued_at = NULL "
                  "WHERE job_id = $1 AND chunk IN (1, 3)",
                  "job-crash");
    /* one task a worker already finished stays finished */
    sqlcheck_exec(pg, "UPDATE shoal.tasks SET status = 'done' WHERE job_id = $1 AND chunk = 0",
                  "job-crash");

    assert_int_eq(deliver(c, 0, 10, text, &res), SHOAL_OK);
    assert_int_eq(res.outcome, SHOAL_INTAKE_DUPLICATE);
    assert_int_eq(res.published, 2);
    assert_int_eq(
        sqlcheck_long(pg,
                      "SELECT count(*) FROM shoal.tasks WHERE job_id = $1 AND status = 'queued' "
                      "AND queued_at IS NOT NULL",
                      "job-crash"),
        3);
    assert_int_eq(
        sqlcheck_long(pg, "SELECT count(*) FROM shoal.tasks WHERE job_id = $1 AND status = 'done'",
                      "job-crash"),
        1);

    json_t *msgs = read_topic(topics.tasks_low);
    assert_int_eq(count_prefix(msgs, "job-crash:"), 6);
    assert_int_eq(count_prefix(msgs, "job-crash:000000"), 1);
    assert_int_eq(count_prefix(msgs, "job-crash:000001"), 2);
    assert_int_eq(count_prefix(msgs, "job-crash:000002"), 1);
    assert_int_eq(count_prefix(msgs, "job-crash:000003"), 2);
    json_decref(msgs);

    /* and once all are queued, another delivery publishes nothing */
    assert_int_eq(deliver(c, 0, 10, text, &res), SHOAL_OK);
    assert_int_eq(res.published, 0);
    free(text);
}

/* A job's deadline counts from when it was first recorded: tasks published
 * again later carry the deadline of the first submission, not a new one. */
static void test_deadline_kept(const shoal_intake_conf_t *c, shoal_pg_t *pg)
{
    shoal_intake_result_t res;
    char *text = job_text("job-deadline", 2, "{\"priority\": \"low\", \"deadline_s\": 60}");

    assert_int_eq(deliver(c, 0, 20, text, &res), SHOAL_OK);
    assert_int_eq(res.published, 2);
    long first = sqlcheck_long(pg,
                               "SELECT floor(extract(epoch FROM submitted_at))::bigint + 60 FROM "
                               "shoal.jobs WHERE job_id = $1",
                               "job-deadline");
    /* as if it had been submitted long ago and a crash left a task pending */
    sqlcheck_exec(pg,
                  "UPDATE shoal.jobs SET submitted_at = '2001-01-01 00:00:00+00' WHERE job_id = $1",
                  "job-deadline");
    sqlcheck_exec(pg, "UPDATE shoal.tasks SET status = 'pending' WHERE job_id = $1 AND chunk = 1",
                  "job-deadline");
    assert_int_eq(deliver(c, 0, 20, text, &res), SHOAL_OK);
    assert_int_eq(res.published, 1);

    json_t *msgs = read_topic(topics.tasks_low);
    int fresh = 0, again = 0;
    size_t i;
    json_t *m;
    json_array_foreach(msgs, i, m)
    {
        if (strncmp(json_string_value(json_object_get(m, "key")), "job-deadline:", 13) != 0)
            continue;
        json_t *t = json_loads(json_string_value(json_object_get(m, "value")), 0, NULL);
        assert_true(t != NULL);
        assert_int_eq(json_integer_value(json_object_get(t, "deadline_s")), 60);
        long long at = json_integer_value(json_object_get(t, "deadline_unix"));
        if (at == first)
            fresh++;
        else if (at == 978307200LL + 60) /* 2001-01-01 UTC */
            again++;
        else
            test_fail("deadline_unix %lld is neither %ld nor 978307260", at, first);
        json_decref(t);
    }
    json_decref(msgs);
    assert_int_eq(fresh, 2);
    assert_int_eq(again, 1);
    free(text);
}

static void test_pg_down(const shoal_intake_conf_t *c, shoal_pg_t *pg)
{
    shoal_intake_result_t res;
    char err[512];
    char *text = job_text("job-later", 2, NULL);
    const char *bad = "not json at all";

    assert_int_eq(shoal_pgcluster_stop(cluster, SHOAL_PGCLUSTER_FAST), SHOAL_OK);
    assert_int_eq(deliver(c, 0, 20, text, &res), SHOAL_ERR_RETRY);
    assert_int_eq(res.published, 0);
    /* a rejection must be stored before it counts as handled */
    assert_int_eq(deliver(c, 0, 21, bad, &res), SHOAL_ERR_RETRY);
    if (shoal_pgcluster_start(cluster, err, sizeof(err)) != SHOAL_OK)
        test_fail("restart: %s", err);
    /* the checking handle's old connection fails once, then reconnects */
    shoal_pg_exec(pg, "SELECT 1", 0, NULL, NULL, NULL, 0);
    sqlcheck_exec(pg, "SELECT 1", NULL);

    assert_int_eq(deliver(c, 0, 20, text, &res), SHOAL_OK);
    assert_int_eq(res.outcome, SHOAL_INTAKE_NEW);
    assert_int_eq(res.published, 2);
    assert_int_eq(
        sqlcheck_long(pg,
                      "SELECT count(*) FROM shoal.tasks WHERE job_id = $1 AND status = 'queued'",
                      "job-later"),
        2);
    assert_int_eq(deliver(c, 0, 21, bad, &res), SHOAL_OK);
    assert_int_eq(res.outcome, SHOAL_INTAKE_REJECTED);
    free(text);
}

/* A task Kafka's client refuses (over message.max.bytes) after another was
 * produced: it will never be taken, so the job ends failed with a reason that
 * says what to raise, and a failed event; intake returns only once the first
 * message's delivery report was served, since that report points at intake's
 * own stack. */
static void test_produce_fails(const shoal_intake_conf_t *base, shoal_pg_t *pg)
{
    char err[512];
    shoal_kprops_t props = {1, {"message.max.bytes=2000"}};
    rd_kafka_t *small =
        shoal_kafka_producer_new(shoal_mockkafka_bootstraps(kafka), &props, err, sizeof(err));
    if (!small)
        test_fail("producer: %s", err);
    shoal_intake_conf_t c = *base;
    c.producer = small;

    json_t *job =
        json_pack("{s:s, s:s, s:s, s:s, s:[{s:s, s:s}, {s:s, s:s}]}", "job_id", "job-huge",
                  "tenant", "acme", "model", "fast", "prompt_template", "Answer {{input}}", "items",
                  "id", "small", "input", "short", "id", "big", "input", "");
    char big[3001];
    memset(big, 'x', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    json_object_set_new(json_array_get(json_object_get(job, "items"), 1), "input",
                        json_string(big));
    char *text = json_dumps(job, JSON_COMPACT);
    json_decref(job);

    shoal_intake_result_t res;
    err[0] = '\0';
    shoal_err_t e =
        shoal_intake_job(&c, topics.jobs, 0, 30, text, strlen(text), &res, err, sizeof(err));
    assert_int_eq(e, SHOAL_OK);
    assert_int_eq(res.outcome, SHOAL_INTAKE_FAILED);
    assert_int_eq(res.published, 1);
    assert_str_contains(res.reason, topics.tasks_normal);
    assert_str_contains(res.reason, "message.max.bytes");
    assert_int_eq(rd_kafka_outq_len(small), 0);
    assert_int_eq(
        sqlcheck_long(pg, "SELECT count(*) FROM shoal.jobs WHERE job_id = $1 AND status = 'failed'",
                      "job-huge"),
        1);
    assert_int_eq(sqlcheck_long(pg,
                                "SELECT count(*) FROM shoal.event_outbox WHERE job_id = $1 AND "
                                "payload->>'type' = 'failed'",
                                "job-huge"),
                  1);
    free(text);
    assert_int_eq(rd_kafka_flush(small, 10000), RD_KAFKA_RESP_ERR_NO_ERROR);
    rd_kafka_destroy(small);
}

/* A job recorded under another chunk plan (an older scheduler chunked it
 * differently) cannot be fanned out from this message: its redelivery fails
 * the job with the reason and a failed event instead of skipping the message;
 * another message under the same job_id whose plan differs publishes
 * nothing and leaves the running job alone. */
static void test_plan_changed(const shoal_intake_conf_t *c, shoal_pg_t *pg)
{
    shoal_intake_result_t res;
    char v[512];
    char *text = job_text("job-plan", 3, NULL);

    assert_int_eq(deliver(c, 0, 40, text, &res), SHOAL_OK);
    assert_int_eq(res.outcome, SHOAL_INTAKE_NEW);
    assert_int_eq(res.published, 3);
    /* as recorded by a scheduler that packed items 0 and 1 into chunk 0 */
    sqlcheck_exec(pg,
                  "UPDATE shoal.tasks SET item_ids = '{it0,it1}' WHERE job_id = $1 AND chunk = 0",
                  "job-plan");
    sqlcheck_exec(pg,
                  "UPDATE shoal.tasks SET item_ids = '{it2}', status = 'pending' "
                  "WHERE job_id = $1 AND chunk = 1",
                  "job-plan");
    sqlcheck_exec(pg, "DELETE FROM shoal.tasks WHERE job_id = $1 AND chunk = 2", "job-plan");
    sqlcheck_exec(pg, "UPDATE shoal.jobs SET tasks_total = 2 WHERE job_id = $1", "job-plan");

    /* another message under the same id: not the one the job came from */
    assert_int_eq(deliver(c, 0, 41, text, &res), SHOAL_OK);
    assert_int_eq(res.outcome, SHOAL_INTAKE_DUPLICATE);
    assert_int_eq(res.published, 0);
    assert_str_contains(res.reason, "no longer match its chunk plan");
    sqlcheck_text(pg, "SELECT status FROM shoal.jobs WHERE job_id = $1", "job-plan", v, sizeof(v));
    assert_str_eq(v, "running");

    /* the redelivery of the job's own message */
    assert_int_eq(deliver(c, 0, 40, text, &res), SHOAL_OK);
    assert_int_eq(res.outcome, SHOAL_INTAKE_FAILED);
    assert_int_eq(res.published, 0);
    assert_str_contains(res.reason, "cannot fan out the job: its recorded tasks no longer match");
    assert_str_contains(res.reason, "2 chunks recorded, 3 planned, first difference at chunk 0");
    sqlcheck_text(pg, "SELECT status || '|' || error FROM shoal.jobs WHERE job_id = $1", "job-plan",
                  v, sizeof(v));
    assert_str_contains(v, "failed|cannot fan out the job: ");
    assert_int_eq(sqlcheck_long(pg,
                                "SELECT count(*) FROM shoal.event_outbox WHERE job_id = $1 AND "
                                "payload->>'type' = 'failed' AND payload->>'error' LIKE "
                                "'cannot fan out the job: %'",
                                "job-plan"),
                  1);
    /* the pending task was never published */
    json_t *msgs = read_topic(topics.tasks_normal);
    assert_int_eq(count_prefix(msgs, "job-plan:"), 3);
    json_decref(msgs);
    /* and a later delivery finds a failed job: nothing more happens */
    assert_int_eq(deliver(c, 0, 40, text, &res), SHOAL_OK);
    assert_int_eq(res.outcome, SHOAL_INTAKE_DUPLICATE);
    assert_int_eq(res.published, 0);
    free(text);
}

/* What the hook between slices saw, and what it does to the admission. */
struct slices {
    shoal_pg_t *checks;
    const char *job_id;
    int calls;
    long rows[8];  /* the job's task rows committed at each call */
    int kill_at;   /* at this call, end the intake's database connection */
    int cancel_at; /* at this call, cancel the job */
};

static void on_slice(void *arg)
{
    struct slices *s = arg;
    if (s->calls < 8)
        s->rows[s->calls] = sqlcheck_long(
            s->checks, "SELECT count(*) FROM shoal.tasks WHERE job_id = $1", s->job_id);
    s->calls++;
    if (s->calls == s->kill_at)
        sqlcheck_exec(s->checks,
                      "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                      "WHERE application_name = $1",
                      "intake_test");
    if (s->calls == s->cancel_at)
        sqlcheck_exec(s->checks, "SELECT shoal.cancel_job($1)", s->job_id);
}

/* A large job's tasks are recorded in slices: the first thousand with the
 * job, then 4,000 per transaction, the hook running before each further
 * slice with what came before committed (so the dispatcher can publish it).
 * The job counts all its tasks from the start. An admission cut short (its
 * connection lost between slices) is retriable, and the redelivery records
 * what is missing before anything else; the tasks of a job cancelled between
 * slices are recorded cancelled. */
static void test_slices(const shoal_intake_conf_t *base, shoal_pg_t *pg)
{
    shoal_intake_result_t res;
    char v[256];
    struct slices sl = {.checks = pg, .job_id = "job-big"};
    shoal_intake_conf_t c = *base;
    c.paced = 1; /* left pending for a dispatcher: nothing is produced here */
    c.on_slice = on_slice;
    c.on_slice_arg = &sl;
    char *text = job_text("job-big", 9001, NULL);

    assert_int_eq(deliver(&c, 0, 60, text, &res), SHOAL_OK);
    assert_int_eq(res.outcome, SHOAL_INTAKE_NEW);
    assert_int_eq(res.tasks, 9001);
    assert_int_eq(sl.calls, 3);
    assert_int_eq(sl.rows[0], 1000);
    assert_int_eq(sl.rows[1], 5000);
    assert_int_eq(sl.rows[2], 9000);
    const char *count = "SELECT count(*) FROM shoal.tasks WHERE job_id = $1";
    assert_int_eq(sqlcheck_long(pg, count, "job-big"), 9001);
    assert_int_eq(sqlcheck_long(pg,
                                "SELECT count(DISTINCT chunk) FROM shoal.tasks WHERE job_id = $1 "
                                "AND status = 'pending' AND item_ids = ARRAY['it' || chunk] "
                                "AND task_id = job_id || ':' || lpad(chunk::text, 6, '0')",
                                "job-big"),
                  9001);
    assert_int_eq(
        sqlcheck_long(pg, "SELECT tasks_total FROM shoal.jobs WHERE job_id = $1", "job-big"), 9001);
    assert_int_eq(sqlcheck_long(pg, "SELECT shoal.job_tasks_missing($1)", "job-big"), 0);
    assert_int_eq(sqlcheck_long(pg,
                                "SELECT (payload->>'tasks')::int FROM shoal.event_outbox "
                                "WHERE job_id = $1 AND payload->>'type' = 'accepted'",
                                "job-big"),
                  9001);
    /* a redelivery of a complete job records nothing and calls no hook */
    sl.calls = 0;
    assert_int_eq(deliver(&c, 0, 60, text, &res), SHOAL_OK);
    assert_int_eq(res.outcome, SHOAL_INTAKE_DUPLICATE);
    assert_int_eq(sl.calls, 0);
    assert_int_eq(sqlcheck_long(pg, count, "job-big"), 9001);
    free(text);

    /* the connection lost after the second slice: retried, then completed */
    text = job_text("job-cut", 9001, NULL);
    sl = (struct slices){.checks = pg, .job_id = "job-cut", .kill_at = 2};
    assert_int_eq(deliver(&c, 0, 61, text, &res), SHOAL_ERR_RETRY);
    assert_int_eq(sqlcheck_long(pg, count, "job-cut"), 5000);
    assert_int_eq(sqlcheck_long(pg, "SELECT shoal.job_tasks_missing($1)", "job-cut"), 4001);
    sqlcheck_text(pg, "SELECT status FROM shoal.jobs WHERE job_id = $1", "job-cut", v, sizeof(v));
    assert_str_eq(v, "running");
    sl.calls = 0;
    sl.kill_at = 0;
    assert_int_eq(deliver(&c, 0, 61, text, &res), SHOAL_OK);
    assert_int_eq(res.outcome, SHOAL_INTAKE_DUPLICATE);
    assert_int_eq(sl.calls, 3); /* every slice again; those recorded are kept */
    assert_int_eq(sqlcheck_long(pg, count, "job-cut"), 9001);
    assert_int_eq(sqlcheck_long(pg, "SELECT shoal.job_tasks_missing($1)", "job-cut"), 0);
    sqlcheck_text(pg, "SELECT status FROM shoal.jobs WHERE job_id = $1", "job-cut", v, sizeof(v));
    assert_str_eq(v, "running"); /* the plan check passed */
    assert_int_eq(sqlcheck_long(pg,
                                "SELECT count(*) FROM shoal.event_outbox WHERE job_id = $1 "
                                "AND payload->>'type' = 'accepted'",
                                "job-cut"),
                  1);
    free(text);

    /* cancelled between the first and the second slice */
    text = job_text("job-gone", 9001, NULL);
    sl = (struct slices){.checks = pg, .job_id = "job-gone", .cancel_at = 1};
    assert_int_eq(deliver(&c, 0, 62, text, &res), SHOAL_OK);
    assert_int_eq(res.outcome, SHOAL_INTAKE_NEW);
    assert_int_eq(sqlcheck_long(pg,
                                "SELECT count(*) FROM shoal.tasks WHERE job_id = $1 "
                                "AND status = 'cancelled' AND error = 'cancelled by user' "
                                "AND finished_at IS NOT NULL",
                                "job-gone"),
                  9001);
    sqlcheck_text(pg, "SELECT status FROM shoal.jobs WHERE job_id = $1", "job-gone", v, sizeof(v));
    assert_str_eq(v, "cancelled");
    free(text);
}

int main(void)
{
    char err[512];

    shoal_log_init("intake_test", SHOAL_LOG_ERROR, 0);
    models = shoal_models_parse(models_text, strlen(models_text), err, sizeof(err));
    if (!models)
        test_fail("models: %s", err);
    assert_int_eq(shoal_topics_init(&topics, NULL, err, sizeof(err)), SHOAL_OK);
    cluster = shoal_pgcluster_new(NULL, err, sizeof(err));
    if (!cluster)
        test_fail("cannot start PostgreSQL: %s", err);
    kafka = shoal_mockkafka_new(1, err, sizeof(err));
    if (!kafka)
        test_fail("cannot start the mock Kafka cluster: %s", err);
    if (shoal_mockkafka_create_default_topics(kafka, NULL, err, sizeof(err)) != SHOAL_OK)
        test_fail("topics: %s", err);
    rd_kafka_t *producer =
        shoal_kafka_producer_new(shoal_mockkafka_bootstraps(kafka), NULL, err, sizeof(err));
    if (!producer)
        test_fail("producer: %s", err);
    shoal_pg_t *pg = shoal_pg_new(shoal_pgcluster_url(cluster), "intake_test");
    shoal_pg_t *checks = shoal_pg_new(shoal_pgcluster_url(cluster), "intake_test_checks");
    assert_true(pg != NULL && checks != NULL);
    if (shoal_migrate_apply(pg, NULL, err, sizeof(err)) != SHOAL_OK)
        test_fail("migrate: %s", err);

    shoal_intake_conf_t conf = {.pg = pg,
                                .producer = producer,
                                .topics = &topics,
                                .models = models,
                                .max_job_bytes = 1 << 20};
    test_new_and_duplicate(&conf, checks);
    test_derived_id(&conf, checks);
    test_rejected(&conf, checks);
    test_pending_republished(&conf, checks);
    test_deadline_kept(&conf, checks);
    test_plan_changed(&conf, checks);
    test_slices(&conf, checks);
    test_pg_down(&conf, checks);
    test_produce_fails(&conf, checks);

    assert_int_eq(rd_kafka_flush(producer, 10000), RD_KAFKA_RESP_ERR_NO_ERROR);
    rd_kafka_destroy(producer);
    shoal_pg_destroy(checks);
    shoal_pg_destroy(pg);
    shoal_mockkafka_destroy(kafka);
    shoal_pgcluster_destroy(cluster);
    shoal_models_destroy(models);
    printf("intake_test: ok\n");
    return 0;
}
