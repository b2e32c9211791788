/*
 * The provider simulator over real HTTP: deterministic content in both wire
 * shapes, token counts, error statuses, the counters behind /stats, latency
 * that does not serialize requests, and a clean stop with replies still
 * sleeping.
 */
#include "sim/sim.h"

#include <curl/curl.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tests/support/check.h"

struct resp {
    long status;
    char *body;
    size_t len;
};

static size_t on_data(char *p, size_t sz, size_t n, void *ud)
{
    struct resp *r = ud;
    char *b = realloc(r->body, r->len + sz * n + 1);
    if (!b)
        return 0;
    memcpy(b + r->len, p, sz * n);
    r->body = b;
    r->len += sz * n;
    r->body[r->len] = '\0';
    return sz * n;
}

static void resp_free(struct resp *r)
{
    free(r->body);
    memset(r, 0, sizeof(*r));
}

/* One request on a reused handle, so keep-alive connections are exercised.
 * body NULL means GET. */
static void http(CURL *h, int port, const char *path, const char *body, size_t body_len,
                 struct resp *out)
{
    char url[256];
    struct curl_slist *hdr = curl_slist_append(NULL, "Content-Type: application/json");

    memset(out, 0, sizeof(*out));
    snprintf(url, sizeof(url), "http://127.0.0.1:%d%s", port, path);
    curl_easy_reset(h);
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdr);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, out);
    curl_easy_setopt(h, CURLOPT_TIMEOUT, 30L);
    if (body) {
        curl_easy_setopt(h, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)body_len);
    }
    CURLcode rc = curl_easy_perform(h);
    curl_slist_free_all(hdr);
    if (rc != CURLE_OK)
        test_fail("%s: %s", path, curl_easy_strerror(rc));
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &out->status);
}

static void post(CURL *h, int port, const char *path, const char *body, struct resp *out)
{
    http(h, port, path, body, strlen(body), out);
}

/* The spec's hash, written out independently of the simulator's. */
static void hash_hex(const char *const *parts, size_t n, char hex[17])
{
    uint64_t h = 0xcbf29ce484222325ULL;
    for (size_t i = 0; i < n; i++)
        for (const unsigned char *p = (const unsigned char *)parts[i]; *p; p++) {
            h ^= *p;
            h *= 0x100000001b3ULL;
        }
    snprintf(hex, 17, "%016" PRIx64, h);
    assert_true(h == shoal_sim_hash(parts, n));
}

static long long ceil4(size_t n)
{
    return (long long)((n + 3) / 4);
}

static json_t *parse(const struct resp *r)
{
    json_error_t e;
    json_t *j = json_loadb(r->body ? r->body : "", r->len, 0, &e);
    if (!j)
        test_fail("reply is not JSON (%s): %s", e.text, r->body ? r->body : "");
    return j;
}

static long long jint(json_t *o, const char *path_a, const char *path_b)
{
    json_t *v = json_object_get(o, path_a);
    if (path_b)
        v = json_object_get(v, path_b);
    assert_true(json_is_integer(v));
    return json_integer_value(v);
}

static const char *jstr(json_t *o, const char *key)
{
    const char *s = json_string_value(json_object_get(o, key));
    if (!s)
        test_fail("no string \"%s\"", key);
    return s;
}

static void test_openai_text(CURL *h, int port)
{
    const char *parts[] = {"You are terse.", "Summarize: the cat sat"};
    char hex[17], want[256];
    struct resp r;

    post(h, port, "/v1/chat/completions",
         "{\"model\":\"sim-small\",\"max_tokens\":50,\"messages\":["
         "{\"role\":\"system\",\"content\":\"You are terse.\"},"
         "{\"role\":\"user\",\"content\":\"Summarize: the cat sat\"}]}",
         &r);
    assert_int_eq(r.status, 200);
    hash_hex(parts, 2, hex);
    snprintf(want, sizeof(want), "sim %s Summarize: the cat sat", hex);

    json_t *j = parse(&r);
    assert_true(!strncmp(jstr(j, "id"), "chatcmpl-sim-", 13));
    assert_str_eq(jstr(j, "object"), "chat.completion");
    assert_str_eq(jstr(j, "model"), "sim-small");
    assert_true(jint(j, "created", NULL) > 1600000000);
    json_t *c0 = json_array_get(json_object_get(j, "choices"), 0);
    assert_int_eq(jint(c0, "index", NULL), 0);
    assert_str_eq(jstr(c0, "finish_reason"), "stop");
    json_t *msg = json_object_get(c0, "message");
    assert_str_eq(jstr(msg, "role"), "assistant");
    assert_str_eq(jstr(msg, "content"), want);
    long long p = ceil4(strlen(parts[0]) + strlen(parts[1]));
    long long c = ceil4(strlen(want));
    assert_int_eq(jint(j, "usage", "prompt_tokens"), p);
    assert_int_eq(jint(j, "usage", "completion_tokens"), c);
    assert_int_eq(jint(j, "usage", "total_tokens"), p + c);
    json_decref(j);
    resp_free(&r);
}

