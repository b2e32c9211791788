/*
 * Cancel, resume and the reconciler on a throwaway PostgreSQL and librdkafka's
 * mock cluster, with known data. A job taken by intake keeps its inputs
 * (compressed) unless it says "store_inputs": false. The reconciler publishes
 * nothing while tasks are fresh, publishes a queued task with no call again
 * once it is older than the limit (one more message on the topic, its clock
 * restarted), and fails the lost tasks of a job without inputs with that
 * reason. shoal.cancel_job cancels a running job once (tasks, status, error,
 * event) and says why it will not cancel a missing or ended job; a late
 * answer of a cancelled task is kept without counting. shoal.resume_job puts
 * the failed tasks of a partial job back (earlier calls no longer count for
 * the worker's check), refuses a job without inputs, a running job and one
 * with nothing failed, and the reconciler publishes the resumed task at once.
 */
#include "scheduler/reconcile.h"

#include <jansson.h>
#include <librdkafka/rdkafka.h>
#include <stdlib.h>
#include <string.h>

#include "stack/mockkafka.h"
#include "common/log.h"
#include "common/pg.h"
#include "scheduler/intake.h"
#include "tests/support/check.h"
#include "tests/support/sqlcheck.h"
#include "tests/support/testdb.h"

static shoal_mockkafka_t *kafka;
static shoal_topics_t topics;
static rd_kafka_t *producer;

/* Messages on the normal task topic so far (sum of high watermarks). */
static long topic_messages(void)
{
    long sum = 0;
    for (int p = 0; p < 8; p++) {
        int64_t lo, hi;
        rd_kafka_resp_err_t e =
            rd_kafka_query_watermark_offsets(producer, topics.tasks_normal, p, &lo, &hi, 10000);
        if (e)
            test_fail("watermarks: %s", rd_kafka_err2str(e));
        sum += (long)hi;
    }
    return sum;
}

/* Hands job id (n items, extra fields merged in) to intake as a new message. */
static void submit(const shoal_intake_conf_t *ic, const char *id, int n, const char *extra)
{
    static long long offset;
    char err[512];
    json_t *items = json_array();
    for (int i = 0; i < n; i++) {
        char iid[16], input[1200];
        snprintf(iid, sizeof(iid), "k%d", i);
        /* long enough that TOAST compresses the stored inputs */
        snprintf(input, sizeof(input), "%01000d input %d", 0, i);
        json_array_append_new(items, json_pack("{s:s, s:s}", "id", iid, "input", input));
    }
    json_t *job =
        json_pack("{s:s, s:s, s:s, s:s, s:s, s:o}", "job_id", id, "tenant", "acme", "model", "fast",
                  "system", "SYS-PROMPT-8d1", "prompt_template", "Do {{input}}", "items", items);
    if (extra) {
        json_t *x = json_loads(extra, 0, NULL);
        assert_true(x != NULL);
        json_object_update(job, x);
        json_decref(x);
    }
    char *text = json_dumps(job, JSON_COMPACT);
    json_decref(job);
    shoal_intake_result_t res;
    if (shoal_intake_job(ic, topics.jobs, 0, offset++, text, strlen(text), &res, err,
                         sizeof(err)) != SHOAL_OK)
        test_fail("intake of %s: %s", id, err);
    free(text);
    if (res.outcome != SHOAL_INTAKE_NEW)
        test_fail("%s not accepted: %s", id, res.reason);
    assert_int_eq(res.published, n);
}

static void reconcile(shoal_reconcile_t *rc, int want_published, int want_failed)
{
    char err[512];
    int published = -1, failed = -1;
    if (shoal_reconcile_poll(rc, 1, &published, &failed, err, sizeof(err)) != SHOAL_OK)
        test_fail("reconcile: %s", err);
    assert_int_eq(published, want_published);
    assert_int_eq(failed, want_failed);
}

