/*
 * curl multi driver (see http.h). Each call owns an easy handle (taken from a
 * pool so handles and their buffers are reused), a copy of its body, a
 * response buffer capped at MAX_BODY and the final response's header lines
 * capped at MAX_HEADERS.
 */
#include "worker/http.h"

#include <curl/curl.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/service.h"
#include "worker/provider.h"

#define MAX_BODY (16 * 1024 * 1024)
#define MAX_HEADERS (16 * 1024)
#define POOL_KEEP (64 * 1024)     /* larger buffers are freed when a call is pooled */
#define CONNECT_TIMEOUT_MS 10000L /* a provider that drops SYNs fails this fast */

struct call {
    CURL *easy;
    void *user;
    char *req;
    size_t reqlen;
    char *buf;
    size_t len, cap;
    int overflow;
    char *hdr; /* header lines of the latest response; reused across calls */
    size_t hlen, hcap;
    int hfull; /* a line did not fit: the block is its lines before that one */
    long timeout_ms;
    double start_at_ms; /* monotonic; 0 when started */
    double started_unix;
    char *url; /* owned; kept with its capacity when the call is pooled */
    size_t urlcap;
    const struct curl_slist *headers;
    const char *ca_file; /* borrowed until the call ends; NULL: curl's own bundle */
    char *ca_applied;    /* the handle's CURLOPT_CAINFO (a copy); NULL: curl's default */
    char errbuf[CURL_ERROR_SIZE];
    struct call *next;          /* delayed list or free pool */
    struct call *aprev, *anext; /* running list */
};

struct shoal_http {
    CURLM *multi;
    /* The environment's proxies (see read_proxies), "" for none. */
    char *proxy_http, *proxy_https, *no_proxy;
    shoal_http_done_fn done;
    void *arg;
    struct call *delayed; /* not yet started, unsorted */
    struct call *pool;    /* finished calls kept for their easy handles */
    struct call *active;  /* running transfers */
    int pending;
    long conn_cap;    /* the connection cache's size as last set */
    char *default_ca; /* curl's built-in CA bundle path, NULL for none */
    int default_ca_read;
};

/* Connections kept open: twice the most calls ever pending at once (room
 * for one host's calls in use while another's connections wait idle), at
 * least CONN_CAP_MIN. Left to itself, curl sizes its cache at four times
 * the transfers added at the moment a transfer ends, so whenever few were
 * running it closed idle connections, only to open them again for the next
 * burst: a worker whose window ebbs and fills reconnected once every twenty
 * calls (and against a provider each new connection is a TLS handshake). */
#define CONN_CAP_MIN 16L

static void keep_connections(shoal_http_t *h)
{
    long want = 2L * h->pending;
    if (want < CONN_CAP_MIN)
        want = CONN_CAP_MIN;
    if (want <= h->conn_cap)
        return;
    curl_multi_setopt(h->multi, CURLMOPT_MAXCONNECTS, want);
    h->conn_cap = want;
}

/* The first of the variables names (NULL-ended) that is set and not empty,
 * copied; "" if none. */
static char *env_first(const char *const *names)
{
    for (; *names; names++) {
        const char *v = getenv(*names);
        if (v && *v)
            return strdup(v);
    }
    return strdup("");
}

static void free_proxies(shoal_http_t *h)
{
    free(h->proxy_http);
    free(h->proxy_https);
    free(h->no_proxy);
}

/* Reads the proxy variables once, as curl reads them (http_proxy only in
 * lower case, https_proxy either case, then all_proxy; no_proxy either
 * case), and hands them to each call. Left to itself, curl looks them up in
 * the environment on every call, which was a tenth of a call's CPU. */
static int read_proxies(shoal_http_t *h)
{
    static const char *const http[] = {"http_proxy", "all_proxy", "ALL_PROXY", NULL};
    static const char *const https[] = {"https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY",
                                        NULL};
    static const char *const none[] = {"no_proxy", "NO_PROXY", NULL};
    h->proxy_http = env_first(http);
    h->proxy_https = env_first(https);
    h->no_proxy = env_first(none);
    return h->proxy_http && h->proxy_https && h->no_proxy;
}

