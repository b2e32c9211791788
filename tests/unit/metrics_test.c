/*
 * common/metrics and common/metrics_http: a small registry renders byte for
 * byte in the Prometheus text format 0.0.4 (HELP and label escaping,
 * histogram buckets cumulated up to le="+Inf", _sum and _count), families
 * and series are found again instead of duplicated, bad names are refused,
 * updates from several threads all count, collect callbacks run before each
 * render, and GET /metrics serves the same text over HTTP.
 */
#include "common/metrics.h"

#include <curl/curl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "common/metrics_http.h"
#include "tests/support/check.h"

static void test_render(void)
{
    shoal_metrics_t *m = shoal_metrics_new();
    assert_true(m != NULL);
    const char *const model_outcome[] = {"model", "outcome", NULL};
    shoal_metrics_family_t *req =
        shoal_metrics_family(m, SHOAL_METRICS_COUNTER, "shoal_requests_total",
                             "Model calls by outcome.", model_outcome, NULL, 0);
    shoal_metrics_family_t *inflight =
        shoal_metrics_family(m, SHOAL_METRICS_GAUGE, "shoal_inflight",
                             "Calls in flight\\now.\nSecond line", NULL, NULL, 0);
    const double b[] = {0.1, 0.5, 2.5};
    const char *const model[] = {"model", NULL};
    shoal_metrics_family_t *lat = shoal_metrics_family(
        m, SHOAL_METRICS_HISTOGRAM, "shoal_latency_seconds", "Call latency.", model, b, 3);
    assert_true(req && inflight && lat);

    const char *const v1[] = {"sim-small", "ok"};
    const char *const v2[] = {"we\"ird\\na\nme", "rate_limited"};
    shoal_metrics_series_t *s1 = shoal_metrics_series(req, v1);
    shoal_metrics_series_t *s2 = shoal_metrics_series(req, v2);
    assert_true(s1 && s2 && s1 != s2);
    assert_true(shoal_metrics_series(req, v1) == s1); /* found again, not duplicated */
    shoal_metrics_add(s1, 3);
    shoal_metrics_add(s1, 2);
    shoal_metrics_add(s2, 1);
    shoal_metrics_series_t *g = shoal_metrics_series(inflight, NULL);
    shoal_metrics_set(g, 7);
    shoal_metrics_add(g, -2.5);
    const char *const mv[] = {"sim-small"};
    shoal_metrics_series_t *h = shoal_metrics_series(lat, mv);
    shoal_metrics_observe(h, 0.05); /* <= 0.1 */
    shoal_metrics_observe(h, 0.1);  /* on a bound: counts in that bucket */
    shoal_metrics_observe(h, 1);    /* <= 2.5 */
    shoal_metrics_observe(h, 10);   /* +Inf only */
    assert_int_eq((long)shoal_metrics_value(s1), 5);
    assert_int_eq((long)shoal_metrics_value(h), 4);

    size_t len = 0;
    char *text = shoal_metrics_render(m, &len);
    const char *want =
        "# HELP shoal_requests_total Model calls by outcome.\n"
        "# TYPE shoal_requests_total counter\n"
        "shoal_requests_total{model=\"sim-small\",outcome=\"ok\"} 5\n"
        "shoal_requests_total{model=\"we\\\"ird\\\\na\\nme\",outcome=\"rate_limited\"} 1\n"
        "# HELP shoal_inflight Calls in flight\\\\now.\\nSecond line\n"
        "# TYPE shoal_inflight gauge\n"
        "shoal_inflight 4.5\n"
        "# HELP shoal_latency_seconds Call latency.\n"
        "# TYPE shoal_latency_seconds histogram\n"
        "shoal_latency_seconds_bucket{model=\"sim-small\",le=\"0.1\"} 2\n"
        "shoal_latency_seconds_bucket{model=\"sim-small\",le=\"0.5\"} 2\n"
        "shoal_latency_seconds_bucket{model=\"sim-small\",le=\"2.5\"} 3\n"
        "shoal_latency_seconds_bucket{model=\"sim-small\",le=\"+Inf\"} 4\n"
        "shoal_latency_seconds_sum{model=\"sim-small\"} 11.15\n"
        "shoal_latency_seconds_count{model=\"sim-small\"} 4\n";
    assert_str_eq(text, want);
    assert_int_eq(len, strlen(want));
    free(text);
    shoal_metrics_destroy(m);
}

static void test_refusals(void)
{
    shoal_metrics_t *m = shoal_metrics_new();
    const char *const bad_label[] = {"9lives", NULL};
    const char *const le[] = {"le", NULL};
    const char *const ok[] = {"model", NULL};
    const double unsorted[] = {1, 0.5};
    assert_true(!shoal_metrics_family(m, SHOAL_METRICS_GAUGE, "bad-name", "", NULL, NULL, 0));
    assert_true(!shoal_metrics_family(m, SHOAL_METRICS_GAUGE, "x", "", bad_label, NULL, 0));
    assert_true(!shoal_metrics_family(m, SHOAL_METRICS_HISTOGRAM, "h", "", le, NULL, 0));
    assert_true(!shoal_metrics_family(m, SHOAL_METRICS_HISTOGRAM, "h", "", NULL, unsorted, 2));
    shoal_metrics_family_t *f = shoal_metrics_family(m, SHOAL_METRICS_GAUGE, "g", "", ok, NULL, 0);
    assert_true(f != NULL);
    /* The same name again: the same family when the shape matches, else none. */
    assert_true(shoal_metrics_family(m, SHOAL_METRICS_GAUGE, "g", "", ok, NULL, 0) == f);
    assert_true(!shoal_metrics_family(m, SHOAL_METRICS_COUNTER, "g", "", ok, NULL, 0));
    assert_true(!shoal_metrics_family(m, SHOAL_METRICS_GAUGE, "g", "", NULL, NULL, 0));
    assert_true(!shoal_metrics_series(f, NULL)); /* a label value is missing */
    shoal_metrics_add(NULL, 1);                  /* metrics off: no-ops */
    shoal_metrics_observe(NULL, 1);
    /* An empty registry renders as empty text. */
    shoal_metrics_t *empty = shoal_metrics_new();
    size_t len = 1;
    char *text = shoal_metrics_render(empty, &len);
    assert_str_eq(text, "");
    assert_int_eq(len, 0);
    free(text);
    shoal_metrics_destroy(empty);
    shoal_metrics_destroy(m);
}

