/*
 * kill -9 of the scheduler after it recorded a job but before it published
 * all of its tasks (a fault hook kills it after 50 of 200): nothing was
 * committed on the jobs topic, so after a restart the job message comes
 * again, the scheduler publishes what is still pending, and every task runs
 * exactly once. Then the same between the slices of a large job's admission.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "stack/proc.h"
#include "tests/support/check.h"
#include "tests/support/harness.h"

#define ITEMS 200
#define BIG_ITEMS 6000 /* recorded in slices: 1,000 with the job, then 4,000 and 1,000 */

/* Restarts the scheduler with the fault hook killing it once a publication
 * reaches kill_after tasks, submits job (its text), and waits for the kill. */
static void killed_publishing(harness_t *h, const char *job_id, char *job, const char *kill_after)
{
    shoal_devstack_t *ds = harness_stack(h);
    char env[64], err[512];
    snprintf(env, sizeof(env), "SHOAL_FAULT_KILL_AFTER_PUBLISH=%s", kill_after);
    char *const fault[] = {env, NULL};
    if (shoal_devstack_restart(ds, "scheduler", 0, fault, err, sizeof(err)) != SHOAL_OK)
        test_fail("could not restart the scheduler: %s", err);

    harness_produce(h, "shoal.jobs", job_id, job, strlen(job));
    free(job);

    int exit_status = 0;
    assert_int_eq(shoal_proc_wait(shoal_devstack_proc(ds, "scheduler", 0), 60000, &exit_status),
                  SHOAL_OK);
    assert_int_eq(exit_status, 128 + SIGKILL);
}

/* The published tasks run meanwhile (the rest are stranded, the job stays
 * running); once the scheduler is back, the job completes with every task
 * run once: one result and one successful call per task. */
static void recovers(harness_t *h, const char *job_id, long published, long items, double wait_s)
{
    char status[64], err[512], what[64];
    snprintf(what, sizeof(what), "the %ld published tasks to finish", published);
    assert_wait(harness_long(h, "SELECT count(*) FROM shoal.results WHERE job_id = $1", job_id,
                             NULL) == published,
                60, what);
    assert_str_eq((harness_str(h, status, sizeof(status),
                               "SELECT status FROM shoal.jobs WHERE job_id = $1", job_id, NULL),
                   status),
                  "running");

    if (shoal_devstack_restart(harness_stack(h), "scheduler", 0, NULL, err, sizeof(err)) !=
        SHOAL_OK)
        test_fail("could not restart the scheduler: %s", err);
    harness_wait_job(h, job_id, wait_s, status, sizeof(status));
    assert_str_eq(status, "completed");
    assert_int_eq(
        harness_long(h, "SELECT count(*) FROM shoal.results WHERE job_id = $1", job_id, NULL),
        items);
    assert_int_eq(
        harness_long(h, "SELECT count(*) FROM shoal.attempts WHERE job_id = $1", job_id, NULL),
        items);
}

/* kill -9 between the slices of a large job's admission: the job and its
 * first 1,000 tasks were committed and the dispatcher had published 500 of
 * them (the fault hook) when the scheduler died, before its second slice.
 * The restarted scheduler gets the message again, records the 5,000 tasks
 * missing, and every task runs exactly once. */
static void killed_between_slices(harness_t *h)
{
    json_t *stats = harness_sim_stats(h);
    long requests0 = (long)json_integer_value(json_object_get(stats, "requests"));
    json_decref(stats);

    killed_publishing(
        h, "sk-2",
        harness_job("sk-2", BIG_ITEMS, 1, "{\"prompt_template\": \"Slices:\\n{{input}}\"}"), "500");
    /* The first slice only, under a job that counts all its tasks. */
    assert_int_eq(
        harness_long(h, "SELECT count(*) FROM shoal.tasks WHERE job_id = $1", "sk-2", NULL), 1000);
    assert_int_eq(
        harness_long(h, "SELECT tasks_total FROM shoal.jobs WHERE job_id = $1", "sk-2", NULL),
        BIG_ITEMS);

    recovers(h, "sk-2", 500, BIG_ITEMS, 180);
    assert_int_eq(
        harness_long(h, "SELECT count(*) FROM shoal.tasks WHERE job_id = $1", "sk-2", NULL),
        BIG_ITEMS);
    stats = harness_sim_stats(h);
    assert_int_eq(json_integer_value(json_object_get(stats, "repeated_prompts")), 0);
    assert_int_eq(json_integer_value(json_object_get(stats, "requests")) - requests0, BIG_ITEMS);
    json_decref(stats);
}

int main(void)
{
    harness_conf_t conf = {.workers = 2, .schedulers = 1};
    harness_t *h = harness_start(&conf);

    killed_publishing(h, "sk-1", harness_job("sk-1", ITEMS, 1, NULL), "50");
    /* Recorded, partly published, none marked queued. */
    assert_int_eq(
        harness_long(h, "SELECT count(*) FROM shoal.tasks WHERE job_id = $1", "sk-1", NULL), ITEMS);
    assert_int_eq(harness_long(h,
                               "SELECT count(*) FROM shoal.tasks WHERE job_id = $1 AND status = "
                               "'queued'",
                               "sk-1", NULL),
                  0);
    /* The 50 that reached Kafka run meanwhile; the other 150 are stranded
     * until the scheduler comes back. */
    recovers(h, "sk-1", 50, ITEMS, 120);
    /* No prompt twice. */
    json_t *stats = harness_sim_stats(h);
    assert_int_eq(json_integer_value(json_object_get(stats, "repeated_prompts")), 0);
    assert_int_eq(json_integer_value(json_object_get(stats, "requests")), ITEMS);
    json_decref(stats);

    killed_between_slices(h);
    harness_stop(h);
    fprintf(stderr, "ok\n");
    return 0;
}
