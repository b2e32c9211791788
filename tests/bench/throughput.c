/*
 * Engine throughput: a 20,000-item job, one item per chunk, one worker, the
 * zero-latency simulator, from the moment the job is produced to the moment
 * its merged output is committed. Prints the wall-clock rate and the CPU each
 * process spent per task: the worker, the scheduler, PostgreSQL (postmaster
 * and every backend, reaped ones included), this process (which serves the
 * mock Kafka cluster) and the simulator; ends with
 *   RESULT bench=throughput tasks=N tasks_per_s=N worker_cpu_us_per_task=N
 *          total_cpu_us_per_task=N
 * A small job first warms the consumer groups so their joins are not timed;
 * the job is built before the clock starts.
 * SHOAL_BENCH_TASKS changes the size; SHOAL_BENCH_PERF=<file> records the
 * worker with `perf record -g` during the timed job.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/service.h"
#include "stack/pgcluster.h"
#include "stack/proc.h"
#include "tests/support/benchstat.h"
#include "tests/support/check.h"
#include "tests/support/harness.h"

struct cpu {
    double worker, scheduler, pg, kafka, sim;
};

static void sample(shoal_devstack_t *ds, int sim_pid, struct cpu *c)
{
    c->worker = bench_cpu_us((int)shoal_proc_pid(shoal_devstack_proc(ds, "worker", 0)));
    c->scheduler = bench_cpu_us((int)shoal_proc_pid(shoal_devstack_proc(ds, "scheduler", 0)));
    c->pg = bench_cpu_tree_us((int)shoal_pgcluster_pid(shoal_devstack_pg(ds)));
    c->kafka = bench_self_cpu_us();
    c->sim = bench_cpu_us(sim_pid);
}

/* Produces a job built beforehand (building it is the client's work, not
 * the fleet's) and waits until it has ended, looking every 5 ms: the
 * harness's 100 ms look-ups added 50 ms on average to a 2 s measurement. */
static void run_job(harness_t *h, const char *id, const char *job)
{
    char status[64];
    harness_produce(h, "shoal.jobs", id, job, strlen(job));
    harness_wait_job_every(h, id, 900, 5, status, sizeof(status));
    assert_str_eq(status, "completed");
}

static shoal_proc_t *start_perf(const char *out, int pid)
{
    char err[256], spid[32];
    snprintf(spid, sizeof(spid), "%d", pid);
    char *argv[] = {"perf", "record", "-g", "-F", "999", "-o", (char *)out, "-p", spid, NULL};
    shoal_proc_t *p = shoal_proc_spawn("perf", argv, NULL, NULL, err, sizeof(err));
    if (!p)
        fprintf(stderr, "perf not started: %s\n", err);
    return p;
}

