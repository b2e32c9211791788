/*
 * The real Prometheus server (Debian's prometheus package, started here on
 * 127.0.0.1 with a config generated for this stack) scrapes a worker, a
 * scheduler and the simulator with --metrics-port on, while a job runs; its
 * HTTP API then shows the series with the values the job must give: every
 * call counted once per model and outcome, the tokens PostgreSQL recorded,
 * the job accepted and completed, its tasks published and no lag left. Each
 * process's /metrics passes `promtool check metrics`. Prometheus is stopped by
 * its PID at the end.
 */
#include <curl/curl.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "stack/proc.h"
#include "tests/support/check.h"
#include "tests/support/harness.h"
#include "tests/support/netport.h"

#define ITEMS 12

/* A port free now (the kernel's choice), for a server started next. */
struct body {
    char *buf;
    size_t len;
};

static size_t on_body(char *p, size_t size, size_t n, void *arg)
{
    struct body *b = arg;
    size_t k = size * n;
    char *nb = realloc(b->buf, b->len + k + 1);
    if (!nb)
        return 0;
    b->buf = nb;
    memcpy(b->buf + b->len, p, k);
    b->len += k;
    b->buf[b->len] = '\0';
    return k;
}

/* GET url; the body (caller frees) or NULL when the request failed or the
 * status was not 200. */
static char *http_get(const char *url)
{
    struct body b = {NULL, 0};
    long code = 0;
    CURL *c = curl_easy_init();
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &b);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, 10L);
    if (curl_easy_perform(c) == CURLE_OK)
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &code);
    curl_easy_cleanup(c);
    if (code != 200) {
        free(b.buf);
        return NULL;
    }
    return b.buf;
}

/* The value of a PromQL expression with one result, or -1 when it has none
 * (yet). */
static double prom_query(int port, const char *expr)
{
    char url[2048];
    char *q = curl_easy_escape(NULL, expr, 0);
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/api/v1/query?query=%s", port, q);
    curl_free(q);
    char *text = http_get(url);
    json_t *doc = text ? json_loads(text, 0, NULL) : NULL;
    free(text);
    json_t *res = json_object_get(json_object_get(doc, "data"), "result");
    double v = -1;
    if (json_array_size(res) == 1) {
        const char *s =
            json_string_value(json_array_get(json_object_get(json_array_get(res, 0), "value"), 1));
        if (s)
            v = strtod(s, NULL);
    }
    json_decref(doc);
    return v;
}

static void wait_value(int port, const char *expr, double want)
{
    double got = -1;
    double deadline = check_now_s() + 90;
    while ((got = prom_query(port, expr)) != want) {
        if (check_now_s() > deadline)
            test_fail("prometheus: %s is %g, expected %g", expr, got, want);
        usleep(250 * 1000);
    }
    fprintf(stderr, "ok: %s = %g\n", expr, got);
}

/* `promtool check metrics` on what GET /metrics of the process at port
 * serves, and that it holds the series named. */
static void promtool_check(harness_t *h, const char *dir, int port, const char *series)
{
    char url[128], path[4096], out[8192];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/metrics", port);
    char *text = http_get(url);
    assert_true(text != NULL);
    assert_str_contains(text, series);
    snprintf(path, sizeof(path), "%s/metrics-%d.txt", dir, port);
    FILE *f = fopen(path, "w");
    assert_true(f != NULL);
    fputs(text, f);
    fclose(f);
    free(text);
    int rc = harness_sh(h, out, sizeof(out), "promtool check metrics < '%s' 2>&1", path);
    if (rc != 0)
        test_fail("promtool check metrics failed for port %d: %s", port, out);
}

