/*
 * Batch mode's splitting against the simulator leaving out 10% of the items
 * of every answer (--p-drop-item 0.1): a job of N items (2,000; set
 * SHOAL_BENCH_ITEMS) in chunks of 20, answer_mode batch, run to completion.
 * Calls are the simulator's /stats (requests it served); packed_calls is the
 * job's chunk count (one call per chunk with nothing dropped). Ends with
 *   RESULT bench=split items=N results=N calls=N packed_calls=N ms=N
 * (the target is results = items and calls <= 1.2 x packed_calls; ms is
 * from the job's produce to its completion, for orientation).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tests/support/check.h"
#include "tests/support/harness.h"

#define MAX_ITEMS 20

int main(void)
{
    const char *env = getenv("SHOAL_BENCH_ITEMS");
    int n = env ? (int)strtol(env, NULL, 10) : 2000;
    static const char *const wargs[] = {"--max-inflight", "256", NULL};
    static const char *const sargs[] = {"--p-drop-item", "0.1", NULL};
    harness_conf_t conf = {
        .workers = 2, .schedulers = 1, .worker_args = wargs, .sim_args = sargs, .unsafe_fast = 1};
    harness_t *h = harness_start(&conf);
    double ms = 0;

    char *job = harness_job("bench-split-1", n, MAX_ITEMS,
                            "{\"answer_mode\": \"batch\", \"max_attempts\": 20}");
    long calls = harness_run_job(h, "bench-split-1", job, 600, &ms);
    free(job);
    long results =
        harness_long(h, "SELECT count(DISTINCT item_id) FROM shoal.item_results WHERE job_id = $1",
                     "bench-split-1", NULL);
    long packed = harness_long(
        h, "SELECT count(*) FROM shoal.tasks WHERE job_id = $1 AND parent_task_id IS NULL",
        "bench-split-1", NULL);
    long subs = harness_long(
        h, "SELECT count(*) FROM shoal.tasks WHERE job_id = $1 AND parent_task_id IS NOT NULL",
        "bench-split-1", NULL);
    printf("%ld chunks, %ld sub-tasks, %.2f calls per packed call, %.0f ms\n", packed, subs,
           packed > 0 ? (double)calls / (double)packed : 0.0, ms);
    printf("RESULT bench=split items=%d results=%ld calls=%ld packed_calls=%ld ms=%.0f\n", n,
           results, calls, packed, ms);
    harness_stop(h);
    return 0;
}