int main(void)
{
    const char *t = getenv("SHOAL_BENCH_TASKS");
    const char *perf_out = getenv("SHOAL_BENCH_PERF");
    int tasks = t ? (int)strtol(t, NULL, 10) : 20000;
    static const char *const wargs[] = {"--max-inflight", "256", NULL};
    harness_conf_t conf = {.workers = 1, .schedulers = 1, .worker_args = wargs};
    harness_t *h = harness_start(&conf);
    shoal_devstack_t *ds = harness_stack(h);
    int sim_pid = bench_child_pid("shoal-sim");

    char *warmup = harness_job("warmup", 50, 1, "{\"prompt_template\": \"Warm up:\\n{{input}}\"}");
    run_job(h, "warmup", warmup);
    free(warmup);
    char *job = harness_job("throughput", tasks, 1, NULL);

    char load0[64], load1[64];
    bench_loadavg(load0, sizeof(load0));
    shoal_proc_t *perf = NULL;
    if (perf_out)
        perf = start_perf(perf_out, (int)shoal_proc_pid(shoal_devstack_proc(ds, "worker", 0)));
    struct cpu c0, c1;
    sample(ds, sim_pid, &c0);
    double produced_unix = shoal_service_unix_s();
    double start = check_now_s();
    run_job(h, "throughput", job);
    double secs = check_now_s() - start;
    free(job);
    sample(ds, sim_pid, &c1);
    bench_loadavg(load1, sizeof(load1));
    if (perf) {
        shoal_proc_kill(perf, SIGINT);
        shoal_proc_wait(perf, 30000, NULL);
        shoal_proc_destroy(perf);
    }

    long results =
        harness_long(h, "SELECT count(*) FROM shoal.results WHERE job_id = 'throughput'", NULL);
    assert_int_eq(results, tasks);

    /* Where the wall time went, from the rows' own timestamps (seconds after
     * the job was submitted): intake, the calls, the writes, the merge. */
    static const char *const phases[][2] = {
        {"first queued", "SELECT min(queued_at) FROM shoal.tasks WHERE job_id = $1"},
        {"last task queued", "SELECT max(queued_at) FROM shoal.tasks WHERE job_id = $1"},
        {"first call start", "SELECT min(started_at) FROM shoal.attempts WHERE job_id = $1"},
        {"last call end", "SELECT max(finished_at) FROM shoal.attempts WHERE job_id = $1"},
        {"last result row", "SELECT max(created_at) FROM shoal.results WHERE job_id = $1"},
        {"job finished", "SELECT finished_at FROM shoal.jobs WHERE job_id = $1"},
    };
    char produced[64], v0[64];
    snprintf(produced, sizeof(produced), "%.6f", produced_unix);
    harness_str(h, v0, sizeof(v0),
                "SELECT round((extract(epoch FROM submitted_at) - $2::float8)::numeric, 3) FROM "
                "shoal.jobs WHERE job_id = $1",
                "throughput", produced, NULL);
    printf("job submitted    %s s after it was produced (the job's own clock starts here)\n", v0);
    for (size_t i = 0; i < sizeof(phases) / sizeof(phases[0]); i++) {
        char sql[256], v[64];
        snprintf(sql, sizeof(sql),
                 "SELECT round((extract(epoch FROM (%s)) - extract(epoch FROM submitted_at))"
                 "::numeric, 3) FROM shoal.jobs WHERE job_id = $1",
                 phases[i][1]);
        harness_str(h, v, sizeof(v), sql, "throughput", NULL);
        printf("%-16s %s s after submit\n", phases[i][0], v);
    }
    char calls[64];
    harness_str(h, calls, sizeof(calls),
                "SELECT round(avg(latency_ms)::numeric, 2) || ' ms mean call, ' || "
                "round(avg(queue_ms)::numeric, 1) || ' ms mean queue' FROM shoal.attempts "
                "WHERE job_id = $1",
                "throughput", NULL);
    printf("calls            %s\n", calls);

    double w = (c1.worker - c0.worker) / tasks, s = (c1.scheduler - c0.scheduler) / tasks;
    double pg = (c1.pg - c0.pg) / tasks, k = (c1.kafka - c0.kafka) / tasks;
    double sim = (c1.sim - c0.sim) / tasks;
    double total = w + s + pg + k + sim;
    printf("tasks            %d (one item per chunk), 1 worker (--max-inflight 256), "
           "zero-latency simulator\n",
           tasks);
    printf("load average     %s before, %s after (2 cores, shared)\n", load0, load1);
    printf("submit->merged   %.3f s\n", secs);
    printf("throughput       %.0f tasks/s\n", tasks / secs);
    printf("cpu us/task      worker %.1f, scheduler %.1f, postgresql %.1f, kafka+harness %.1f, "
           "simulator %.1f, total %.1f\n",
           w, s, pg, k, sim, total);
    printf("worker peak rss  %ld KiB\n",
           bench_peak_rss_kb((int)shoal_proc_pid(shoal_devstack_proc(ds, "worker", 0))));
    printf("RESULT bench=throughput tasks=%d tasks_per_s=%.0f worker_cpu_us_per_task=%.1f "
           "total_cpu_us_per_task=%.1f\n",
           tasks, tasks / secs, w, total);
    fflush(stdout);
    harness_stop(h);
    return 0;
}
