/*
 * A job's deadline and what a truncated answer means are the job's to say.
 * (a) A job with deadline_s 3 on a model whose endpoint refuses connections,
 * with --down-after-ms far away: only the deadline can end it, and it does,
 * every task failed with the job's deadline as the reason and no call
 * started after it. (b) output.on_truncated "fail" against a simulator that
 * truncates every answer: each task fails at its first answer, with the
 * limit it hit. (c) on_truncated "retry" with max_attempts 3: three calls a
 * task, each with twice the output room of the one before, then failed
 * after its attempts.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tests/support/check.h"
#include "tests/support/harness.h"

#define TASKS 3

int main(void)
{
    static const char *const worker_args[] = {"--down-after-ms", "600000", NULL};
    static const char *const sim_args[] = {"--p-truncated", "1", NULL};
    harness_conf_t conf = {.workers = 1,
                           .schedulers = 1,
                           .worker_args = worker_args,
                           .sim_args = sim_args,
                           .extra_models =
                               "\"sim-down\": {\"provider\": \"openai\", \"endpoint\": "
                               "\"http://127.0.0.1:1/v1/chat/completions\", \"model\": \"down\"}"};
    harness_t *h = harness_start(&conf);
    char status[64], buf[1024];

    char *job = harness_job("dl-down", TASKS, 1, "{\"model\": \"sim-down\", \"deadline_s\": 3}");
    harness_produce(h, "shoal.jobs", "dl-down", job, strlen(job));
    free(job);
    /* sim-claude asks for max_tokens 1024 (its max_output_tokens) */
    job = harness_job("tr-fail", TASKS, 1,
                      "{\"model\": \"sim-claude\", \"output\": {\"on_truncated\": \"fail\"}}");
    harness_produce(h, "shoal.jobs", "tr-fail", job, strlen(job));
    free(job);
    job = harness_job("tr-retry", TASKS, 1,
                      "{\"model\": \"sim-claude\", \"max_attempts\": 3, \"output\": "
                      "{\"on_truncated\": \"retry\"}}");
    harness_produce(h, "shoal.jobs", "tr-retry", job, strlen(job));
    free(job);

    /* (a) The lane would hold these tasks for ten minutes; the deadline of
     * three seconds ends them. */
    harness_wait_job(h, "dl-down", 30, status, sizeof(status));
    assert_str_eq(status, "failed");
    assert_int_eq(harness_long(h,
                               "SELECT (settings->>'deadline_s')::int FROM shoal.jobs WHERE "
                               "job_id = 'dl-down'",
                               NULL),
                  3);
    assert_int_eq(harness_long(h,
                               "SELECT count(*) FROM shoal.tasks WHERE job_id = 'dl-down' AND "
                               "status = 'failed' AND error LIKE '%deadline of the job passed "
                               "(deadline_s=3) after % attempt%'",
                               NULL),
                  TASKS);
    harness_str(h, buf, sizeof(buf),
                "SELECT error FROM shoal.tasks WHERE job_id = 'dl-down' ORDER BY chunk LIMIT 1",
                NULL);
    fprintf(stderr, "dl-down task error: %s\n", buf);
    /* Calls were made (refused), and none started after the deadline: the
     * submission second plus three seconds, with a second for rounding. */
    assert_int_ge(
        harness_long(h, "SELECT count(*) FROM shoal.attempts WHERE job_id = 'dl-down'", NULL), 1);
    assert_int_eq(harness_long(h,
                               "SELECT count(*) FROM shoal.attempts a JOIN shoal.jobs j USING "
                               "(job_id) WHERE a.job_id = 'dl-down' AND a.started_at > "
                               "j.submitted_at + interval '4 seconds'",
                               NULL),
                  0);

    /* (b) One call a task, failed at once with the limit it hit. */
    harness_wait_job(h, "tr-fail", 60, status, sizeof(status));
    assert_str_eq(status, "failed");
    assert_int_eq(
        harness_long(h,
                     "SELECT count(*) FROM shoal.tasks WHERE job_id = 'tr-fail' AND "
                     "status = 'failed' AND error = 'answer truncated at max_tokens 1024'",
                     NULL),
        TASKS);
    assert_int_eq(
        harness_long(h, "SELECT count(*) FROM shoal.attempts WHERE job_id = 'tr-fail'", NULL),
        TASKS);
    assert_int_eq(harness_long(h,
                               "SELECT count(DISTINCT task_id) FROM shoal.attempts WHERE job_id = "
                               "'tr-fail' AND outcome = 'failed' AND outcome_kind = 'truncated'",
                               NULL),
                  TASKS);

    /* (c) Three calls a task, each truncated, each with twice the room. */
    harness_wait_job(h, "tr-retry", 60, status, sizeof(status));
    assert_str_eq(status, "failed");
    assert_int_eq(
        harness_long(h, "SELECT count(*) FROM shoal.attempts WHERE job_id = 'tr-retry'", NULL),
        3 * TASKS);
    assert_int_eq(harness_long(h,
                               "SELECT count(*) FROM shoal.attempts WHERE job_id = 'tr-retry' AND "
                               "outcome_kind = 'truncated'",
                               NULL),
                  3 * TASKS);
    static const char *const limits[] = {"1024", "2048", "4096"};
    for (size_t i = 0; i < 3; i++) {
        char sql[512];
        snprintf(sql, sizeof(sql),
                 "SELECT count(DISTINCT task_id) FROM shoal.attempts WHERE job_id = 'tr-retry' "
                 "AND error = 'answer truncated at max_tokens %s'",
                 limits[i]);
        assert_int_eq(harness_long(h, sql, NULL), TASKS);
    }
    assert_int_eq(harness_long(h,
                               "SELECT count(*) FROM shoal.tasks WHERE job_id = 'tr-retry' AND "
                               "status = 'failed' AND error = 'answer truncated at max_tokens "
                               "4096 after 3 attempts'",
                               NULL),
                  TASKS);

    harness_stop(h);
    fprintf(stderr, "ok\n");
    return 0;
}
