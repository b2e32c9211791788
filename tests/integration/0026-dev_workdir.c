/*
 * `shoal dev` as a supervisor and a keeper of state:
 * - two stacks side by side (one durable, one --unsafe-fast, each saying so
 *   at start-up) sharing SHOAL_HOME: each one's CLI reaches it through
 *   SHOAL_HOME=<its workdir>, and when the later one stops the shared
 *   dev.env names the earlier one again instead of vanishing;
 * - kill -9 of a stack's scheduler: it is started again and a job submitted
 *   afterwards completes;
 * - --workdir keeps data and logs: a later `shoal dev --workdir` on the same
 *   folder still knows the first run's job and its results.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "stack/proc.h"
#include "tests/support/check.h"
#include "tests/support/devcli.h"
#include "tests/support/harness.h"

/* Writes a job of n items to path. */
static void write_job(const char *path, const char *job_id, int n)
{
    char *text = harness_job(job_id, n, 1, NULL);
    FILE *f = fopen(path, "w");
    assert_true(f != NULL);
    fputs(text, f);
    assert_true(fclose(f) == 0);
    free(text);
}

/* Submits the job file and waits for it through the CLI of the stack that
 * SHOAL_HOME=home names. */
static void submit_wait(const char *home, const char *job, const char *want)
{
    char cmd[1024], out[1 << 14];
    snprintf(cmd, sizeof(cmd), "%s submit --wait %s", harness_bin("shoal"), job);
    int rc = devcli_run(out, sizeof(out), home, cmd);
    if (rc != 0)
        test_fail("submit --wait %s exited %d:\n%s", job, rc, out);
    assert_str_contains(out, want);
}

/* The PID of the scheduler child of the shoal dev process dev, or -1. */
static long scheduler_pid(shoal_proc_t *dev)
{
    char cmd[128], out[64];
    snprintf(cmd, sizeof(cmd), "pgrep -P %d -x shoal-scheduler", (int)shoal_proc_pid(dev));
    FILE *p = popen(cmd, "r");
    assert_true(p != NULL);
    size_t n = fread(out, 1, sizeof(out) - 1, p);
    out[n] = '\0';
    pclose(p);
    return n ? strtol(out, NULL, 10) : -1;
}

int main(void)
{
    char home[] = "/tmp/shoal-home-XXXXXX";
    char wa[600], wb[600], loga[600], logb[600], job[600], cmd[1024], out[1 << 14];
    assert_true(mkdtemp(home) != NULL);
    assert_int_eq(chmod(home, 0755), 0); /* PostgreSQL's user must reach the workdirs */
    snprintf(wa, sizeof(wa), "%s/a", home);
    snprintf(wb, sizeof(wb), "%s/b", home);
    snprintf(loga, sizeof(loga), "%s/a.out", home);
    snprintf(logb, sizeof(logb), "%s/b.out", home);
    snprintf(job, sizeof(job), "%s/job.json", home);

    /* Two stacks; B starts last and so owns $SHOAL_HOME/dev.env. */
    shoal_proc_t *a = devcli_start(home, wa, NULL, loga);
    assert_int_eq(shoal_proc_wait_file_line(loga, "PostgreSQL runs durably", 1000, NULL, 0),
                  SHOAL_OK);
    static const char *const fast[] = {"--unsafe-fast", NULL};
    shoal_proc_t *b = devcli_start(home, wb, fast, logb);
    assert_int_eq(shoal_proc_wait_file_line(logb, "a crash may lose results already acknowledged",
                                            1000, NULL, 0),
                  SHOAL_OK);

    write_job(job, "a-1", 4);
    submit_wait(wa, job, "job a-1 completed: 4/4 tasks done");
    write_job(job, "b-1", 3);
    submit_wait(wb, job, "job b-1 completed: 3/3 tasks done");
    /* Each job is in its own stack only. */
    snprintf(cmd, sizeof(cmd), "%s status a-1", harness_bin("shoal"));
    assert_true(devcli_run(out, sizeof(out), wb, cmd) != 0);
    assert_str_contains(out, "no job a-1");

    /* kill -9 of A's scheduler: it comes back and takes new jobs. */
    long pid = scheduler_pid(a);
    assert_true(pid > 0);
    assert_int_eq(kill((pid_t)pid, SIGKILL), 0);
    assert_int_eq(shoal_proc_wait_file_line(loga, "scheduler 0 exited", 30000, NULL, 0), SHOAL_OK);
    assert_wait(scheduler_pid(a) > 0 && scheduler_pid(a) != pid, 30, "a new scheduler");
    write_job(job, "a-2", 5);
    submit_wait(wa, job, "job a-2 completed: 5/5 tasks done");

    /* B stops: the shared file names A again. */
    devcli_stop(b);
    snprintf(cmd, sizeof(cmd), "%s status a-2", harness_bin("shoal"));
    int rc = devcli_run(out, sizeof(out), home, cmd);
    if (rc != 0)
        test_fail("status through the shared dev.env exited %d:\n%s", rc, out);
    assert_str_contains(out, "completed");

    /* A stops, keeping its folder; a second run on it carries on. */
    devcli_stop(a);
    snprintf(cmd, sizeof(cmd), "%s/dev.env", home);
    assert_true(access(cmd, F_OK) != 0);
    snprintf(cmd, sizeof(cmd), "%s/logs/scheduler-0.log", wa);
    assert_true(access(cmd, F_OK) == 0);
    snprintf(loga, sizeof(loga), "%s/a2.out", home);
    a = devcli_start(home, wa, NULL, loga);
    snprintf(cmd, sizeof(cmd), "%s status a-1", harness_bin("shoal"));
    rc = devcli_run(out, sizeof(out), wa, cmd);
    if (rc != 0)
        test_fail("status of the first run's job exited %d:\n%s", rc, out);
    assert_str_contains(out, "completed");
    snprintf(cmd, sizeof(cmd), "%s results a-2", harness_bin("shoal"));
    assert_int_eq(devcli_run(out, sizeof(out), wa, cmd), 0);
    assert_str_contains(out, "item-00000");
    assert_str_contains(out, "item-00004");
    devcli_stop(a);

    /* Nothing of either stack keeps running. */
    snprintf(cmd, sizeof(cmd), "pgrep -f '[%c]%s' >/dev/null", home[0], home + 1);
    assert_int_eq(system(cmd), 256); /* pgrep: no process matched */
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", home);
    assert_int_eq(system(cmd), 0);
    fprintf(stderr, "ok\n");
    return 0;
}
