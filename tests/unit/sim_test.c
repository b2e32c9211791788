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
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "tests/support/check.h"

struct resp {
    long status;
    char *body;
    size_t len;
    char *hdrs; /* raw header lines, NUL-terminated */
    size_t hlen;
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

static size_t on_header(char *p, size_t sz, size_t n, void *ud)
{
    struct resp *r = ud;
    char *b = realloc(r->hdrs, r->hlen + sz * n + 1);
    if (!b)
        return 0;
    memcpy(b + r->hlen, p, sz * n);
    r->hdrs = b;
    r->hlen += sz * n;
    r->hdrs[r->hlen] = '\0';
    return sz * n;
}

/* The value of header name (case-insensitive) copied into buf, or NULL. */
static const char *hdr(const struct resp *r, const char *name, char *buf, size_t len)
{
    size_t nl = strlen(name);
    for (const char *line = r->hdrs; line && *line;) {
        const char *eol = strchr(line, '\n');
        size_t ll = eol ? (size_t)(eol - line) : strlen(line);
        if (ll > nl && !strncasecmp(line, name, nl) && line[nl] == ':') {
            const char *v = line + nl + 1;
            while (*v == ' ')
                v++;
            size_t vl = (size_t)(line + ll - v);
            while (vl > 0 && (v[vl - 1] == '\r' || v[vl - 1] == ' '))
                vl--;
            snprintf(buf, len, "%.*s", (int)vl, v);
            return buf;
        }
        line = eol ? eol + 1 : line + ll;
    }
    return NULL;
}

static int has_hdr_prefix(const struct resp *r, const char *prefix)
{
    size_t pl = strlen(prefix);
    for (const char *line = r->hdrs; line && *line;) {
        if (!strncasecmp(line, prefix, pl))
            return 1;
        const char *eol = strchr(line, '\n');
        line = eol ? eol + 1 : line + strlen(line);
    }
    return 0;
}

static void resp_free(struct resp *r)
{
    free(r->body);
    free(r->hdrs);
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
    curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(h, CURLOPT_HEADERDATA, out);
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

/* ---- limits, faults, history, restart ---- */

static shoal_sim_t *start(const shoal_sim_conf_t *conf)
{
    char err[256];
    shoal_sim_t *sim = shoal_sim_new(conf, err, sizeof(err));
    if (!sim)
        test_fail("shoal_sim_new: %s", err);
    return sim;
}

/* One model call; anthropic picks /v1/messages. max_tokens 0 leaves it out
 * (OpenAI only). */
static void chat(CURL *h, int port, int anthropic, const char *user, long max_tokens,
                 struct resp *out)
{
    char body[2048], mt[32] = "";
    if (max_tokens > 0)
        snprintf(mt, sizeof(mt), "\"max_tokens\":%ld,", max_tokens);
    int n = snprintf(body, sizeof(body),
                     "{\"model\":\"m\",%s\"messages\":[{\"role\":\"user\",\"content\":\"%s\"}]}",
                     mt, user);
    assert_true(n > 0 && (size_t)n < sizeof(body));
    post(h, port, anthropic ? "/v1/messages" : "/v1/chat/completions", body, out);
}

static long hdr_long(const struct resp *r, const char *name)
{
    char buf[64], *end;
    if (!hdr(r, name, buf, sizeof(buf)))
        test_fail("no header %s in:\n%s", name, r->hdrs ? r->hdrs : "");
    long v = strtol(buf, &end, 10);
    if (end == buf || *end)
        test_fail("header %s: \"%s\" is not a whole number", name, buf);
    return v;
}

/* Parses OpenAI's duration format ("12ms", "1s", "1.5s", "6m0s", "1m30.5s",
 * "1h0m0s") into milliseconds; fails on anything else. */
static double duration_ms(const char *s)
{
    char *end;
    size_t n = strlen(s);
    if (n > 2 && !strcmp(s + n - 2, "ms")) {
        long v = strtol(s, &end, 10);
        if (end != s + n - 2 || v < 0)
            test_fail("bad duration \"%s\"", s);
        return (double)v;
    }
    double total = 0;
    const char *p = s;
    int seen_s = 0;
    while (*p) {
        double v = strtod(p, &end);
        if (end == p)
            test_fail("bad duration \"%s\"", s);
        if (*end == 'h' && !strchr(p, '.'))
            total += v * 3600000;
        else if (*end == 'm')
            total += v * 60000;
        else if (*end == 's')
            total += v * 1000, seen_s = 1;
        else
            test_fail("bad duration \"%s\"", s);
        p = end + 1;
    }
    if (!seen_s)
        test_fail("bad duration \"%s\" (no seconds)", s);
    return total;
}

static double hdr_duration_ms(const struct resp *r, const char *name)
{
    char buf[64];
    if (!hdr(r, name, buf, sizeof(buf)))
        test_fail("no header %s", name);
    return duration_ms(buf);
}

/* Seconds from now to an RFC 3339 UTC time like 2026-11-29T21:30:05Z. */
static double hdr_until_s(const struct resp *r, const char *name)
{
    char buf[64];
    struct tm tm;
    memset(&tm, 0, sizeof(tm));
    if (!hdr(r, name, buf, sizeof(buf)))
        test_fail("no header %s", name);
    const char *end = strptime(buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
    if (!end || *end || strlen(buf) != 20)
        test_fail("header %s: \"%s\" is not an RFC 3339 UTC time", name, buf);
    return (double)timegm(&tm) - (double)time(NULL);
}

static void assert_near(double got, double want, double tol, const char *what)
{
    if (got < want - tol || got > want + tol)
        test_fail("%s: %.3f is not within %.3f of %.3f", what, got, tol, want);
}

/* Capacity is admitted at once, exactly; then refill at the rate. */
static void test_bucket(CURL *h)
{
    shoal_sim_conf_t conf;
    shoal_sim_stats_t st;
    struct resp r;

    /* rpm 60 with 5 s of burst: 5 at once, then one a second. */
    shoal_sim_conf_init(&conf);
    conf.rpm = 60;
    conf.burst_s = 5;
    shoal_sim_t *sim = start(&conf);
    int port = shoal_sim_port(sim), ok = 0, limited = 0;
    double t0 = check_now_s();
    for (int i = 0; i < 20; i++) {
        chat(h, port, 0, "burst", 0, &r);
        assert_true(r.status == 200 || r.status == 429);
        ok += r.status == 200;
        limited += r.status == 429;
        resp_free(&r);
    }
    double took = check_now_s() - t0;
    /* One more may have refilled for each second the loop took. */
    assert_int_ge(ok, 5);
    assert_int_ge(5 + (long long)took + 1, ok);
    shoal_sim_stats(sim, &st);
    assert_int_eq(st.rate_limited, limited);
    assert_int_eq(st.by_status[429], limited);
    shoal_sim_destroy(sim);

    /* tpm 1000: a request costs prompt + max_tokens = 1 + 99; ten fit. The
     * eleventh would need 6 s of refill. */
    shoal_sim_conf_init(&conf);
    conf.tpm = 1000;
    sim = start(&conf);
    port = shoal_sim_port(sim);
    ok = 0;
    for (int i = 0; i < 15; i++) {
        chat(h, port, 0, "x", 99, &r);
        if (r.status == 200) {
            ok++;
            assert_int_eq(hdr_long(&r, "x-ratelimit-remaining-tokens"), 1000 - 100 * ok);
        } else {
            assert_int_eq(r.status, 429);
            json_t *j = parse(&r);
            assert_str_eq(jstr(json_object_get(j, "error"), "type"), "tokens");
            assert_str_eq(jstr(json_object_get(j, "error"), "code"), "rate_limit_exceeded");
            json_decref(j);
        }
        resp_free(&r);
    }
    assert_int_eq(ok, 10);
    /* Without max_tokens the actual completion tokens count: "sim H x" is
     * 22 bytes, 6 tokens, plus 1 prompt token. */
    shoal_sim_destroy(sim);
    conf.tpm = 70;
    sim = start(&conf);
    port = shoal_sim_port(sim);
    for (int i = 0; i < 10; i++) {
        chat(h, port, 0, "x", 0, &r);
        assert_int_eq(r.status, 200);
        assert_int_eq(hdr_long(&r, "x-ratelimit-remaining-tokens"), 70 - 7 * (i + 1));
        resp_free(&r);
    }
    chat(h, port, 0, "x", 0, &r);
    assert_int_eq(r.status, 429);
    resp_free(&r);
    /* Bigger than the bucket can ever hold: 429 without retry-after. */
    chat(h, port, 0, "x", 500, &r);
    assert_int_eq(r.status, 429);
    assert_true(!has_hdr_prefix(&r, "retry-after"));
    resp_free(&r);
    shoal_sim_destroy(sim);

    /* Refill at the rate, sped up: rpm 600 at time scale 10 is 100 a second
     * of real time, with 5 simulated seconds (50 requests) of burst.
     * Saturate for 1.5 s. */
    shoal_sim_conf_init(&conf);
    conf.rpm = 600;
    conf.burst_s = 5;
    conf.time_scale = 10;
    sim = start(&conf);
    port = shoal_sim_port(sim);
    ok = 0;
    t0 = check_now_s();
    double took_s;
    while ((took_s = check_now_s() - t0) < 1.5) {
        chat(h, port, 0, "refill", 0, &r);
        ok += r.status == 200;
        resp_free(&r);
    }
    took_s = check_now_s() - t0;
    printf("refill: %d admitted in %.3f s (expect about %.0f)\n", ok, took_s, 50 + 100 * took_s);
    /* The upper bound is firm (the server saw at most took_s of refill); the
     * lower one allows a client stall of up to a second, as a full bucket
     * absorbs half a second of it. */
    assert_int_ge((long long)(50 + 100 * took_s) + 1, ok);
    assert_int_ge(ok, (long long)(100 * took_s));
    shoal_sim_stats(sim, &st);
    assert_int_eq(st.by_status[200], ok);
    shoal_sim_destroy(sim);
}

static void test_openai_headers(CURL *h)
{
    shoal_sim_conf_t conf;
    struct resp r;
    char buf[64];

    shoal_sim_conf_init(&conf);
    conf.rpm = 120; /* 2 a second */
    conf.tpm = 600; /* 10 a second */
    shoal_sim_t *sim = start(&conf);
    int port = shoal_sim_port(sim);

    /* "hello" is 2 prompt tokens; with max_tokens 98 the cost is 100. */
    chat(h, port, 0, "hello", 98, &r);
    assert_int_eq(r.status, 200);
    assert_int_eq(hdr_long(&r, "x-ratelimit-limit-requests"), 120);
    assert_int_eq(hdr_long(&r, "x-ratelimit-remaining-requests"), 119);
    assert_near(hdr_duration_ms(&r, "x-ratelimit-reset-requests"), 500, 20, "reset-requests");
    assert_true(!strcmp(hdr(&r, "x-ratelimit-reset-requests", buf, sizeof(buf)), "500ms") ||
                !strcmp(buf, "501ms"));
    assert_int_eq(hdr_long(&r, "x-ratelimit-limit-tokens"), 600);
    assert_int_eq(hdr_long(&r, "x-ratelimit-remaining-tokens"), 500);
    assert_near(hdr_duration_ms(&r, "x-ratelimit-reset-tokens"), 10000, 50, "reset-tokens");
    assert_true(!has_hdr_prefix(&r, "retry-after"));
    resp_free(&r);

    /* 500 more tokens empty the bucket: a full refill is a minute, "1m0s". */
    chat(h, port, 0, "hello", 498, &r);
    assert_int_eq(r.status, 200);
    assert_int_eq(hdr_long(&r, "x-ratelimit-remaining-tokens"), 0);
    hdr(&r, "x-ratelimit-reset-tokens", buf, sizeof(buf));
    assert_true(!strncmp(buf, "1m0", 3) || !strncmp(buf, "59.9", 4));
    assert_near(duration_ms(buf), 60000, 100, "reset-tokens when empty");
    resp_free(&r);

    /* Now 100 tokens wait 10 s: retry-after 10, retry-after-ms about 10000. */
    chat(h, port, 0, "hello", 98, &r);
    assert_int_eq(r.status, 429);
    long ra = hdr_long(&r, "retry-after");
    long ra_ms = hdr_long(&r, "retry-after-ms");
    assert_true(ra == 10 || ra == 9);
    assert_near((double)ra_ms, 10000, 100, "retry-after-ms");
    assert_int_ge(ra * 1000, ra_ms);
    assert_int_eq(hdr_long(&r, "x-ratelimit-remaining-tokens"), 0);
    json_t *j = parse(&r);
    assert_str_eq(jstr(json_object_get(j, "error"), "code"), "rate_limit_exceeded");
    json_decref(j);
    resp_free(&r);
    shoal_sim_destroy(sim);

    /* retry_after = 0: limits headers stay, retry-after goes. */
    conf.retry_after = 0;
    sim = start(&conf);
    port = shoal_sim_port(sim);
    chat(h, port, 0, "hello", 598, &r);
    assert_int_eq(r.status, 200);
    resp_free(&r);
    chat(h, port, 0, "hello", 98, &r);
    assert_int_eq(r.status, 429);
    assert_true(has_hdr_prefix(&r, "x-ratelimit-remaining-tokens:"));
    assert_true(!has_hdr_prefix(&r, "retry-after"));
    resp_free(&r);
    shoal_sim_destroy(sim);
}

static void test_anthropic_headers(CURL *h)
{
    shoal_sim_conf_t conf;
    struct resp r;
    static const char *const groups[] = {"requests", "tokens", "input-tokens", "output-tokens"};
    const long limits[] = {60, 6000, 120, 3000};
    char name[96];

    shoal_sim_conf_init(&conf);
    conf.limit_headers = "anthropic";
    conf.rpm = limits[0];
    conf.tpm = limits[1];
    conf.input_tpm = limits[2];
    conf.output_tpm = limits[3];
    shoal_sim_t *sim = start(&conf);
    int port = shoal_sim_port(sim);

    /* 2 input tokens, 100 output: input refills at 2/s, so a full input
     * bucket is 1 s away; output 100 at 50/s is 2 s away. */
    chat(h, port, 1, "hello", 100, &r);
    assert_int_eq(r.status, 200);
    const long remaining[] = {59, 5898, 118, 2900};
    const double reset_s[] = {1, 102.0 / 100, 1, 2};
    for (int i = 0; i < 4; i++) {
        snprintf(name, sizeof(name), "anthropic-ratelimit-%s-limit", groups[i]);
        assert_int_eq(hdr_long(&r, name), limits[i]);
        snprintf(name, sizeof(name), "anthropic-ratelimit-%s-remaining", groups[i]);
        assert_int_eq(hdr_long(&r, name), remaining[i]);
        snprintf(name, sizeof(name), "anthropic-ratelimit-%s-reset", groups[i]);
        double until = hdr_until_s(&r, name);
        /* Rounded up to the second, and our clock moves on meanwhile. */
        if (until < reset_s[i] - 1.5 || until > reset_s[i] + 1.5)
            test_fail("%s is %.0f s away, expected about %.2f", name, until, reset_s[i]);
    }
    assert_true(!has_hdr_prefix(&r, "x-ratelimit-"));
    assert_true(!has_hdr_prefix(&r, "retry-after"));
    resp_free(&r);

    /* Input tokens: 118 left; a 480-byte prompt needs 120, so it waits
     * about 1 s. */
    char big[481];
    memset(big, 'a', 480);
    big[480] = '\0';
    chat(h, port, 1, big, 10, &r);
    assert_int_eq(r.status, 429);
    long ra = hdr_long(&r, "retry-after");
    assert_true(ra >= 1 && ra <= 2);
    assert_true(!has_hdr_prefix(&r, "retry-after-ms"));
    assert_int_eq(hdr_long(&r, "anthropic-ratelimit-input-tokens-remaining"), 118);
    json_t *j = parse(&r);
    assert_str_eq(jstr(j, "type"), "error");
    assert_str_eq(jstr(json_object_get(j, "error"), "type"), "rate_limit_error");
    json_decref(j);
    resp_free(&r);
    shoal_sim_destroy(sim);
}

static void test_none_headers(CURL *h)
{
    shoal_sim_conf_t conf;
    struct resp r;

    shoal_sim_conf_init(&conf);
    conf.limit_headers = "none";
    conf.rpm = 2;
    conf.p_429 = 0;
    shoal_sim_t *sim = start(&conf);
    int port = shoal_sim_port(sim);
    for (int i = 0; i < 3; i++) {
        chat(h, port, i == 1, "quiet", 5, &r);
        assert_int_eq(r.status, i < 2 ? 200 : 429);
        assert_true(!has_hdr_prefix(&r, "x-ratelimit"));
        assert_true(!has_hdr_prefix(&r, "anthropic-ratelimit"));
        assert_true(!has_hdr_prefix(&r, "retry-after"));
        if (r.status == 429)
            assert_true(r.len > 0 && r.len < 64);
        resp_free(&r);
    }
    shoal_sim_destroy(sim);

    /* An injected 429 in none style is as bare. */
    shoal_sim_conf_init(&conf);
    conf.limit_headers = "none";
    conf.p_429 = 1;
    sim = start(&conf);
    chat(h, shoal_sim_port(sim), 0, "quiet", 5, &r);
    assert_int_eq(r.status, 429);
    assert_true(!has_hdr_prefix(&r, "retry-after"));
    resp_free(&r);
    shoal_sim_destroy(sim);
}

enum outcome { O_OK, O_5XX, O_429, O_OVERLOADED, O_MALFORMED, O_TRUNCATED, O_N };

/* What a client sees, from status and body (OpenAI shape). */
static enum outcome classify(const struct resp *r)
{
    if (r->status == 429)
        return O_429;
    if (r->status == 500 || r->status == 502)
        return O_5XX;
    if (r->status == 503) {
        json_t *j = json_loadb(r->body, r->len, 0, NULL);
        assert_true(j != NULL);
        const char *m = json_string_value(json_object_get(json_object_get(j, "error"), "message"));
        int over = m && strstr(m, "overloaded");
        json_decref(j);
        return over ? O_OVERLOADED : O_5XX;
    }
    assert_int_eq(r->status, 200);
    json_t *j = json_loadb(r->body, r->len, 0, NULL);
    if (!j)
        return O_MALFORMED;
    json_t *c0 = json_array_get(json_object_get(j, "choices"), 0);
    const char *content =
        json_string_value(json_object_get(json_object_get(c0, "message"), "content"));
    const char *fr = json_string_value(json_object_get(c0, "finish_reason"));
    enum outcome o = !content ? O_MALFORMED : !strcmp(fr, "length") ? O_TRUNCATED : O_OK;
    if (o == O_OK)
        assert_str_eq(fr, "stop");
    json_decref(j);
    return o;
}

static void run_faults(CURL *h, const shoal_sim_conf_t *conf, int n, int *seq, int counts[O_N],
                       shoal_sim_stats_t *st)
{
    struct resp r;
    char user[32];
    shoal_sim_t *sim = start(conf);
    int port = shoal_sim_port(sim);
    memset(counts, 0, sizeof(int) * O_N);
    for (int i = 0; i < n; i++) {
        snprintf(user, sizeof(user), "fault %d", i);
        chat(h, port, 0, user, 0, &r);
        seq[i] = classify(&r);
        counts[seq[i]]++;
        resp_free(&r);
    }
    shoal_sim_stats(sim, st);
    shoal_sim_destroy(sim);
}

static void test_fault_rates(CURL *h)
{
    enum { N = 1000 };
    shoal_sim_conf_t conf;
    shoal_sim_stats_t st;
    int seq[N], seq2[N], counts[O_N], counts2[O_N];

    shoal_sim_conf_init(&conf);
    conf.seed = 42;
    conf.p_5xx = 0.1;
    conf.p_429 = 0.05;
    conf.p_overloaded = 0.05;
    conf.p_malformed = 0.1;
    conf.p_truncated = 0.2;
    conf.p_slow = 0.3;
    conf.slow_ms = 1;
    run_faults(h, &conf, N, seq, counts, &st);
    printf(
        "faults over %d: ok=%d 5xx=%d 429=%d overloaded=%d malformed=%d truncated=%d slow=%lld\n",
        N, counts[O_OK], counts[O_5XX], counts[O_429], counts[O_OVERLOADED], counts[O_MALFORMED],
        counts[O_TRUNCATED], st.injected.slow);
    /* What the client saw is what the simulator counted. */
    assert_int_eq(st.injected.http_5xx, counts[O_5XX]);
    assert_int_eq(st.injected.http_429, counts[O_429]);
    assert_int_eq(st.injected.overloaded, counts[O_OVERLOADED]);
    assert_int_eq(st.injected.malformed, counts[O_MALFORMED]);
    assert_int_eq(st.injected.truncated, counts[O_TRUNCATED]);
    assert_int_eq(st.rate_limited, 0);
    assert_int_eq(st.by_status[429], counts[O_429]);
    assert_int_eq(st.by_status[200], counts[O_OK] + counts[O_MALFORMED] + counts[O_TRUNCATED]);
    /* About the rate: 5 standard deviations of a binomial. */
    const double p[O_N] = {0.5, 0.1, 0.05, 0.05, 0.1, 0.2};
    for (int k = 0; k < O_N; k++)
        assert_near(counts[k], p[k] * N, 5 * sqrt(N * p[k] * (1 - p[k])), "fault count");
    assert_near((double)st.injected.slow, 0.3 * N, 5 * sqrt(N * 0.3 * 0.7), "slow count");

    /* The same seed and requests give the same faults, request by request. */
    run_faults(h, &conf, N, seq2, counts2, &st);
    assert_true(memcmp(seq, seq2, sizeof(seq)) == 0);
    conf.seed = 43;
    run_faults(h, &conf, N, seq2, counts2, &st);
    assert_true(memcmp(seq, seq2, sizeof(seq)) != 0);

    /* 0 and 1 are exact. */
    const struct {
        double *p;
        enum outcome o;
    } one[] = {{&conf.p_5xx, O_5XX},
               {&conf.p_429, O_429},
               {&conf.p_overloaded, O_OVERLOADED},
               {&conf.p_malformed, O_MALFORMED},
               {&conf.p_truncated, O_TRUNCATED}};
    for (size_t i = 0; i < sizeof(one) / sizeof(one[0]); i++) {
        shoal_sim_conf_init(&conf);
        *one[i].p = 1;
        conf.p_slow = 1;
        run_faults(h, &conf, 50, seq2, counts2, &st);
        assert_int_eq(counts2[one[i].o], 50);
        assert_int_eq(st.injected.slow, 50);
    }
    shoal_sim_conf_init(&conf);
    run_faults(h, &conf, 50, seq2, counts2, &st);
    assert_int_eq(counts2[O_OK], 50);
    assert_int_eq(st.injected.slow + st.injected.http_5xx + st.injected.malformed, 0);

    /* Probabilities that cannot be are refused. */
    char err[256] = "";
    shoal_sim_conf_init(&conf);
    conf.p_5xx = 0.6;
    conf.p_hang = 0.6;
    assert_true(shoal_sim_new(&conf, err, sizeof(err)) == NULL);
    assert_str_contains(err, "sum");
    shoal_sim_conf_init(&conf);
    conf.p_slow = 1.5;
    assert_true(shoal_sim_new(&conf, err, sizeof(err)) == NULL);
    shoal_sim_conf_init(&conf);
    conf.limit_headers = "azure";
    assert_true(shoal_sim_new(&conf, err, sizeof(err)) == NULL);
    assert_str_contains(err, "limit_headers");
}

/* Fault shapes in the Anthropic route, and the 429 headers of an injected
 * 429. */
static void test_fault_shapes(CURL *h)
{
    shoal_sim_conf_t conf;
    struct resp r;
    char hex[17], want[128];

    shoal_sim_conf_init(&conf);
    conf.p_truncated = 1;
    shoal_sim_t *sim = start(&conf);
    int port = shoal_sim_port(sim);
    const char *parts[] = {"cut me short please"};
    hash_hex(parts, 1, hex);
    snprintf(want, sizeof(want), "sim %s cut me short please", hex);
    for (int anthropic = 0; anthropic < 2; anthropic++) {
        chat(h, port, anthropic, parts[0], 50, &r);
        assert_int_eq(r.status, 200);
        json_t *j = parse(&r);
        const char *text;
        if (anthropic) {
            assert_str_eq(jstr(j, "stop_reason"), "max_tokens");
            text = jstr(json_array_get(json_object_get(j, "content"), 0), "text");
            assert_int_eq(jint(j, "usage", "output_tokens"), ceil4(strlen(text)));
        } else {
            json_t *c0 = json_array_get(json_object_get(j, "choices"), 0);
            assert_str_eq(jstr(c0, "finish_reason"), "length");
            text = jstr(json_object_get(c0, "message"), "content");
            assert_int_eq(jint(j, "usage", "completion_tokens"), ceil4(strlen(text)));
        }
        assert_int_eq(strlen(text), strlen(want) / 2);
        assert_true(!strncmp(text, want, strlen(text)));
        json_decref(j);
        resp_free(&r);
    }
    shoal_sim_destroy(sim);

    shoal_sim_conf_init(&conf);
    conf.p_overloaded = 1;
    sim = start(&conf);
    chat(h, shoal_sim_port(sim), 1, "busy", 5, &r);
    check_error(&r, 529, "overloaded_error");
    chat(h, shoal_sim_port(sim), 0, "busy", 5, &r);
    check_error(&r, 503, "server_error");
    shoal_sim_destroy(sim);

    shoal_sim_conf_init(&conf);
    conf.p_5xx = 1;
    sim = start(&conf);
    chat(h, shoal_sim_port(sim), 1, "broken", 5, &r);
    assert_true(r.status == 500 || r.status == 502 || r.status == 503);
    check_error(&r, r.status, "api_error");
    shoal_sim_destroy(sim);

    /* Malformed in the Anthropic shape: not JSON, or no content. */
    shoal_sim_conf_init(&conf);
    conf.p_malformed = 1;
    sim = start(&conf);
    int cut = 0, empty = 0;
    for (int i = 0; i < 20; i++) {
        chat(h, shoal_sim_port(sim), 1, "mangle", 5, &r);
        assert_int_eq(r.status, 200);
        json_t *j = json_loadb(r.body, r.len, 0, NULL);
        if (!j) {
            cut++;
        } else {
            assert_int_eq(json_array_size(json_object_get(j, "content")), 0);
            empty++;
        }
        json_decref(j);
        resp_free(&r);
    }
    assert_int_eq(cut + empty, 20);
    assert_true(cut > 0 && empty > 0);
    shoal_sim_destroy(sim);

    /* An injected 429 with limits set carries their headers and retry-after,
     * and takes nothing from the buckets. */
    shoal_sim_conf_init(&conf);
    conf.p_429 = 1;
    conf.rpm = 60;
    conf.time_scale = 2;
    sim = start(&conf);
    for (int i = 0; i < 3; i++) {
        chat(h, shoal_sim_port(sim), 0, "no", 5, &r);
        assert_int_eq(r.status, 429);
        assert_int_eq(hdr_long(&r, "x-ratelimit-remaining-requests"), 60);
        assert_int_eq(hdr_long(&r, "retry-after"), 1);
        assert_near((double)hdr_long(&r, "retry-after-ms"), 500, 1, "retry-after-ms");
        resp_free(&r);
    }
    shoal_sim_stats_t st;
    shoal_sim_stats(sim, &st);
    assert_int_eq(st.rate_limited, 0);
    assert_int_eq(st.injected.http_429, 3);
    shoal_sim_destroy(sim);
}

static void test_fail_marker(CURL *h)
{
    shoal_sim_conf_t conf;
    shoal_sim_stats_t st;
    struct resp r;

    shoal_sim_conf_init(&conf);
    conf.rpm = 1;
    conf.burst_s = 60;
    shoal_sim_t *sim = start(&conf);
    int port = shoal_sim_port(sim);
    for (int anthropic = 0; anthropic < 2; anthropic++) {
        chat(h, port, anthropic, "please SIM_FAIL_400 now", 5, &r);
        assert_int_eq(r.status, 400);
        json_t *j = parse(&r);
        if (anthropic)
            assert_str_eq(jstr(j, "type"), "error");
        json_t *e = json_object_get(j, "error");
        assert_str_eq(jstr(e, "type"), "invalid_request_error");
        assert_str_contains(jstr(e, "message"), "SIM_FAIL_400");
        json_decref(j);
        resp_free(&r);
    }
    /* The 400s did not use the single request the limit allows. */
    chat(h, port, 0, "fine", 5, &r);
    assert_int_eq(r.status, 200);
    resp_free(&r);
    shoal_sim_stats(sim, &st);
    assert_int_eq(st.injected.fail_marker, 2);
    assert_int_eq(st.by_status[400], 2);
    shoal_sim_destroy(sim);

    /* Another marker, in the system prompt; and no marker at all. */
    shoal_sim_conf_init(&conf);
    conf.fail_marker = "BOOM";
    sim = start(&conf);
    post(h, shoal_sim_port(sim), "/v1/chat/completions",
         "{\"model\":\"m\",\"messages\":[{\"role\":\"system\",\"content\":\"x BOOM\"},"
         "{\"role\":\"user\",\"content\":\"hi\"}]}",
         &r);
    check_error(&r, 400, "invalid_request_error");
    chat(h, shoal_sim_port(sim), 0, "SIM_FAIL_400", 5, &r);
    assert_int_eq(r.status, 200);
    resp_free(&r);
    shoal_sim_destroy(sim);
}

/* A hung request stays open until the client gives up, and is counted. */
static void test_hang(void)
{
    shoal_sim_conf_t conf;
    shoal_sim_stats_t st;
    char url[128];
    struct resp r = {0};

    shoal_sim_conf_init(&conf);
    conf.p_hang = 1;
    shoal_sim_t *sim = start(&conf);
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/v1/chat/completions", shoal_sim_port(sim));

    CURLM *m = curl_multi_init();
    CURL *e = curl_easy_init();
    curl_easy_setopt(e, CURLOPT_URL, url);
    curl_easy_setopt(e, CURLOPT_POSTFIELDS,
                     "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"wait\"}]}");
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, &r);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, 1500L);
    curl_multi_add_handle(m, e);
    int running = 1;
    assert_wait((curl_multi_perform(m, &running), shoal_sim_stats(sim, &st), st.hung == 1), 10,
                "the request to hang");
    assert_int_eq(st.inflight, 1);
    assert_int_eq(st.injected.hang, 1);
    assert_true(running);
    while (running) {
        curl_multi_perform(m, &running);
        if (running)
            curl_multi_poll(m, NULL, 0, 100, NULL);
    }
    int left;
    CURLMsg *msg = curl_multi_info_read(m, &left);
    assert_true(msg != NULL && msg->msg == CURLMSG_DONE);
    assert_int_eq(msg->data.result, CURLE_OPERATION_TIMEDOUT);
    assert_int_eq(r.len, 0);
    curl_multi_remove_handle(m, e);
    curl_easy_cleanup(e);
    assert_wait((shoal_sim_stats(sim, &st), st.hung == 0 && st.inflight == 0), 10,
                "the hung request to be dropped after the client left");
    assert_int_eq(st.injected.hang, 1);
    assert_int_eq(st.requests, 1);

    /* Stopping the simulator closes a hung request at once. */
    e = curl_easy_init();
    curl_easy_setopt(e, CURLOPT_URL, url);
    curl_easy_setopt(e, CURLOPT_POSTFIELDS,
                     "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"wait\"}]}");
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, &r);
    curl_easy_setopt(e, CURLOPT_TIMEOUT, 60L);
    curl_multi_add_handle(m, e);
    assert_wait((curl_multi_perform(m, &running), shoal_sim_stats(sim, &st), st.hung == 1), 10,
                "the second request to hang");
    shoal_sim_destroy(sim);
    double t0 = check_now_s();
    while (running) {
        curl_multi_perform(m, &running);
        if (running)
            curl_multi_poll(m, NULL, 0, 100, NULL);
        if (check_now_s() - t0 > 30)
            test_fail("the hung request was not closed on stop");
    }
    msg = curl_multi_info_read(m, &left);
    assert_true(msg != NULL && msg->msg == CURLMSG_DONE);
    assert_true(msg->data.result != CURLE_OK && msg->data.result != CURLE_OPERATION_TIMEDOUT);
    curl_multi_remove_handle(m, e);
    curl_easy_cleanup(e);
    curl_multi_cleanup(m);
    free(r.body);
}

