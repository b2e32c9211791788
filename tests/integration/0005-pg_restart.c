/*
 * PostgreSQL restarted mid-job: workers keep their finished results and
 * Kafka positions until the database is back, the scheduler's merger
 * reconnects and re-listens, and the job completes with one result per item.
 */
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
    char status[64], err[512];
    struct shoal_pgcluster *pg = shoal_devstack_pg(harness_stack(h));

    char *job = harness_job("pg-1", ITEMS, 1, NULL);
    harness_produce(h, "shoal.jobs", "pg-1", job, strlen(job));
    free(job);
    assert_wait(harness_long(h,
                             "SELECT coalesce(max(tasks_done), 0) FROM shoal.jobs WHERE job_id "
                             "= $1",
                             "pg-1", NULL) >= 150,
                120, "150 tasks done");

    assert_int_eq(shoal_pgcluster_stop(pg, SHOAL_PGCLUSTER_FAST), SHOAL_OK);
    /* The outage lasts until a worker has felt it. */
    char log[1024];
    snprintf(log, sizeof(log), "%s/logs/worker-0.log", shoal_devstack_workdir(harness_stack(h)));
    assert_int_eq(shoal_proc_wait_file_line(log, "module=db msg=\"could not", 60000, NULL, 0),
                  SHOAL_OK);
    if (shoal_pgcluster_start(pg, err, sizeof(err)) != SHOAL_OK)
        test_fail("could not start PostgreSQL again: %s", err);

    harness_wait_job(h, "pg-1", 240, status, sizeof(status));
    assert_str_eq(status, "completed");
    assert_int_eq(
        harness_long(h, "SELECT count(*) FROM shoal.results WHERE job_id = $1", "pg-1", NULL),
        ITEMS);
    assert_int_eq(
        harness_long(h, "SELECT tasks_done FROM shoal.jobs WHERE job_id = $1", "pg-1", NULL),
        ITEMS);
    harness_stop(h);
    fprintf(stderr, "ok\n");
    return 0;
}