static void test_inputs(shoal_pg_t *pg)
{
    char buf[256];
    assert_int_eq(sqlcheck_long(pg,
                                "SELECT count(*) FROM shoal.job_inputs WHERE job_id = 'keep-1' "
                                "AND doc LIKE '%SYS-PROMPT-8d1%' AND doc LIKE '%k2%'",
                                NULL),
                  1);
    /* compressed in place (lz4 on this server's build, pglz on others) */
    sqlcheck_text(pg,
                  "SELECT coalesce(pg_column_compression(doc), 'none') FROM shoal.job_inputs "
                  "WHERE job_id = 'keep-1'",
                  NULL, buf, sizeof(buf));
    assert_true(!strcmp(buf, "lz4") || !strcmp(buf, "pglz"));
    /* opted out: no inputs, and no prompt text anywhere */
    assert_int_eq(
        sqlcheck_long(pg, "SELECT count(*) FROM shoal.job_inputs WHERE job_id = $1", "secret-1"),
        0);
    assert_int_eq(sqlcheck_long(pg,
                                "SELECT count(*) FROM shoal.jobs WHERE job_id = 'secret-1' AND "
                                "settings->>'store_inputs' = 'false' AND settings::text NOT LIKE "
                                "'%SYS-PROMPT%'",
                                NULL),
                  1);
}

static void test_lost(shoal_pg_t *pg, shoal_reconcile_t *rc)
{
    long before = topic_messages();
    reconcile(rc, 0, 0); /* everything was just queued */
    assert_int_eq(topic_messages(), before);

    /* keep-1's chunk 1 "lost" an hour ago; chunk 2 was called since it was queued */
    sqlcheck_exec(pg,
                  "UPDATE shoal.tasks SET queued_at = now() - interval '1 hour' "
                  "WHERE job_id = $1 AND chunk IN (1, 2)",
                  "keep-1");
    sqlcheck_exec(pg,
                  "INSERT INTO shoal.attempts (attempt_id, task_id, job_id, attempt, model, "
                  "worker_id, http_status, outcome, latency_ms, started_at, finished_at) VALUES "
                  "('w/1', 'keep-1:000002', 'keep-1', 1, 'fast', 'w', 429, 'retry', 5, "
                  "now() - interval '1 minute', now() - interval '1 minute')",
                  NULL);
    reconcile(rc, 1, 0);
    assert_int_eq(topic_messages(), before + 1);
    assert_int_eq(sqlcheck_long(pg,
                                "SELECT count(*) FROM shoal.tasks WHERE task_id = $1 AND status = "
                                "'queued' AND queued_at > now() - interval '1 minute'",
                                "keep-1:000001"),
                  1);
    reconcile(rc, 0, 0); /* its clock restarted */

    /* secret-1 lost every message: without inputs they fail, with the reason */
    sqlcheck_exec(pg,
                  "UPDATE shoal.tasks SET queued_at = now() - interval '1 hour' WHERE job_id = $1",
                  "secret-1");
    reconcile(rc, 0, 3);
    assert_int_eq(sqlcheck_long(pg,
                                "SELECT count(*) FROM shoal.tasks WHERE job_id = $1 AND status = "
                                "'failed' AND error LIKE '%does not keep its inputs "
                                "(store_inputs false)%'",
                                "secret-1"),
                  3);
    char buf[64];
    sqlcheck_text(pg, "SELECT shoal.merge_job($1)", "secret-1", buf, sizeof(buf));
    assert_str_eq(buf, "failed");
    sqlcheck_text(pg, "SELECT shoal.resume_job($1)", "secret-1", buf, sizeof(buf));
    assert_str_eq(buf, "no_inputs");

    /* a task recorded but never published: only after the pending limit */
    sqlcheck_exec(pg, "UPDATE shoal.tasks SET status = 'pending' WHERE task_id = $1",
                  "keep-1:000000");
    reconcile(rc, 0, 0);
    sqlcheck_exec(pg,
                  "UPDATE shoal.tasks SET created_at = now() - interval '1 hour' "
                  "WHERE task_id = $1",
                  "keep-1:000000");
    reconcile(rc, 1, 0);
}