static long long sum(const long long *v, int n)
{
    long long s = 0;
    for (int i = 0; i < n; i++)
        s += v[i];
    return s;
}

static long long jsum(json_t *o, const char *key)
{
    json_t *a = json_object_get(o, key);
    assert_true(json_is_array(a));
    long long s = 0;
    size_t i;
    json_t *v;
    json_array_foreach(a, i, v) s += json_integer_value(v);
    return s;
}

static void test_history(CURL *h)
{
    shoal_sim_conf_t conf;
    struct resp r;

    shoal_sim_conf_init(&conf);
    conf.rpm = 600;
    conf.burst_s = 1; /* 10 at once */
    shoal_sim_t *sim = start(&conf);
    int port = shoal_sim_port(sim);
    double wall0 = (double)time(NULL);
    for (int i = 0; i < 30; i++) {
        chat(h, port, 0, "history", 0, &r);
        resp_free(&r);
    }
    shoal_sim_stats_t *st = malloc(sizeof(*st));
    assert_true(st != NULL);
    shoal_sim_stats(sim, st);
    assert_int_ge(st->by_status[200], 10);
    assert_int_ge(st->by_status[429], 1);
    assert_int_eq(st->by_status[200] + st->by_status[429], 30);
    assert_true(st->history_len >= 1 && st->history_len <= SHOAL_SIM_HISTORY_S);
    assert_int_eq(sum(st->served_per_s, st->history_len), st->by_status[200]);
    assert_int_eq(sum(st->limited_per_s, st->history_len), st->by_status[429]);
    assert_int_eq(sum(st->tokens_per_s, st->history_len),
                  st->prompt_tokens + st->completion_tokens);
    assert_near(st->history_start_unix, wall0, 5, "history_start_unix");

    json_t *j = get_stats(h, port);
    assert_int_eq(jsum(j, "served_per_s"), st->by_status[200]);
    assert_int_eq(jsum(j, "limited_per_s"), st->by_status[429]);
    assert_int_eq(jsum(j, "tokens_per_s"), st->prompt_tokens + st->completion_tokens);
    assert_int_eq(jint(j, "rate_limited", NULL), st->by_status[429]);
    assert_int_eq(jint(j, "hung", NULL), 0);
    assert_int_eq(jint(j, "injected", "5xx"), 0);
    assert_true(json_is_number(json_object_get(j, "history_start_unix")));
    json_decref(j);

    post(h, port, "/stats/reset", "", &r);
    resp_free(&r);
    shoal_sim_stats(sim, st);
    assert_int_eq(st->rate_limited, 0);
    assert_int_eq(sum(st->served_per_s, st->history_len), 0);
    assert_int_eq(sum(st->limited_per_s, st->history_len), 0);
    free(st);
    shoal_sim_destroy(sim);
}

