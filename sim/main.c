/*
 * shoal-sim: the provider simulator as a process, for tests, benchmarks and
 * the dev stack. Starts the server (sim/sim.c), announces the port on stdout
 * ("listening port=N") and optionally in a file, and serves until SIGINT or
 * SIGTERM, then stops cleanly and exits 0.
 */
#include <errno.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "common/log.h"
#include "common/metrics_http.h"
#include "common/opt.h"
#include "common/service.h"
#include "sim/sim.h"

/* The table writes the simulator's settings straight into sim; the fields
 * here are those whose type or meaning differs on the command line. */
struct sim_opts {
    shoal_sim_conf_t sim;
    long port;
    long threads;
    long max_conns;
    long seed;
    const char *fail_marker; /* empty = none */
    const char *port_file;
    const char *log_level;
    const char *log_format;
    long metrics_port;
    const char *metrics_bind;
};

#define OFF(f) offsetof(struct sim_opts, f)
static const struct shoal_opt sim_opts_table[] = {
    {"bind", SHOAL_OPT_STR, OFF(sim.bind), "127.0.0.1", 0, 0, "IPv4 address to listen on"},
    {"port", SHOAL_OPT_INT, OFF(port), "0", 0, 65535, "TCP port; 0 picks a free one"},
    {"latency-ms", SHOAL_OPT_INT, OFF(sim.latency_ms), "0", 0, 3600000,
     "mean delay added to each successful reply, in ms"},
    {"latency-jitter-ms", SHOAL_OPT_INT, OFF(sim.jitter_ms), "0", 0, 3600000,
     "the delay is uniform in latency-ms +/- this, in ms"},
    {"threads", SHOAL_OPT_INT, OFF(threads), "1", 1, 64, "HTTP polling threads"},
    {"max-conns", SHOAL_OPT_INT, OFF(max_conns), "16384", 1, 1000000,
     "concurrent connections accepted"},
    {"rpm", SHOAL_OPT_INT, OFF(sim.rpm), "0", 0, 1000000000, "requests per minute; 0 = unlimited"},
    {"tpm", SHOAL_OPT_INT, OFF(sim.tpm), "0", 0, 2000000000,
     "tokens (prompt + max_tokens, or actual output without it) per minute; 0 = unlimited"},
    {"input-tpm", SHOAL_OPT_INT, OFF(sim.input_tpm), "0", 0, 2000000000,
     "prompt tokens per minute; 0 = unlimited"},
    {"output-tpm", SHOAL_OPT_INT, OFF(sim.output_tpm), "0", 0, 2000000000,
     "output tokens (max_tokens, or actual without it) per minute; 0 = unlimited"},
    {"burst-s", SHOAL_OPT_DOUBLE, OFF(sim.burst_s), "60", 0, 0,
     "limit bucket capacity in seconds of refill (60 = a whole minute)"},
    {"time-scale", SHOAL_OPT_DOUBLE, OFF(sim.time_scale), "1", 0, 0,
     "simulated seconds per real second: limits refill this much faster"},
    {"limit-headers", SHOAL_OPT_STR, OFF(sim.limit_headers), "openai", 0, 0,
     "rate-limit headers and 429 shape: openai, anthropic or none"},
    {"retry-after", SHOAL_OPT_BOOL, OFF(sim.retry_after), "true", 0, 0,
     "send retry-after on 429 answers (--retry-after=false omits it)"},
    {"seed", SHOAL_OPT_INT, OFF(seed), "0", 0, 0, "seed of the fault draws"},
    {"p-5xx", SHOAL_OPT_DOUBLE, OFF(sim.p_5xx), "0", 0, 0,
     "probability of a 500, 502 or 503 answer"},
    {"p-429", SHOAL_OPT_DOUBLE, OFF(sim.p_429), "0", 0, 0,
     "probability of a 429 regardless of the limits"},
    {"p-overloaded", SHOAL_OPT_DOUBLE, OFF(sim.p_overloaded), "0", 0, 0,
     "probability of an overloaded answer (529 Anthropic, 503 OpenAI)"},
    {"p-hang", SHOAL_OPT_DOUBLE, OFF(sim.p_hang), "0", 0, 0,
     "probability that a request is never answered"},
    {"p-malformed", SHOAL_OPT_DOUBLE, OFF(sim.p_malformed), "0", 0, 0,
     "probability of a 200 with a broken body"},
    {"p-truncated", SHOAL_OPT_DOUBLE, OFF(sim.p_truncated), "0", 0, 0,
     "probability of a 200 cut short (finish_reason length, stop_reason max_tokens)"},
    {"p-slow", SHOAL_OPT_DOUBLE, OFF(sim.p_slow), "0", 0, 0,
     "probability of slow-ms extra latency (independent of the other faults)"},
    {"slow-ms", SHOAL_OPT_INT, OFF(sim.slow_ms), "0", 0, 3600000, "extra latency of a slow answer"},
    {"fail-marker", SHOAL_OPT_STR, OFF(fail_marker), "SIM_FAIL_400", 0, 0,
     "a prompt containing this is answered 400; empty = none"},
    {"port-file", SHOAL_OPT_STR, OFF(port_file), NULL, 0, 0,
     "write the bound port and a newline to this file once listening (removed at exit)"},
    {"log-level", SHOAL_OPT_STR, OFF(log_level), "info", 0, 0, "debug, info, warn, error or off"},
    {"log-format", SHOAL_OPT_STR, OFF(log_format), "text", 0, 0, "text or json"},
    SHOAL_METRICS_HTTP_OPTS(struct sim_opts, metrics_port, metrics_bind),
    {0},
};