shoal_http_t *shoal_http_new(shoal_http_done_fn done, void *arg, char *errbuf, size_t errlen)
{
    static int global_init;
    if (!global_init) {
        if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
            shoal_err_set(errbuf, errlen, SHOAL_ERR_IO, "could not initialize libcurl");
            return NULL;
        }
        global_init = 1;
    }
    shoal_http_t *h = calloc(1, sizeof(*h));
    if (!h || !read_proxies(h) || !(h->multi = curl_multi_init())) {
        if (h)
            free_proxies(h);
        free(h);
        shoal_err_set(errbuf, errlen, SHOAL_ERR_NOMEM, "could not create a curl multi handle");
        return NULL;
    }
    h->done = done;
    h->arg = arg;
    curl_multi_setopt(h->multi, CURLMOPT_PIPELINING, (long)CURLPIPE_MULTIPLEX);
    keep_connections(h);
    return h;
}

static void call_free(struct call *c)
{
    if (!c)
        return;
    if (c->easy)
        curl_easy_cleanup(c->easy);
    free(c->req);
    free(c->buf);
    free(c->hdr);
    free(c->url);
    free(c->ca_applied);
    free(c);
}

void shoal_http_destroy(shoal_http_t *h)
{
    if (!h)
        return;
    struct call *c, *n;
    /* Abandon running transfers: their owners are torn down with us. */
    for (c = h->active; c; c = n) {
        n = c->anext;
        curl_multi_remove_handle(h->multi, c->easy);
        call_free(c);
    }
    for (c = h->delayed; c; c = n) {
        n = c->next;
        call_free(c);
    }
    for (c = h->pool; c; c = n) {
        n = c->next;
        call_free(c);
    }
    curl_multi_cleanup(h->multi);
    free_proxies(h);
    free(h->default_ca);
    free(h);
}

static size_t on_body(char *data, size_t size, size_t n, void *arg)
{
    struct call *c = arg;
    size_t add = size * n;
    if (c->len + add + 1 > MAX_BODY) {
        c->overflow = 1;
        return 0; /* aborts the transfer */
    }
    if (c->len + add + 1 > c->cap) {
        /* Sized to the announced length when there is one: a thousand
         * answers in flight then hold what they are, not a power of two
         * above it. */
        curl_off_t announced = -1;
        size_t ncap = c->cap ? c->cap : 512;
        if (c->len == 0 &&
            curl_easy_getinfo(c->easy, CURLINFO_CONTENT_LENGTH_DOWNLOAD_T, &announced) ==
                CURLE_OK &&
            announced >= (curl_off_t)add && announced < MAX_BODY)
            ncap = (size_t)announced + 1;
        while (ncap < c->len + add + 1)
            ncap *= 2;
        char *nb = realloc(c->buf, ncap);
        if (!nb)
            return 0;
        c->buf = nb;
        c->cap = ncap;
    }
    memcpy(c->buf + c->len, data, add);
    c->len += add;
    c->buf[c->len] = '\0';
    return add;
}

/* Keeps the header lines of the latest response: a status line starts a new
 * one, so the lines of interim answers (100 Continue, 103 Early Hints) are
 * dropped. Past MAX_HEADERS the rest of the block is skipped, never the
 * transfer. */
static size_t on_header(char *data, size_t size, size_t n, void *arg)
{
    struct call *c = arg;
    size_t len = size * n;

    if (len >= 5 && memcmp(data, "HTTP/", 5) == 0) {
        c->hlen = 0;
        c->hfull = 0;
        return len;
    }
    if (len == 0 || (len <= 2 && (data[0] == '\r' || data[0] == '\n')))
        return len; /* the blank line ending the block */
    if (c->hfull || c->hlen + len > MAX_HEADERS) {
        c->hfull = 1;
        return len;
    }
    if (c->hlen + len > c->hcap) {
        size_t ncap = c->hcap ? c->hcap : 512; /* a provider sends 0.1 to 2 KiB */
        char *nb;

        while (ncap < c->hlen + len)
            ncap *= 2;
        if (ncap > MAX_HEADERS)
            ncap = MAX_HEADERS;
        if (!(nb = realloc(c->hdr, ncap))) {
            c->hfull = 1; /* the headers are advice; the answer still counts */
            return len;
        }
        c->hdr = nb;
        c->hcap = ncap;
    }
    memcpy(c->hdr + c->hlen, data, len);
    c->hlen += len;
    return len;
}

