/*
 * The result cache on the local stack with the simulator, counting calls by
 * the simulator's own request counter:
 *   - a 20-item job (one item per chunk) makes 20 calls;
 *   - the same job again under another job_id makes none: it completes with
 *     20 results marked cached and the same outputs, `shoal status` says
 *     20 cached and shoal.cache_savings counts them;
 *   - the same job with 2 items changed makes exactly 2 calls;
 *   - the same job with "cache": false makes 20 calls again and stores
 *     nothing new.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tests/support/check.h"
#include "tests/support/harness.h"

#define N 20

/* Runs job id (N items, those in changed[0..nchanged) with other inputs) to
 * the end; returns the calls the simulator served for it. */
static long run(harness_t *h, const char *id, const int *changed, int nchanged, const char *extra)
{
    char *job = harness_job_changed(id, N, changed, nchanged, extra);
    long calls = harness_run_job(h, id, job, 120, NULL);
    free(job);
    return calls;
}

static long job_long(harness_t *h, const char *sql, const char *job_id)
{
    return harness_long(h, sql, job_id, NULL);
}

int main(void)
{
    harness_conf_t conf = {.workers = 1, .schedulers = 1, .cache = 1};
    harness_t *h = harness_start(&conf);
    char out[4096];
    const char *cached = "SELECT tasks_cached FROM shoal.jobs WHERE job_id = $1";

    assert_int_eq(run(h, "cache-1", NULL, 0, NULL), N);
    assert_int_eq(harness_long(h, "SELECT count(*) FROM shoal.cache", NULL), N);
    assert_int_eq(job_long(h, cached, "cache-1"), 0);

    /* the same job again: no call */
    assert_int_eq(run(h, "cache-2", NULL, 0, NULL), 0);
    assert_int_eq(job_long(h, cached, "cache-2"), N);
    assert_int_eq(job_long(h,
                           "SELECT count(*) FROM shoal.results a JOIN shoal.results b "
                           "ON a.chunk = b.chunk AND a.output = b.output "
                           "WHERE a.job_id = 'cache-1' AND b.job_id = $1 AND b.cached",
                           "cache-2"),
                  N);
    assert_int_eq(job_long(h, "SELECT hits FROM shoal.cache_savings WHERE job_id = $1", "cache-2"),
                  N);
    assert_int_eq(job_long(h, "SELECT count(*) FROM shoal.attempts WHERE job_id = $1", "cache-2"),
                  0);
    assert_int_eq(harness_sh(h, out, sizeof(out), "%s status cache-2", harness_bin("shoal")), 0);
    assert_str_contains(out, "completed");
    assert_str_contains(out, "20 cached");

    /* two items changed: two calls */
    static const int changed[] = {3, 7};
    assert_int_eq(run(h, "cache-3", changed, 2, NULL), 2);
    assert_int_eq(job_long(h, cached, "cache-3"), N - 2);
    assert_int_eq(job_long(h,
                           "SELECT count(*) FROM shoal.results WHERE job_id = $1 "
                           "AND NOT cached AND chunk IN (3, 7)",
                           "cache-3"),
                  2);
    assert_int_eq(harness_long(h, "SELECT count(*) FROM shoal.cache", NULL), N + 2);

    /* "cache": false: every call made, nothing read or written */
    assert_int_eq(run(h, "cache-4", changed, 1, "{\"cache\": false}"), N);
    assert_int_eq(job_long(h, cached, "cache-4"), 0);
    assert_int_eq(harness_long(h, "SELECT count(*) FROM shoal.cache", NULL), N + 2);
    assert_int_eq(job_long(h,
                           "SELECT count(*) FROM shoal.tasks WHERE job_id = $1 "
                           "AND cache_key IS NOT NULL",
                           "cache-4"),
                  0);

    harness_stop(h);
    printf("0040-result_cache: ok\n");
    return 0;
}
