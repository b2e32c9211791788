/*
 * End-to-end throughput on this machine: a 5,000-item job, one item per
 * chunk, against the zero-latency simulator, from the moment it is produced
 * to the moment its merged output is committed. Prints the wall-clock rate
 * the CPU each process kind spent per task and the largest worker's peak
 * resident memory (from /proc), ending with
 *   RESULT bench=e2e tasks=N tasks_per_s=N worker_cpu_us_per_task=N ...
 * A small job first warms the consumer groups so their joins are not timed.
 * SHOAL_BENCH_TASKS and SHOAL_BENCH_WORKERS change the size.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "stack/proc.h"
#include "tests/support/benchstat.h"
#include "tests/support/check.h"
#include "tests/support/harness.h"

static long kind_peak_rss_kb(shoal_devstack_t *ds, const char *kind, int n)
{
    long max = 0;
    for (int i = 0; i < n; i++) {
        struct shoal_proc *p = shoal_devstack_proc(ds, kind, i);
        long kb = p ? bench_peak_rss_kb((int)shoal_proc_pid(p)) : 0;
        if (kb > max)
            max = kb;
    }
    return max;
}

static double kind_cpu_us(shoal_devstack_t *ds, const char *kind, int n)
{
    double sum = 0;
    for (int i = 0; i < n; i++) {
        struct shoal_proc *p = shoal_devstack_proc(ds, kind, i);
        if (p)
            sum += bench_cpu_us((int)shoal_proc_pid(p));
    }
    return sum;
}

static void run_job(harness_t *h, const char *id, int n, const char *extra)
{
    char status[64];
    char *job = harness_job(id, n, 1, extra);
    harness_produce(h, "shoal.jobs", id, job, strlen(job));
    free(job);
    harness_wait_job(h, id, 600, status, sizeof(status));
    assert_str_eq(status, "completed");
}

int main(void)
{
    const char *t = getenv("SHOAL_BENCH_TASKS");
    const char *w = getenv("SHOAL_BENCH_WORKERS");
    int tasks = t ? (int)strtol(t, NULL, 10) : 5000;
    int workers = w ? (int)strtol(w, NULL, 10) : 2;
    static const char *const wargs[] = {"--max-inflight", "256", NULL};
    harness_conf_t conf = {.workers = workers, .schedulers = 1, .worker_args = wargs};
    harness_t *h = harness_start(&conf);
    shoal_devstack_t *ds = harness_stack(h);

    run_job(h, "warmup", 50, "{\"prompt_template\": \"Warm up:\\n{{input}}\"}");

    double w0 = kind_cpu_us(ds, "worker", workers), s0 = kind_cpu_us(ds, "scheduler", 1);
    double start = check_now_s();
    run_job(h, "e2e", tasks, NULL);
    double secs = check_now_s() - start;
    double w1 = kind_cpu_us(ds, "worker", workers), s1 = kind_cpu_us(ds, "scheduler", 1);

    long results = harness_long(h, "SELECT count(*) FROM shoal.results WHERE job_id = 'e2e'", NULL);
    assert_int_eq(results, tasks);
    json_t *stats = harness_sim_stats(h);
    long repeated = (long)json_integer_value(json_object_get(stats, "repeated_prompts"));
    json_decref(stats);

    double wcpu = (w1 - w0) / tasks, scpu = (s1 - s0) / tasks;
    long wrss = kind_peak_rss_kb(ds, "worker", workers);
    long srss = kind_peak_rss_kb(ds, "scheduler", 1);
    printf("tasks            %d (one item per chunk), %d workers, zero-latency simulator\n", tasks,
           workers);
    printf("submit->merged   %.3f s\n", secs);
    printf("throughput       %.0f tasks/s\n", tasks / secs);
    printf("worker cpu       %.1f us/task (all workers)\n", wcpu);
    printf("scheduler cpu    %.1f us/task\n", scpu);
    printf("worker peak rss  %ld KiB (largest worker)\n", wrss);
    printf("scheduler rss    %ld KiB\n", srss);
    printf("repeated calls   %ld\n", repeated);
    printf("RESULT bench=e2e tasks=%d tasks_per_s=%.0f worker_cpu_us_per_task=%.1f "
           "scheduler_cpu_us_per_task=%.1f worker_peak_rss_kb=%ld scheduler_peak_rss_kb=%ld "
           "seconds=%.3f workers=%d\n",
           tasks, tasks / secs, wcpu, scpu, wrss, srss, secs, workers);
    fflush(stdout);
    harness_stop(h);
    return 0;
}
