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

#include "sim/sim.h"
#include "tests/support/check.h"
#include "tests/support/harness.h"

#define IN_PRICE 100.0  /* $ per million prompt tokens */
#define OUT_PRICE 400.0 /* $ per million output tokens */
#define CALL_USD 0.0044 /* one call: about 4 prompt and 10 output tokens */

int main(void)
{
    const char *n = getenv("SHOAL_BENCH_ITEMS");
    int items = n ? (int)strtol(n, NULL, 10) : 4000;
    char err[512], extra[1024], status[64], fields[256];
    shoal_sim_conf_t sc;
    shoal_sim_conf_init(&sc);
    sc.latency_ms = 500;
    sc.jitter_ms = 50;
    shoal_sim_t *sim = shoal_sim_new(&sc, err, sizeof(err));
    if (!sim)
        test_fail("could not start a simulator: %s", err);
    snprintf(extra, sizeof(extra),
             "\"sim-budget\": {\"provider\": \"openai\", \"endpoint\": "
             "\"http://127.0.0.1:%d/v1/chat/completions\", \"model\": \"sim-budget\", "
             "\"input_usd_per_mtok\": %.1f, \"output_usd_per_mtok\": %.1f, "
             "\"max_output_tokens\": 16}",
             shoal_sim_port(sim), IN_PRICE, OUT_PRICE);
    static const char *const wargs[] = {"--max-inflight", "256", NULL};
    harness_conf_t conf = {.workers = 2,
                           .schedulers = 1,
                           .extra_models = extra,
                           .worker_args = wargs,
                           .unsafe_fast = 1};
    harness_t *h = harness_start(&conf);

    double budget = (double)items / 2 * CALL_USD;
    snprintf(fields, sizeof(fields),
             "{\"model\": \"sim-budget\", \"budget_usd\": %.4f, \"timeout_ms\": 10000}", budget);
    char *job = harness_job("budget-bench", items, 1, fields);
    harness_produce(h, "shoal.jobs", "budget-bench", job, strlen(job));
    free(job);
    harness_wait_job(h, "budget-bench", 900, status, sizeof(status));

    shoal_sim_stats_t *st = malloc(sizeof(*st));
    assert_true(st != NULL);
    shoal_sim_stats(sim, st);
    double spent =
        ((double)st->prompt_tokens * IN_PRICE + (double)st->completion_tokens * OUT_PRICE) / 1e6;
    double over = spent / budget - 1 > 0 ? spent / budget - 1 : 0;
    long done = harness_long(h, "SELECT tasks_done FROM shoal.jobs WHERE job_id = $1",
                             "budget-bench", NULL);
    fprintf(stderr, "status %s, %ld of %d items done, %lld calls served\n", status, done, items,
            st->by_status[200]);
    printf("RESULT bench=budget budget_usd=%.4f spent_usd=%.4f overspend=%.4f items_done=%ld "
           "max_inflight=%lld\n",
           budget, spent, over, done, st->max_inflight);
    free(st);
    harness_stop(h);
    shoal_sim_destroy(sim);
    return 0;
}