static void test_openai_json(CURL *h, int port)
{
    const char *parts[] = {"list the colors"};
    char hex[17], want[256];
    struct resp r;

    post(h, port, "/v1/chat/completions",
         "{\"model\":\"m\",\"response_format\":{\"type\":\"json_object\"},"
         "\"messages\":[{\"role\":\"user\",\"content\":\"list the colors\"}]}",
         &r);
    assert_int_eq(r.status, 200);
    hash_hex(parts, 1, hex);
    snprintf(want, sizeof(want), "{\"sim\":\"%s\",\"echo\":\"list the colors\"}", hex);
    json_t *j = parse(&r);
    json_t *msg = json_object_get(json_array_get(json_object_get(j, "choices"), 0), "message");
    const char *content = jstr(msg, "content");
    assert_str_eq(content, want);
    json_t *inner = json_loads(content, 0, NULL);
    assert_true(inner != NULL);
    assert_str_eq(jstr(inner, "sim"), hex);
    assert_str_eq(jstr(inner, "echo"), "list the colors");
    assert_int_eq(jint(j, "usage", "prompt_tokens"), ceil4(strlen(parts[0])));
    assert_int_eq(jint(j, "usage", "completion_tokens"), ceil4(strlen(want)));
    json_decref(inner);
    json_decref(j);
    resp_free(&r);

    /* The word JSON in the last user message asks for JSON too; a tiny prompt
     * still counts one prompt token. */
    const char *p2[] = {"x", "ok", "JSON"};
    post(h, port, "/v1/chat/completions",
         "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"},"
         "{\"role\":\"assistant\",\"content\":\"ok\"},{\"role\":\"user\",\"content\":\"JSON\"}]}",
         &r);
    assert_int_eq(r.status, 200);
    hash_hex(p2, 3, hex);
    snprintf(want, sizeof(want), "{\"sim\":\"%s\",\"echo\":\"JSON\"}", hex);
    j = parse(&r);
    msg = json_object_get(json_array_get(json_object_get(j, "choices"), 0), "message");
    assert_str_eq(jstr(msg, "content"), want);
    assert_int_eq(jint(j, "usage", "prompt_tokens"), 2);
    json_decref(j);
    resp_free(&r);

    post(h, port, "/v1/chat/completions",
         "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"\"}]}", &r);
    assert_int_eq(r.status, 200);
    j = parse(&r);
    assert_int_eq(jint(j, "usage", "prompt_tokens"), 1);
    json_decref(j);
    resp_free(&r);
}

static void test_anthropic(CURL *h, int port)
{
    const char *parts[] = {"Be brief.", "first question", "first answer", "second question"};
    char hex[17], want[256];
    struct resp r;

    post(h, port, "/v1/messages",
         "{\"model\":\"claude-sim\",\"max_tokens\":100,\"system\":\"Be brief.\",\"messages\":["
         "{\"role\":\"user\",\"content\":\"first question\"},"
         "{\"role\":\"assistant\",\"content\":\"first answer\"},"
         "{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"second \"},"
         "{\"type\":\"text\",\"text\":\"question\"}]}]}",
         &r);
    assert_int_eq(r.status, 200);
    hash_hex(parts, 4, hex);
    snprintf(want, sizeof(want), "sim %s second question", hex);
    json_t *j = parse(&r);
    assert_true(!strncmp(jstr(j, "id"), "msg_sim_", 8));
    assert_str_eq(jstr(j, "type"), "message");
    assert_str_eq(jstr(j, "role"), "assistant");
    assert_str_eq(jstr(j, "model"), "claude-sim");
    assert_str_eq(jstr(j, "stop_reason"), "end_turn");
    json_t *c0 = json_array_get(json_object_get(j, "content"), 0);
    assert_str_eq(jstr(c0, "type"), "text");
    assert_str_eq(jstr(c0, "text"), want);
    size_t chars = 0;
    for (int i = 0; i < 4; i++)
        chars += strlen(parts[i]);
    assert_int_eq(jint(j, "usage", "input_tokens"), ceil4(chars));
    assert_int_eq(jint(j, "usage", "output_tokens"), ceil4(strlen(want)));
    json_decref(j);
    resp_free(&r);
}