/* Each connection is a descriptor: lift the soft limit as far as allowed. */
static void raise_fd_limit(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
            shoal_log_warn("sim", "could not raise the open file limit error=\"%s\"",
                           strerror(errno));
    }
}

/* Writes "port\n" to path through a temporary file and rename(2), so a reader
 * never sees a partial number. */
static shoal_err_t write_port_file(const char *path, int port, char *errbuf, size_t errlen)
{
    char tmp[4096];
    if (snprintf(tmp, sizeof(tmp), "%s.tmp.%ld", path, (long)getpid()) >= (int)sizeof(tmp))
        return shoal_err_set(errbuf, errlen, SHOAL_ERR_INVALID, "port file path is too long");
    FILE *f = fopen(tmp, "w");
    if (!f)
        return shoal_err_set(errbuf, errlen, SHOAL_ERR_IO, "could not create \"%s\": %s", tmp,
                             strerror(errno));
    int ok = fprintf(f, "%d\n", port) > 0;
    ok = (fclose(f) == 0) && ok;
    if (!ok || rename(tmp, path) != 0) {
        int e = errno;
        unlink(tmp);
        return shoal_err_set(errbuf, errlen, SHOAL_ERR_IO, "could not write \"%s\": %s", path,
                             strerror(e));
    }
    return SHOAL_OK;
}

/* The simulator's counters as Prometheus series, copied from a snapshot at
 * each scrape (POST /stats/reset shows as a counter reset). */
enum {
    S_REQUESTS,
    S_INFLIGHT,
    S_LIMITED,
    S_PROMPT_TOKENS,
    S_COMPLETION_TOKENS,
    S_REPEATED,
    NSCALAR
};

static const struct {
    shoal_metrics_type_t type;
    const char *name, *help;
} sim_scalars[NSCALAR] = {
    {SHOAL_METRICS_COUNTER, "shoal_sim_requests_total",
     "Requests the simulator received (/stats, /health and /metrics aside)."},
    {SHOAL_METRICS_GAUGE, "shoal_sim_requests_in_flight",
     "Requests received and not yet answered."},
    {SHOAL_METRICS_COUNTER, "shoal_sim_rate_limited_total",
     "429 answers from the simulated rate limits (injected 429s aside)."},
    {SHOAL_METRICS_COUNTER, "shoal_sim_prompt_tokens_total", "Prompt tokens of the 200 answers."},
    {SHOAL_METRICS_COUNTER, "shoal_sim_completion_tokens_total",
     "Completion tokens of the 200 answers."},
    {SHOAL_METRICS_COUNTER, "shoal_sim_repeated_prompts_total",
     "200 answers to a prompt already answered 200 (a task called twice)."},
};

struct sim_series {
    shoal_sim_t *sim;
    shoal_metrics_series_t *scalar[NSCALAR];
    shoal_metrics_family_t *by_status, *injected;
    shoal_sim_stats_t st; /* large: kept here, not on the metrics thread's stack */
};

static void sim_series_init(struct sim_series *ss, shoal_sim_t *sim, shoal_metrics_t *m)
{
    static const char *const status[] = {"status", NULL}, *const kind[] = {"kind", NULL};
    ss->sim = sim;
    for (int i = 0; i < NSCALAR; i++)
        ss->scalar[i] =
            shoal_metrics_series(shoal_metrics_family(m, sim_scalars[i].type, sim_scalars[i].name,
                                                      sim_scalars[i].help, NULL, NULL, 0),
                                 NULL);
    ss->by_status = shoal_metrics_family(m, SHOAL_METRICS_COUNTER, "shoal_sim_responses_total",
                                         "Answers by HTTP status.", status, NULL, 0);
    ss->injected = shoal_metrics_family(m, SHOAL_METRICS_COUNTER, "shoal_sim_injected_faults_total",
                                        "Faults injected, by kind.", kind, NULL, 0);
}

