/*
 * Latency of one small job at low load: a single-task job against the
 * zero-latency simulator, one worker, nothing else running, produced only
 * after the previous one completed. Latency = from just before the job is
 * produced (this process's clock) to the job's finished_at in PostgreSQL
 * (the same machine's clock), so the 100 ms status poll does not add to it.
 * A warm-up job goes first so consumer-group joins are not counted. Ends with
 *   RESULT bench=latency p50_ms=N p95_ms=N
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/service.h"
#include "tests/support/benchstat.h"
#include "tests/support/check.h"
#include "tests/support/harness.h"

#define JOBS 60

static double run_one(harness_t *h, const char *id)
{
    char status[64], fin[64];
    char *job = harness_job(id, 1, 1, NULL);
    double t0 = shoal_service_unix_s();
    harness_produce(h, "shoal.jobs", id, job, strlen(job));
    free(job);
    harness_wait_job(h, id, 120, status, sizeof(status));
    assert_str_eq(status, "completed");
    harness_str(h, fin, sizeof(fin),
                "SELECT extract(epoch FROM finished_at) FROM shoal.jobs WHERE job_id = $1", id,
                NULL);
    return (strtod(fin, NULL) - t0) * 1000.0;
}

int main(void)
{
    harness_conf_t conf = {.workers = 1, .schedulers = 1};
    harness_t *h = harness_start(&conf);
    run_one(h, "latency-warmup");

    char load0[64], load1[64], id[64];
    bench_loadavg(load0, sizeof(load0));
    double ms[JOBS];
    for (int i = 0; i < JOBS; i++) {
        snprintf(id, sizeof(id), "latency-%03d", i);
        ms[i] = run_one(h, id);
    }
    bench_loadavg(load1, sizeof(load1));
    double sum = 0, mn = ms[0], mx = ms[0];
    int slowest = 0;
    for (int i = 0; i < JOBS; i++) {
        sum += ms[i];
        mn = ms[i] < mn ? ms[i] : mn;
        if (ms[i] > mx)
            mx = ms[i], slowest = i;
    }
    /* The slowest job's own timeline, so an outlier shows where it waited. */
    char slow[512];
    snprintf(id, sizeof(id), "latency-%03d", slowest);
    harness_str(h, slow, sizeof(slow),
                "SELECT string_agg('attempt ' || a.attempt || ': queued ' || "
                "round((extract(epoch FROM t.queued_at - j.submitted_at) * 1000)::numeric, 1) || "
                "' ms after intake, call started ' || "
                "round((extract(epoch FROM a.started_at - j.submitted_at) * 1000)::numeric, 1) || "
                "', ended ' || "
                "round((extract(epoch FROM a.finished_at - j.submitted_at) * 1000)::numeric, 1) || "
                "' (transfer ' || round(a.latency_ms::numeric, 1) || ' ms), job ended ' || "
                "round((extract(epoch FROM j.finished_at - j.submitted_at) * 1000)::numeric, 1), "
                "'; ' ORDER BY a.attempt) FROM shoal.jobs j JOIN shoal.tasks t USING (job_id) "
                "JOIN shoal.attempts a ON a.task_id = t.task_id WHERE j.job_id = $1",
                id, NULL);
    /* Where a job's time goes, averaged: produce -> intake (submitted_at),
     * intake -> task queued, queued -> call start, call, call end -> job end. */
    char split[512];
    harness_str(h, split, sizeof(split),
                "SELECT 'queued ' || round(avg(extract(epoch FROM t.queued_at - j.submitted_at) * "
                "1000)::numeric, 1) || ' ms after intake, call starts ' || "
                "round(avg(extract(epoch FROM a.started_at - t.queued_at) * 1000)::numeric, 1) || "
                "' ms later, lasts ' || round(avg(a.latency_ms)::numeric, 1) || ' ms, job ends ' "
                "|| round(avg(extract(epoch FROM j.finished_at - a.finished_at) * 1000)::numeric, "
                "1) || ' ms after the call (written ' || round(avg(extract(epoch FROM "
                "t.finished_at - a.finished_at) * 1000)::numeric, 1) || ' ms after it)' FROM "
                "shoal.jobs j JOIN shoal.tasks t USING (job_id) "
                "JOIN shoal.attempts a ON a.task_id = t.task_id WHERE j.job_id LIKE 'latency-0%'",
                NULL);
    printf("jobs             %d single-task jobs, one at a time, 1 worker, zero-latency "
           "simulator\n",
           JOBS);
    printf("load average     %s at start, %s at end (2 cores, shared)\n", load0, load1);
    printf("submit->done     min %.1f, mean %.1f, max %.1f ms\n", mn, sum / JOBS, mx);
    printf("split (mean)     %s\n", split);
    printf("slowest          %s, %.1f ms: %s\n", id, mx, slow);
    double p50 = bench_percentile(ms, JOBS, 50), p95 = bench_percentile(ms, JOBS, 95);
    printf("RESULT bench=latency p50_ms=%.1f p95_ms=%.1f\n", p50, p95);
    fflush(stdout);
    harness_stop(h);
    return 0;
}
