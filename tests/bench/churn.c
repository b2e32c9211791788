/*
 * Rate-limit pacing while the fleet changes: the RPM-bound case of the
 * ratelimit benchmark (three workers, 50 requests/s, a 2 s bucket, openai
 * headers, the limit in the models file), with a fourth worker joining at
 * 20 s and one of the first three killed with SIGKILL at 40 s (it leaves its
 * capacity lease and its partitions behind). Over the steady state (the run
 * after its first 20%, which still covers both events):
 * max_window_rate = highest served rate in any 5 s window / the limit;
 * recovery_s = from the kill to the start of the first 5 s window after
 * which every 5 s window of the run is within 5% of the limit (0 when the
 * rate never left that band; the rest of the run when it never came back). Ends with
 *   RESULT bench=churn max_window_rate=F recovery_s=F
 */
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "stack/proc.h"
#include "tests/support/benchstat.h"
#include "tests/support/check.h"
#include "tests/support/ratebench.h"

#define RPM 3000 /* 50 requests/s */
#define JOIN_S 20.0
#define KILL_S 40.0
#define MEASURE_S 70.0
#define WINDOW 5

struct events {
    int joined, killed;
    double kill_unix;
};

static void tick(harness_t *h, double since, void *arg)
{
    struct events *ev = arg;
    char err[256];
    shoal_devstack_t *ds = harness_stack(h);
    if (!ev->joined && since >= JOIN_S) {
        /* Slot 3 is empty: this starts one more worker with the same
         * environment and arguments as the others. */
        if (shoal_devstack_restart(ds, "worker", 3, NULL, err, sizeof(err)) != SHOAL_OK)
            test_fail("could not start a fourth worker: %s", err);
        ev->joined = 1;
        printf("joined: worker-3 at %.1f s\n", since);
    }
    if (!ev->killed && since >= KILL_S) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        if (shoal_proc_kill(shoal_devstack_proc(ds, "worker", 0), SIGKILL) != SHOAL_OK)
            test_fail("could not kill worker-0");
        ev->kill_unix = (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
        ev->killed = 1;
        printf("killed: worker-0 (SIGKILL) at %.1f s\n", since);
    }
}

static double window_rate(json_t *stats, int from)
{
    double sum = 0;
    for (int i = from; i < from + WINDOW; i++)
        sum += (double)bench_sim_at(stats, "served_per_s", i);
    return sum / WINDOW;
}

/* Waits until the log of a worker says "worker started" n times (a
 * restarted worker appends to its predecessor's log): a worker stopped
 * before it has set up its signal handling would count as ending badly. */
