/*
 * Helpers for the fault-injection integration tests (0011-0019): reading a
 * topic, counting lines in a child's log, building jobs from explicit inputs,
 * the "every task exactly once" checks, and writing a models file of our own
 * (for a worker that must not know some alias, or for in-process simulators).
 * Like the harness, every helper fails the test instead of returning an error.
 */
#ifndef SHOAL_TESTS_SUPPORT_FAULTS_H
#define SHOAL_TESTS_SUPPORT_FAULTS_H

#include <jansson.h>
#include <stddef.h>

#include "tests/support/harness.h"

/* Reads topic from the beginning with a fresh consumer group until `want`
 * messages parsed as JSON or timeout_s passed; returns them (caller decrefs).
 * Messages that are not JSON are skipped. */
json_t *faults_read_topic(harness_t *h, const char *topic, int want, double timeout_s);

/* Lines of <workdir>/logs/<proc>.log (proc as "worker-0") that contain needle;
 * 0 when the log does not exist. */
int faults_log_count(harness_t *h, const char *proc, const char *needle);

/* A job of harness_job's shape whose items have the given inputs (ids
 * "i00000", ...), one item per chunk. extra_fields as in harness_job. Caller
 * frees. */
char *faults_job(const char *job_id, const char *const *inputs, size_t n, const char *extra_fields);

/* The job ended `completed` with exactly `tasks` tasks done, one result per
 * task, and exactly one successful call on record per task (no task was
 * answered twice). */
void faults_assert_once(harness_t *h, const char *job_id, long tasks);

/* Writes text to path (fails the test on error). */
void faults_write_file(const char *path, const char *text);

/* attempts.queue_ms over the job's successful calls: agg "median" or "max". */
double faults_queue_ms(harness_t *h, const char *job_id, const char *agg);

#endif