/* Options that stay the same for every call a handle makes: set once, when
 * the pooled call creates its handle. Resetting and setting them all again
 * for each call was a measurable part of a call's CPU. */
static void set_constant(shoal_http_t *h, CURL *e, struct call *c)
{
    curl_easy_setopt(e, CURLOPT_POST, 1L);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, c);
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, c);
    curl_easy_setopt(e, CURLOPT_PRIVATE, c);
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, c->errbuf);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_ACCEPT_ENCODING, "");
    curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
    /* Model answers are small: curl's smallest receive buffer (1 KiB)
     * instead of its 16 KiB default saves 15 KiB per call in flight (a
     * thousand calls: 15 MB); a larger answer costs a few more reads. */
    curl_easy_setopt(e, CURLOPT_BUFFERSIZE, 1024L);
    curl_easy_setopt(e, CURLOPT_NOPROXY, h->no_proxy);
}

/* The CA bundle a call trusts: its own ca_file, else curl's built-in one.
 * Handles are pooled across models, so a call without a ca_file must put
 * the default back; set only when it changes (curl reads the file for each
 * new connection, not each call). */
static shoal_err_t set_ca(shoal_http_t *h, struct call *c)
{
    if (!h->default_ca_read) {
        char *def = NULL;
        if (curl_easy_getinfo(c->easy, CURLINFO_CAINFO, &def) == CURLE_OK && def &&
            !(h->default_ca = strdup(def)))
            return SHOAL_ERR_NOMEM;
        h->default_ca_read = 1;
    }
    const char *want = c->ca_file ? c->ca_file : h->default_ca;
    /* a handle never set has curl's default */
    const char *have = c->ca_applied ? c->ca_applied : h->default_ca;
    if (want == have || (want && have && !strcmp(want, have)))
        return SHOAL_OK;
    char *copy = want ? strdup(want) : NULL;
    if (want && !copy)
        return SHOAL_ERR_NOMEM;
    curl_easy_setopt(c->easy, CURLOPT_CAINFO, want);
    free(c->ca_applied);
    c->ca_applied = copy;
    return SHOAL_OK;
}

static shoal_err_t start(shoal_http_t *h, struct call *c, char *errbuf, size_t errlen)
{
    CURL *e = c->easy;
    if (!e) {
        if (!(e = c->easy = curl_easy_init()))
            return shoal_err_set(errbuf, errlen, SHOAL_ERR_NOMEM, "could not create a transfer");
        set_constant(h, e, c);
    }
    if (set_ca(h, c) != SHOAL_OK)
        return shoal_err_set(errbuf, errlen, SHOAL_ERR_NOMEM, "out of memory");
    c->len = 0;
    c->overflow = 0;
    c->hlen = 0;
    c->hfull = 0;
    c->errbuf[0] = '\0';
    /* What changes from call to call; every one of these is set each time,
     * so nothing of the handle's previous call carries over. */
    curl_easy_setopt(e, CURLOPT_URL, c->url);
    curl_easy_setopt(e, CURLOPT_POSTFIELDS, c->req);
    curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE, (long)c->reqlen);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, c->headers);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, c->timeout_ms);
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS,
                     c->timeout_ms < CONNECT_TIMEOUT_MS ? c->timeout_ms : CONNECT_TIMEOUT_MS);
    /* Waiting for a connection to show whether it multiplexes only pays off
     * over TLS, where HTTP/2 is negotiated; on plain http:// it would queue
     * every call behind the first one on the connection. */
    int tls = strncasecmp(c->url, "https://", 8) == 0;
    curl_easy_setopt(e, CURLOPT_PIPEWAIT, tls ? 1L : 0L);
    curl_easy_setopt(e, CURLOPT_PROXY, tls ? h->proxy_https : h->proxy_http);
    c->start_at_ms = 0;
    c->started_unix = shoal_service_unix_s();
    if (curl_multi_add_handle(h->multi, e) != CURLM_OK)
        return shoal_err_set(errbuf, errlen, SHOAL_ERR_NOMEM, "could not start a transfer");
    c->aprev = NULL;
    c->anext = h->active;
    if (h->active)
        h->active->aprev = c;
    h->active = c;
    return SHOAL_OK;
}

