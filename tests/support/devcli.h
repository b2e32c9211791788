/*
 * `shoal dev` and the shoal CLI as a user runs them, for integration tests:
 * a stack started as a child process in a work folder of the test's, stopped
 * with Ctrl-C (SIGINT), and CLI commands that find their stack only through
 * SHOAL_HOME (no SHOAL_* connection variables). Every helper fails the test
 * (tests/support/check.h) instead of returning an error.
 */
#ifndef SHOAL_TESTS_SUPPORT_DEVCLI_H
#define SHOAL_TESTS_SUPPORT_DEVCLI_H

#include <stddef.h>

#include "stack/proc.h"

/* Runs cmd through the shell with SHOAL_HOME=home and without SHOAL_BOOTSTRAP,
 * SHOAL_PG, SHOAL_MODELS and SHOAL_SIM_URL; returns its exit status, with
 * stdout and stderr in out. */
int devcli_run(char *out, size_t outlen, const char *home, const char *cmd);

/* Starts `shoal dev --workers 1 --sim-latency-ms 5 --workdir workdir` plus
 * extra (NULL-terminated, or NULL) with SHOAL_HOME=home, its output going to
 * log (NULL: "<workdir>.out"; use a new file for each start, since the start
 * is seen by its line "shoal dev is running"), and waits until it runs. */
shoal_proc_t *devcli_start(const char *home, const char *workdir, const char *const *extra,
                           const char *log);

/* Ctrl-C, then checks that shoal dev exited 0 within 60 s; frees p. */
void devcli_stop(shoal_proc_t *p);

#endif
