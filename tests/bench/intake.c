/*
 * Intake of a very large job: 1,000,000 short items (chunking.max_items 10,
 * so 100,000 chunk tasks, the most a job may have) sent in parts by the
 * documented protocol (README "Large jobs in parts"): a header, then parts of
 * 20,000 items (about 800 kB each). The bench sends the parts itself rather
 * than through `shoal submit` because the CLI cuts parts by bytes, so parts
 * end with a short chunk and this job would make more than 100,000 chunks
 * (the CLI refuses it). The time runs from PostgreSQL's clock just before
 * the header is produced to the latest tasks.queued_at once every task of
 * the job has left 'pending' (queued_at is set once Kafka has acknowledged
 * the task's message, shoal.mark_queued).
 *
 * What is measured is the scheduler's intake alone: the scheduler runs with
 * --dispatch-window 1000000 (SHOAL_DISPATCH_WINDOW), so its dispatcher may
 * publish the whole job without waiting for tasks to finish, and the workers
 * the stack always starts are stopped (SIGSTOP) for the run, so they neither
 * take CPU from the scheduler nor move tasks past 'queued'. The other
 * dispatcher settings are the defaults. Publications are counted in
 * PostgreSQL, not on Kafka: the local mock cluster keeps only about 5 MB per
 * partition log, so most of the task messages have been dropped from the
 * topic by the end, which does not matter to a count of publications. For
 * the same reason the bench keeps at most PARTS_AHEAD parts sent and not yet
 * recorded: the parts all go to one partition of the jobs topic, and parts
 * sent further ahead would be dropped from its log unread.
 * The scheduler's peak memory is its VmHWM from /proc. Ends with
 *   RESULT bench=intake items=1000000 items_per_s=N scheduler_peak_rss_mb=N
 * SHOAL_BENCH_ITEMS changes the size (a multiple of 10, at most 1,000,000).
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "stack/proc.h"
#include "tests/support/benchstat.h"
#include "tests/support/check.h"
#include "tests/support/harness.h"

#define WORKERS 2
#define PARTS_AHEAD 3    /* parts sent and not yet recorded, at most */
#define PART_ITEMS 20000 /* about 800 kB a part, under the 1 MiB a message may be */

/* Sends the job by the documented protocol (README "Large jobs in parts"):
 * a header, then parts of PART_ITEMS items, all keyed by the job_id. A part
 * holds a multiple of chunking.max_items, so no chunk ends short at a part's
 * end and the job makes exactly items / 10 chunks. Returns the parts sent. */
static long send_job(harness_t *h, const char *job_id, long items)
{
    char head[512];
    long parts = (items + PART_ITEMS - 1) / PART_ITEMS;
    snprintf(head, sizeof(head),
             "{\"job_id\":\"%s\",\"tenant\":\"bench\",\"model\":\"sim-small\","
             "\"prompt_template\":\"Echo:\\n{{input}}\",\"chunking\":{\"max_items\":10,"
             "\"max_tokens\":12000},\"parts\":%ld}",
             job_id, parts);
    harness_produce(h, "shoal.jobs", job_id, head, strlen(head));
    size_t cap = (size_t)PART_ITEMS * 64 + 256;
    char *buf = malloc(cap);
    assert_true(buf != NULL);
    for (long k = 0; k < parts; k++) {
        size_t len =
            (size_t)snprintf(buf, cap, "{\"job_id\":\"%s\",\"part\":%ld,\"items\":[", job_id, k);
        for (long i = k * PART_ITEMS; i < items && i < (k + 1) * PART_ITEMS; i++)
            len += (size_t)snprintf(buf + len, cap - len,
                                    "%s{\"id\":\"i%07ld\",\"input\":\"item %ld\"}",
                                    i > k * PART_ITEMS ? "," : "", i, i);
        len += (size_t)snprintf(buf + len, cap - len, "]}");
        assert_true(len < cap && len < 1000000);
        /* The mock cluster keeps about 5 MB of a partition's log and every
         * part goes to one partition: a part sent further ahead of the
         * scheduler would push unread ones out of the log. */
        while (k >= PARTS_AHEAD &&
               harness_long(h, "SELECT parts_received FROM shoal.jobs WHERE job_id = $1", job_id,
                            NULL) <= k - PARTS_AHEAD) {
            struct timespec ts = {0, 1000 * 1000};
            nanosleep(&ts, NULL);
        }
        harness_produce(h, "shoal.jobs", job_id, buf, len);
    }
    free(buf);
    return parts;
}