static void sim_collect(void *arg)
{
    struct sim_series *ss = arg;
    shoal_sim_stats_t *st = &ss->st;
    shoal_sim_stats(ss->sim, st);
    const long long scalar[NSCALAR] = {st->requests,          st->inflight,
                                       st->rate_limited,      st->prompt_tokens,
                                       st->completion_tokens, st->repeated_prompts};
    for (int i = 0; i < NSCALAR; i++)
        shoal_metrics_set(ss->scalar[i], (double)scalar[i]);
    for (int code = 100; code < SHOAL_SIM_STATUS_MAX; code++) {
        char text[8];
        const char *const v[] = {text};
        snprintf(text, sizeof(text), "%d", code);
        /* A status seen once keeps its series (at 0 after a reset). */
        if (st->by_status[code])
            shoal_metrics_set(shoal_metrics_series(ss->by_status, v), (double)st->by_status[code]);
    }
    const struct {
        const char *kind;
        long long n;
    } inj[] = {{"5xx", st->injected.http_5xx},
               {"429", st->injected.http_429},
               {"overloaded", st->injected.overloaded},
               {"hang", st->injected.hang},
               {"malformed", st->injected.malformed},
               {"truncated", st->injected.truncated},
               {"slow", st->injected.slow},
               {"fail_marker", st->injected.fail_marker}};
    for (size_t i = 0; i < sizeof(inj) / sizeof(inj[0]); i++) {
        const char *const v[] = {inj[i].kind};
        shoal_metrics_set(shoal_metrics_series(ss->injected, v), (double)inj[i].n);
    }
}

int main(int argc, char **argv)
{
    struct sim_opts o;
    char err[512];

    memset(&o, 0, sizeof(o));
    shoal_sim_conf_init(&o.sim); /* what the table does not set keeps its default */
    int rc = shoal_service_cmdline(
        "shoal-sim", "shoal-sim [options]",
        "Provider simulator: serves the OpenAI (POST /v1/chat/completions) and\n"
        "Anthropic (POST /v1/messages) wire shapes with content derived from the\n"
        "prompt, plus GET /stats, POST /stats/reset and GET /health. Rate limits\n"
        "are continuously refilled buckets answering 429 with the provider's\n"
        "headers; faults are injected at the given rates, deterministic per seed.",
        sim_opts_table, &o, argc, argv, &o.log_level, &o.log_format, NULL);
    if (rc >= 0)
        return rc;
    raise_fd_limit();

    /* The server's threads inherit a mask without the stop signals, so they
     * always reach the main thread, which waits for them below. */
    sigset_t stop_sigs, old;
    sigemptyset(&stop_sigs);
    sigaddset(&stop_sigs, SIGINT);
    sigaddset(&stop_sigs, SIGTERM);
    shoal_service_signals();
    pthread_sigmask(SIG_BLOCK, &stop_sigs, &old);

    o.sim.port = (int)o.port;
    o.sim.threads = (int)o.threads;
    o.sim.max_conns = (unsigned)o.max_conns;
    o.sim.seed = (unsigned long long)o.seed;
    o.sim.fail_marker = o.fail_marker && *o.fail_marker ? o.fail_marker : NULL;
    shoal_sim_t *sim = shoal_sim_new(&o.sim, err, sizeof(err));
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (!sim) {
        shoal_log_error("sim", "could not start the simulator error=\"%s\"", err);
        return EXIT_FAILURE;
    }
    int port = shoal_sim_port(sim);
    if (o.port_file && write_port_file(o.port_file, port, err, sizeof(err)) != SHOAL_OK) {
        shoal_log_error("sim", "could not write the port file error=\"%s\"", err);
        shoal_sim_destroy(sim);
        return EXIT_FAILURE;
    }
    shoal_metrics_t *metrics;
    shoal_metrics_http_t *mhttp = NULL;
    static struct sim_series ss;
    if (o.metrics_port > 0) {
        if (!(metrics = shoal_metrics_new())) {
            shoal_log_error("sim", "out of memory");
            shoal_sim_destroy(sim);
            return EXIT_FAILURE;
        }
        sim_series_init(&ss, sim, metrics);
        shoal_metrics_on_collect(metrics, sim_collect, &ss);
        if (!(mhttp = shoal_metrics_http_new(metrics, o.metrics_bind, (int)o.metrics_port, err,
                                             sizeof(err)))) {
            shoal_log_error("sim", "cannot serve metrics error=\"%s\"", err);
            shoal_metrics_destroy(metrics);
            shoal_sim_destroy(sim);
            return EXIT_FAILURE;
        }
        shoal_log_info("sim", "metrics served bind=%s port=%d", o.metrics_bind,
                       shoal_metrics_http_port(mhttp));
    } else {
        metrics = NULL;
    }
    printf("listening port=%d\n", port);
    fflush(stdout);
    shoal_log_info("sim",
                   "listening bind=%s port=%d latency_ms=%ld jitter_ms=%ld threads=%ld rpm=%ld "
                   "tpm=%ld input_tpm=%ld output_tpm=%ld burst_s=%g time_scale=%g "
                   "limit_headers=%s",
                   o.sim.bind, port, o.sim.latency_ms, o.sim.jitter_ms, o.threads, o.sim.rpm,
                   o.sim.tpm, o.sim.input_tpm, o.sim.output_tpm, o.sim.burst_s, o.sim.time_scale,
                   o.sim.limit_headers);

    while (!shoal_service_stopping())
        shoal_service_sleep_ms(1000);

    shoal_log_info("sim", "stopping");
    shoal_metrics_http_stop(metrics, mhttp); /* its scrapes read sim */
    shoal_sim_destroy(sim);
    if (o.port_file)
        unlink(o.port_file);
    shoal_log_info("sim", "stopped");
    return EXIT_SUCCESS;
}
