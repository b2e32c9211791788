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

static long sim_requests(harness_t *h)
{
    json_t *stats = harness_sim_stats(h);
    long n = (long)json_integer_value(json_object_get(stats, "requests"));
    json_decref(stats);
    return n;
}

/* Runs job id (N items; items whose index is in changed[0..nchanged) get
 * another input) to the end and returns the calls the simulator served. */
static long run(harness_t *h, const char *id, const int *changed, int nchanged, const char *extra)
{
    char status[64];
    char *text = harness_job(id, N, 1, extra);
    json_t *job = json_loads(text, 0, NULL);
    free(text);
    assert_true(job != NULL);
    for (int i = 0; i < nchanged; i++) {
        char input[64];
        snprintf(input, sizeof(input), "changed item %d", changed[i]);
        json_t *item = json_array_get(json_object_get(job, "items"), (size_t)changed[i]);
        json_object_set_new(item, "input", json_string(input));
    }
    text = json_dumps(job, JSON_COMPACT);
    json_decref(job);
    long before = sim_requests(h);
    harness_produce(h, "shoal.jobs", id, text, strlen(text));
    free(text);
    harness_wait_job(h, id, 120, status, sizeof(status));
    assert_str_eq(status, "completed");
    return sim_requests(h) - before;
}

int main(void)
{
    harness_conf_t conf = {.workers = 1, .schedulers = 1, .cache = 1};
    harness_t *h = harness_start(&conf);
    char out[4096];

    assert_int_eq(run(h, "cache-1", NULL, 0, NULL), N);
    assert_int_eq(harness_long(h, "SELECT count(*) FROM shoal.cache", NULL), N);
    assert_int_eq(
        harness_long(h, "SELECT tasks_cached FROM shoal.jobs WHERE job_id = 'cache-1'", NULL), 0);

    /* the same job again: no call */
    assert_int_eq(run(h, "cache-2", NULL, 0, NULL), 0);
    assert_int_eq(
        harness_long(h, "SELECT tasks_cached FROM shoal.jobs WHERE job_id = 'cache-2'", NULL), N);
    assert_int_eq(harness_long(h,
                               "SELECT count(*) FROM shoal.results a JOIN shoal.results b "
                               "ON a.chunk = b.chunk AND a.output = b.output "
                               "WHERE a.job_id = 'cache-1' AND b.job_id = 'cache-2' AND b.cached",
                               NULL),
                  N);
    assert_int_eq(
        harness_long(h, "SELECT hits FROM shoal.cache_savings WHERE job_id = 'cache-2'", NULL), N);
    assert_int_eq(
        harness_long(h, "SELECT count(*) FROM shoal.attempts WHERE job_id = 'cache-2'", NULL), 0);
    assert_int_eq(harness_sh(h, out, sizeof(out), "%s status cache-2", harness_bin("shoal")), 0);
    assert_str_contains(out, "completed");
    assert_str_contains(out, "20 cached");

    /* two items changed: two calls */
    static const int changed[] = {3, 7};
    assert_int_eq(run(h, "cache-3", changed, 2, NULL), 2);
    assert_int_eq(
        harness_long(h, "SELECT tasks_cached FROM shoal.jobs WHERE job_id = 'cache-3'", NULL),
        N - 2);
    assert_int_eq(harness_long(h,
                               "SELECT count(*) FROM shoal.results WHERE job_id = 'cache-3' "
                               "AND NOT cached AND chunk IN (3, 7)",
                               NULL),
                  2);
    assert_int_eq(harness_long(h, "SELECT count(*) FROM shoal.cache", NULL), N + 2);

    /* "cache": false: every call made, nothing read or written */
    assert_int_eq(run(h, "cache-4", changed, 1, "{\"cache\": false}"), N);
    assert_int_eq(
        harness_long(h, "SELECT tasks_cached FROM shoal.jobs WHERE job_id = 'cache-4'", NULL), 0);
    assert_int_eq(harness_long(h, "SELECT count(*) FROM shoal.cache", NULL), N + 2);
    assert_int_eq(harness_long(h,
                               "SELECT count(*) FROM shoal.tasks WHERE job_id = 'cache-4' "
                               "AND cache_key IS NOT NULL",
                               NULL),
                  0);

    harness_stop(h);
    printf("0040-result_cache: ok\n");
    return 0;
}
