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

static long sim_requests(harness_t *h)
{
    json_t *stats = harness_sim_stats(h);
    long n = (long)json_integer_value(json_object_get(stats, "requests"));
    json_decref(stats);
    return n;
}

/* Runs job id of n items (the first `changed` spread over the job get
 * another input) to completion; returns the calls served, *ms its time. */
static long run(harness_t *h, const char *id, int n, int changed, double *ms)
{
    char status[64];
    char *text = harness_job(id, n, 1, NULL);
    json_t *job = json_loads(text, 0, NULL);
    free(text);
    assert_true(job != NULL);
    for (int i = 0; i < changed; i++) {
        char input[64];
        int at = (int)((long)i * n / changed);
        snprintf(input, sizeof(input), "changed item %d", at);
        json_object_set_new(json_array_get(json_object_get(job, "items"), (size_t)at), "input",
                            json_string(input));
    }
    text = json_dumps(job, JSON_COMPACT);
    json_decref(job);
    long before = sim_requests(h);
    double t0 = check_now_s();
    harness_produce(h, "shoal.jobs", id, text, strlen(text));
    free(text);
    harness_wait_job(h, id, 600, status, sizeof(status));
    *ms = (check_now_s() - t0) * 1000.0;
    assert_str_eq(status, "completed");
    return sim_requests(h) - before;
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
