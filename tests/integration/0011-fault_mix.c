/*
 * A provider that fails in every way at once: 20% 5xx, 10% 429, 5% hung
 * calls, 2% malformed bodies. A job of 120 tasks with a short timeout (so hung
 * calls end) and room for retries completes with every result exactly once,
 * and no task is answered twice: the simulator's good answers equal the tasks
 * and each task has one successful call on record. On the same faulty
 * provider, prompts carrying the simulator's failure marker get a 400 that is
 * never retried: those tasks fail with the provider's message, go to the
 * dead-letter topic, the rest complete and the job ends `partial`.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tests/support/check.h"
#include "tests/support/faults.h"
#include "tests/support/harness.h"

#define ITEMS 120
#define BAD_ITEMS 20
#define BAD_EVERY 4 /* every 4th item of the second job carries the marker */

static long stat_of(json_t *stats, const char *group, const char *key)
{
    json_t *g = group ? json_object_get(stats, group) : stats;
    return (long)json_integer_value(json_object_get(g, key));
}

int main(void)
{
    static const char *const sim_args[] = {
        "--p-5xx",       "0.20", "--p-429", "0.10", "--p-hang", "0.05",
        "--p-malformed", "0.02", "--seed",  "11",   NULL};
    static const char *const wargs[] = {"--max-inflight", "64", NULL};
    harness_conf_t conf = {.workers = 2,
                           .schedulers = 1,
                           .sim_latency_ms = 20,
                           .worker_args = wargs,
                           .sim_args = sim_args};
    harness_t *h = harness_start(&conf);
    char status[64], buf[1024];

    char *job = harness_job("mix-1", ITEMS, 1, "{\"timeout_ms\": 2000, \"max_attempts\": 10}");
    harness_produce(h, "shoal.jobs", "mix-1", job, strlen(job));
    free(job);

    const char *inputs[BAD_ITEMS];
    char texts[BAD_ITEMS][64];
    for (int i = 0; i < BAD_ITEMS; i++) {
        snprintf(texts[i], sizeof(texts[i]),
                 i % BAD_EVERY == 0 ? "bad-%02d SIM_FAIL_400" : "ok-%02d", i);
        inputs[i] = texts[i];
    }
    job = faults_job("marker-1", inputs, BAD_ITEMS, "{\"timeout_ms\": 2000, \"max_attempts\": 10}");
    harness_produce(h, "shoal.jobs", "marker-1", job, strlen(job));
    free(job);

    /* Every injected 429 carries a Retry-After of a second, which holds the
     * model fleet-wide: progress is slow by design (and slower under ASan). */
    harness_wait_job(h, "mix-1", 240, status, sizeof(status));
    harness_print_lanes(h); /* how the 429s were taken, for the log */
    faults_assert_once(h, "mix-1", ITEMS);
    harness_wait_job(h, "marker-1", 120, status, sizeof(status));
    assert_str_eq(status, "partial");

    /* The faults did happen, and each kind was classified as such. */
    json_t *stats = harness_sim_stats(h);
    long good = stat_of(stats, "by_status", "200") - stat_of(stats, "injected", "malformed");
    long marker = stat_of(stats, "injected", "fail_marker");
    assert_true(stat_of(stats, "injected", "5xx") > 0);
    assert_true(stat_of(stats, "injected", "429") > 0);
    assert_true(stat_of(stats, "injected", "hang") > 0);
    json_decref(stats);
    const char *kinds[] = {"server_error", "rate_limited", "timeout"};
    for (size_t i = 0; i < sizeof(kinds) / sizeof(kinds[0]); i++)
        if (harness_long(h,
                         "SELECT count(*) FROM shoal.attempts WHERE job_id = 'mix-1' AND "
                         "outcome_kind = $1",
                         kinds[i], NULL) < 1)
            test_fail("no attempt of mix-1 recorded as %s", kinds[i]);
    /* Every good answer the simulator gave became the one result of a task:
     * no task already done was called again. */
    long ok_tasks = ITEMS + BAD_ITEMS - BAD_ITEMS / BAD_EVERY;
    assert_int_eq(good, ok_tasks);
    assert_int_eq(harness_long(h,
                               "SELECT count(*) FROM shoal.attempts WHERE outcome = 'ok' AND "
                               "job_id IN ('mix-1', 'marker-1')",
                               NULL),
                  ok_tasks);

    /* The marker job: 400s fail at once (one call each, never retried), with
     * the provider's own message; the others complete exactly once. */
    long nbad = (BAD_ITEMS + BAD_EVERY - 1) / BAD_EVERY;
    assert_int_eq(marker, nbad);
    assert_int_eq(harness_long(h,
                               "SELECT count(*) FROM shoal.tasks WHERE job_id = 'marker-1' AND "
                               "status = 'failed' AND error LIKE '%failure marker SIM_FAIL_400%'",
                               NULL),
                  nbad);
    assert_int_eq(harness_long(h,
                               "SELECT count(*) FROM shoal.tasks WHERE job_id = 'marker-1' AND "
                               "status = 'done'",
                               NULL),
                  BAD_ITEMS - nbad);
    assert_int_eq(harness_long(h,
                               "SELECT count(*) FROM shoal.attempts a JOIN shoal.tasks t USING "
                               "(task_id) WHERE t.job_id = 'marker-1' AND t.status = 'failed'",
                               NULL),
                  nbad);
    assert_int_eq(harness_long(h,
                               "SELECT count(*) FROM shoal.attempts a JOIN shoal.tasks t USING "
                               "(task_id) WHERE t.job_id = 'marker-1' AND t.status = 'failed' AND "
                               "a.http_status = 400 AND a.outcome_kind = 'permanent'",
                               NULL),
                  nbad);
    assert_int_eq(
        harness_long(h, "SELECT count(*) FROM shoal.results WHERE job_id = 'marker-1'", NULL),
        BAD_ITEMS - nbad);
    harness_str(h, buf, sizeof(buf), "SELECT error FROM shoal.jobs WHERE job_id = 'marker-1'",
                NULL);
    assert_str_contains(buf, "5 of 20 tasks failed");

    /* Each failed task is on the dead-letter topic with the provider's text. */
    json_t *dlq = faults_read_topic(h, "shoal.tasks.dlq", (int)nbad, 60);
    assert_int_eq(json_array_size(dlq), nbad);
    size_t i;
    json_t *m;
    json_array_foreach(dlq, i, m)
    {
        assert_str_eq(json_string_value(json_object_get(json_object_get(m, "task"), "job_id")),
                      "marker-1");
        assert_str_contains(json_string_value(json_object_get(m, "error")),
                            "failure marker SIM_FAIL_400");
    }
    json_decref(dlq);

    harness_stop(h);
    fprintf(stderr, "ok\n");
    return 0;
}