static void signal_workers(harness_t *h, int sig)
{
    for (int i = 0; i < WORKERS; i++) {
        struct shoal_proc *p = shoal_devstack_proc(harness_stack(h), "worker", i);
        assert_true(p != NULL);
        assert_true(shoal_proc_kill(p, sig) == SHOAL_OK);
    }
}

static double pg_now_s(harness_t *h)
{
    char s[64];
    harness_str(h, s, sizeof(s), "SELECT extract(epoch FROM clock_timestamp())::text", NULL);
    return strtod(s, NULL);
}

int main(void)
{
    const char *n = getenv("SHOAL_BENCH_ITEMS");
    long items = n ? strtol(n, NULL, 10) : 1000000;
    assert_true(items >= 10 && items <= 1000000 && items % 10 == 0);
    long tasks = items / 10;

    setenv("SHOAL_DISPATCH_WINDOW", "1000000", 1);
    harness_conf_t conf = {.workers = WORKERS, .schedulers = 1, .unsafe_fast = 1};
    harness_t *h = harness_start(&conf);
    struct shoal_proc *sched = shoal_devstack_proc(harness_stack(h), "scheduler", 0);
    assert_true(sched != NULL);
    int spid = (int)shoal_proc_pid(sched);

    /* A small job first, so the consumer group joins (3 s on the mock
     * cluster) are not timed and the workers are up before they stop. */
    char *warm = harness_job("warmup", 10, 1, NULL);
    harness_run_job(h, "warmup", warm, 120, NULL);
    free(warm);
    signal_workers(h, SIGSTOP);

    double cpu0 = bench_cpu_us(spid);
    double t0 = pg_now_s(h);
    long sent_parts = send_job(h, "intake", items);
    double sent = pg_now_s(h) - t0;
    /* Polled through the job's counter of queued tasks (the workers are
     * stopped, so none ends): a count over the job's 100,000 task rows took
     * tens of milliseconds of PostgreSQL's CPU per poll, from the scheduler
     * it measures. The rows are counted once at the end. */
    assert_wait(harness_long(h,
                             "SELECT (parts_received = parts_total AND tasks_queued >= tasks_total)"
                             "::int FROM shoal.jobs WHERE job_id = 'intake'",
                             NULL) == 1,
                600, "every task of the job is published");
    assert_int_eq(harness_long(h,
                               "SELECT (count(*) = max(j.tasks_total))::int FROM shoal.tasks t "
                               "JOIN shoal.jobs j USING (job_id) WHERE j.job_id = 'intake' "
                               "AND t.status = 'queued'",
                               NULL),
                  1);
    char last[64];
    harness_str(h, last, sizeof(last),
                "SELECT extract(epoch FROM max(queued_at))::text FROM shoal.tasks "
                "WHERE job_id = 'intake'",
                NULL);
    double secs = strtod(last, NULL) - t0;
    double cpu = (bench_cpu_us(spid) - cpu0) / 1e6;
    long parts =
        harness_long(h, "SELECT parts_total FROM shoal.jobs WHERE job_id = 'intake'", NULL);
    assert_int_eq(parts, sent_parts);
    assert_int_eq(
        harness_long(h, "SELECT tasks_total FROM shoal.jobs WHERE job_id = 'intake'", NULL), tasks);
    assert_int_eq(
        harness_long(h, "SELECT items_total FROM shoal.jobs WHERE job_id = 'intake'", NULL), items);
    long rss_mb = (bench_peak_rss_kb(spid) + 1023) / 1024;
    char load[64];
    bench_loadavg(load, sizeof(load));

    printf("items            %ld in %ld parts, %ld tasks (10 items a chunk)\n", items, parts,
           tasks);
    printf("dispatch window  1000000 (workers stopped: publication only)\n");
    printf("parts sent       %.3f s\n", sent);
    printf("submit->published %.3f s\n", secs);
    printf("rate             %.0f items/s, %.0f tasks/s\n", items / secs, tasks / secs);
    printf("scheduler cpu    %.2f s\n", cpu);
    printf("scheduler rss    %ld MiB peak (VmHWM)\n", rss_mb);
    printf("load average     %s\n", load);
    printf("RESULT bench=intake items=%ld items_per_s=%.0f scheduler_peak_rss_mb=%ld tasks=%ld "
           "parts=%ld seconds=%.3f scheduler_cpu_s=%.2f\n",
           items, items / secs, rss_mb, tasks, parts, secs, cpu);
    fflush(stdout);

    /* Nothing of the job is to run: end it before the workers wake. */
    char out[256];
    int rc =
        harness_sh(h, out, sizeof(out), "%s cancel intake >/dev/null 2>&1", harness_bin("shoal"));
    signal_workers(h, SIGCONT);
    harness_stop(h);
    return rc == 0 ? 0 : 1;
}