static void test_cancel(shoal_pg_t *pg)
{
    char buf[128];
    sqlcheck_text(pg, "SELECT shoal.cancel_job($1)", "keep-1", buf, sizeof(buf));
    assert_str_eq(buf, "cancelled:3");
    assert_int_eq(sqlcheck_long(pg,
                                "SELECT count(*) FROM shoal.jobs WHERE job_id = $1 AND status = "
                                "'cancelled' AND error = 'cancelled by user' AND finished_at IS "
                                "NOT NULL",
                                "keep-1"),
                  1);
    assert_int_eq(sqlcheck_long(pg,
                                "SELECT count(*) FROM shoal.tasks WHERE job_id = $1 AND status = "
                                "'cancelled'",
                                "keep-1"),
                  3);
    assert_int_eq(sqlcheck_long(pg,
                                "SELECT count(*) FROM shoal.event_outbox WHERE job_id = $1 AND "
                                "payload->>'type' = 'cancelled' AND "
                                "(payload->>'tasks_cancelled')::int = 3",
                                "keep-1"),
                  1);
    sqlcheck_text(pg, "SELECT shoal.cancel_job($1)", "keep-1", buf, sizeof(buf));
    assert_str_eq(buf, "ended:cancelled");
    sqlcheck_text(pg, "SELECT shoal.cancel_job($1)", "secret-1", buf, sizeof(buf));
    assert_str_eq(buf, "ended:failed");
    sqlcheck_text(pg, "SELECT shoal.cancel_job($1)", "nope", buf, sizeof(buf));
    assert_str_eq(buf, "not_found");
    sqlcheck_text(pg, "SELECT shoal.resume_job($1)", "keep-1", buf, sizeof(buf));
    assert_str_eq(buf, "cannot:cancelled");

    /* a call in flight at the cancel answers: kept, counted nowhere, no merge */
    assert_int_eq(sqlcheck_long(pg,
                                "SELECT count(*) FROM shoal.record_batch('[{\"task_id\": "
                                "\"keep-1:000001\", \"job_id\": \"keep-1\", \"chunk\": 1, "
                                "\"status\": \"done\", \"output\": \"late\", \"model\": "
                                "\"fast\"}]', '[]')",
                                NULL),
                  0);
    assert_int_eq(sqlcheck_long(pg,
                                "SELECT count(*) FROM shoal.results r JOIN shoal.tasks t "
                                "USING (task_id) WHERE r.task_id = $1 AND r.output = 'late' "
                                "AND t.status = 'cancelled'",
                                "keep-1:000001"),
                  1);
    assert_int_eq(sqlcheck_long(pg,
                                "SELECT tasks_done * 10 + tasks_failed FROM shoal.jobs "
                                "WHERE job_id = $1",
                                "keep-1"),
                  0);
    assert_true(sqlcheck_long(pg, "SELECT count(*) FROM shoal.merge_job($1) m WHERE m IS NULL",
                              "keep-1") == 1);
}

static void test_resume(shoal_pg_t *pg, const shoal_intake_conf_t *ic, shoal_reconcile_t *rc)
{
    char buf[128];
    submit(ic, "res-1", 2, NULL);
    sqlcheck_text(pg, "SELECT shoal.resume_job($1)", "res-1", buf, sizeof(buf));
    assert_str_eq(buf, "not_ended:running");
    /* chunk 0 done; chunk 1 failed after two calls */
    sqlcheck_exec(pg,
                  "INSERT INTO shoal.attempts (attempt_id, task_id, job_id, attempt, model, "
                  "worker_id, http_status, outcome, outcome_kind, latency_ms, started_at, "
                  "finished_at) SELECT 'r/' || g, 'res-1:000001', 'res-1', g, 'fast', 'w', 500, "
                  "'retry', 'server_error', 5, now() - interval '1 minute', now() - interval "
                  "'1 minute' FROM generate_series(1, 2) g",
                  NULL);
    sqlcheck_long(pg,
                  "SELECT count(*) FROM shoal.record_batch('[{\"task_id\": \"res-1:000000\", "
                  "\"job_id\": \"res-1\", \"chunk\": 0, \"status\": \"done\", \"output\": \"a\", "
                  "\"model\": \"fast\"}, {\"task_id\": \"res-1:000001\", \"job_id\": \"res-1\", "
                  "\"chunk\": 1, \"status\": \"failed\", \"error\": \"HTTP 500\", \"model\": "
                  "\"fast\", \"attempts\": 2}]', '[]')",
                  NULL);
    sqlcheck_text(pg, "SELECT shoal.merge_job($1)", "res-1", buf, sizeof(buf));
    assert_str_eq(buf, "partial");

    sqlcheck_text(pg, "SELECT shoal.resume_job($1)", "res-1", buf, sizeof(buf));
    assert_str_eq(buf, "resumed:1");
    assert_int_eq(sqlcheck_long(pg,
                                "SELECT count(*) FROM shoal.jobs WHERE job_id = $1 AND status = "
                                "'running' AND tasks_done = 1 AND tasks_failed = 0 AND finished_at "
                                "IS NULL AND error IS NULL AND output IS NULL",
                                "res-1"),
                  1);
    assert_int_eq(sqlcheck_long(pg,
                                "SELECT count(*) FROM shoal.event_outbox WHERE job_id = $1 AND "
                                "payload->>'type' = 'resumed'",
                                "res-1"),
                  1);
    /* the worker's count of earlier calls (worker/store.c) starts over */
    assert_int_eq(sqlcheck_long(pg,
                                "SELECT (SELECT count(*) FROM shoal.attempts a WHERE a.task_id = "
                                "t.task_id AND (t.resumed_at IS NULL OR a.started_at >= "
                                "t.resumed_at)) FROM shoal.tasks t WHERE t.task_id = $1 AND "
                                "t.status = 'pending'",
                                "res-1:000001"),
                  0);
    sqlcheck_text(pg, "SELECT shoal.resume_job($1)", "res-1", buf, sizeof(buf));
    assert_str_eq(buf, "not_ended:running");

    long before = topic_messages();
    reconcile(rc, 1, 0); /* resumed tasks go out at once */
    assert_int_eq(topic_messages(), before + 1);
    assert_int_eq(sqlcheck_long(pg,
                                "SELECT count(*) FROM shoal.tasks WHERE job_id = $1 AND status = "
                                "'queued'",
                                "res-1"),
                  1);

    /* the task ends done: the job completes with both chunks */
    sqlcheck_long(pg,
                  "SELECT count(*) FROM shoal.record_batch('[{\"task_id\": \"res-1:000001\", "
                  "\"job_id\": \"res-1\", \"chunk\": 1, \"status\": \"done\", \"output\": \"b\", "
                  "\"model\": \"fast\"}]', '[]')",
                  NULL);
    sqlcheck_text(pg, "SELECT shoal.merge_job($1)", "res-1", buf, sizeof(buf));
    assert_str_eq(buf, "completed");
    sqlcheck_text(pg, "SELECT output FROM shoal.jobs WHERE job_id = $1", "res-1", buf, sizeof(buf));
    assert_str_eq(buf, "a\nb");
    sqlcheck_text(pg, "SELECT shoal.resume_job($1)", "res-1", buf, sizeof(buf));
    assert_str_eq(buf, "cannot:completed");
}