static void check_error(struct resp *r, long status, const char *type)
{
    assert_int_eq(r->status, status);
    json_t *j = parse(r);
    json_t *e = json_object_get(j, "error");
    assert_str_eq(jstr(e, "type"), type);
    assert_true(strlen(jstr(e, "message")) > 0);
    json_decref(j);
    resp_free(r);
}

static void test_errors(CURL *h, int port)
{
    struct resp r;

    post(h, port, "/v1/chat/completions", "this is not json", &r);
    check_error(&r, 400, "invalid_request_error");
    post(h, port, "/v1/chat/completions", "{\"model\":\"m\"}", &r);
    check_error(&r, 400, "invalid_request_error");
    post(h, port, "/v1/chat/completions", "{\"model\":\"m\",\"messages\":[]}", &r);
    check_error(&r, 400, "invalid_request_error");
    post(h, port, "/v1/chat/completions", "", &r);
    check_error(&r, 400, "invalid_request_error");
    post(h, port, "/v1/messages", "{\"model\":\"m\",\"messages\":[{\"role\":\"user\"}]}", &r);
    check_error(&r, 400, "invalid_request_error");
    post(h, port, "/v1/messages",
         "{\"model\":\"m\",\"max_tokens\":5,\"messages\":[{\"role\":\"user\",\"content\":7}]}", &r);
    check_error(&r, 400, "invalid_request_error");

    http(h, port, "/no/such/path", NULL, 0, &r);
    check_error(&r, 404, "not_found_error");
    http(h, port, "/v1/chat/completions", NULL, 0, &r);
    assert_int_eq(r.status, 405);
    resp_free(&r);

    size_t big = SHOAL_SIM_MAX_BODY_DEFAULT + 1;
    char *body = malloc(big);
    assert_true(body != NULL);
    memset(body, ' ', big);
    http(h, port, "/v1/chat/completions", body, big, &r);
    free(body);
    check_error(&r, 413, "request_too_large");

    http(h, port, "/health", NULL, 0, &r);
    assert_int_eq(r.status, 200);
    assert_str_contains(r.body, "ok");
    resp_free(&r);
}

static json_t *get_stats(CURL *h, int port)
{
    struct resp r;
    http(h, port, "/stats", NULL, 0, &r);
    assert_int_eq(r.status, 200);
    json_t *j = parse(&r);
    resp_free(&r);
    return j;
}

