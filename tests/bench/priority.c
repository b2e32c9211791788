/*
 * Priority under a backlog: while a 20,000-task low-priority job drains
 * through two workers (zero-latency simulator), a 10-task high-priority job
 * arrives once a few thousand low tasks are done. Its wait per task is
 * publish to call start: the first attempt's started_at - tasks.queued_at
 * (both written on this machine). Ends with
 *   RESULT bench=priority high_wait_p95_ms=N
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "tests/support/benchstat.h"
#include "tests/support/check.h"
#include "tests/support/harness.h"

#define LOW_TASKS 20000
#define HIGH_TASKS 10
#define LOW_DONE_BEFORE 3000

int main(void)
{
    static const char *const wargs[] = {"--max-inflight", "256", NULL};
    harness_conf_t conf = {.workers = 2, .schedulers = 1, .worker_args = wargs};
    harness_t *h = harness_start(&conf);
    char status[64], load0[64], load1[64];

    char *job = harness_job("warmup", 20, 1, "{\"priority\": \"high\"}");
    harness_produce(h, "shoal.jobs", "warmup", job, strlen(job));
    free(job);
    harness_wait_job(h, "warmup", 120, status, sizeof(status));
    assert_str_eq(status, "completed");

    job = harness_job("prio-low", LOW_TASKS, 1, "{\"priority\": \"low\"}");
    harness_produce(h, "shoal.jobs", "prio-low", job, strlen(job));
    free(job);
    double deadline = check_now_s() + 300;
    long low_done = 0;
    while (
        (low_done = harness_long(h, "SELECT count(*) FROM shoal.results WHERE job_id = 'prio-low'",
                                 NULL)) < LOW_DONE_BEFORE) {
        if (check_now_s() > deadline)
            test_fail("only %ld low tasks done after 300 s", low_done);
        struct timespec ts = {0, 100 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    bench_loadavg(load0, sizeof(load0));
    job = harness_job("prio-high", HIGH_TASKS, 1,
                      "{\"priority\": \"high\", \"prompt_template\": \"Urgent:\\n{{input}}\"}");
    harness_produce(h, "shoal.jobs", "prio-high", job, strlen(job));
    free(job);
    harness_wait_job(h, "prio-high", 300, status, sizeof(status));
    assert_str_eq(status, "completed");
    bench_loadavg(load1, sizeof(load1));
    long low_after =
        harness_long(h, "SELECT count(*) FROM shoal.results WHERE job_id = 'prio-low'", NULL);

    double wait[HIGH_TASKS];
    int n = 0;
    for (int i = 0; i < HIGH_TASKS; i++) {
        char chunk[16], v[64];
        snprintf(chunk, sizeof(chunk), "%d", i);
        harness_str(h, v, sizeof(v),
                    "SELECT extract(epoch FROM min(a.started_at) - t.queued_at) * 1000 FROM "
                    "shoal.tasks t JOIN shoal.attempts a ON a.task_id = t.task_id WHERE t.job_id "
                    "= 'prio-high' AND t.chunk = $1::int GROUP BY t.queued_at",
                    chunk, NULL);
        if (*v)
            wait[n++] = strtod(v, NULL);
    }
    if (n == 0)
        test_fail("no attempt recorded for the high-priority job");
    double mx = 0;
    for (int i = 0; i < n; i++)
        mx = wait[i] > mx ? wait[i] : mx;
    printf("backlog          %d low tasks, %ld done when the high job arrived, %ld when it "
           "ended\n",
           LOW_TASKS, low_done, low_after);
    printf("workers          2, --max-inflight 256, zero-latency simulator\n");
    printf("load average     %s at arrival, %s at the end (2 cores, shared)\n", load0, load1);
    printf("high tasks       %d with attempts; wait queued->call start: p50 %.1f, max %.1f ms\n", n,
           bench_percentile(wait, (size_t)n, 50), mx);
    printf("RESULT bench=priority high_wait_p95_ms=%.1f\n", bench_percentile(wait, (size_t)n, 95));
    fflush(stdout);
    harness_stop(h);
    return 0;
}
