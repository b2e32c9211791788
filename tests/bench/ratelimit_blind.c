/*
 * Rate-limit pacing with no help from the provider: as the RPM-bound case of
 * the ratelimit benchmark (three workers, a limit of 50 requests/s, a 2 s
 * bucket, offered load far above it), but the simulator sends no rate-limit
 * headers and no Retry-After, and the models file names no rpm or tpm, so
 * the workers can only learn the limit from the 429s themselves.
 * utilization = steady served rate (after the first 20% of the run) / the
 * limit; rate429 = 429 answers / all answers over the run; failed = tasks of
 * the job recorded failed by the end. SHOAL_BENCH_RPM sets another limit
 * (the job is twice what a minute serves): a low one, 120 (2 requests/s),
 * shows how the fleet learns from a few calls a second. Ends with
 *   RESULT bench=ratelimit_blind utilization=F rate429=F failed=N
 */
#include <stdio.h>
#include <stdlib.h>

#include "tests/support/benchstat.h"
#include "tests/support/check.h"
#include "tests/support/ratebench.h"

#define DEFAULT_RPM 3000 /* 50 requests/s */
#define MEASURE_S 60.0

int main(void)
{
    const char *env = getenv("SHOAL_BENCH_RPM");
    long rpm = env && *env ? strtol(env, NULL, 10) : DEFAULT_RPM;
    if (rpm < 1 || rpm > 600000) {
        fprintf(stderr, "SHOAL_BENCH_RPM must be 1..600000, not \"%s\"\n", env);
        return 2;
    }
    char rpm_arg[32];
    snprintf(rpm_arg, sizeof(rpm_arg), "%ld", rpm);
    const char *sim_args[] = {"--rpm",           rpm_arg, "--burst-s",           "2",
                              "--limit-headers", "none",  "--retry-after=false", NULL};
    const char *models =
        "\"bench-blind\": {\"provider\": \"openai\", \"endpoint\": "
        "\"${SHOAL_SIM_URL}/v1/chat/completions\", \"model\": \"bench-blind\", "
        "\"input_usd_per_mtok\": 0.15, \"output_usd_per_mtok\": 0.6, \"max_output_tokens\": 100}";
    ratebench_conf_t c = {.workers = 3,
                          .sim_args = sim_args,
                          .extra_models = models,
                          .model = "bench-blind",
                          .job_id = "ratelimit-blind",
                          .tasks = (int)(rpm * 2 > 100 ? rpm * 2 : 100),
                          .measure_s = MEASURE_S};
    char load0[64], load1[64];
    bench_loadavg(load0, sizeof(load0));
    ratebench_result_t r;
    harness_t *h = ratebench_run(&c, &r);
    bench_loadavg(load1, sizeof(load1));

    int from, to;
    long long steady_limited;
    double served = ratebench_steady_served(&r, 0.2, &from, &to, &steady_limited);
    bench_window_t all = bench_sim_window(r.stats, r.first, r.last + 1);
    double limit = (double)rpm / 60.0;
    double utilization = served / limit;
    double rate429 =
        all.served + all.limited > 0 ? (double)all.limited / (double)(all.served + all.limited) : 0;
    long failed = harness_long(
        h,
        "SELECT count(*) FROM shoal.tasks WHERE job_id = 'ratelimit-blind' AND status = 'failed'",
        NULL);
    long done = harness_long(
        h, "SELECT count(*) FROM shoal.tasks WHERE job_id = 'ratelimit-blind' AND status = 'done'",
        NULL);

    printf("blind RPM-bound: limit %.1f requests/s, no limit headers, no Retry-After, no rpm in "
           "the models file\n",
           limit);
    printf("load average     %s at start, %s at end (2 cores, shared)\n", load0, load1);
    printf("run seconds      %d..%d, steady %d..%d\n", r.first, r.last, from, to);
    printf("steady served    %.2f requests/s, utilization %.3f\n", served, utilization);
    printf("whole run        %lld served, %lld 429s, rate429 %.4f; steady 429s %lld\n", all.served,
           all.limited, rate429, steady_limited);
    printf("tasks            %ld done, %ld failed\n", done, failed);
    printf("served per second:");
    for (int i = r.first; i <= r.last; i++)
        printf(" %lld", bench_sim_at(r.stats, "served_per_s", i));
    printf("\n429s per second:");
    for (int i = r.first; i <= r.last; i++)
        printf(" %lld", bench_sim_at(r.stats, "limited_per_s", i));
    printf("\n");
    printf("RESULT bench=ratelimit_blind utilization=%.3f rate429=%.4f failed=%ld\n", utilization,
           rate429, failed);
    fflush(stdout);
    json_decref(r.stats);
    harness_stop(h);
    return 0;
}