static void wait_started(shoal_devstack_t *ds, const char *name, int n)
{
    char path[1024], line[1024];
    snprintf(path, sizeof(path), "%s/logs/%s.log", shoal_devstack_workdir(ds), name);
    double deadline = check_now_s() + 60;
    for (;;) {
        int seen = 0;
        FILE *f = fopen(path, "r");
        while (f && fgets(line, sizeof(line), f))
            if (strstr(line, "worker started"))
                seen++;
        if (f)
            fclose(f);
        if (seen >= n)
            return;
        if (check_now_s() > deadline)
            test_fail("%s did not start within 60 s (see %s)", name, path);
        struct timespec ts = {0, 100 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
}

int main(void)
{
    const char *sim_args[] = {"--rpm", "3000", "--burst-s", "2", "--limit-headers", "openai", NULL};
    const char *models =
        "\"bench-limited\": {\"provider\": \"openai\", \"endpoint\": "
        "\"${SHOAL_SIM_URL}/v1/chat/completions\", \"model\": \"bench-limited\", "
        "\"input_usd_per_mtok\": 0.15, \"output_usd_per_mtok\": 0.6, \"rpm\": 3000, "
        "\"max_output_tokens\": 100}";
    struct events ev = {0, 0, 0};
    ratebench_conf_t c = {.workers = 3,
                          .sim_args = sim_args,
                          .extra_models = models,
                          .model = "bench-limited",
                          .job_id = "churn",
                          .tasks = 8000,
                          .measure_s = MEASURE_S,
                          .tick = tick,
                          .arg = &ev};
    char load0[64], load1[64];
    bench_loadavg(load0, sizeof(load0));
    ratebench_result_t r;
    harness_t *h = ratebench_run(&c, &r);
    bench_loadavg(load1, sizeof(load1));
    shoal_devstack_t *ds = harness_stack(h);

    double limit = RPM / 60.0;
    double start = json_real_value(json_object_get(r.stats, "history_start_unix"));
    int kill_sec = (int)floor(ev.kill_unix - start);
    int span = r.last - r.first + 1;
    int steady = r.first + (int)(0.2 * span + 0.5);
    double max_rate = 0, max_all = 0;
    int max_at = -1;
    for (int i = r.first; i + WINDOW - 1 <= r.last; i++) {
        double w = window_rate(r.stats, i);
        if (w > max_all)
            max_all = w;
        if (i >= steady && w > max_rate) {
            max_rate = w;
            max_at = i;
        }
    }
    /* Recovered from the start of the first window after which every 5 s
     * window of the run stays within 5% of the limit. */
    double recovery = 0;
    for (int i = kill_sec; i + WINDOW - 1 <= r.last; i++) {
        double w = window_rate(r.stats, i);
        if (fabs(w - limit) > 0.05 * limit)
            recovery = (double)(i + 1) - (ev.kill_unix - start);
    }
    if (r.last - WINDOW + 1 >= kill_sec &&
        fabs(window_rate(r.stats, r.last - WINDOW + 1) - limit) > 0.05 * limit)
        recovery = -1; /* still out of the band when the run ended */
    printf("churn: limit %.1f requests/s, 3 workers, +1 at %.0f s, -1 (SIGKILL) at %.0f s\n", limit,
           JOIN_S, KILL_S);
    printf("load average     %s at start, %s at end (2 cores, shared)\n", load0, load1);
    printf("run seconds      %d..%d, steady from %d, kill in second %d\n", r.first, r.last, steady,
           kill_sec);
    printf("5 s windows from the kill:");
    for (int i = kill_sec; i + WINDOW - 1 <= r.last; i++)
        printf(" %.1f", window_rate(r.stats, i));
    printf("\n");
    printf("max 5 s window   %.2f requests/s (%.3f of the limit) starting at second %d; whole run "
           "including the first burst %.3f\n",
           max_rate, max_rate / limit, max_at, max_all / limit);
    if (recovery >= 0)
        printf("recovery         %.1f s after the kill (then within 5%% to the end)\n", recovery);
    else
        printf("recovery         not within the run (%d s after the kill)\n", r.last - kill_sec);
    printf("served per second:");
    for (int i = r.first; i <= r.last; i++)
        printf(" %lld", bench_sim_at(r.stats, "served_per_s", i));
    printf("\n429s per second:");
    for (int i = r.first; i <= r.last; i++)
        printf(" %lld", bench_sim_at(r.stats, "limited_per_s", i));
    printf("\n");
    printf("RESULT bench=churn max_window_rate=%.3f recovery_s=%.1f\n", max_rate / limit,
           recovery >= 0 ? recovery : (double)(r.last - kill_sec));
    fflush(stdout);
    json_decref(r.stats);
    /* The killed worker would count as a process that ended badly: a fresh
     * one takes its slot so the stack stops cleanly. */
    char err[256];
    if (ev.killed) {
        if (shoal_devstack_restart(ds, "worker", 0, NULL, err, sizeof(err)) != SHOAL_OK)
            test_fail("could not restart worker-0: %s", err);
        wait_started(ds, "worker-0", 2);
    }
    harness_stop(h);
    return 0;
}