static void test_stats(CURL *h, shoal_sim_t *sim, int port)
{
    struct resp r;
    shoal_sim_stats_t st;

    /* Earlier tests: 5 replies with 200, 6 with 400, one each of 404, 405,
     * 413. */
    json_t *j = get_stats(h, port);
    assert_int_eq(jint(j, "requests", NULL), 14);
    assert_int_eq(jint(j, "by_status", "200"), 5);
    assert_int_eq(jint(j, "by_status", "400"), 6);
    assert_int_eq(jint(j, "by_status", "404"), 1);
    assert_int_eq(jint(j, "by_status", "413"), 1);
    assert_int_eq(jint(j, "distinct_prompts", NULL), 5);
    assert_int_eq(jint(j, "repeated_prompts", NULL), 0);
    assert_int_eq(jint(j, "inflight", NULL), 0);
    assert_int_ge(jint(j, "max_inflight", NULL), 1);
    shoal_sim_stats(sim, &st);
    assert_int_eq(st.requests, 14);
    assert_int_eq(st.by_status[405], 1);
    assert_int_eq(st.prompt_tokens, jint(j, "prompt_tokens", NULL));
    assert_int_eq(st.completion_tokens, jint(j, "completion_tokens", NULL));
    assert_true(st.prompt_tokens > 0 && st.completion_tokens > 0);
    json_decref(j);

    post(h, port, "/stats/reset", "", &r);
    assert_int_eq(r.status, 200);
    resp_free(&r);
    shoal_sim_stats(sim, &st);
    assert_int_eq(st.requests, 0);
    assert_int_eq(st.by_status[200], 0);
    assert_int_eq(st.distinct_prompts, 0);
    assert_int_eq(st.prompt_tokens, 0);

    /* The same prompt twice, in both shapes: repeats are per prompt hash. */
    const char *oa = "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"twice\"}]}";
    const char *an = "{\"model\":\"m\",\"max_tokens\":9,"
                     "\"messages\":[{\"role\":\"user\",\"content\":\"twice\"}]}";
    post(h, port, "/v1/chat/completions", oa, &r);
    assert_int_eq(r.status, 200);
    resp_free(&r);
    post(h, port, "/v1/messages", an, &r);
    assert_int_eq(r.status, 200);
    resp_free(&r);
    post(h, port, "/v1/chat/completions",
         "{\"model\":\"m\",\"messages\":"
         "[{\"role\":\"user\",\"content\":\"once\"}]}",
         &r);
    assert_int_eq(r.status, 200);
    resp_free(&r);

    j = get_stats(h, port);
    assert_int_eq(jint(j, "requests", NULL), 3);
    assert_int_eq(jint(j, "by_status", "200"), 3);
    assert_true(json_object_get(json_object_get(j, "by_status"), "400") == NULL);
    assert_int_eq(jint(j, "distinct_prompts", NULL), 2);
    assert_int_eq(jint(j, "repeated_prompts", NULL), 1);
    assert_int_eq(jint(j, "prompt_tokens", NULL), 2 + 2 + 1);
    assert_int_eq(jint(j, "authorized_requests", NULL), 0);
    json_decref(j);

    /* A request with an API key header is counted as authorized. */
    char url[128];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/v1/chat/completions", port);
    struct curl_slist *hdr = curl_slist_append(NULL, "Authorization: Bearer test-key");
    memset(&r, 0, sizeof(r));
    curl_easy_reset(h);
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdr);
    curl_easy_setopt(h, CURLOPT_POSTFIELDS, oa);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &r);
    assert_int_eq(curl_easy_perform(h), CURLE_OK);
    curl_slist_free_all(hdr);
    resp_free(&r);
    j = get_stats(h, port);
    assert_int_eq(jint(j, "authorized_requests", NULL), 1);
    json_decref(j);
}

#define BODY_MAX 128

/* n concurrent requests with distinct prompts; returns the wall time. */
static double run_concurrent(int port, int n)
{
    CURLM *m = curl_multi_init();
    CURL **easy = calloc((size_t)n, sizeof(*easy));
    struct resp *rs = calloc((size_t)n, sizeof(*rs));
    char *bodies = calloc((size_t)n, BODY_MAX);
    char url[128];
    assert_true(m && easy && rs && bodies);

    snprintf(url, sizeof(url), "http://127.0.0.1:%d/v1/chat/completions", port);
    double t0 = check_now_s();
    for (int i = 0; i < n; i++) {
        snprintf(bodies + (size_t)i * BODY_MAX, BODY_MAX,
                 "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"item %d\"}]}", i);
        easy[i] = curl_easy_init();
        assert_true(easy[i] != NULL);
        curl_easy_setopt(easy[i], CURLOPT_URL, url);
        curl_easy_setopt(easy[i], CURLOPT_POSTFIELDS, bodies + (size_t)i * BODY_MAX);
        curl_easy_setopt(easy[i], CURLOPT_WRITEFUNCTION, on_data);
        curl_easy_setopt(easy[i], CURLOPT_WRITEDATA, &rs[i]);
        curl_easy_setopt(easy[i], CURLOPT_TIMEOUT, 30L);
        curl_multi_add_handle(m, easy[i]);
    }
    int running = 1;
    while (running) {
        assert_true(curl_multi_perform(m, &running) == CURLM_OK);
        if (running)
            curl_multi_poll(m, NULL, 0, 100, NULL);
    }
    double elapsed = check_now_s() - t0;

    CURLMsg *msg;
    int left, done = 0;
    while ((msg = curl_multi_info_read(m, &left)) != NULL) {
        if (msg->msg != CURLMSG_DONE)
            continue;
        if (msg->data.result != CURLE_OK)
            test_fail("concurrent request: %s", curl_easy_strerror(msg->data.result));
        done++;
    }
    assert_int_eq(done, n);
    for (int i = 0; i < n; i++) {
        long status = 0;
        char want[64];
        curl_easy_getinfo(easy[i], CURLINFO_RESPONSE_CODE, &status);
        assert_int_eq(status, 200);
        snprintf(want, sizeof(want), "item %d\"", i);
        assert_str_contains(rs[i].body, want);
        curl_multi_remove_handle(m, easy[i]);
        curl_easy_cleanup(easy[i]);
        free(rs[i].body);
    }
    curl_multi_cleanup(m);
    free(easy);
    free(rs);
    free(bodies);
    return elapsed;
}

