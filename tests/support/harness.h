/*
 * Integration-test harness: the local stack (stack/devstack.h) with the binaries
 * of this build, a producer and an events reader on its Kafka, SQL helpers on
 * its PostgreSQL, and the simulator's counters. Every helper fails the test
 * (tests/support/check.h) instead of returning an error.
 */
#ifndef SHOAL_TESTS_SUPPORT_HARNESS_H
#define SHOAL_TESTS_SUPPORT_HARNESS_H

#include <jansson.h>
#include <stddef.h>

#include "stack/devstack.h"
#include "common/pg.h"

typedef struct harness harness_t;

typedef struct {
    int workers;
    int schedulers;
    long sim_latency_ms;
    const char *const *worker_args;
    const char *extra_models;    /* "alias": {...} members added to the models file */
    const char *const *sim_args; /* extra shoal-sim arguments (e.g. "--rpm", "600"), or NULL */
    /* PostgreSQL without fsync, synchronous_commit and full_page_writes, for
     * benchmarks (also when SHOAL_UNSAFE_FAST=1, as for `shoal dev`); tests of
     * durability keep the default. */
    int unsafe_fast;
    /* Schedulers keep the result cache on (--cache-ttl-s default). Off
     * unless set: tests that submit the same items in several jobs and
     * count calls must see every call made. */
    int cache;
} harness_conf_t;

harness_t *harness_start(const harness_conf_t *conf);
void harness_stop(harness_t *h);

shoal_devstack_t *harness_stack(harness_t *h);
shoal_pg_t *harness_pg(harness_t *h);

/* Produces value to topic with key (may be NULL) and waits for the ack. */
void harness_produce(harness_t *h, const char *topic, const char *key, const void *value,
                     size_t len);

/* Same, to one partition. */
void harness_produce_to(harness_t *h, const char *topic, int partition, const char *key,
                        const void *value, size_t len);

/* Runs a query and returns the first column of the first row as a long
 * (-1 when there is no row). Parameters are NULL-terminated strings. */
long harness_long(harness_t *h, const char *sql, ...);

/* Same, as a string into out ("" when no row or NULL). */
void harness_str(harness_t *h, char *out, size_t outlen, const char *sql, ...);

/* Waits until the job leaves 'running' (or appears as rejected); returns its
 * status into out. Fails the test after timeout_s. */
void harness_wait_job(harness_t *h, const char *job_id, double timeout_s, char *status, size_t len);
/* Same, looking every every_ms (harness_wait_job looks every 100 ms). */
void harness_wait_job_every(harness_t *h, const char *job_id, double timeout_s, long every_ms,
                            char *status, size_t len);
/* Prints each model lane's limit, learned rate and AIMD state to stderr
 * (a job's wait that times out prints it too). */
void harness_print_lanes(harness_t *h);

/* GET <sim>/stats as JSON (caller decrefs). */
json_t *harness_sim_stats(harness_t *h);

/* Reads the events topic from the beginning for up to timeout_s and returns
 * every event whose job_id equals job_id (or all when NULL) as a JSON array
 * (caller decrefs). Stops early once `want` events matched (0 = read until
 * timeout). */
json_t *harness_events(harness_t *h, const char *job_id, int want, double timeout_s);

/* Builds a job with n items "item-<i>" (one per chunk unless max_items > 1). */
char *harness_job(const char *job_id, int n, int max_items, const char *extra_fields);

/* harness_job() with the inputs of items changed[0..nchanged) replaced by
 * "changed item <i>" (caller frees). */
char *harness_job_changed(const char *job_id, int n, const int *changed, int nchanged,
                          const char *extra_fields);

/* Requests the simulator has served so far (its /stats "requests"). */
long harness_sim_requests(harness_t *h);

/* Produces job (text) under job_id, waits up to timeout_s for it to end and
 * fails the test unless it completed; returns the requests the simulator
 * served meanwhile and, when ms is not NULL, the time from produce to end. */
long harness_run_job(harness_t *h, const char *job_id, const char *job, double timeout_s,
                     double *ms);

/* Runs a shell command with the stack's environment exported (SHOAL_BOOTSTRAP,
 * SHOAL_PG, ...); returns its exit status; stdout captured into out. */
int harness_sh(harness_t *h, char *out, size_t outlen, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Path of a binary of this build (e.g. "shoal"). */
const char *harness_bin(const char *name);

#endif
