/*
 * Calls over https and HTTP/2, the way providers are reached: one worker
 * against nghttpd (tests/support/h2server.h: TLS, HTTP/2 only, a fixed
 * answer at once), a job of one-item tasks. Run twice on one stack: first
 * for a model capped at 100 calls in flight per worker (max_concurrency:
 * nghttpd's stream limit per connection), then for one left at the worker's
 * 256. Prints the rate, the worker's and the server's CPU per task and the
 * connections open to the server after each job (the worker keeps them
 * open); ends with
 *   RESULT bench=https tasks=N tasks_per_s=N worker_cpu_us_per_task=N
 *          connections=N connections_capped=N
 * for the uncapped job (connections counted after both). SHOAL_BENCH_TASKS
 * changes the size (default 20,000).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "stack/proc.h"
#include "tests/support/benchstat.h"
#include "tests/support/check.h"
#include "tests/support/h2server.h"
#include "tests/support/harness.h"

struct run {
    double ms, worker_us, server_us;
    long connections;
};

static struct run run_job(harness_t *h, h2server_t *server, const char *id, const char *model,
                          int tasks)
{
    char extra[64], status[64];
    struct run r;
    int wpid = (int)shoal_proc_pid(shoal_devstack_proc(harness_stack(h), "worker", 0));
    snprintf(extra, sizeof(extra), "{\"model\": \"%s\"}", model);
    char *job = harness_job(id, tasks, 1, extra);
    double w0 = bench_cpu_us(wpid), s0 = bench_cpu_us(h2server_pid(server));
    double t0 = check_now_s();
    harness_produce(h, "shoal.jobs", id, job, strlen(job));
    harness_wait_job_every(h, id, 900, 5, status, sizeof(status));
    r.ms = (check_now_s() - t0) * 1000.0;
    assert_str_eq(status, "completed");
    r.worker_us = (bench_cpu_us(wpid) - w0) / tasks;
    r.server_us = (bench_cpu_us(h2server_pid(server)) - s0) / tasks;
    r.connections = h2server_connections(server);
    free(job);
    assert_int_eq(harness_long(h, "SELECT count(*) FROM shoal.results WHERE job_id = $1", id, NULL),
                  tasks);
    printf("%-8s %d tasks in %.0f ms: %.0f tasks/s, worker %.1f us/task, nghttpd %.1f us/task, "
           "%ld connections open after it\n",
           model, tasks, r.ms, tasks / r.ms * 1000.0, r.worker_us, r.server_us, r.connections);
    fflush(stdout);
    return r;
}

int main(void)
{
    const char *t = getenv("SHOAL_BENCH_TASKS");
    int tasks = t ? (int)strtol(t, NULL, 10) : 20000;
    char models[1024];
    h2server_t *server = h2server_start();
    snprintf(models, sizeof(models),
             "\"h2-capped\": {\"provider\": \"openai\", \"endpoint\": "
             "\"https://127.0.0.1:%d/v1/chat/completions\", \"model\": \"h2\", \"ca_file\": "
             "\"%s\", \"max_concurrency\": 100},\n"
             "\"h2\": {\"provider\": \"openai\", \"endpoint\": "
             "\"https://127.0.0.1:%d/v1/chat/completions\", \"model\": \"h2\", \"ca_file\": "
             "\"%s\"}",
             h2server_port(server), h2server_ca_file(server), h2server_port(server),
             h2server_ca_file(server));
    harness_conf_t conf = {.workers = 1, .schedulers = 1, .extra_models = models};
    harness_t *h = harness_start(&conf);

    /* consumer groups joined before anything is timed */
    run_job(h, server, "https-warmup", "h2-capped", 20);
    struct run capped = run_job(h, server, "https-capped", "h2-capped", tasks);
    struct run open = run_job(h, server, "https", "h2", tasks);
    printf("RESULT bench=https tasks=%d tasks_per_s=%.0f worker_cpu_us_per_task=%.1f "
           "connections=%ld connections_capped=%ld\n",
           tasks, tasks / open.ms * 1000.0, open.worker_us, open.connections, capped.connections);
    fflush(stdout);
    harness_stop(h);
    h2server_stop(server);
    return 0;
}