/* Destroyed and started again on the same port: refused meanwhile, then
 * served. A keep-alive connection was open at the stop. */
static void test_restart(CURL *h)
{
    shoal_sim_conf_t conf;
    struct resp r;
    char url[128];

    shoal_sim_conf_init(&conf);
    shoal_sim_t *sim = start(&conf);
    int port = shoal_sim_port(sim);
    chat(h, port, 0, "before", 0, &r);
    assert_int_eq(r.status, 200);
    resp_free(&r);
    shoal_sim_destroy(sim);

    CURL *e = curl_easy_init();
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/health", port);
    curl_easy_setopt(e, CURLOPT_URL, url);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, &r);
    memset(&r, 0, sizeof(r));
    assert_int_eq(curl_easy_perform(e), CURLE_COULDNT_CONNECT);
    curl_easy_cleanup(e);
    resp_free(&r);

    for (int round = 0; round < 3; round++) {
        conf.port = port;
        sim = start(&conf);
        assert_int_eq(shoal_sim_port(sim), port);
        chat(h, port, 0, "after", 0, &r);
        assert_int_eq(r.status, 200);
        resp_free(&r);
        shoal_sim_destroy(sim);
    }
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

    h = curl_easy_init();
    assert_true(h != NULL);
    test_bucket(h);
    test_openai_headers(h);
    test_anthropic_headers(h);
    test_none_headers(h);
    test_fault_rates(h);
    test_fault_shapes(h);
    test_fail_marker(h);
    test_history(h);
    test_restart(h);
    curl_easy_cleanup(h);
    test_hang();

    curl_global_cleanup();
    printf("sim_test: ok\n");
    return 0;
}