#define THREADS 4
#define PER_THREAD 100000

static void *hammer(void *arg)
{
    shoal_metrics_series_t **s = arg;
    for (int i = 0; i < PER_THREAD; i++) {
        shoal_metrics_add(s[0], 1);
        shoal_metrics_observe(s[1], (double)(i % 3));
    }
    return NULL;
}

static void test_threads(void)
{
    shoal_metrics_t *m = shoal_metrics_new();
    const double b[] = {0.5, 1.5};
    shoal_metrics_series_t *s[2] = {
        shoal_metrics_series(
            shoal_metrics_family(m, SHOAL_METRICS_COUNTER, "c_total", "c", NULL, NULL, 0), NULL),
        shoal_metrics_series(
            shoal_metrics_family(m, SHOAL_METRICS_HISTOGRAM, "h_seconds", "h", NULL, b, 2), NULL)};
    pthread_t t[THREADS];
    for (int i = 0; i < THREADS; i++)
        assert_int_eq(pthread_create(&t[i], NULL, hammer, s), 0);
    for (int i = 0; i < THREADS; i++)
        pthread_join(t[i], NULL);
    assert_int_eq((long)shoal_metrics_value(s[0]), THREADS * PER_THREAD);
    assert_int_eq((long)shoal_metrics_value(s[1]), THREADS * PER_THREAD);
    char *text = shoal_metrics_render(m, NULL);
    /* i % 3 gives 0 (<= 0.5), 1 (<= 1.5), 2 (+Inf): 33334, 33333, 33333 per thread. */
    assert_str_contains(text, "h_seconds_bucket{le=\"0.5\"} 133336\n");
    assert_str_contains(text, "h_seconds_bucket{le=\"1.5\"} 266668\n");
    assert_str_contains(text, "h_seconds_bucket{le=\"+Inf\"} 400000\n");
    assert_str_contains(text, "h_seconds_sum 399996\n");
    free(text);
    shoal_metrics_destroy(m);
}

struct collected {
    shoal_metrics_series_t *s;
    int calls;
};

static void collect(void *arg)
{
    struct collected *c = arg;
    c->calls++;
    shoal_metrics_set(c->s, 40 + c->calls);
}

struct body {
    char buf[4096];
    size_t len;
};

static size_t on_body(char *p, size_t size, size_t n, void *arg)
{
    struct body *b = arg;
    size_t k = size * n;
    if (b->len + k >= sizeof(b->buf))
        return 0;
    memcpy(b->buf + b->len, p, k);
    b->len += k;
    b->buf[b->len] = '\0';
    return k;
}

static long get(int port, const char *path, struct body *b)
{
    char url[128];
    long code = 0;
    snprintf(url, sizeof(url), "http://127.0.0.1:%d%s", port, path);
    b->len = 0;
    b->buf[0] = '\0';
    CURL *c = curl_easy_init();
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, b);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, 10L);
    if (curl_easy_perform(c) == CURLE_OK)
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &code);
    curl_easy_cleanup(c);
    return code;
}

static void test_http(void)
{
    char err[256];
    shoal_metrics_t *m = shoal_metrics_new();
    struct collected c = {0};
    c.s = shoal_metrics_series(
        shoal_metrics_family(m, SHOAL_METRICS_GAUGE, "answer", "Set at scrape.", NULL, NULL, 0),
        NULL);
    assert_int_eq(shoal_metrics_on_collect(m, collect, &c), 0);
    assert_true(!shoal_metrics_http_new(m, "not-an-address", 0, err, sizeof(err)));
    assert_str_contains(err, "not an IPv4 address");
    shoal_metrics_http_t *h = shoal_metrics_http_new(m, "127.0.0.1", 0, err, sizeof(err));
    assert_true(h != NULL);
    int port = shoal_metrics_http_port(h);
    assert_true(port > 0);
    /* The port is taken now: a second server on it says so. */
    assert_true(!shoal_metrics_http_new(m, "127.0.0.1", port, err, sizeof(err)));
    assert_str_contains(err, "could not listen");

    struct body b;
    assert_int_eq(get(port, "/metrics", &b), 200);
    assert_str_eq(b.buf, "# HELP answer Set at scrape.\n# TYPE answer gauge\nanswer 41\n");
    assert_int_eq(get(port, "/metrics", &b), 200);
    assert_str_contains(b.buf, "answer 42\n");
    assert_int_eq(c.calls, 2);
    assert_int_eq(get(port, "/other", &b), 404);
    shoal_metrics_http_destroy(h);
    shoal_metrics_destroy(m);
}

int main(void)
{
    curl_global_init(CURL_GLOBAL_ALL);
    test_render();
    test_refusals();
    test_threads();
    test_http();
    curl_global_cleanup();
    return 0;
}
