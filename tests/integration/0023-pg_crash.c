/*
 * The embedded PostgreSQL killed with SIGKILL mid-job, on a stack in its
 * default (durable) mode: the postmaster gets no chance to flush anything,
 * so only what was made durable at commit survives. Once it runs again the
 * job completes with one result per item, no item twice, and is not left
 * running. In --unsafe-fast mode the same crash lost acknowledged results and
 * left the job running forever; this test is the guard against going back.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "stack/pgcluster.h"
#include "stack/proc.h"
#include "tests/support/check.h"
#include "tests/support/harness.h"

#define ITEMS 800

int main(void)
{
    static const char *const wargs[] = {"--max-inflight", "16", NULL};
    harness_conf_t conf = {
        .workers = 2, .schedulers = 1, .sim_latency_ms = 100, .worker_args = wargs};
    harness_t *h = harness_start(&conf);
    char status[64], val[64], err[512], log[1024];
    struct shoal_pgcluster *pg = shoal_devstack_pg(harness_stack(h));

    /* The default stack is the durable one. */
    assert_int_eq(shoal_pgcluster_durable(pg), 1);
    harness_str(h, val, sizeof(val), "SELECT current_setting('fsync')", NULL);
    assert_str_eq(val, "on");
    harness_str(h, val, sizeof(val), "SELECT current_setting('synchronous_commit')", NULL);
    assert_str_eq(val, "on");
    harness_str(h, val, sizeof(val), "SELECT current_setting('full_page_writes')", NULL);
    assert_str_eq(val, "on");

    char *job = harness_job("crash-1", ITEMS, 1, NULL);
    harness_produce(h, "shoal.jobs", "crash-1", job, strlen(job));
    free(job);
    assert_wait(harness_long(h,
                             "SELECT coalesce(max(tasks_done), 0) FROM shoal.jobs WHERE job_id "
                             "= $1",
                             "crash-1", NULL) >= 150,
                120, "150 tasks done");

    pid_t pid = shoal_pgcluster_pid(pg);
    assert_true(pid > 0);
    assert_int_eq(kill(pid, SIGKILL), 0);
    assert_wait(!shoal_pgcluster_alive(pg), 10, "the killed postmaster to die");
    /* The crash lasts until a worker has felt it, so writes were in flight. */
    snprintf(log, sizeof(log), "%s/logs/worker-0.log", shoal_devstack_workdir(harness_stack(h)));
    assert_int_eq(shoal_proc_wait_file_line(log, "module=db msg=\"could not", 60000, NULL, 0),
                  SHOAL_OK);
    /* Its orphaned backends may hold the shared memory a while: start
     * retries until they are gone. */
    if (shoal_pgcluster_start(pg, err, sizeof(err)) != SHOAL_OK)
        test_fail("could not start PostgreSQL again: %s", err);
    assert_true(shoal_pgcluster_pid(pg) != pid);

    harness_wait_job(h, "crash-1", 240, status, sizeof(status));
    assert_str_eq(status, "completed");
    assert_int_eq(
        harness_long(h, "SELECT count(*) FROM shoal.results WHERE job_id = $1", "crash-1", NULL),
        ITEMS);
    assert_int_eq(harness_long(h,
                               "SELECT count(DISTINCT chunk) FROM shoal.results WHERE job_id = $1 "
                               "AND chunk BETWEEN 0 AND $2::int - 1",
                               "crash-1", "800", NULL),
                  ITEMS);
    assert_int_eq(
        harness_long(h, "SELECT tasks_done FROM shoal.jobs WHERE job_id = $1", "crash-1", NULL),
        ITEMS);
    assert_int_eq(harness_long(h,
                               "SELECT count(*) FROM shoal.tasks WHERE job_id = $1 AND status "
                               "<> 'done'",
                               "crash-1", NULL),
                  0);
    /* The merged output names every item exactly once. */
    assert_int_eq(harness_long(h,
                               "SELECT count(*) FROM shoal.jobs j, generate_series(0, $2::int - 1) "
                               "i WHERE j.job_id = $1 AND (length(j.output) - "
                               "length(replace(j.output, 'item-' || lpad(i::text, 5, '0'), ''))) "
                               "<> length('item-00000')",
                               "crash-1", "800", NULL),
                  0);
    harness_stop(h);
    fprintf(stderr, "ok\n");
    return 0;
}