shoal_err_t shoal_http_post(shoal_http_t *h, const char *url, const struct curl_slist *headers,
                            const char *ca_file, const char *body, size_t len, long timeout_ms,
                            long start_after_ms, void *user, char *errbuf, size_t errlen)
{
    struct call *c = h->pool;
    if (c) {
        h->pool = c->next;
    } else if (!(c = calloc(1, sizeof(*c)))) {
        return shoal_err_set(errbuf, errlen, SHOAL_ERR_NOMEM, "out of memory");
    }
    c->next = NULL;
    if (!(c->req = malloc(len + 1))) {
        call_free(c);
        return shoal_err_set(errbuf, errlen, SHOAL_ERR_NOMEM, "out of memory");
    }
    memcpy(c->req, body, len);
    c->req[len] = '\0';
    c->reqlen = len;
    c->user = user;
    c->headers = headers;
    c->ca_file = ca_file;
    c->timeout_ms = timeout_ms > 0 ? timeout_ms : 60000;
    /* A URL is tens of bytes: a fixed 2 KiB copy per call in flight was the
     * largest part of this record (a thousand calls: 2 MB). */
    size_t ulen = strlen(url);
    if (ulen + 1 > c->urlcap) {
        char *nu = realloc(c->url, ulen + 1);
        if (!nu) {
            call_free(c);
            return shoal_err_set(errbuf, errlen, SHOAL_ERR_NOMEM, "out of memory");
        }
        c->url = nu;
        c->urlcap = ulen + 1;
    }
    memcpy(c->url, url, ulen + 1);
    h->pending++;
    keep_connections(h);
    if (start_after_ms > 0) {
        c->start_at_ms = shoal_service_now_ms() + (double)start_after_ms;
        c->next = h->delayed;
        h->delayed = c;
        return SHOAL_OK;
    }
    shoal_err_t err = start(h, c, errbuf, errlen);
    if (err != SHOAL_OK) {
        h->pending--;
        call_free(c);
    }
    return err;
}

int shoal_http_pending(const shoal_http_t *h)
{
    return h->pending;
}

/* Keeps a finished call for reuse. A pooled call keeps its easy handle and
 * small buffers; the request copy goes, and so does a large answer buffer,
 * or the pool would hold the largest answer each call ever saw. */
static void pool_put(shoal_http_t *h, struct call *c)
{
    if (c->cap > POOL_KEEP) {
        free(c->buf);
        c->buf = NULL;
        c->cap = 0;
    }
    free(c->req); /* the next call copies its own */
    c->req = NULL;
    c->next = h->pool;
    h->pool = c;
}

/* Starts due delayed calls; returns ms until the next one is due (or -1). */
static long start_due(shoal_http_t *h)
{
    double now = shoal_service_now_ms(), next = -1;
    struct call **pp = &h->delayed;
    while (*pp) {
        struct call *c = *pp;
        if (c->start_at_ms <= now) {
            *pp = c->next;
            c->next = NULL;
            char err[128];
            if (start(h, c, err, sizeof(err)) != SHOAL_OK) {
                /* Report it as a transport failure so its owner retries. */
                shoal_http_reply_t r = {.error = err,
                                        .body = "",
                                        .retry_after_ms = -1,
                                        .started_unix = shoal_service_unix_s(),
                                        .headers = ""};
                h->pending--;
                h->done(c->user, &r, h->arg);
                pool_put(h, c);
            }
            continue;
        }
        if (next < 0 || c->start_at_ms - now < next)
            next = c->start_at_ms - now;
        pp = &c->next;
    }
    return next < 0 ? -1 : (long)next + 1;
}

