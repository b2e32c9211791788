/*
 * worker/http against the in-process provider simulator: many calls in
 * flight on one multi handle all complete with their own bodies, a delayed
 * call does not start early, a refused connection and a timeout end as
 * transport failures (status 0), one that ends before the loop would wait
 * is handed over without the wait, HTTP errors keep their status, body and
 * Retry-After, the final response's header block reaches the reply (interim
 * 1xx headers dropped, capped at 16 KiB), and the pending count follows every
 * submission and completion, connections stay open between bursts, and the
 * environment's proxies are used.
 */
#include "worker/http.h"

#include <arpa/inet.h>
#include <curl/curl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "common/models.h"
#include "sim/sim.h"
#include "stack/proc.h"
#include "tests/support/check.h"
#include "tests/support/harness.h"
#include "tests/support/netport.h"
#include "worker/provider.h"

#define NCALLS 200

/* What the done callback saw for one call. */
struct result {
    int done; /* times the callback ran for this call */
    long status;
    char *body;
    char error[256];
    int timed_out;
    long retry_after_ms;
    double started_unix;
    double latency_ms;
    int pending_in_cb; /* shoal_http_pending() inside the callback */
    char *headers;     /* the header block, NUL-terminated copy */
    size_t headers_len;
    long connects;
};

struct ctx {
    shoal_http_t *h;
    int completed;
};

static void on_done(void *user, const shoal_http_reply_t *reply, void *arg)
{
    struct result *r = user;
    struct ctx *ctx = arg;

    r->done++;
    r->status = reply->status;
    r->body = malloc(reply->len + 1);
    assert_true(r->body != NULL);
    memcpy(r->body, reply->body, reply->len);
    r->body[reply->len] = '\0';
    snprintf(r->error, sizeof(r->error), "%s", reply->error ? reply->error : "");
    r->timed_out = reply->timed_out;
    r->retry_after_ms = reply->retry_after_ms;
    r->started_unix = reply->started_unix;
    r->latency_ms = reply->latency_ms;
    r->pending_in_cb = shoal_http_pending(ctx->h);
    r->headers = malloc(reply->headers_len + 1);
    assert_true(r->headers != NULL);
    assert_true(reply->headers != NULL);
    memcpy(r->headers, reply->headers, reply->headers_len);
    r->headers[reply->headers_len] = '\0';
    r->headers_len = reply->headers_len;
    r->connects = reply->connects;
    ctx->completed++;
}

static const shoal_model_t model = {
    .alias = "sim",
    .provider = SHOAL_PROVIDER_OPENAI,
    .model = "sim-model",
};

/* The one classification of what the callback saw. */
static shoal_outcome_t outcome_of(const struct result *r, char *why, size_t whylen)
{
    shoal_provider_reply_t rep;
    shoal_http_reply_t hr = {.status = r->status,
                             .error = r->error,
                             .timed_out = r->timed_out,
                             .body = r->body,
                             .len = strlen(r->body)};
    shoal_outcome_t oc = shoal_provider_outcome(&model, &hr, &rep, why, whylen);

    free(rep.content);
    return oc;
}

static double wall_s(void)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (double)tv.tv_sec + (double)tv.tv_usec / 1e6;
}

/* Runs the loop until nothing is pending, failing after timeout_s. */
static void run_until_idle(shoal_http_t *h, double timeout_s)
{
    char err[256];
    double deadline = check_now_s() + timeout_s;

    while (shoal_http_pending(h) > 0) {
        if (check_now_s() > deadline)
            test_fail("%d calls still pending after %.0f s", shoal_http_pending(h), timeout_s);
        if (shoal_http_run(h, 100, -1, err, sizeof(err)) != SHOAL_OK)
            test_fail("shoal_http_run: %s", err);
    }
}

static shoal_sim_t *start_sim(long latency_ms)
{
    shoal_sim_conf_t conf;
    char err[256];

    shoal_sim_conf_init(&conf);
    conf.port = 0;
    conf.latency_ms = latency_ms;
    shoal_sim_t *sim = shoal_sim_new(&conf, err, sizeof(err));
    if (!sim)
        test_fail("shoal_sim_new: %s", err);
    return sim;
}

static void post(shoal_http_t *h, const char *url, const struct curl_slist *hdr, const char *prompt,
                 long timeout_ms, long start_after_ms, struct result *r)
{
    size_t len;
    char err[256];
    char *body = shoal_provider_request(&model, NULL, prompt, 0, &len);

    assert_true(body != NULL);
    if (shoal_http_post(h, url, hdr, NULL, body, len, timeout_ms, start_after_ms, r, err,
                        sizeof(err)) != SHOAL_OK)
        test_fail("shoal_http_post: %s", err);
    free(body); /* the body was copied */
}

