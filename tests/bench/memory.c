/*
 * Worker memory with many calls in flight: one worker with --max-inflight
 * 1000 against a simulator that answers after 500 ms, so the worker holds
 * about a thousand open transfers and their tasks at once. Samples the
 * simulator's in-flight count and the worker's resident set each second for
 * 30 s of traffic; reports the most calls the simulator saw in flight at
 * once and the worker's peak resident set (VmHWM). Ends with
 *   RESULT bench=memory in_flight=N rss_mb=N
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "stack/proc.h"
#include "tests/support/benchstat.h"
#include "tests/support/check.h"
#include "tests/support/harness.h"

#define TASKS 20000
#define MEASURE_S 30

int main(void)
{
    static const char *const wargs[] = {"--max-inflight", "1000", NULL};
    harness_conf_t conf = {
        .workers = 1, .schedulers = 1, .sim_latency_ms = 500, .worker_args = wargs};
    harness_t *h = harness_start(&conf);
    shoal_devstack_t *ds = harness_stack(h);
    int wpid = (int)shoal_proc_pid(shoal_devstack_proc(ds, "worker", 0));
    char load0[64], load1[64];
    bench_loadavg(load0, sizeof(load0));
    long rss_start = bench_rss_kb(wpid);

    char *job = harness_job("memory", TASKS, 1, NULL);
    harness_produce(h, "shoal.jobs", "memory", job, strlen(job));
    free(job);

    double deadline = check_now_s() + 60, first = 0;
    long long seen_max = 0;
    printf("second  sim_inflight  worker_rss_kib\n");
    for (int s = 0;; s++) {
        json_t *st = harness_sim_stats(h);
        long long inflight = (long long)json_integer_value(json_object_get(st, "inflight"));
        long long mx = (long long)json_integer_value(json_object_get(st, "max_inflight"));
        json_decref(st);
        if (mx > seen_max)
            seen_max = mx;
        if (!first && inflight > 0)
            first = check_now_s();
        if (!first && check_now_s() > deadline)
            test_fail("no call reached the simulator within 60 s");
        if (first) {
            printf("%6d  %12lld  %14ld\n", s, inflight, bench_rss_kb(wpid));
            if (check_now_s() - first >= MEASURE_S)
                break;
        }
        struct timespec ts = {1, 0};
        nanosleep(&ts, NULL);
    }
    bench_loadavg(load1, sizeof(load1));
    long hwm = bench_peak_rss_kb(wpid);
    long done = harness_long(h, "SELECT count(*) FROM shoal.results WHERE job_id = 'memory'", NULL);
    printf("worker           1, --max-inflight 1000, simulator latency 500 ms\n");
    printf("load average     %s at start, %s at end (2 cores, shared)\n", load0, load1);
    printf("in flight        %lld at most (simulator's count of concurrent calls)\n", seen_max);
    printf("results written  %ld in %d s\n", done, MEASURE_S);
    printf("worker rss       %ld KiB idle before the job, peak (VmHWM) %ld KiB = %.1f MiB\n",
           rss_start, hwm, hwm / 1024.0);
    printf("RESULT bench=memory in_flight=%lld rss_mb=%.1f\n", seen_max, hwm / 1024.0);
    fflush(stdout);
    harness_stop(h);
    return 0;
}
