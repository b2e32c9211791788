/*
 * Hard budgets end to end. A job whose budget_usd pays for about half its
 * items ends partial with the budget as the reason (and a budget_exhausted
 * event); what it spent, and what the simulator served for it priced at the
 * model's prices, stay within the budget, and the simulator served no more
 * calls than reservations were granted. A job without a budget next to it
 * reserves nothing. Then kill -9 of a worker in the middle of a second such
 * job: the calls it had in flight stay reserved (shoal.calls_unrecorded),
 * and even counting each of them at its worst case the job's spend stays
 * within its budget.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tests/support/budgetsim.h"
#include "tests/support/check.h"
#include "tests/support/harness.h"

#define ITEMS 200

static double num(harness_t *h, const char *sql, const char *job)
{
    char v[64];
    harness_str(h, v, sizeof(v), sql, job, NULL);
    return strtod(v, NULL);
}

/* A job of ITEMS sample calls on sim-budget (budgetsim.h). */
static char *budget_job(const char *id, double budget)
{
    char extra[256];
    snprintf(extra, sizeof(extra),
             "{\"model\": \"sim-budget\", \"budget_usd\": %.4f, \"timeout_ms\": 10000}", budget);
    return harness_job(id, ITEMS, 1, extra);
}

int main(void)
{
    char extra[1024], status[64], buf[1024];
    shoal_sim_t *sim = budgetsim_start(300, 0, extra, sizeof(extra));
    static const char *const wargs[] = {"--max-inflight", "64", NULL};
    harness_conf_t conf = {
        .workers = 2, .schedulers = 1, .extra_models = extra, .worker_args = wargs};
    harness_t *h = harness_start(&conf);
    shoal_sim_stats_t *base = calloc(1, sizeof(*base));
    assert_true(base != NULL);
    long long served;

    /* 1. The budget stops the job half way. */
    const double budget = ITEMS / 2 * BUDGETSIM_CALL_USD;
    char *job = budget_job("bg-1", budget);
    harness_produce(h, "shoal.jobs", "bg-1", job, strlen(job));
    free(job);
    job = harness_job("free-1", 20, 1, NULL);
    harness_produce(h, "shoal.jobs", "free-1", job, strlen(job));
    free(job);

    harness_wait_job(h, "bg-1", 240, status, sizeof(status));
    assert_str_eq(status, "partial");
    harness_str(h, buf, sizeof(buf), "SELECT error FROM shoal.jobs WHERE job_id = $1", "bg-1",
                NULL);
    assert_str_contains(buf, "budget exhausted");
    harness_str(h, buf, sizeof(buf),
                "SELECT min(error) FROM shoal.tasks WHERE job_id = $1 AND status = 'failed'",
                "bg-1", NULL);
    assert_str_contains(buf, "budget exhausted");
    long done =
        harness_long(h, "SELECT tasks_done FROM shoal.jobs WHERE job_id = $1", "bg-1", NULL);
    fprintf(stderr, "bg-1: %ld of %d items done\n", done, ITEMS);
    assert_true(done >= ITEMS / 4 && done < ITEMS);
    double spent =
        num(h, "SELECT spent_usd + reserved_usd FROM shoal.jobs WHERE job_id = $1", "bg-1");
    assert_true(spent <= budget + 1e-9);
    double sim_usd = budgetsim_served_usd(sim, base, &served);
    fprintf(stderr, "bg-1: spent $%.4f by the database, $%.4f by the simulator, budget $%.2f\n",
            spent, sim_usd, budget);
    assert_true(sim_usd <= budget + 1e-9);
    long granted = harness_long(h,
                                "SELECT count(*) FROM shoal.call_reservations WHERE job_id = $1 "
                                "AND status <> 'released'",
                                "bg-1", NULL);
    assert_true(served <= granted);
    assert_true(served >= done);
    json_t *ev = harness_events(h, "bg-1", 0, 5);
    int seen = 0;
    size_t i;
    json_t *e;
    json_array_foreach(ev, i, e)
    {
        seen += !strcmp(json_string_value(json_object_get(e, "type")), "budget_exhausted");
    }
    json_decref(ev);
    assert_int_eq(seen, 1);

    /* The job without a budget ran without reservations. */
    harness_wait_job(h, "free-1", 120, status, sizeof(status));
    assert_str_eq(status, "completed");
    assert_int_eq(harness_long(h, "SELECT count(*) FROM shoal.call_reservations WHERE job_id = $1",
                               "free-1", NULL),
                  0);

    /* 2. kill -9 of a worker mid-job. */
    const double budget2 = budget;
    job = budget_job("bg-2", budget2);
    harness_produce(h, "shoal.jobs", "bg-2", job, strlen(job));
    free(job);
    assert_wait(
        harness_long(h, "SELECT tasks_done FROM shoal.jobs WHERE job_id = $1", "bg-2", NULL) >= 20,
        120, "20 tasks of bg-2 done");
    /* Kill the worker holding calls of bg-2 in flight (which one holds the
     * job's partitions is the group's choice). */
    assert_wait(harness_long(h,
                             "SELECT count(*) FROM shoal.call_reservations WHERE job_id = $1 "
                             "AND status = 'held'",
                             "bg-2", NULL) >= 1,
                120, "calls of bg-2 in flight");
    long holder = harness_long(h,
                               "SELECT substring(worker_id FROM '([0-9]+)$')::int FROM "
                               "shoal.call_reservations WHERE job_id = $1 AND status = 'held' "
                               "ORDER BY reserved_at DESC LIMIT 1",
                               "bg-2", NULL);
    budgetsim_kill_worker(h, holder == 1 ? 1 : 0);

    harness_wait_job(h, "bg-2", 300, status, sizeof(status));
    assert_str_eq(status, "partial");
    double spent2 =
        num(h, "SELECT spent_usd + reserved_usd FROM shoal.jobs WHERE job_id = $1", "bg-2");
    assert_true(spent2 <= budget2 + 1e-9);
    long unrecorded = harness_long(
        h, "SELECT count(*) FROM shoal.calls_unrecorded WHERE job_id = $1", "bg-2", NULL);
    /* Count every call no attempts row records at its worst case now, as
     * its expiry will: still within the budget. */
    harness_long(h,
                 "WITH u AS (UPDATE shoal.call_reservations SET expires_at = now() - interval "
                 "'1 second' WHERE job_id = $1 AND status = 'held' RETURNING 1) "
                 "SELECT count(*) FROM u",
                 "bg-2", NULL);
    harness_long(h, "SELECT shoal.expire_reservations(ARRAY[$1])", "bg-2", NULL);
    double spent_all =
        num(h, "SELECT spent_usd + reserved_usd FROM shoal.jobs WHERE job_id = $1", "bg-2");
    double sim2 = budgetsim_served_usd(sim, base, &served);
    long granted2 = harness_long(h,
                                 "SELECT count(*) FROM shoal.call_reservations WHERE job_id = $1 "
                                 "AND status <> 'released'",
                                 "bg-2", NULL);
    fprintf(stderr,
            "bg-2: %ld calls unrecorded after the kill; spent $%.4f ($%.4f with them at their "
            "worst case), simulator $%.4f, budget $%.2f; served %lld, reserved %ld\n",
            unrecorded, spent2, spent_all, sim2, budget2, served, granted2);
    assert_true(unrecorded >= 1);
    assert_true(spent_all <= budget2 + 1e-9);
    assert_true(sim2 <= budget2 + 1e-9);
    assert_true(served <= granted2);

    free(base);
    harness_stop(h);
    shoal_sim_destroy(sim);
    return 0;
}
