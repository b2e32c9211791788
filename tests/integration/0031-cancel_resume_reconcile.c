/*
 * Cancel, resume and the reconciler on the local stack with the simulator.
 *
 * Cancel mid-job: a 40-task job on a slow model that runs two calls at a
 * time is cancelled with `shoal cancel` after a few tasks; once the worker
 * has logged the cancel, the simulator sees no further call start (every
 * call it served is one of the attempts the job recorded), the job ends
 * `cancelled` with an event, most tasks are marked cancelled, and the CLI
 * says what it did (again: already cancelled; no such job: exit 4; a
 * finished job: exit 2).
 *
 * Resume after a fleet restart: a job on a model nobody listens for fails
 * every task (the lane is down for longer than --down-after-ms) and ends
 * `failed`; the models file is fixed, the scheduler and the worker are
 * restarted, `shoal resume` puts the failed tasks back, the reconciler
 * publishes them from the stored inputs and the job completes with one
 * result per item.
 *
 * Resume during a check: a stale delivery of a failed task is being checked
 * when `shoal resume` publishes the task again; the worker checks again and
 * calls it (test_resume_during_check).
 *
 * Lost message: a task of a running job is made queued long ago with no call
 * and no message (its result and calls deleted, the job running again); the
 * reconciler publishes it again and the job completes.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <librdkafka/rdkafka.h>

#include "common/kafka.h"
#include "stack/devstack.h"
#include "stack/proc.h"
#include "tests/support/check.h"
#include "tests/support/harness.h"

#define DEAD_URL "http://127.0.0.1:1/v1/chat/completions"

static long sim_requests(harness_t *h)
{
    json_t *stats = harness_sim_stats(h);
    long n = (long)json_integer_value(json_object_get(stats, "requests"));
    json_decref(stats);
    return n;
}

/* Polls until the SQL count (one parameter) reaches want; fails the test
 * after timeout_s. */
#define wait_count(h, sql, p1, want, timeout_s)                                                    \
    assert_wait(harness_long(h, sql, p1, NULL) >= (want), timeout_s, sql)

static void test_cancel(harness_t *h)
{
    char out[4096], status[64], wlog[1024];
    const char *wd = shoal_devstack_workdir(harness_stack(h));

    long before = sim_requests(h);
    char *job = harness_job("cancel-1", 40, 1, "{\"model\": \"sim-slow\"}");
    harness_produce(h, "shoal.jobs", "cancel-1", job, strlen(job));
    free(job);
    wait_count(h, "SELECT tasks_done FROM shoal.jobs WHERE job_id = $1", "cancel-1", 3, 60);

    assert_int_eq(harness_sh(h, out, sizeof(out), "%s cancel cancel-1", harness_bin("shoal")), 0);
    assert_str_contains(out, "job cancel-1 cancelled:");
    snprintf(wlog, sizeof(wlog), "%s/logs/worker-0.log", wd);
    assert_int_eq(shoal_proc_wait_file_line(wlog, "msg=\"job cancelled\" job_id=cancel-1", 30000,
                                            out, sizeof(out)),
                  SHOAL_OK);
    /* The cancel is processed: the calls the simulator has seen so far are
     * all the job will ever make. Once each is recorded, none came after. */
    long seen = sim_requests(h) - before;
    wait_count(h, "SELECT count(*) FROM shoal.attempts WHERE job_id = $1", "cancel-1", seen, 60);
    assert_int_eq(sim_requests(h) - before, seen);
    assert_int_eq(
        harness_long(h, "SELECT count(*) FROM shoal.attempts WHERE job_id = $1", "cancel-1", NULL),
        seen);
    assert_true(seen < 30);

    harness_str(h, status, sizeof(status), "SELECT status FROM shoal.jobs WHERE job_id = $1",
                "cancel-1", NULL);
    assert_str_eq(status, "cancelled");
    assert_int_ge(harness_long(h,
                               "SELECT count(*) FROM shoal.tasks WHERE job_id = $1 AND status = "
                               "'cancelled'",
                               "cancel-1", NULL),
                  10);
    json_t *ev = harness_events(h, "cancel-1", 2, 30);
    json_t *last = json_array_get(ev, json_array_size(ev) - 1);
    assert_str_eq(json_string_value(json_object_get(last, "type")), "cancelled");
    json_decref(ev);

    assert_int_eq(harness_sh(h, out, sizeof(out), "%s status cancel-1", harness_bin("shoal")), 3);
    assert_str_contains(out, "cancel-1 cancelled");
    assert_int_eq(harness_sh(h, out, sizeof(out), "%s cancel cancel-1", harness_bin("shoal")), 0);
    assert_str_contains(out, "already cancelled");
    assert_int_eq(
        harness_sh(h, out, sizeof(out), "%s cancel no-such-job 2>&1", harness_bin("shoal")), 4);
    assert_str_contains(out, "no job no-such-job");
}

