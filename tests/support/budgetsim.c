/*
 * Budget test and bench helpers (see budgetsim.h).
 */
#include "tests/support/budgetsim.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>

#include "stack/proc.h"
#include "tests/support/check.h"

shoal_sim_t *budgetsim_start(long latency_ms, long jitter_ms, char *models, size_t len)
{
    char err[512];
    shoal_sim_conf_t sc;
    shoal_sim_conf_init(&sc);
    sc.latency_ms = latency_ms;
    sc.jitter_ms = jitter_ms;
    shoal_sim_t *sim = shoal_sim_new(&sc, err, sizeof(err));
    if (!sim)
        test_fail("could not start a simulator: %s", err);
    snprintf(models, len,
             "\"sim-budget\": {\"provider\": \"openai\", \"endpoint\": "
             "\"http://127.0.0.1:%d/v1/chat/completions\", \"model\": \"sim-budget\", "
             "\"input_usd_per_mtok\": %.1f, \"output_usd_per_mtok\": %.1f, "
             "\"max_output_tokens\": 16}",
             shoal_sim_port(sim), BUDGETSIM_IN_PRICE, BUDGETSIM_OUT_PRICE);
    return sim;
}

double budgetsim_served_usd(shoal_sim_t *sim, shoal_sim_stats_t *base, long long *served)
{
    shoal_sim_stats_t *st = malloc(sizeof(*st));
    assert_true(st != NULL);
    shoal_sim_stats(sim, st);
    double usd = ((double)(st->prompt_tokens - base->prompt_tokens) * BUDGETSIM_IN_PRICE +
                  (double)(st->completion_tokens - base->completion_tokens) * BUDGETSIM_OUT_PRICE) /
                 1e6;
    *served = st->by_status[200] - base->by_status[200];
    *base = *st;
    free(st);
    return usd;
}

void budgetsim_kill_worker(harness_t *h, int i)
{
    char err[512];
    int exit_status;
    struct shoal_proc *w = shoal_devstack_proc(harness_stack(h), "worker", i);
    assert_true(w != NULL);
    assert_int_eq(shoal_proc_kill(w, SIGKILL), SHOAL_OK);
    assert_int_eq(shoal_proc_wait(w, 10000, &exit_status), SHOAL_OK);
    assert_int_eq(exit_status, 128 + SIGKILL);
    if (shoal_devstack_restart(harness_stack(h), "worker", i, NULL, err, sizeof(err)) != SHOAL_OK)
        test_fail("could not restart worker %d: %s", i, err);
}