static void test_latency(void)
{
    shoal_sim_conf_t conf;
    char err[256];

    shoal_sim_conf_init(&conf);
    conf.latency_ms = 200;
    conf.jitter_ms = 20;
    shoal_sim_t *sim = shoal_sim_new(&conf, err, sizeof(err));
    if (!sim)
        test_fail("shoal_sim_new: %s", err);

    /* Serial latency would need 50 * 180 ms = 9 s at least. */
    double elapsed = run_concurrent(shoal_sim_port(sim), 50);
    printf("50 concurrent requests at 200+-20 ms latency took %.3f s\n", elapsed);
    assert_true(elapsed < 2.0);
    assert_true(elapsed >= 0.17);

    shoal_sim_stats_t st;
    shoal_sim_stats(sim, &st);
    assert_int_eq(st.by_status[200], 50);
    assert_int_eq(st.distinct_prompts, 50);
    assert_int_eq(st.repeated_prompts, 0);
    assert_int_ge(st.max_inflight, 10);
    assert_wait((shoal_sim_stats(sim, &st), st.inflight == 0), 5, "inflight to drop to 0");
    shoal_sim_destroy(sim);
}

/* Destroying the simulator while a reply sleeps must wake it, not abort. */
static void test_stop_while_sleeping(void)
{
    shoal_sim_conf_t conf;
    shoal_sim_stats_t st;
    char err[256], url[128];
    struct resp r = {0};

    shoal_sim_conf_init(&conf);
    conf.latency_ms = 60000;
    shoal_sim_t *sim = shoal_sim_new(&conf, err, sizeof(err));
    if (!sim)
        test_fail("shoal_sim_new: %s", err);

    CURLM *m = curl_multi_init();
    CURL *e = curl_easy_init();
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/v1/chat/completions", shoal_sim_port(sim));
    curl_easy_setopt(e, CURLOPT_URL, url);
    curl_easy_setopt(e, CURLOPT_POSTFIELDS,
                     "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"zz\"}]}");
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, &r);
    curl_easy_setopt(e, CURLOPT_TIMEOUT, 30L);
    curl_multi_add_handle(m, e);
    int running = 1;
    assert_wait((curl_multi_perform(m, &running), shoal_sim_stats(sim, &st), st.requests == 1), 10,
                "the request to reach the simulator");
    assert_int_eq(st.inflight, 1);

    double t0 = check_now_s();
    shoal_sim_destroy(sim);
    assert_true(check_now_s() - t0 < 10.0);
    while (running) {
        curl_multi_perform(m, &running);
        if (running)
            curl_multi_poll(m, NULL, 0, 100, NULL);
    }
    curl_multi_remove_handle(m, e);
    curl_easy_cleanup(e);
    curl_multi_cleanup(m);
    free(r.body);
}

static void test_bad_conf(void)
{
    shoal_sim_conf_t conf;
    char err[256] = "";

    shoal_sim_conf_init(&conf);
    conf.bind = "not-an-address";
    assert_true(shoal_sim_new(&conf, err, sizeof(err)) == NULL);
    assert_str_contains(err, "not-an-address");

    shoal_sim_conf_init(&conf);
    shoal_sim_t *a = shoal_sim_new(&conf, err, sizeof(err));
    assert_true(a != NULL);
    conf.port = shoal_sim_port(a);
    assert_true(shoal_sim_new(&conf, err, sizeof(err)) == NULL);
    assert_str_contains(err, "could not listen");
    shoal_sim_destroy(a);
    shoal_sim_destroy(NULL);
}

int main(void)
{
    shoal_sim_conf_t conf;
    char err[256];

    assert_true(curl_global_init(CURL_GLOBAL_DEFAULT) == CURLE_OK);
    shoal_sim_conf_init(&conf);
    shoal_sim_t *sim = shoal_sim_new(&conf, err, sizeof(err));
    if (!sim)
        test_fail("shoal_sim_new: %s", err);
    int port = shoal_sim_port(sim);
    assert_true(port > 0);

    CURL *h = curl_easy_init();
    assert_true(h != NULL);
    test_openai_text(h, port);
    test_openai_json(h, port);
    test_anthropic(h, port);
    test_errors(h, port);
    test_stats(h, sim, port);
    curl_easy_cleanup(h);
    shoal_sim_destroy(sim);

    test_latency();
    test_stop_while_sleeping();
    test_bad_conf();

    curl_global_cleanup();
    printf("sim_test: ok\n");
    return 0;
}
