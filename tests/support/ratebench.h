/*
 * One rate-limit benchmark run: the local stack with a limited simulator and
 * an extra model alias, one job far larger than the limit lets through in
 * the measured time, and the simulator's per-second history at the end.
 * The job is left running when the measurement ends; the caller reads what
 * it needs and calls harness_stop. Shared by the ratelimit, ratelimit_blind
 * and churn benchmarks.
 */
#ifndef SHOAL_TESTS_SUPPORT_RATEBENCH_H
#define SHOAL_TESTS_SUPPORT_RATEBENCH_H

#include <jansson.h>

#include "tests/support/harness.h"

typedef struct {
    int workers;
    const char *const *sim_args;    /* NULL-terminated simulator arguments */
    const char *const *worker_args; /* NULL-terminated, or NULL */
    const char *extra_models;       /* "alias": {...} members for the models file */
    const char *model;              /* alias the job uses */
    const char *job_id;
    int tasks;
    double measure_s; /* seconds of traffic observed after the first answer */
    /* Called about every 100 ms with the seconds since the first answer. */
    void (*tick)(harness_t *h, double since_first_s, void *arg);
    void *arg;
} ratebench_conf_t;

typedef struct {
    json_t *stats;     /* the simulator's /stats at the end; owned, caller decrefs */
    int first;         /* history index of the first second with an answer */
    int last;          /* history index of the last complete second */
    double first_unix; /* wall time of that first second */
    long long ok_answers;
} ratebench_result_t;

/* Starts the stack, produces the job, waits for its first answer, then for
 * measure_s seconds more. Fails the run (tests/support/check.h) if no answer
 * comes within 60 s. Returns the running stack. */
harness_t *ratebench_run(const ratebench_conf_t *c, ratebench_result_t *r);

/* Served per second over the steady state: the run's seconds after its
 * first skip share (e.g. 0.2), through the last complete second; the range
 * used goes into *from and *to (inclusive). */
double ratebench_steady_served(const ratebench_result_t *r, double skip, int *from, int *to,
                               long long *limited);

#endif