/* One call on a handle of its own, made after the environment is set. */
static void call_once(struct ctx *ctx, const char *url, const struct curl_slist *hdr,
                      const char *prompt, long timeout_ms, struct result *r)
{
    char err[256];
    ctx->h = shoal_http_new(on_done, ctx, err, sizeof(err));
    if (!ctx->h)
        test_fail("shoal_http_new: %s", err);
    memset(r, 0, sizeof(*r));
    post(ctx->h, url, hdr, prompt, timeout_ms, 0, r);
    run_until_idle(ctx->h, 30);
    shoal_http_destroy(ctx->h);
    ctx->h = NULL;
}

static void test_many_in_flight(struct curl_slist *hdr)
{
    static struct result res[NCALLS];
    struct ctx ctx = {NULL, 0};
    char err[256], url[128], prompt[64];
    shoal_sim_t *sim = start_sim(100);
    shoal_sim_stats_t st;

    snprintf(url, sizeof(url), "http://127.0.0.1:%d/v1/chat/completions", shoal_sim_port(sim));
    ctx.h = shoal_http_new(on_done, &ctx, err, sizeof(err));
    if (!ctx.h)
        test_fail("shoal_http_new: %s", err);
    assert_int_eq(shoal_http_pending(ctx.h), 0);

    memset(res, 0, sizeof(res));
    for (int i = 0; i < NCALLS; i++) {
        snprintf(prompt, sizeof(prompt), "item %d", i);
        post(ctx.h, url, hdr, prompt, 30000, 0, &res[i]);
        assert_int_eq(shoal_http_pending(ctx.h), i + 1);
    }
    run_until_idle(ctx.h, 60);
    assert_int_eq(ctx.completed, NCALLS);
    assert_int_eq(shoal_http_pending(ctx.h), 0);

    int seen_pending[NCALLS] = {0};
    for (int i = 0; i < NCALLS; i++) {
        struct result *r = &res[i];
        shoal_provider_reply_t rep;
        shoal_http_reply_t hr = {.status = r->status, .body = r->body, .len = strlen(r->body)};
        assert_int_eq(r->done, 1);
        if (r->status != 200)
            test_fail("call %d: status %ld error \"%s\" body %s", i, r->status, r->error, r->body);
        assert_str_eq(r->error, "");
        assert_int_eq(r->timed_out, 0);
        assert_int_eq(r->retry_after_ms, -1);
        assert_true(r->latency_ms > 0);
        /* each call got the answer to its own prompt */
        assert_int_eq(shoal_provider_outcome(&model, &hr, &rep, err, sizeof(err)),
                      SHOAL_OUTCOME_OK);
        /* the answer's headers came with it, without the status line */
        assert_true(strcasestr(r->headers, "content-type: application/json\r\n") != NULL);
        assert_true(strstr(r->headers, "HTTP/") == NULL);
        assert_int_eq(r->headers_len, strlen(r->headers));
        free(r->headers);
        snprintf(prompt, sizeof(prompt), " item %d", i);
        size_t pl = strlen(prompt), cl = strlen(rep.content);
        if (cl < pl || strcmp(rep.content + cl - pl, prompt) != 0)
            test_fail("call %d got \"%s\"", i, rep.content);
        free(rep.content);
        /* the count inside the callback already excludes the finished call */
        assert_true(r->pending_in_cb >= 0 && r->pending_in_cb < NCALLS);
        seen_pending[r->pending_in_cb]++;
        free(r->body);
    }
    for (int i = 0; i < NCALLS; i++)
        assert_int_eq(seen_pending[i], 1); /* NCALLS-1 down to 0, once each */

    shoal_sim_stats(sim, &st);
    assert_int_eq(st.requests, NCALLS);
    assert_int_eq(st.by_status[200], NCALLS);
    assert_int_eq(st.distinct_prompts, NCALLS);
    assert_int_eq(st.repeated_prompts, 0);
    /* the calls overlapped instead of running one after another */
    assert_true(st.max_inflight > 1);

    /* the handle is reusable: a second round on pooled transfers */
    memset(res, 0, sizeof(res));
    ctx.completed = 0;
    for (int i = 0; i < 10; i++) {
        snprintf(prompt, sizeof(prompt), "again %d", i);
        post(ctx.h, url, hdr, prompt, 30000, 0, &res[i]);
    }
    run_until_idle(ctx.h, 60);
    assert_int_eq(ctx.completed, 10);
    for (int i = 0; i < 10; i++) {
        assert_int_eq(res[i].status, 200);
        snprintf(prompt, sizeof(prompt), " again %d", i);
        assert_str_contains(res[i].body, prompt);
        free(res[i].body);
        free(res[i].headers);
    }
    shoal_http_destroy(ctx.h);
    shoal_sim_destroy(sim);
}