/* Hands every ended transfer to its owner; returns how many ended. */
static int deliver(shoal_http_t *h)
{
    int left, n = 0;
    CURLMsg *m;

    while ((m = curl_multi_info_read(h->multi, &left)) != NULL) {
        if (m->msg != CURLMSG_DONE)
            continue;
        struct call *c = NULL;
        CURL *e = m->easy_handle;
        CURLcode res = m->data.result;
        curl_easy_getinfo(e, CURLINFO_PRIVATE, (char **)&c);
        curl_multi_remove_handle(h->multi, e);
        if (c->aprev)
            c->aprev->anext = c->anext;
        else
            h->active = c->anext;
        if (c->anext)
            c->anext->aprev = c->aprev;

        shoal_http_reply_t r;
        shoal_provider_signals_t sig;
        memset(&r, 0, sizeof(r));
        double total = 0;
        curl_easy_getinfo(e, CURLINFO_TOTAL_TIME, &total);
        curl_easy_getinfo(e, CURLINFO_NUM_CONNECTS, &r.connects);
        if (res == CURLE_OK)
            curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &r.status);
        r.timed_out = res == CURLE_OPERATION_TIMEDOUT;
        r.untrusted = res == CURLE_PEER_FAILED_VERIFICATION || res == CURLE_SSL_CACERT_BADFILE;
        r.error = res == CURLE_OK ? NULL
                  : c->overflow   ? "answer larger than 16 MiB"
                  : c->errbuf[0]  ? c->errbuf
                                  : curl_easy_strerror(res);
        r.body = c->buf ? c->buf : "";
        r.len = c->len;
        r.headers = c->hdr && c->hlen ? c->hdr : "";
        r.headers_len = c->hlen;
        shoal_provider_signals(r.headers, r.headers_len, shoal_service_unix_s(), &sig);
        r.retry_after_ms = sig.retry_after_ms;
        r.started_unix = c->started_unix;
        r.latency_ms = total * 1000.0;
        h->pending--;
        h->done(c->user, &r, h->arg);
        c->user = NULL;
        pool_put(h, c);
        n++;
    }
    return n;
}

shoal_err_t shoal_http_run(shoal_http_t *h, int timeout_ms, int extra_fd, char *errbuf,
                           size_t errlen)
{
    int running, nfds = 0;
    struct curl_waitfd extra = {extra_fd, CURL_WAIT_POLLIN, 0};

    long due = start_due(h);
    if (due >= 0 && due < timeout_ms)
        timeout_ms = (int)due;
    CURLMcode mc = curl_multi_perform(h->multi, &running);
    /* A transfer can end inside that perform (an answer that came back
     * while curl was still reading, a refused connection): its owner hears
     * of it now and decides what comes next. Waiting first would sit on it
     * for the whole timeout, a call's 0.2 ms reading as 200. */
    if (mc == CURLM_OK && deliver(h) > 0)
        return SHOAL_OK;
    if (mc == CURLM_OK && (running > 0 || (timeout_ms > 0 && (extra_fd >= 0 || due >= 0))))
        mc = curl_multi_poll(h->multi, extra_fd >= 0 ? &extra : NULL, extra_fd >= 0 ? 1 : 0,
                             timeout_ms, &nfds);
    if (mc == CURLM_OK)
        mc = curl_multi_perform(h->multi, &running);
    if (mc != CURLM_OK)
        return shoal_err_set(errbuf, errlen, SHOAL_ERR_IO, "curl multi failed: %s",
                             curl_multi_strerror(mc));
    deliver(h);
    return SHOAL_OK;
}
