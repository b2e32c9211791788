/*
 * The result cache against the simulator: a 1,000-item job (one item per
 * chunk), the same job again under a new job_id, then the same job with 10
 * items changed. Calls are counted by the simulator's /stats (requests it
 * served), not by shoal. Ends with
 *   RESULT bench=cache calls_first=N calls_again=N calls_changed=N
 *          again_ms=N changed_ms=N
 * (the target is calls_first=1000 calls_again=0 calls_changed=10; the
 * times are from the job's produce to its completion, for orientation).
 * SHOAL_BENCH_ITEMS changes the size.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tests/support/check.h"
#include "tests/support/harness.h"

#define CHANGED 10

/* Runs job id of n items, `changed` of them spread over the job with other
 * inputs, to completion; returns the calls served, *ms its time. */
static long run(harness_t *h, const char *id, int n, int changed, double *ms)
{
    int at[CHANGED];
    for (int i = 0; i < changed; i++)
        at[i] = (int)((long)i * n / changed);
    char *job = harness_job_changed(id, n, at, changed, NULL);
    long calls = harness_run_job(h, id, job, 600, ms);
    free(job);
    return calls;
}

int main(void)
{
    const char *env = getenv("SHOAL_BENCH_ITEMS");
    int n = env ? (int)strtol(env, NULL, 10) : 1000;
    static const char *const wargs[] = {"--max-inflight", "256", NULL};
    harness_conf_t conf = {
        .workers = 2, .schedulers = 1, .worker_args = wargs, .unsafe_fast = 1, .cache = 1};
    harness_t *h = harness_start(&conf);
    double first_ms, again_ms, changed_ms;

    long first = run(h, "bench-cache-1", n, 0, &first_ms);
    long again = run(h, "bench-cache-2", n, 0, &again_ms);
    long changed = run(h, "bench-cache-3", n, CHANGED, &changed_ms);
    printf("first job %.0f ms, again %.0f ms, %d changed %.0f ms\n", first_ms, again_ms, CHANGED,
           changed_ms);
    printf("RESULT bench=cache calls_first=%ld calls_again=%ld calls_changed=%ld again_ms=%.0f "
           "changed_ms=%.0f\n",
           first, again, changed, again_ms, changed_ms);
    harness_stop(h);
    return 0;
}