static void test_delayed_start(struct curl_slist *hdr)
{
    struct result now, later;
    struct ctx ctx = {NULL, 0};
    char err[256], url[128];
    shoal_sim_t *sim = start_sim(0);

    snprintf(url, sizeof(url), "http://127.0.0.1:%d/v1/chat/completions", shoal_sim_port(sim));
    ctx.h = shoal_http_new(on_done, &ctx, err, sizeof(err));
    assert_true(ctx.h != NULL);
    memset(&now, 0, sizeof(now));
    memset(&later, 0, sizeof(later));

    double submitted = wall_s();
    post(ctx.h, url, hdr, "later", 10000, 300, &later);
    post(ctx.h, url, hdr, "now", 10000, 0, &now);
    assert_int_eq(shoal_http_pending(ctx.h), 2); /* the delayed call counts */

    run_until_idle(ctx.h, 30);
    assert_int_eq(now.done, 1);
    assert_int_eq(later.done, 1);
    assert_int_eq(now.status, 200);
    assert_int_eq(later.status, 200);
    assert_str_contains(later.body, " later");
    /* a correctness check of the delay: it did not go out before it was due */
    if (later.started_unix < submitted + 0.25)
        test_fail("delayed call started %.3f s after submission, expected >= 0.25",
                  later.started_unix - submitted);
    assert_true(now.started_unix >= submitted);
    free(now.body);
    free(now.headers);
    free(later.body);
    free(later.headers);

    /* a delayed call abandoned by destroy never calls back (and leaks nothing) */
    memset(&later, 0, sizeof(later));
    post(ctx.h, url, hdr, "abandoned", 10000, 60000, &later);
    assert_int_eq(shoal_http_pending(ctx.h), 1);
    assert_int_eq(shoal_http_run(ctx.h, 0, -1, err, sizeof(err)), SHOAL_OK);
    assert_int_eq(later.done, 0);
    shoal_http_destroy(ctx.h);
    assert_int_eq(later.done, 0);
    shoal_sim_destroy(sim);
}