int main(void)
{
    static const char models_text[] =
        "{\"models\": {\"fast\": {\"provider\": \"openai\", \"endpoint\": "
        "\"http://127.0.0.1:9/v1/chat/completions\", \"model\": \"m\"}}}";
    char err[512];
    shoal_pgcluster_t *cluster;

    shoal_log_init("reconcile_test", SHOAL_LOG_ERROR, 0);
    shoal_models_t *models = shoal_models_parse(models_text, strlen(models_text), err, sizeof(err));
    if (!models)
        test_fail("models: %s", err);
    assert_int_eq(shoal_topics_init(&topics, NULL, err, sizeof(err)), SHOAL_OK);
    shoal_pg_t *pg = testdb_start("reconcile_test", &cluster);
    if (!(kafka = shoal_mockkafka_new(1, err, sizeof(err))) ||
        shoal_mockkafka_create_default_topics(kafka, NULL, err, sizeof(err)) != SHOAL_OK ||
        !(producer =
              shoal_kafka_producer_new(shoal_mockkafka_bootstraps(kafka), NULL, err, sizeof(err))))
        test_fail("kafka: %s", err);

    shoal_intake_conf_t ic = {.pg = pg,
                              .producer = producer,
                              .topics = &topics,
                              .models = models,
                              .max_job_bytes = 1 << 20};
    shoal_reconcile_conf_t rconf = {.every_ms = 1000, .pending_ms = 60000, .queued_ms = 60000};
    shoal_reconcile_t *rc = shoal_reconcile_new(shoal_pgcluster_url(cluster), &ic, &rconf);
    assert_true(rc != NULL);

    submit(&ic, "keep-1", 3, NULL);
    submit(&ic, "secret-1", 3, "{\"store_inputs\": false}");
    test_inputs(pg);
    test_lost(pg, rc);
    test_cancel(pg);
    test_resume(pg, &ic, rc);

    shoal_reconcile_destroy(rc);
    assert_int_eq(rd_kafka_flush(producer, 10000), RD_KAFKA_RESP_ERR_NO_ERROR);
    rd_kafka_destroy(producer);
    shoal_pg_destroy(pg);
    shoal_mockkafka_destroy(kafka);
    shoal_pgcluster_destroy(cluster);
    shoal_models_destroy(models);
    printf("reconcile_test: ok\n");
    return 0;
}