/* A lost queued task is republished after 2 s here (10 min by default),
 * for the whole run: the restarts below keep it. */
static char *const reconcile_env[] = {"SHOAL_RECONCILE_AFTER_MS=2000",
                                      "SHOAL_RECONCILE_EVERY_MS=500", NULL};

static void test_resume(harness_t *h)
{
    char out[4096], status[64], err[512];
    shoal_devstack_t *ds = harness_stack(h);

    char *job = harness_job("resume-1", 4, 1, "{\"model\": \"sim-dead\", \"max_attempts\": 2}");
    harness_produce(h, "shoal.jobs", "resume-1", job, strlen(job));
    free(job);
    harness_wait_job(h, "resume-1", 120, status, sizeof(status));
    assert_str_eq(status, "failed");
    assert_int_eq(
        harness_long(h, "SELECT tasks_failed FROM shoal.jobs WHERE job_id = $1", "resume-1", NULL),
        4);
    /* a finished job cannot be cancelled */
    assert_int_eq(harness_sh(h, out, sizeof(out), "%s cancel resume-1 2>&1", harness_bin("shoal")),
                  2);
    assert_str_contains(out, "already ended failed");

    /* The outage ends: the model's endpoint is fixed and the fleet restarts. */
    assert_int_eq(harness_sh(h, out, sizeof(out),
                             "sed -i 's|" DEAD_URL "|${SHOAL_SIM_URL}/v1/chat/completions|' %s",
                             shoal_devstack_models_path(ds)),
                  0);
    if (shoal_devstack_restart(ds, "scheduler", 0, reconcile_env, err, sizeof(err)) != SHOAL_OK ||
        shoal_devstack_restart(ds, "worker", 0, NULL, err, sizeof(err)) != SHOAL_OK)
        test_fail("could not restart the fleet: %s", err);

    assert_int_eq(harness_sh(h, out, sizeof(out), "%s resume resume-1", harness_bin("shoal")), 0);
    assert_str_contains(out, "job resume-1 resumed: 4 failed tasks will run again");
    harness_wait_job(h, "resume-1", 120, status, sizeof(status));
    assert_str_eq(status, "completed");
    assert_int_eq(harness_long(h,
                               "SELECT count(DISTINCT r.task_id) * 100 + count(*) FROM "
                               "shoal.results r JOIN shoal.tasks t USING (task_id) WHERE r.job_id "
                               "= $1 AND t.status = 'done'",
                               "resume-1", NULL),
                  404);
    /* each item's input is in the merged output exactly once */
    assert_int_eq(harness_long(h,
                               "SELECT count(*) FROM generate_series(0, 3) g, shoal.jobs j WHERE "
                               "j.job_id = $1 AND j.output LIKE '%item-' || lpad(g::text, 5, "
                               "'0') || '%' AND j.output NOT LIKE '%item-' || lpad(g::text, 5, "
                               "'0') || '%item-' || lpad(g::text, 5, '0') || '%'",
                               "resume-1", NULL),
                  4);
    assert_int_eq(harness_sh(h, out, sizeof(out), "%s resume resume-1 2>&1", harness_bin("shoal")),
                  2);
    assert_str_contains(out, "ended completed");
}