/* A socket listening on a free port of 127.0.0.1; returns the port. */
static int loopback_listen(int *fd)
{
    struct sockaddr_in sa;
    socklen_t salen = sizeof(sa);

    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    *fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(*fd >= 0);
    assert_int_eq(bind(*fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    assert_int_eq(listen(*fd, 8), 0);
    assert_int_eq(getsockname(*fd, (struct sockaddr *)&sa, &salen), 0);
    return ntohs(sa.sin_port);
}

static void test_refused(struct curl_slist *hdr)
{
    struct result r;
    struct ctx ctx = {NULL, 0};
    char err[256], url[128];

    snprintf(url, sizeof(url), "http://127.0.0.1:%d/v1/chat/completions", netport_free());
    call_once(&ctx, url, hdr, "nobody home", 5000, &r);
    assert_int_eq(r.done, 1);
    assert_int_eq(r.status, 0);
    assert_true(r.error[0] != '\0');
    assert_int_eq(r.timed_out, 0);
    assert_int_eq(outcome_of(&r, err, sizeof(err)), SHOAL_OUTCOME_CONNECTION);
    assert_true(shoal_outcome_retriable(SHOAL_OUTCOME_CONNECTION));
    free(r.body);
    free(r.headers);
}

/* A transfer that ends inside the pass's first perform (here a URL curl
 * refuses before any I/O; a fast local answer can too) is handed over by that pass,
 * not after it has waited out its timeout on a wake-up descriptor that stays
 * quiet: that wait once turned a 0.2 ms call into 200 ms. */
static void test_ended_before_wait(struct curl_slist *hdr)
{
    struct result r;
    struct ctx ctx = {NULL, 0};
    char err[256];
    const char *url = "http://127.0.0.1:99999/v1/chat/completions";
    int quiet[2];

    assert_int_eq(pipe(quiet), 0);
    ctx.h = shoal_http_new(on_done, &ctx, err, sizeof(err));
    if (!ctx.h)
        test_fail("shoal_http_new: %s", err);
    memset(&r, 0, sizeof(r));
    post(ctx.h, url, hdr, "no such port", 5000, 0, &r);
    double t0 = check_now_s();
    assert_int_eq(shoal_http_run(ctx.h, 20000, quiet[0], err, sizeof(err)), SHOAL_OK);
    double took = check_now_s() - t0;
    assert_int_eq(r.done, 1);
    assert_int_eq(r.status, 0);
    assert_int_eq(shoal_http_pending(ctx.h), 0);
    /* 20 s is the wait the bug would take; anything near it is the bug. */
    if (took > 10.0)
        test_fail("the pass waited %.1f s with a finished transfer", took);
    shoal_http_destroy(ctx.h);
    close(quiet[0]);
    close(quiet[1]);
    free(r.body);
    free(r.headers);
}

static void test_timeout(struct curl_slist *hdr)
{
    struct result r;
    struct ctx ctx = {NULL, 0};
    char err[256], url[128];
    shoal_sim_t *sim = start_sim(2000);

    snprintf(url, sizeof(url), "http://127.0.0.1:%d/v1/chat/completions", shoal_sim_port(sim));
    ctx.h = shoal_http_new(on_done, &ctx, err, sizeof(err));
    assert_true(ctx.h != NULL);
    memset(&r, 0, sizeof(r));
    post(ctx.h, url, hdr, "slow", 200, 0, &r);
    run_until_idle(ctx.h, 30);
    assert_int_eq(r.done, 1);
    assert_int_eq(r.timed_out, 1);
    assert_int_eq(r.status, 0);
    assert_true(r.error[0] != '\0');
    assert_int_eq(outcome_of(&r, err, sizeof(err)), SHOAL_OUTCOME_TIMEOUT);
    free(r.body);
    free(r.headers);

    /* a call still in flight when the handle is destroyed never calls back */
    memset(&r, 0, sizeof(r));
    post(ctx.h, url, hdr, "abandoned", 10000, 0, &r);
    assert_int_eq(shoal_http_run(ctx.h, 50, -1, err, sizeof(err)), SHOAL_OK);
    assert_int_eq(shoal_http_pending(ctx.h), 1);
    shoal_http_destroy(ctx.h);
    assert_int_eq(r.done, 0);
    shoal_sim_destroy(sim);
}

static void test_http_errors(struct curl_slist *hdr)
{
    struct result r404, r400;
    struct ctx ctx = {NULL, 0};
    char err[256], url[128], text[256];
    shoal_sim_t *sim = start_sim(0);

    ctx.h = shoal_http_new(on_done, &ctx, err, sizeof(err));
    assert_true(ctx.h != NULL);
    memset(&r404, 0, sizeof(r404));
    memset(&r400, 0, sizeof(r400));
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/v1/nowhere", shoal_sim_port(sim));
    post(ctx.h, url, hdr, "lost", 10000, 0, &r404);
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/v1/chat/completions", shoal_sim_port(sim));
    if (shoal_http_post(ctx.h, url, hdr, NULL, "{not json", 9, 10000, 0, &r400, err, sizeof(err)) !=
        SHOAL_OK)
        test_fail("shoal_http_post: %s", err);
    run_until_idle(ctx.h, 30);

    /* an HTTP error is an answer: its status and body arrive, no transport error */
    assert_int_eq(r404.status, 404);
    assert_str_eq(r404.error, "");
    assert_int_eq(outcome_of(&r404, text, sizeof(text)), SHOAL_OUTCOME_PERMANENT);
    assert_str_contains(text, "HTTP 404: ");
    assert_str_contains(text, "/v1/nowhere");
    assert_int_eq(r400.status, 400);
    assert_int_eq(outcome_of(&r400, text, sizeof(text)), SHOAL_OUTCOME_PERMANENT);
    assert_str_contains(text, "not valid JSON");
    free(r404.body);
    free(r404.headers);
    free(r400.body);
    free(r400.headers);
    shoal_http_destroy(ctx.h);
    shoal_sim_destroy(sim);
    shoal_http_destroy(NULL);
}

/* A one-thread server answering each connection with the next canned
 * response, for headers the simulator does not send. */
struct canned {
    int fd;
    int n;
    const char *responses[4];
    char *request_line[4]; /* first line of each request; freed by the test */
    char *head[4];         /* each request's head, up to its blank line; freed by the test */
};

static void *canned_serve(void *arg)
{
    struct canned *cs = arg;
    char buf[8192];

    for (int i = 0; i < cs->n; i++) {
        int conn = accept(cs->fd, NULL, NULL);
        if (conn < 0)
            return NULL;
        /* read the head, then as much body as Content-Length says */
        size_t got = 0;
        char *end = NULL;
        while (!end && got < sizeof(buf) - 1) {
            ssize_t r = read(conn, buf + got, sizeof(buf) - 1 - got);
            if (r <= 0)
                break;
            got += (size_t)r;
            buf[got] = '\0';
            end = strstr(buf, "\r\n\r\n");
        }
        if (end) {
            cs->request_line[i] = strndup(buf, strcspn(buf, "\r\n"));
            cs->head[i] = strndup(buf, (size_t)(end + 2 - buf));
            const char *cl = strcasestr(buf, "content-length:");
            size_t want = (size_t)(end + 4 - buf) + (cl ? strtoul(cl + 15, NULL, 10) : 0);
            while (got < want && got < sizeof(buf) - 1) {
                ssize_t r = read(conn, buf + got, sizeof(buf) - 1 - got);
                if (r <= 0)
                    break;
                got += (size_t)r;
            }
        }
        const char *resp = cs->responses[i];
        ssize_t w = write(conn, resp, strlen(resp));
        (void)w;
        close(conn);
    }
    return NULL;
}

/* Starts canned_serve for one connection, answered 200 with "{}"; returns
 * its port. */
static int canned_one(struct canned *cs, pthread_t *th)
{
    memset(cs, 0, sizeof(*cs));
    int port = loopback_listen(&cs->fd);
    cs->responses[0] = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                       "Content-Length: 2\r\nConnection: close\r\n\r\n{}";
    cs->n = 1;
    assert_int_eq(pthread_create(th, NULL, canned_serve, cs), 0);
    return port;
}

/* Frees what that one exchange left, the call's result included. */
static void canned_one_free(struct canned *cs, struct result *r)
{
    free(cs->request_line[0]);
    free(cs->head[0]);
    free(r->body);
    free(r->headers);
    close(cs->fd);
}

/* Retry-After in seconds and retry-after-ms in milliseconds reach the reply;
 * an unreadable one counts as absent and does not hide the other. */
static void test_retry_after(struct curl_slist *hdr)
{
    static const char *const heads[] = {
        "Retry-After: 2\r\n",
        "retry-after-ms: 1500\r\n",
        "retry-after-ms: soon\r\nRetry-After: 3\r\n",
        "X-Other: 1\r\n",
    };
    static const long want[] = {2000, 1500, 3000, -1};
    static char resp[4][256];
    struct canned cs;
    pthread_t th;
    struct result r[4];
    struct ctx ctx = {NULL, 0};
    char err[256], url[128];

    memset(&cs, 0, sizeof(cs));
    int port = loopback_listen(&cs.fd);
    for (int i = 0; i < 4; i++) {
        snprintf(resp[i], sizeof(resp[i]),
                 "HTTP/1.1 429 Too Many Requests\r\n%sContent-Type: application/json\r\n"
                 "Content-Length: 2\r\nConnection: close\r\n\r\n{}",
                 heads[i]);
        cs.responses[i] = resp[i];
    }
    cs.n = 4;
    assert_int_eq(pthread_create(&th, NULL, canned_serve, &cs), 0);

    snprintf(url, sizeof(url), "http://127.0.0.1:%d/v1/chat/completions", port);
    ctx.h = shoal_http_new(on_done, &ctx, err, sizeof(err));
    assert_true(ctx.h != NULL);
    /* one at a time, so the responses go out in order */
    for (int i = 0; i < 4; i++) {
        memset(&r[i], 0, sizeof(r[i]));
        post(ctx.h, url, hdr, "limited", 10000, 0, &r[i]);
        run_until_idle(ctx.h, 30);
        assert_int_eq(r[i].done, 1);
        assert_int_eq(r[i].status, 429);
        assert_str_eq(r[i].body, "{}");
        if (r[i].retry_after_ms != want[i])
            test_fail("headers \"%s\": retry_after_ms %ld, expected %ld", heads[i],
                      r[i].retry_after_ms, want[i]);
        free(r[i].body);
        free(r[i].headers);
    }
    assert_int_eq(pthread_join(th, NULL), 0);
    for (int i = 0; i < 4; i++) {
        free(cs.request_line[i]);
        free(cs.head[i]);
    }
    close(cs.fd);
    shoal_http_destroy(ctx.h);
}

/* The final response's header lines reach the reply: an interim 100
 * Continue's lines do not, a block past 16 KiB is cut (the call still
 * completes), and a pooled call carries only its own answer's lines. */
static void test_header_block(struct curl_slist *hdr)
{
    static char big[32 * 1024];
    struct canned cs;
    pthread_t th;
    struct result r[3];
    struct ctx ctx = {NULL, 0};
    char err[256], url[128];
    size_t o;

    o = (size_t)snprintf(big, sizeof(big), "HTTP/1.1 429 Too Many Requests\r\n");
    for (int i = 0; i < 300; i++)
        o += (size_t)snprintf(big + o, sizeof(big) - o, "X-Pad-%03d: %060d\r\n", i, i);
    snprintf(big + o, sizeof(big) - o,
             "X-Last: 1\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}");
    memset(&cs, 0, sizeof(cs));
    cs.responses[0] = "HTTP/1.1 100 Continue\r\nX-Interim: yes\r\n\r\n"
                      "HTTP/1.1 429 Too Many Requests\r\n"
                      "x-ratelimit-remaining-requests: 0\r\n"
                      "Retry-After: 4\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}";
    cs.responses[1] = big;
    cs.responses[2] = "HTTP/1.1 200 OK\r\nX-Third: 3\r\nContent-Type: application/json\r\n"
                      "Content-Length: 2\r\nConnection: close\r\n\r\n{}";
    cs.n = 3;
    int port = loopback_listen(&cs.fd);
    assert_int_eq(pthread_create(&th, NULL, canned_serve, &cs), 0);

    snprintf(url, sizeof(url), "http://127.0.0.1:%d/v1/chat/completions", port);
    ctx.h = shoal_http_new(on_done, &ctx, err, sizeof(err));
    assert_true(ctx.h != NULL);
    for (int i = 0; i < 3; i++) {
        memset(&r[i], 0, sizeof(r[i]));
        post(ctx.h, url, hdr, "headers", 10000, 0, &r[i]);
        run_until_idle(ctx.h, 30);
        assert_int_eq(r[i].done, 1);
    }

    /* interim lines dropped; the final answer's lines, no status line */
    assert_int_eq(r[0].status, 429);
    assert_str_eq(r[0].headers, "x-ratelimit-remaining-requests: 0\r\nRetry-After: 4\r\n"
                                "Content-Length: 2\r\nConnection: close\r\n");
    assert_int_eq(r[0].retry_after_ms, 4000);
    shoal_provider_signals_t sig;
    shoal_provider_signals(r[0].headers, r[0].headers_len, wall_s(), &sig);
    assert_int_eq(sig.remaining_requests, 0);
    assert_int_eq(sig.retry_after_ms, 4000);

    /* 300 lines of 73 bytes: cut at whole lines within 16 KiB */
    assert_int_eq(r[1].status, 429);
    assert_str_eq(r[1].body, "{}");
    assert_true(r[1].headers_len <= 16 * 1024);
    assert_true(r[1].headers_len > 16 * 1024 - 80);
    assert_int_eq(r[1].headers_len % 73, 0);
    assert_true(strncmp(r[1].headers, "X-Pad-000: ", 11) == 0);
    assert_true(strstr(r[1].headers, "X-Last") == NULL);

    /* the pooled call starts a fresh block */
    assert_int_eq(r[2].status, 200);
    assert_true(strncmp(r[2].headers, "X-Third: 3\r\n", 12) == 0);
    assert_true(strstr(r[2].headers, "X-Pad") == NULL);
    assert_int_eq(pthread_join(th, NULL), 0);
    for (int i = 0; i < 3; i++) {
        free(r[i].body);
        free(r[i].headers);
        free(cs.request_line[i]);
        free(cs.head[i]);
    }
    close(cs.fd);
    shoal_http_destroy(ctx.h);
}

/* One handle reused for answers of every shape: a large one with a
 * Content-Length (its buffer is given back when the call is pooled), a tiny
 * one, a chunked one and one read to the connection's close (neither
 * announces a length, so the buffer grows). Each body arrives whole, and a
 * URL longer than 2 KiB reaches the server whole. */
static void test_body_sizes(struct curl_slist *hdr)
{
    enum { BIG = 100 * 1024, CHUNK = 3000, TAIL = 1500 };
    static char big[BIG + 256], chunked[CHUNK + 256], closed[TAIL + 256];
    static char want_big[BIG + 1], want_chunk[CHUNK + 1], want_tail[TAIL + 1];
    char url[4096], err[256];
    struct canned cs;
    pthread_t th;
    struct result r[4];
    struct ctx ctx = {NULL, 0};

    memset(want_big, 'b', BIG);
    memset(want_chunk, 'c', CHUNK);
    memset(want_tail, 't', TAIL);
    snprintf(big, sizeof(big), "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", BIG, want_big);
    snprintf(chunked, sizeof(chunked),
             "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n0\r\n\r\n", CHUNK,
             want_chunk);
    snprintf(closed, sizeof(closed), "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n%s", want_tail);
    memset(&cs, 0, sizeof(cs));
    cs.responses[0] = big;
    cs.responses[1] = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}";
    cs.responses[2] = chunked;
    cs.responses[3] = closed;
    cs.n = 4;
    int port = loopback_listen(&cs.fd);
    assert_int_eq(pthread_create(&th, NULL, canned_serve, &cs), 0);

    int n = snprintf(url, sizeof(url), "http://127.0.0.1:%d/v1/chat/completions?pad=", port);
    memset(url + n, 'u', 3000);
    snprintf(url + n + 3000, sizeof(url) - (size_t)n - 3000, "&end=1");
    ctx.h = shoal_http_new(on_done, &ctx, err, sizeof(err));
    assert_true(ctx.h != NULL);
    for (int i = 0; i < 4; i++) {
        memset(&r[i], 0, sizeof(r[i]));
        /* each call's answer closes its connection: the next gets a new one */
        post(ctx.h, url, hdr, "sizes", 10000, 0, &r[i]);
        run_until_idle(ctx.h, 30);
        assert_int_eq(r[i].done, 1);
        assert_int_eq(r[i].status, 200);
    }
    assert_int_eq(strlen(r[0].body), BIG);
    assert_str_eq(r[0].body, want_big);
    assert_str_eq(r[1].body, "{}");
    assert_str_eq(r[2].body, want_chunk);
    assert_str_eq(r[3].body, want_tail);
    assert_int_eq(pthread_join(th, NULL), 0);
    for (int i = 0; i < 4; i++) {
        assert_true(cs.request_line[i] != NULL);
        assert_true(strstr(cs.request_line[i], "&end=1 HTTP/1.1") != NULL);
        assert_int_eq(strlen(cs.request_line[i]),
                      strlen("POST ") + strlen(strchr(url + 7, '/')) + strlen(" HTTP/1.1"));
        free(cs.request_line[i]);
        free(cs.head[i]);
        free(r[i].body);
        free(r[i].headers);
    }
    close(cs.fd);
    shoal_http_destroy(ctx.h);
}

/* Calls to a plain-http endpoint each get a connection at once instead of
 * queueing behind the first one (waiting to learn whether it multiplexes
 * only makes sense for HTTP/2 over TLS). With a 500 ms answer time, ten
 * calls are all at the simulator together. */
static void test_parallel_connections(struct curl_slist *hdr)
{
    static struct result res[10];
    struct ctx ctx = {NULL, 0};
    char err[256], url[128], prompt[64];
    shoal_sim_t *sim = start_sim(500);
    shoal_sim_stats_t st;

    snprintf(url, sizeof(url), "http://127.0.0.1:%d/v1/chat/completions", shoal_sim_port(sim));
    ctx.h = shoal_http_new(on_done, &ctx, err, sizeof(err));
    assert_true(ctx.h != NULL);
    memset(res, 0, sizeof(res));
    for (int i = 0; i < 10; i++) {
        snprintf(prompt, sizeof(prompt), "parallel %d", i);
        post(ctx.h, url, hdr, prompt, 30000, 0, &res[i]);
    }
    run_until_idle(ctx.h, 60);
    assert_int_eq(ctx.completed, 10);
    for (int i = 0; i < 10; i++) {
        assert_int_eq(res[i].status, 200);
        free(res[i].body);
        free(res[i].headers);
    }
    shoal_sim_stats(sim, &st);
    assert_int_eq(st.max_inflight, 10);
    shoal_http_destroy(ctx.h);
    shoal_sim_destroy(sim);
}

/* Connections stay open between bursts: 64 calls at once open 64, a run of
 * single calls after them reuses one, and the next 64 at once reuse the
 * first burst's. (curl alone shrank its cache to four times the transfers
 * running whenever one ended, so each single call closed a connection the
 * next burst had to open again.) */
static long burst(struct ctx *ctx, const char *url, const struct curl_slist *hdr, int n,
                  struct result *res)
{
    char prompt[64];
    long connects = 0;

    memset(res, 0, (size_t)n * sizeof(*res));
    ctx->completed = 0;
    for (int i = 0; i < n; i++) {
        snprintf(prompt, sizeof(prompt), "burst %d", i);
        post(ctx->h, url, hdr, prompt, 30000, 0, &res[i]);
    }
    run_until_idle(ctx->h, 60);
    assert_int_eq(ctx->completed, n);
    for (int i = 0; i < n; i++) {
        assert_int_eq(res[i].status, 200);
        connects += res[i].connects;
        free(res[i].body);
        free(res[i].headers);
    }
    return connects;
}

static void test_connections_kept(struct curl_slist *hdr)
{
    static struct result res[64];
    struct ctx ctx = {NULL, 0};
    char err[256], url[128];
    shoal_sim_t *sim = start_sim(200);

    snprintf(url, sizeof(url), "http://127.0.0.1:%d/v1/chat/completions", shoal_sim_port(sim));
    ctx.h = shoal_http_new(on_done, &ctx, err, sizeof(err));
    assert_true(ctx.h != NULL);
    assert_int_eq(burst(&ctx, url, hdr, 64, res), 64);
    long single = 0;
    for (int i = 0; i < 24; i++)
        single += burst(&ctx, url, hdr, 1, res);
    assert_int_eq(single, 0);
    assert_int_eq(burst(&ctx, url, hdr, 64, res), 0);
    shoal_http_destroy(ctx.h);
    shoal_sim_destroy(sim);
}

/* The environment's proxies are honoured, read when the handle is made: a
 * call to a plain-http upstream goes to http_proxy (the proxy sees the
 * absolute URL), and a host named in no_proxy is reached directly even when
 * the proxy is down. */
static void test_proxy_env(struct curl_slist *hdr)
{
    struct canned cs;
    pthread_t th;
    struct result r;
    struct ctx ctx = {NULL, 0};
    char proxy[128], url[128];

    int port = canned_one(&cs, &th);
    snprintf(proxy, sizeof(proxy), "http://127.0.0.1:%d", port);
    assert_int_eq(setenv("http_proxy", proxy, 1), 0);
    call_once(&ctx, "http://upstream.invalid/v1/chat/completions", hdr, "via proxy", 10000, &r);
    assert_int_eq(pthread_join(th, NULL), 0);
    assert_int_eq(r.done, 1);
    assert_int_eq(r.status, 200);
    assert_true(cs.request_line[0] != NULL);
    assert_str_eq(cs.request_line[0], "POST http://upstream.invalid/v1/chat/completions HTTP/1.1");
    canned_one_free(&cs, &r);

    /* the proxy is gone now; no_proxy names the simulator's host */
    shoal_sim_t *sim = start_sim(0);
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/v1/chat/completions", shoal_sim_port(sim));
    assert_int_eq(setenv("no_proxy", "127.0.0.1", 1), 0);
    call_once(&ctx, url, hdr, "direct", 10000, &r);
    assert_int_eq(r.status, 200);
    free(r.body);
    free(r.headers);

    /* without no_proxy the same call goes to the dead proxy and fails */
    assert_int_eq(unsetenv("no_proxy"), 0);
    call_once(&ctx, url, hdr, "through a dead proxy", 10000, &r);
    assert_int_eq(r.done, 1);
    assert_int_eq(r.status, 0);
    assert_true(r.error[0] != '\0');
    free(r.body);
    free(r.headers);
    assert_int_eq(unsetenv("http_proxy"), 0);
    shoal_sim_destroy(sim);
}

/* The simulator as its own process (as the local stack runs it) answers a
 * fresh burst of calls, each on a connection of its own opened at once:
 * none waits unread until its timeout. Three fresh simulators, as it was the
 * first burst a server saw that lost them. */
static void test_sim_process_burst(struct curl_slist *hdr)
{
    enum { BURST = 256 };
    static struct result r[BURST];
    struct ctx ctx = {NULL, 0};
    char err[256], url[128], port_arg[16];

    for (int round = 0; round < 3; round++) {
        int port = netport_free();
        snprintf(port_arg, sizeof(port_arg), "%d", port);
        char *argv[] = {(char *)harness_bin("shoal-sim"), "--port", port_arg, NULL};
        shoal_proc_t *sim = shoal_proc_spawn("shoal-sim", argv, NULL, NULL, err, sizeof(err));
        if (!sim)
            test_fail("shoal-sim: %s", err);
        netport_wait_listening(port, 10, "shoal-sim", "its stderr");
        snprintf(url, sizeof(url), "http://127.0.0.1:%d/v1/chat/completions", port);
        ctx.h = shoal_http_new(on_done, &ctx, err, sizeof(err));
        assert_true(ctx.h != NULL);
        memset(r, 0, sizeof(r));
        for (int i = 0; i < BURST; i++)
            post(ctx.h, url, hdr, "burst", 5000, 0, &r[i]);
        run_until_idle(ctx.h, 30);
        int ok = 0;
        for (int i = 0; i < BURST; i++) {
            ok += r[i].status == 200;
            free(r[i].body);
            free(r[i].headers);
        }
        if (ok != BURST)
            test_fail("round %d: %d of %d calls answered (first failure: %s)", round, ok, BURST,
                      r[0].status == 200 ? "-" : r[0].error);
        shoal_http_destroy(ctx.h);
        shoal_proc_kill(sim, SIGTERM);
        shoal_proc_wait(sim, 10000, NULL);
        shoal_proc_destroy(sim);
    }
}

/* A models file's own headers go out on the wire, their variables read,
 * after the key's header. */
static void test_model_headers(void)
{
    static const char *const names[] = {"OpenAI-Organization", "Helicone-Auth"};
    static const char *const values[] = {"org-1", "Bearer ${HTTP_TEST_GATEWAY_KEY}"};
    struct canned cs;
    pthread_t th;
    struct result r;
    struct ctx ctx = {NULL, 0};
    char url[128];
    shoal_model_t m = model;

    m.header_names = names;
    m.header_values = values;
    m.nheaders = 2;
    assert_int_eq(setenv("HTTP_TEST_GATEWAY_KEY", "gw-secret", 1), 0);
    struct curl_slist *hdr = shoal_provider_headers(&m);
    assert_true(hdr != NULL);
    int port = canned_one(&cs, &th);
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/v1/chat/completions", port);
    call_once(&ctx, url, hdr, "with headers", 10000, &r);
    assert_int_eq(pthread_join(th, NULL), 0);
    assert_int_eq(r.status, 200);
    assert_true(cs.head[0] != NULL);
    assert_str_contains(cs.head[0], "\r\nOpenAI-Organization: org-1\r\n");
    assert_str_contains(cs.head[0], "\r\nHelicone-Auth: Bearer gw-secret\r\n");
    assert_str_contains(cs.head[0], "\r\nContent-Type: application/json\r\n");
    canned_one_free(&cs, &r);
    curl_slist_free_all(hdr);
    unsetenv("HTTP_TEST_GATEWAY_KEY");
}

int main(void)
{
    struct curl_slist *hdr = shoal_provider_headers(&model);
    assert_true(hdr != NULL);

    test_many_in_flight(hdr);
    test_parallel_connections(hdr);
    test_connections_kept(hdr);
    test_delayed_start(hdr);
    test_refused(hdr);
    test_ended_before_wait(hdr);
    test_timeout(hdr);
    test_http_errors(hdr);
    test_retry_after(hdr);
    test_header_block(hdr);
    test_body_sizes(hdr);
    test_proxy_env(hdr);
    test_model_headers();
    test_sim_process_burst(hdr);
    curl_slist_free_all(hdr);
    printf("http_test: ok\n");
    return 0;
}
