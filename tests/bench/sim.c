/*
 * Throughput of the provider simulator: one in-process simulator, one
 * curl-multi client keeping `conns` keep-alive connections busy until
 * `requests` chat completions are answered.
 *
 *   bench-sim_bench [requests [conns [latency_ms]]]   (defaults 100000 64 0)
 *
 * Ends with "RESULT requests=N conns=C latency_ms=L seconds=S req_per_s=R
 * max_5s_per_s=M", M being the highest served rate over any 5 s window of the
 * simulator's own per-second history.
 * Client and server share the machine, so on few cores the number is a lower
 * bound; wrk against shoal-sim measures the server alone.
 */
#include "sim/sim.h"

#include <curl/curl.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "tests/support/check.h"

static const char *const BODY =
    "{\"model\":\"m\",\"messages\":[{\"role\":\"system\",\"content\":\"You are a helpful "
    "assistant.\"},{\"role\":\"user\",\"content\":\"Summarize the following text in one "
    "sentence: the quick brown fox jumps over the lazy dog.\"}]}";

static size_t discard(char *p, size_t sz, size_t n, void *ud)
{
    (void)p;
    (void)ud;
    return sz * n;
}

static long arg(int argc, char **argv, int i, long def, long min, long max)
{
    if (argc <= i)
        return def;
    char *end;
    errno = 0;
    long v = strtol(argv[i], &end, 10);
    if (errno || end == argv[i] || *end || v < min || v > max) {
        fprintf(stderr, "sim_bench: argument %d must be a whole number in %ld..%ld\n", i, min, max);
        exit(2);
    }
    return v;
}

int main(int argc, char **argv)
{
    long requests = arg(argc, argv, 1, 100000, 1, 100000000);
    long conns = arg(argc, argv, 2, 64, 1, 8000);
    long latency = arg(argc, argv, 3, 0, 0, 60000);
    char err[256], url[128];

    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    assert_true(curl_global_init(CURL_GLOBAL_DEFAULT) == CURLE_OK);

    shoal_sim_conf_t conf;
    shoal_sim_conf_init(&conf);
    conf.latency_ms = latency;
    shoal_sim_t *sim = shoal_sim_new(&conf, err, sizeof(err));
    if (!sim)
        test_fail("shoal_sim_new: %s", err);
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/v1/chat/completions", shoal_sim_port(sim));

    CURLM *m = curl_multi_init();
    assert_true(m != NULL);
    curl_multi_setopt(m, CURLMOPT_MAXCONNECTS, conns);
    struct curl_slist *hdr = curl_slist_append(NULL, "Content-Type: application/json");
    long started = 0, done = 0, failed = 0;
    for (long i = 0; i < conns && started < requests; i++, started++) {
        CURL *e = curl_easy_init();
        assert_true(e != NULL);
        curl_easy_setopt(e, CURLOPT_URL, url);
        curl_easy_setopt(e, CURLOPT_HTTPHEADER, hdr);
        curl_easy_setopt(e, CURLOPT_POSTFIELDS, BODY);
        curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, discard);
        curl_easy_setopt(e, CURLOPT_TIMEOUT, 60L);
        curl_multi_add_handle(m, e);
    }

    double t0 = check_now_s();
    int running = 1;
    while (done < requests) {
        assert_true(curl_multi_perform(m, &running) == CURLM_OK);
        CURLMsg *msg;
        int left;
        while ((msg = curl_multi_info_read(m, &left)) != NULL) {
            if (msg->msg != CURLMSG_DONE)
                continue;
            CURL *e = msg->easy_handle;
            long status = 0;
            curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &status);
            if (msg->data.result != CURLE_OK || status != 200)
                failed++;
            done++;
            curl_multi_remove_handle(m, e);
            if (started < requests) {
                started++;
                curl_multi_add_handle(m, e);
            } else {
                curl_easy_cleanup(e);
            }
        }
        if (done < requests)
            curl_multi_poll(m, NULL, 0, 100, NULL);
    }
    double secs = check_now_s() - t0;

    static shoal_sim_stats_t st; /* about 20 KiB: off the stack */
    shoal_sim_stats(sim, &st);
    long long best = 0;
    for (int i = 0; i < st.history_len; i++) {
        long long w = 0;
        for (int k = i; k < i + 5 && k < st.history_len; k++)
            w += st.served_per_s[k];
        if (w > best)
            best = w;
    }
    curl_multi_cleanup(m);
    curl_slist_free_all(hdr);
    shoal_sim_destroy(sim);
    curl_global_cleanup();

    printf("served=%lld failed=%ld max_inflight=%lld\n", st.by_status[200], failed,
           st.max_inflight);
    printf("RESULT bench=sim requests=%ld conns=%ld latency_ms=%ld seconds=%.3f req_per_s=%.0f "
           "max_5s_per_s=%.0f\n",
           done, conns, latency, secs, (double)done / secs, (double)best / 5.0);
    return failed ? 1 : 0;
}
