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

/* kill -9 between the slices of a large job's admission: the job and its
 * first 1,000 tasks were committed and the dispatcher had published 500 of
 * them (the fault hook) when the scheduler died, before its second slice.
 * The restarted scheduler gets the message again, records the 5,000 tasks
 * missing, and every task runs exactly once. */
static void killed_between_slices(harness_t *h)
{
    shoal_devstack_t *ds = harness_stack(h);
    char status[64], err[512];
    json_t *stats = harness_sim_stats(h);
    long requests0 = (long)json_integer_value(json_object_get(stats, "requests"));
    json_decref(stats);

    char *const fault[] = {"SHOAL_FAULT_KILL_AFTER_PUBLISH=500", NULL};
    if (shoal_devstack_restart(ds, "scheduler", 0, fault, err, sizeof(err)) != SHOAL_OK)
        test_fail("could not restart the scheduler: %s", err);
    char *job = harness_job("sk-2", BIG_ITEMS, 1, "{\"prompt_template\": \"Slices:\\n{{input}}\"}");
    harness_produce(h, "shoal.jobs", "sk-2", job, strlen(job));
    free(job);
    int exit_status = 0;
    assert_int_eq(shoal_proc_wait(shoal_devstack_proc(ds, "scheduler", 0), 60000, &exit_status),
                  SHOAL_OK);
    assert_int_eq(exit_status, 128 + SIGKILL);
    /* The first slice only, under a job that counts all its tasks. */
    assert_int_eq(
        harness_long(h, "SELECT count(*) FROM shoal.tasks WHERE job_id = $1", "sk-2", NULL), 1000);
    assert_int_eq(
        harness_long(h, "SELECT tasks_total FROM shoal.jobs WHERE job_id = $1", "sk-2", NULL),
        BIG_ITEMS);
    assert_wait(harness_long(h, "SELECT count(*) FROM shoal.results WHERE job_id = $1", "sk-2",
                             NULL) == 500,
                60, "the 500 published tasks to finish");
    assert_str_eq((harness_str(h, status, sizeof(status),
                               "SELECT status FROM shoal.jobs WHERE job_id = $1", "sk-2", NULL),
                   status),
                  "running");

    if (shoal_devstack_restart(ds, "scheduler", 0, NULL, err, sizeof(err)) != SHOAL_OK)
        test_fail("could not restart the scheduler: %s", err);
    harness_wait_job(h, "sk-2", 180, status, sizeof(status));
    assert_str_eq(status, "completed");
    assert_int_eq(
        harness_long(h, "SELECT count(*) FROM shoal.tasks WHERE job_id = $1", "sk-2", NULL),
        BIG_ITEMS);
    assert_int_eq(
        harness_long(h, "SELECT count(*) FROM shoal.results WHERE job_id = $1", "sk-2", NULL),
        BIG_ITEMS);
    assert_int_eq(
        harness_long(h, "SELECT count(*) FROM shoal.attempts WHERE job_id = $1", "sk-2", NULL),
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
    char status[64], err[512];
    shoal_devstack_t *ds = harness_stack(h);

    char *const fault[] = {"SHOAL_FAULT_KILL_AFTER_PUBLISH=50", NULL};
    if (shoal_devstack_restart(ds, "scheduler", 0, fault, err, sizeof(err)) != SHOAL_OK)
        test_fail("could not restart the scheduler: %s", err);

    char *job = harness_job("sk-1", ITEMS, 1, NULL);
    harness_produce(h, "shoal.jobs", "sk-1", job, strlen(job));
    free(job);

    int exit_status = 0;
    assert_int_eq(shoal_proc_wait(shoal_devstack_proc(ds, "scheduler", 0), 60000, &exit_status),
                  SHOAL_OK);
    assert_int_eq(exit_status, 128 + SIGKILL);
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
    assert_wait(
        harness_long(h, "SELECT count(*) FROM shoal.results WHERE job_id = $1", "sk-1", NULL) == 50,
        60, "the 50 published tasks to finish");
    assert_str_eq((harness_str(h, status, sizeof(status),
                               "SELECT status FROM shoal.jobs WHERE job_id = $1", "sk-1", NULL),
                   status),
                  "running");

    if (shoal_devstack_restart(ds, "scheduler", 0, NULL, err, sizeof(err)) != SHOAL_OK)
        test_fail("could not restart the scheduler: %s", err);
    harness_wait_job(h, "sk-1", 120, status, sizeof(status));
    assert_str_eq(status, "completed");
    assert_int_eq(
        harness_long(h, "SELECT count(*) FROM shoal.results WHERE job_id = $1", "sk-1", NULL),
        ITEMS);

    /* Every task ran once: one successful call per task, no prompt twice. */
    assert_int_eq(
        harness_long(h, "SELECT count(*) FROM shoal.attempts WHERE job_id = $1", "sk-1", NULL),
        ITEMS);
    json_t *stats = harness_sim_stats(h);
    assert_int_eq(json_integer_value(json_object_get(stats, "repeated_prompts")), 0);
    assert_int_eq(json_integer_value(json_object_get(stats, "requests")), ITEMS);
    json_decref(stats);

    killed_between_slices(h);
    harness_stop(h);
    fprintf(stderr, "ok\n");
    return 0;
}
