/*
 * Fairness between tenants at one priority: tenant A's 50,000-item job (one
 * item per chunk, sent in parts by `shoal submit`) is running on two workers
 * against the zero-latency simulator when tenant B submits a 20-item job at
 * the same priority. The dispatcher keeps at most a window of each tenant's
 * tasks published and unfinished (defaults: --dispatch-window 2000), so B's
 * tasks queue behind that window of A's, not behind A's whole job. Measured
 * from PostgreSQL's clock just before B's job is produced to B's
 * jobs.finished_at (its merged output committed). Ends with
 *   RESULT bench=fairness b_done_ms=N
 * SHOAL_BENCH_A_ITEMS changes the size of A's job.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tests/support/benchstat.h"
#include "tests/support/check.h"
#include "tests/support/harness.h"

#define B_ITEMS 20
#define A_DONE_BEFORE 2000

int main(void)
{
    const char *n = getenv("SHOAL_BENCH_A_ITEMS");
    int a_items = n ? (int)strtol(n, NULL, 10) : 50000;
    assert_true(a_items > A_DONE_BEFORE * 2);
    static const char *const wargs[] = {"--max-inflight", "256", NULL};
    harness_conf_t conf = {.workers = 2, .schedulers = 1, .worker_args = wargs, .unsafe_fast = 1};
    harness_t *h = harness_start(&conf);
    char status[64], load[64], done[64];

    /* Warm the consumer groups so their joins are not timed. */
    char *job = harness_job("warmup", 20, 1, "{\"tenant\": \"w\"}");
    harness_run_job(h, "warmup", job, 120, NULL);
    free(job);

    /* A's job is over 1 MiB: `shoal submit` sends it in parts. */
    char path[1024], out[256];
    snprintf(path, sizeof(path), "%s/fair-a.json", shoal_devstack_workdir(harness_stack(h)));
    job = harness_job("fair-a", a_items, 1, "{\"tenant\": \"a\"}");
    FILE *f = fopen(path, "w");
    assert_true(f != NULL);
    fputs(job, f);
    assert_true(fclose(f) == 0);
    free(job);
    assert_int_eq(harness_sh(h, out, sizeof(out), "%s submit %s", harness_bin("shoal"), path), 0);
    assert_str_eq(out, "fair-a\n");
    assert_wait(harness_long(h, "SELECT tasks_done FROM shoal.jobs WHERE job_id = 'fair-a'",
                             NULL) >= A_DONE_BEFORE,
                300, "tenant a's job runs");

    /* B's items differ from A's, so no answer of A's could serve B. */
    job = harness_job("fair-b", B_ITEMS, 1,
                      "{\"tenant\": \"b\", \"prompt_template\": \"Tenant b:\\n{{input}}\"}");
    char t0[64];
    harness_str(h, t0, sizeof(t0), "SELECT clock_timestamp()::text", NULL);
    harness_produce(h, "shoal.jobs", "fair-b", job, strlen(job));
    free(job);
    harness_wait_job(h, "fair-b", 600, status, sizeof(status));
    assert_str_eq(status, "completed");
    harness_str(h, done, sizeof(done),
                "SELECT (extract(epoch FROM finished_at - $1::timestamptz) * 1000)::text "
                "FROM shoal.jobs WHERE job_id = 'fair-b'",
                t0, NULL);
    double b_ms = strtod(done, NULL);
    long a_done =
        harness_long(h, "SELECT tasks_done FROM shoal.jobs WHERE job_id = 'fair-a'", NULL);
    long a_queued = harness_long(
        h, "SELECT count(*) FROM shoal.tasks WHERE job_id = 'fair-a' AND status = 'queued'", NULL);
    bench_loadavg(load, sizeof(load));

    printf("tenant a         %d items, one per chunk, 2 workers, zero-latency simulator\n",
           a_items);
    printf("tenant b         %d items at the same priority, submitted with %d of a's done\n",
           B_ITEMS, A_DONE_BEFORE);
    printf("b submit->done   %.0f ms\n", b_ms);
    printf("a when b done    %ld done, %ld queued\n", a_done, a_queued);
    printf("load average     %s\n", load);
    printf("RESULT bench=fairness b_done_ms=%.0f a_items=%d a_done_at_b=%ld\n", b_ms, a_items,
           a_done);
    fflush(stdout);

    /* The rest of A's job is not part of the measurement. */
    int rc =
        harness_sh(h, done, sizeof(done), "%s cancel fair-a >/dev/null 2>&1", harness_bin("shoal"));
    harness_stop(h);
    return rc == 0 ? 0 : 1;
}
