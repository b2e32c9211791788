/*
 * Hard budgets under load: a job whose budget_usd pays for about half its
 * items, run by two workers holding up to 256 calls each (about 500 in
 * flight) against a simulator answering in about 500 ms. What was spent is
 * what the simulator served, priced from its token counts at the model's
 * prices, so it counts every call made, recorded or not. Ends with
 *   RESULT bench=budget budget_usd=F spent_usd=F overspend=F items_done=N
 *          max_inflight=N
 * where overspend = max(0, spent / budget - 1); the target is 0.
 * SHOAL_BENCH_ITEMS changes the size (the budget follows it).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tests/support/budgetsim.h"
#include "tests/support/check.h"
#include "tests/support/harness.h"

int main(void)
{
    const char *n = getenv("SHOAL_BENCH_ITEMS");
    int items = n ? (int)strtol(n, NULL, 10) : 4000;
    char extra[1024], status[64], fields[256];
    shoal_sim_t *sim = budgetsim_start(500, 50, extra, sizeof(extra));
    static const char *const wargs[] = {"--max-inflight", "256", NULL};
    harness_conf_t conf = {.workers = 2,
                           .schedulers = 1,
                           .extra_models = extra,
                           .worker_args = wargs,
                           .unsafe_fast = 1};
    harness_t *h = harness_start(&conf);

    double budget = (double)items / 2 * BUDGETSIM_CALL_USD;
    snprintf(fields, sizeof(fields),
             "{\"model\": \"sim-budget\", \"budget_usd\": %.4f, \"timeout_ms\": 10000}", budget);
    char *job = harness_job("budget-bench", items, 1, fields);
    harness_produce(h, "shoal.jobs", "budget-bench", job, strlen(job));
    free(job);
    harness_wait_job(h, "budget-bench", 900, status, sizeof(status));

    shoal_sim_stats_t *st = calloc(1, sizeof(*st));
    assert_true(st != NULL);
    long long served;
    double spent = budgetsim_served_usd(sim, st, &served);
    double over = spent / budget - 1 > 0 ? spent / budget - 1 : 0;
    long done = harness_long(h, "SELECT tasks_done FROM shoal.jobs WHERE job_id = $1",
                             "budget-bench", NULL);
    fprintf(stderr, "status %s, %ld of %d items done, %lld calls served\n", status, done, items,
            served);
    printf("RESULT bench=budget budget_usd=%.4f spent_usd=%.4f overspend=%.4f items_done=%ld "
           "max_inflight=%lld\n",
           budget, spent, over, done, st->max_inflight);
    free(st);
    harness_stop(h);
    shoal_sim_destroy(sim);
    return 0;
}
