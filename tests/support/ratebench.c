/*
 * Rate-limit benchmark runs (see ratebench.h).
 */
#include "tests/support/ratebench.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "tests/support/benchstat.h"
#include "tests/support/check.h"

static void nap_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static long long ok_answers(json_t *stats)
{
    return (long long)json_integer_value(
        json_object_get(json_object_get(stats, "by_status"), "200"));
}

harness_t *ratebench_run(const ratebench_conf_t *c, ratebench_result_t *r)
{
    harness_conf_t conf = {.workers = c->workers,
                           .schedulers = 1,
                           .worker_args = c->worker_args,
                           .extra_models = c->extra_models,
                           .sim_args = c->sim_args};
    harness_t *h = harness_start(&conf);
    char extra[256];
    snprintf(extra, sizeof(extra), "{\"model\": \"%s\"}", c->model);
    char *job = harness_job(c->job_id, c->tasks, 1, extra);
    harness_produce(h, "shoal.jobs", c->job_id, job, strlen(job));
    free(job);

    /* The run starts with the first answer, not when the job is produced:
     * intake and the consumer groups' joins are not the engine's pacing. */
    double deadline = check_now_s() + 60, first = 0;
    while (!first) {
        json_t *st = harness_sim_stats(h);
        long long answers =
            ok_answers(st) + (long long)json_integer_value(json_object_get(st, "rate_limited"));
        json_decref(st);
        if (answers > 0)
            first = check_now_s();
        else if (check_now_s() > deadline)
            test_fail("no answer from the simulator within 60 s of producing the job");
        else
            nap_ms(50);
    }
    while (check_now_s() - first < c->measure_s) {
        if (c->tick)
            c->tick(h, check_now_s() - first, c->arg);
        nap_ms(100);
    }
    r->stats = harness_sim_stats(h);
    double start = json_real_value(json_object_get(r->stats, "history_start_unix"));
    r->last = bench_sim_last_second(r->stats);
    r->first = 0;
    while (r->first < r->last && bench_sim_at(r->stats, "served_per_s", r->first) == 0 &&
           bench_sim_at(r->stats, "limited_per_s", r->first) == 0)
        r->first++;
    r->first_unix = start + r->first;
    r->ok_answers = ok_answers(r->stats);
    return h;
}

double ratebench_steady_served(const ratebench_result_t *r, double skip, int *from, int *to,
                               long long *limited)
{
    int span = r->last - r->first + 1;
    int f = r->first + (int)(skip * span + 0.5);
    bench_window_t w = bench_sim_window(r->stats, f, r->last + 1);
    if (from)
        *from = w.first;
    if (to)
        *to = w.last;
    if (limited)
        *limited = w.limited;
    return w.seconds > 0 ? (double)w.served / w.seconds : 0;
}