static void test_lost(harness_t *h)
{
    char status[64];

    char *job = harness_job("lost-1", 4, 1, NULL);
    harness_produce(h, "shoal.jobs", "lost-1", job, strlen(job));
    free(job);
    harness_wait_job(h, "lost-1", 60, status, sizeof(status));
    assert_str_eq(status, "completed");

    /* Chunk 3's message is gone: queued an hour ago, no call, no result, and
     * the job still running. */
    harness_long(h,
                 "WITH d AS (DELETE FROM shoal.results WHERE task_id = $1 RETURNING 1), "
                 "a AS (DELETE FROM shoal.attempts WHERE task_id = $1 RETURNING 1), "
                 "t AS (UPDATE shoal.tasks SET status = 'queued', queued_at = now() - interval "
                 "'1 hour', finished_at = NULL WHERE task_id = $1 RETURNING 1), "
                 "j AS (UPDATE shoal.jobs SET status = 'running', tasks_done = 3, output = NULL, "
                 "finished_at = NULL WHERE job_id = 'lost-1' RETURNING 1) "
                 "SELECT (SELECT count(*) FROM d) + (SELECT count(*) FROM t)",
                 "lost-1:000003", NULL);
    harness_wait_job(h, "lost-1", 60, status, sizeof(status));
    assert_str_eq(status, "completed");
    assert_int_eq(
        harness_long(h, "SELECT count(*) FROM shoal.results WHERE job_id = $1", "lost-1", NULL), 4);
    assert_int_eq(harness_long(h,
                               "SELECT count(*) FROM shoal.attempts WHERE task_id = $1 AND "
                               "outcome = 'ok'",
                               "lost-1:000003", NULL),
                  1);
}

/* The message a task topic holds under key, read from the start of every
 * partition without joining a group; NULL when none comes within 10 s. */
static char *topic_message(harness_t *h, const char *topic, const char *key, size_t *len)
{
    char err[512];
    rd_kafka_t *rk = shoal_kafka_reader_new(shoal_devstack_bootstrap(harness_stack(h)),
                                            "test-reader", NULL, err, sizeof(err));
    rd_kafka_topic_partition_list_t *l =
        rk ? shoal_kafka_partitions(rk, topic, 5000, err, sizeof(err)) : NULL;
    if (!l)
        test_fail("reader: %s", err);
    rd_kafka_poll_set_consumer(rk);
    for (int i = 0; i < l->cnt; i++)
        l->elems[i].offset = RD_KAFKA_OFFSET_BEGINNING;
    assert_int_eq(rd_kafka_assign(rk, l), 0);
    rd_kafka_topic_partition_list_destroy(l);
    char *found = NULL;
    double deadline = check_now_s() + 10;
    while (!found && check_now_s() < deadline) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 200);
        if (m && !m->err && m->key_len == strlen(key) && !memcmp(m->key, key, m->key_len)) {
            found = malloc(m->len);
            assert_true(found != NULL);
            memcpy(found, m->payload, m->len);
            *len = m->len;
        }
        if (m)
            rd_kafka_message_destroy(m);
    }
    rd_kafka_destroy(rk);
    return found;
}

/* A stale delivery of a failed task is being checked when `shoal resume`
 * publishes the task again: the new delivery attaches to the one being
 * checked, whose check read "failed" before the resume. The worker must
 * check again rather than drop both, or the task stays queued with no call
 * until the reconciler. The worker's check is held for 4 s after it read
 * the task (its tenant look-up sleeps, for the worker's connections only),
 * so the resumed delivery arrives while it is held. */
