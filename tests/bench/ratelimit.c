/*
 * Rate-limit pacing: three workers with an offered load far above the
 * simulator's limits (zero latency, a job much larger than the limit lets
 * through), once bound by requests per minute and once by tokens per
 * minute, with the same limit in the models file and OpenAI-style headers.
 * The simulator's bucket starts full but holds only 2 s of refill, under 5%
 * of what a run serves. utilization = served rate over the steady state
 * (the run after its first 20%) / the limit, in the limit's unit (tokens are
 * counted as the simulator charges them: prompt + max_tokens);
 * rate429 = 429 answers / all answers over the whole run. Ends with
 *   RESULT bench=ratelimit utilization_rpm=F rate429_rpm=F utilization_tpm=F
 *          rate429_tpm=F
 */
#include <stdio.h>
#include <stdlib.h>

#include "tests/support/benchstat.h"
#include "tests/support/check.h"
#include "tests/support/ratebench.h"

#define RPM 3000       /* 50 requests/s */
#define TPM 300000     /* 5,000 tokens/s, about 47 requests/s */
#define MAX_TOKENS 100 /* max_output_tokens of the alias: the token charge per call */
#define MEASURE_S 50.0

struct outcome {
    double utilization, rate429, steady429;
};

static struct outcome run_case(int tpm_bound)
{
    char rpm_s[32], tpm_s[32], models[512];
    snprintf(rpm_s, sizeof(rpm_s), "%d", tpm_bound ? 0 : RPM);
    snprintf(tpm_s, sizeof(tpm_s), "%d", tpm_bound ? TPM : 0);
    const char *sim_args[] = {"--rpm",           rpm_s,    "--tpm", tpm_s, "--burst-s", "2",
                              "--limit-headers", "openai", NULL};
    snprintf(models, sizeof(models),
             "\"bench-limited\": {\"provider\": \"openai\", \"endpoint\": "
             "\"${SHOAL_SIM_URL}/v1/chat/completions\", \"model\": \"bench-limited\", "
             "\"input_usd_per_mtok\": 0.15, \"output_usd_per_mtok\": 0.6, \"rpm\": %d, "
             "\"tpm\": %d, \"max_output_tokens\": %d}",
             tpm_bound ? 0 : RPM, tpm_bound ? TPM : 0, MAX_TOKENS);
    ratebench_conf_t c = {.workers = 3,
                          .sim_args = sim_args,
                          .extra_models = models,
                          .model = "bench-limited",
                          .job_id = tpm_bound ? "ratelimit-tpm" : "ratelimit-rpm",
                          .tasks = 6000,
                          .measure_s = MEASURE_S};
    char load[64];
    bench_loadavg(load, sizeof(load));
    ratebench_result_t r;
    harness_t *h = ratebench_run(&c, &r);

    int from, to;
    long long steady_limited;
    double served = ratebench_steady_served(&r, 0.2, &from, &to, &steady_limited);
    bench_window_t all = bench_sim_window(r.stats, r.first, r.last + 1);
    long long prompt = (long long)json_integer_value(json_object_get(r.stats, "prompt_tokens"));
    double per_call = r.ok_answers > 0 ? (double)prompt / (double)r.ok_answers + MAX_TOKENS : 0;
    double limit = tpm_bound ? TPM / 60.0 : RPM / 60.0;
    double rate = tpm_bound ? served * per_call : served;
    struct outcome o;
    o.utilization = rate / limit;
    o.rate429 =
        all.served + all.limited > 0 ? (double)all.limited / (double)(all.served + all.limited) : 0;
    double steady_n = (double)(to - from + 1);
    o.steady429 = served * steady_n + (double)steady_limited > 0
                      ? (double)steady_limited / (served * steady_n + (double)steady_limited)
                      : 0;
    printf("%s-bound: limit %.1f %s/s, load average %s at start\n", tpm_bound ? "TPM" : "RPM",
           limit, tpm_bound ? "tokens" : "requests", load);
    printf("  run seconds %d..%d (%d s), steady %d..%d\n", r.first, r.last, r.last - r.first + 1,
           from, to);
    if (tpm_bound)
        printf("  charge per call %.1f tokens (mean prompt + max_tokens)\n", per_call);
    printf("  steady served %.2f requests/s = %.1f %s/s, utilization %.3f\n", served, rate,
           tpm_bound ? "tokens" : "requests", o.utilization);
    printf("  whole run: %lld served, %lld 429s, rate429 %.4f (steady %.4f)\n", all.served,
           all.limited, o.rate429, o.steady429);
    printf("  first burst: %lld served in the first 2 s = %.1f%% of served\n",
           bench_sim_at(r.stats, "served_per_s", r.first) +
               bench_sim_at(r.stats, "served_per_s", r.first + 1),
           all.served ? 100.0 *
                            (double)(bench_sim_at(r.stats, "served_per_s", r.first) +
                                     bench_sim_at(r.stats, "served_per_s", r.first + 1)) /
                            (double)all.served
                      : 0);
    printf("  served per second:");
    for (int i = r.first; i <= r.last; i++)
        printf(" %lld", bench_sim_at(r.stats, "served_per_s", i));
    printf("\n  429s per second:");
    for (int i = r.first; i <= r.last; i++)
        printf(" %lld", bench_sim_at(r.stats, "limited_per_s", i));
    printf("\n");
    fflush(stdout);
    json_decref(r.stats);
    harness_stop(h);
    return o;
}

int main(void)
{
    struct outcome rpm = run_case(0);
    struct outcome tpm = run_case(1);
    printf("RESULT bench=ratelimit utilization_rpm=%.3f rate429_rpm=%.4f utilization_tpm=%.3f "
           "rate429_tpm=%.4f\n",
           rpm.utilization, rpm.rate429, tpm.utilization, tpm.rate429);
    return 0;
}
