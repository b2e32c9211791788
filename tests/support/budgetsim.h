/*
 * What the budget test (0042) and bench (tests/bench/budget.c) share: a
 * simulator of their own, so its counters hold only their calls, named in
 * the models file as "sim-budget" at prices that make a sample call
 * (harness_job's items: about 4 prompt and 10 output tokens) cost about
 * BUDGETSIM_CALL_USD; what it served, priced the same way; and kill -9 of a
 * worker followed by its restart. Helpers fail the test instead of
 * returning an error.
 */
#ifndef SHOAL_TESTS_SUPPORT_BUDGETSIM_H
#define SHOAL_TESTS_SUPPORT_BUDGETSIM_H

#include <stddef.h>

#include "sim/sim.h"
#include "tests/support/harness.h"

#define BUDGETSIM_IN_PRICE 100.0  /* $ per million prompt tokens */
#define BUDGETSIM_OUT_PRICE 400.0 /* $ per million output tokens */
#define BUDGETSIM_CALL_USD 0.0044 /* (4 x 100 + 10 x 400) / 1e6 */

/* Starts the simulator (latency_ms +/- jitter_ms) and writes the models-file
 * member for "sim-budget" (max_output_tokens 16) into models, for
 * harness_conf_t.extra_models. Caller destroys the simulator. */
shoal_sim_t *budgetsim_start(long latency_ms, long jitter_ms, char *models, size_t len);

/* What sim served since *base (zeroed at first), priced at the model's
 * prices; *served gets the 200 answers since then; *base becomes now. */
double budgetsim_served_usd(shoal_sim_t *sim, shoal_sim_stats_t *base, long long *served);

/* kill -9 of worker i of h's stack, then a restart of it. */
void budgetsim_kill_worker(harness_t *h, int i);

#endif