static void test_resume_during_check(harness_t *h)
{
    char out[4096], status[64];
    static const char job[] =
        "{\"job_id\": \"race-1\", \"tenant\": \"test\", \"model\": \"sim-small\", "
        "\"prompt_template\": \"Echo:\\n{{input}}\", "
        "\"items\": [{\"id\": \"a\", \"input\": \"a SIM_FAIL_400\"}]}";
    harness_produce(h, "shoal.jobs", "race-1", job, strlen(job));
    harness_wait_job(h, "race-1", 60, status, sizeof(status));
    assert_str_eq(status, "failed");

    size_t len = 0;
    char *stale = topic_message(h, "shoal.tasks.normal", "race-1:000000", &len);
    if (!stale)
        test_fail("task race-1:000000 not found on shoal.tasks.normal");
    harness_long(h,
                 "CREATE OR REPLACE FUNCTION shoal.tenant_plan(p_tenant text) RETURNS SETOF "
                 "shoal.tenants LANGUAGE plpgsql VOLATILE AS $$ BEGIN "
                 "IF current_setting('application_name') = 'shoal-worker' THEN "
                 "PERFORM pg_sleep(4); END IF; "
                 "RETURN QUERY SELECT * FROM shoal.tenants WHERE tenant IN (p_tenant, '*') "
                 "ORDER BY tenant = '*' LIMIT 1; END $$",
                 NULL);
    harness_produce(h, "shoal.tasks.normal", "race-1:000000", stale, len);
    free(stale);
    /* the worker's check of the stale delivery has read the task and sleeps */
    double deadline = check_now_s() + 30;
    while (harness_long(h,
                        "SELECT count(*) FROM pg_stat_activity WHERE application_name = "
                        "'shoal-worker' AND wait_event = 'PgSleep'",
                        NULL) < 1) {
        if (check_now_s() > deadline)
            test_fail("the worker never checked the stale delivery");
        struct timespec ts = {0, 20 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    assert_int_eq(harness_sh(h, out, sizeof(out), "%s resume race-1", harness_bin("shoal")), 0);
    assert_str_contains(out, "job race-1 resumed: 1 failed task will run again");

    /* The resumed task is called (and fails again on its marker). The
     * reconciler would publish a stranded task only after 10 minutes. */
    harness_wait_job(h, "race-1", 60, status, sizeof(status));
    assert_str_eq(status, "failed");
    assert_int_eq(harness_long(h, "SELECT count(*) FROM shoal.attempts WHERE task_id = $1",
                               "race-1:000000", NULL),
                  2);
    harness_long(h,
                 "CREATE OR REPLACE FUNCTION shoal.tenant_plan(p_tenant text) RETURNS SETOF "
                 "shoal.tenants LANGUAGE sql STABLE AS $$ SELECT * FROM shoal.tenants WHERE "
                 "tenant IN (p_tenant, '*') ORDER BY tenant = '*' LIMIT 1 $$",
                 NULL);
}

int main(void)
{
    static const char *const worker_args[] = {"--down-after-ms", "2000", NULL};
    harness_conf_t conf = {.workers = 1,
                           .schedulers = 1,
                           .sim_latency_ms = 300,
                           .worker_args = worker_args,
                           .extra_models =
                               "\"sim-slow\": {\"provider\": \"openai\", \"endpoint\": "
                               "\"${SHOAL_SIM_URL}/v1/chat/completions\", \"model\": \"slow\", "
                               "\"max_concurrency\": 2}, "
                               "\"sim-dead\": {\"provider\": \"openai\", \"endpoint\": \"" DEAD_URL
                               "\", \"model\": \"dead\"}"};
    harness_t *h = harness_start(&conf);
    char err[512];
    test_resume_during_check(h); /* before the reconciler is made quick */
    if (shoal_devstack_restart(harness_stack(h), "scheduler", 0, reconcile_env, err, sizeof(err)) !=
        SHOAL_OK)
        test_fail("could not restart the scheduler: %s", err);

    test_cancel(h);
    test_lost(h);
    test_resume(h);

    harness_stop(h);
    fprintf(stderr, "ok\n");
    return 0;
}
