/*
 * Priorities: while a low-priority job of 3000 tasks drains through one
 * worker (a model allowing 4 concurrent calls of about 20 ms, so the worker
 * holds many more tasks than it can run), a high-priority job of 10 tasks
 * jumps the queue: it completes while the low job still runs, and its tasks
 * waited in the worker (attempts.queue_ms) less than the low job's median.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sim/sim.h"
#include "tests/support/check.h"
#include "tests/support/faults.h"
#include "tests/support/harness.h"

#define LOW_ITEMS 3000
#define HIGH_ITEMS 10

int main(void)
{
    char err[512], extra[1024], status[64];
    shoal_sim_conf_t sc;
    shoal_sim_conf_init(&sc);
    sc.latency_ms = 20;
    shoal_sim_t *sim = shoal_sim_new(&sc, err, sizeof(err));
    if (!sim)
        test_fail("could not start a simulator: %s", err);
    snprintf(extra, sizeof(extra),
             "\"narrow\": {\"provider\": \"openai\", \"endpoint\": "
             "\"http://127.0.0.1:%d/v1/chat/completions\", \"model\": \"narrow\", "
             "\"max_concurrency\": 4}",
             shoal_sim_port(sim));
    harness_conf_t conf = {.workers = 1, .schedulers = 1, .extra_models = extra};
    harness_t *h = harness_start(&conf);

    char *job = harness_job("low-1", LOW_ITEMS, 1,
                            "{\"model\": \"narrow\", \"priority\": \"low\", \"prompt_template\": "
                            "\"Low:\\n{{input}}\"}");
    harness_produce(h, "shoal.jobs", "low-1", job, strlen(job));
    free(job);
    assert_wait(harness_long(h,
                             "SELECT coalesce(max(tasks_done), 0) FROM shoal.jobs WHERE job_id = "
                             "'low-1'",
                             NULL) >= 300,
                120, "300 low tasks done");

    job = harness_job("high-1", HIGH_ITEMS, 1,
                      "{\"model\": \"narrow\", \"priority\": \"high\", \"prompt_template\": "
                      "\"High:\\n{{input}}\"}");
    harness_produce(h, "shoal.jobs", "high-1", job, strlen(job));
    free(job);
    harness_wait_job(h, "high-1", 60, status, sizeof(status));
    faults_assert_once(h, "high-1", HIGH_ITEMS);
    long low_done =
        harness_long(h, "SELECT tasks_done FROM shoal.jobs WHERE job_id = 'low-1'", NULL);
    harness_str(h, status, sizeof(status), "SELECT status FROM shoal.jobs WHERE job_id = 'low-1'",
                NULL);
    assert_str_eq(status, "running");

    harness_wait_job(h, "low-1", 120, status, sizeof(status));
    faults_assert_once(h, "low-1", LOW_ITEMS);
    assert_int_eq(harness_long(h,
                               "SELECT count(*) FROM shoal.jobs h, shoal.jobs l WHERE h.job_id = "
                               "'high-1' AND l.job_id = 'low-1' AND h.finished_at < "
                               "l.finished_at",
                               NULL),
                  1);
    double high_max = faults_queue_ms(h, "high-1", "max");
    double low_median = faults_queue_ms(h, "low-1", "median");
    fprintf(stderr, "high job done at %ld/%d low tasks; queue_ms high max %.1f, low median %.1f\n",
            low_done, LOW_ITEMS, high_max, low_median);
    if (!(high_max < low_median))
        test_fail("high job's max queue_ms %.1f is not below the low job's median %.1f", high_max,
                  low_median);

    shoal_sim_stats_t *st = malloc(sizeof(*st));
    assert_true(st != NULL);
    shoal_sim_stats(sim, st);
    assert_int_eq(st->repeated_prompts, 0);
    assert_true(st->max_inflight <= 4);
    free(st);

    harness_stop(h);
    shoal_sim_destroy(sim);
    fprintf(stderr, "ok\n");
    return 0;
}
