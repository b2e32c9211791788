/*
 * PostgreSQL that hangs without dropping connections (its postmaster and
 * every backend stopped with SIGSTOP for SHOAL_IT_STALL_S seconds, 30 by
 * default, then SIGCONT) in the middle of a job: workers keep polling Kafka
 * while their database thread waits, so no worker leaves its group (no
 * "partitions revoked" in their logs during or after the stall), no task
 * fails because of it, and the job completes with every result once.
 */
#include <dirent.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>

#include "stack/pgcluster.h"
#include "tests/support/check.h"
#include "tests/support/faults.h"
#include "tests/support/harness.h"

#define ITEMS 400
#define MAX_PIDS 256

/* The postmaster and its direct children (backends and auxiliary
 * processes), postmaster first. */
static int pg_pids(pid_t postmaster, pid_t *out, int cap)
{
    int n = 0;
    out[n++] = postmaster;
    DIR *d = opendir("/proc");
    assert_true(d != NULL);
    struct dirent *e;
    while ((e = readdir(d)) != NULL && n < cap) {
        char *end;
        long pid = strtol(e->d_name, &end, 10);
        if (*end || pid <= 0)
            continue;
        char path[64], buf[512];
        snprintf(path, sizeof(path), "/proc/%ld/stat", pid);
        FILE *f = fopen(path, "r");
        if (!f)
            continue;
        size_t got = fread(buf, 1, sizeof(buf) - 1, f);
        fclose(f);
        buf[got] = '\0';
        /* pid (comm) state ppid ...: comm may hold spaces, so parse after ')' */
        const char *rp = strrchr(buf, ')');
        char state;
        long ppid;
        if (rp && sscanf(rp + 1, " %c %ld", &state, &ppid) == 2 && ppid == (long)postmaster)
            out[n++] = (pid_t)pid;
    }
    closedir(d);
    return n;
}

static long revoked(harness_t *h)
{
    return faults_log_count(h, "worker-0", "partitions revoked") +
           faults_log_count(h, "worker-1", "partitions revoked");
}

int main(void)
{
    static const char *const wargs[] = {"--max-inflight", "16", NULL};
    harness_conf_t conf = {
        .workers = 2, .schedulers = 1, .sim_latency_ms = 100, .worker_args = wargs};
    const char *env = getenv("SHOAL_IT_STALL_S");
    long stall_s = env && *env ? strtol(env, NULL, 10) : 30;
    if (stall_s < 1 || stall_s > 600)
        test_fail("SHOAL_IT_STALL_S must be 1..600, not %s", env);
    harness_t *h = harness_start(&conf);
    char status[64];

    /* Let the group settle on a small job first, so that only the stall
     * could revoke partitions afterwards. */
    char *job = harness_job("warm-1", 10, 1, "{\"prompt_template\": \"Warm:\\n{{input}}\"}");
    harness_produce(h, "shoal.jobs", "warm-1", job, strlen(job));
    free(job);
    harness_wait_job(h, "warm-1", 60, status, sizeof(status));
    faults_assert_once(h, "warm-1", 10);
    long revoked_before = revoked(h);

    job = harness_job("stall-1", ITEMS, 1, NULL);
    harness_produce(h, "shoal.jobs", "stall-1", job, strlen(job));
    free(job);
    assert_wait(harness_long(h,
                             "SELECT coalesce(max(tasks_done), 0) FROM shoal.jobs WHERE job_id = "
                             "'stall-1'",
                             NULL) >= 40,
                60, "40 tasks done");
    long done_before =
        harness_long(h, "SELECT tasks_done FROM shoal.jobs WHERE job_id = 'stall-1'", NULL);
    assert_true(done_before < ITEMS);

    /* The test's own connection is idle now; it is not used during the stall. */
    pid_t pids[MAX_PIDS];
    int n = pg_pids(shoal_pgcluster_pid(shoal_devstack_pg(harness_stack(h))), pids, MAX_PIDS);
    assert_true(n > 1);
    for (int i = 0; i < n; i++)
        kill(pids[i], SIGSTOP);
    fprintf(stderr, "PostgreSQL stopped (%d processes) at %ld/%d tasks done\n", n, done_before,
            ITEMS);
    double until = check_now_s() + (double)stall_s;
    while (check_now_s() < until) {
        /* Workers must stay in their group all along, not only after. */
        if (revoked(h) != revoked_before) {
            for (int i = n - 1; i >= 0; i--)
                kill(pids[i], SIGCONT);
            test_fail("a worker lost its partitions during the stall");
        }
        struct timespec ts = {0, 250 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    for (int i = n - 1; i >= 0; i--)
        kill(pids[i], SIGCONT);

    harness_wait_job(h, "stall-1", 120, status, sizeof(status));
    faults_assert_once(h, "stall-1", ITEMS);
    assert_int_eq(harness_long(h,
                               "SELECT count(*) FROM shoal.attempts WHERE job_id = 'stall-1' AND "
                               "outcome <> 'ok'",
                               NULL),
                  0);
    json_t *stats = harness_sim_stats(h);
    assert_int_eq(json_integer_value(json_object_get(stats, "repeated_prompts")), 0);
    json_decref(stats);
    assert_int_eq(revoked(h), revoked_before);

    harness_stop(h);
    fprintf(stderr, "ok\n");
    return 0;
}