int main(void)
{
    char err[512], status[64], arg_w[16], arg_s[16], env_sched[64];
    int port_w = netport_free(), port_sim = netport_free(), port_sched = netport_free();
    snprintf(arg_w, sizeof(arg_w), "%d", port_w);
    snprintf(arg_s, sizeof(arg_s), "%d", port_sim);
    const char *const worker_args[] = {"--metrics-port", arg_w, NULL};
    const char *const sim_args[] = {"--metrics-port", arg_s, NULL};
    harness_conf_t conf = {
        .workers = 1, .schedulers = 1, .worker_args = worker_args, .sim_args = sim_args};
    curl_global_init(CURL_GLOBAL_ALL);
    harness_t *h = harness_start(&conf);
    shoal_devstack_t *ds = harness_stack(h);
    const char *dir = shoal_devstack_workdir(ds);

    /* The scheduler takes its port from the environment twin. */
    snprintf(env_sched, sizeof(env_sched), "SHOAL_METRICS_PORT=%d", port_sched);
    char *const sched_env[] = {env_sched, NULL};
    if (shoal_devstack_restart(ds, "scheduler", 0, sched_env, err, sizeof(err)) != SHOAL_OK)
        test_fail("could not restart the scheduler: %s", err);

    /* Prometheus scraping the three, once a second. */
    int port_prom = netport_free();
    char cfg[4096], tsdb[4096], listen[64], cfgarg[4200], tsdbarg[4200], log[4096];
    snprintf(cfg, sizeof(cfg), "%s/prometheus.yml", dir);
    snprintf(tsdb, sizeof(tsdb), "%s/prometheus-data", dir);
    snprintf(log, sizeof(log), "%s/logs/prometheus.log", dir);
    FILE *f = fopen(cfg, "w");
    assert_true(f != NULL);
    fprintf(f,
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n"
            "scrape_configs:\n"
            "  - job_name: shoal-worker\n    static_configs: [{targets: ['127.0.0.1:%d']}]\n"
            "  - job_name: shoal-scheduler\n    static_configs: [{targets: ['127.0.0.1:%d']}]\n"
            "  - job_name: shoal-sim\n    static_configs: [{targets: ['127.0.0.1:%d']}]\n",
            port_w, port_sched, port_sim);
    fclose(f);
    snprintf(cfgarg, sizeof(cfgarg), "--config.file=%s", cfg);
    snprintf(tsdbarg, sizeof(tsdbarg), "--storage.tsdb.path=%s", tsdb);
    snprintf(listen, sizeof(listen), "--web.listen-address=127.0.0.1:%d", port_prom);
    char *const prom_argv[] = {"prometheus", cfgarg, tsdbarg, listen, NULL};
    shoal_proc_t *prom = shoal_proc_spawn("prometheus", prom_argv, NULL, log, err, sizeof(err));
    if (!prom)
        test_fail("could not start prometheus (scripts/install-deps.sh --test installs it): %s",
                  err);

    /* Every target up: all three processes serve /metrics. */
    wait_value(port_prom, "sum(up{job=~\"shoal-.*\"})", 3);

    char *job = harness_job("prom-1", ITEMS, 1, NULL);
    harness_produce(h, "shoal.jobs", "prom-1", job, strlen(job));
    free(job);
    harness_wait_job(h, "prom-1", 120, status, sizeof(status));
    assert_str_eq(status, "completed");
    long calls =
        harness_long(h, "SELECT count(*) FROM shoal.attempts WHERE job_id = 'prom-1'", NULL);
    long tokens_in =
        harness_long(h, "SELECT sum(tokens_in) FROM shoal.attempts WHERE job_id = 'prom-1'", NULL);
    long tokens_out =
        harness_long(h, "SELECT sum(tokens_out) FROM shoal.attempts WHERE job_id = 'prom-1'", NULL);
    assert_int_eq(calls, ITEMS); /* no faults: one call per task */

    wait_value(port_prom, "sum(shoal_worker_requests_total)", (double)calls);
    wait_value(port_prom, "shoal_worker_requests_total{model=\"sim-small\",outcome=\"ok\"}",
               (double)calls);
    wait_value(port_prom, "sum(shoal_worker_call_duration_seconds_count{outcome=\"ok\"})",
               (double)calls);
    wait_value(port_prom, "sum(shoal_worker_input_tokens_total)", (double)tokens_in);
    wait_value(port_prom, "sum(shoal_worker_output_tokens_total)", (double)tokens_out);
    wait_value(port_prom, "sum(shoal_worker_rate_limited_total)", 0);
    wait_value(port_prom, "count(shoal_worker_db_write_duration_seconds_count > 0)", 1);
    wait_value(port_prom, "sum(shoal_worker_calls_in_flight)", 0);
    wait_value(port_prom, "sum(shoal_worker_tasks)", 0);
    wait_value(port_prom, "shoal_scheduler_jobs_total{outcome=\"accepted\"}", 1);
    wait_value(port_prom, "shoal_scheduler_tasks_published_total{priority=\"normal\"}", ITEMS);
    wait_value(port_prom, "shoal_jobs{status=\"completed\"}", 1);
    wait_value(port_prom, "shoal_jobs{status=\"running\"}", 0);
    wait_value(port_prom, "count(shoal_scheduler_db_write_duration_seconds_count > 0)", 1);
    wait_value(port_prom, "shoal_consumer_lag_messages{priority=\"normal\"}", 0);
    wait_value(port_prom, "sum(shoal_scheduler_collect_errors_total)", 0);
    wait_value(port_prom, "shoal_sim_responses_total{status=\"200\"}", (double)calls);
    wait_value(port_prom, "shoal_sim_repeated_prompts_total", 0);

    promtool_check(h, dir, port_w, "shoal_worker_lane_concurrency_window{model=\"sim-small\"}");
    promtool_check(h, dir, port_sched, "shoal_consumer_lag_messages{priority=\"high\"}");
    promtool_check(h, dir, port_sim, "shoal_sim_requests_total");

    if (shoal_proc_stop(prom, 10000) != SHOAL_OK)
        test_fail("prometheus did not stop on SIGTERM");
    shoal_proc_destroy(prom);
    harness_stop(h);
    curl_global_cleanup();
    return 0;
}
