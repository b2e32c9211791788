/*
 * Many HTTP calls at once on one curl multi handle, driven from the caller's
 * thread. A call is submitted with its URL, headers, body, timeout and an
 * earliest start time (for backoff); when it ends, for any reason, the done
 * callback gets the status, body, the final response's header block,
 * Retry-After and timing. The loop sleeps in
 * curl_multi_poll with one extra descriptor (Kafka's wake-up pipe), so new
 * work and finished calls both wake it. Connections are reused across calls and
 * kept open for as many calls as were ever pending at once.
 * Not thread-safe: one thread owns the handle.
 */
#ifndef SHOAL_WORKER_HTTP_H
#define SHOAL_WORKER_HTTP_H

#include <stddef.h>

#include "common/err.h"

struct curl_slist;

typedef struct {
    long status;       /* HTTP status, 0 when no answer came */
    const char *error; /* transport error text when status is 0 */
    int timed_out;     /* the call hit its timeout */
    int untrusted;     /* TLS: the server's certificate was not verified by the CAs trusted */
    const char *body;  /* answer body, borrowed for the callback */
    size_t len;
    long retry_after_ms; /* from Retry-After / retry-after-ms, -1 if none */
    double started_unix; /* wall clock when the request went out */
    double latency_ms;   /* request sent to answer complete */
    long connects;       /* connections the call had to open (0: it reused one) */
    /* The final response's header lines ("Name: value\r\n", no status line),
     * borrowed for the callback; interim 1xx answers are not in it. At most
     * 16 KiB: lines past that are dropped (all we read is near the top). */
    const char *headers;
    size_t headers_len;
} shoal_http_reply_t;

typedef void (*shoal_http_done_fn)(void *user, const shoal_http_reply_t *reply, void *arg);

typedef struct shoal_http shoal_http_t;

/* done(user, reply, arg) runs inside shoal_http_run for every finished call. */
shoal_http_t *shoal_http_new(shoal_http_done_fn done, void *arg, char *errbuf, size_t errlen);
void shoal_http_destroy(shoal_http_t *h); /* NULL ok; abandons calls without callbacks */

/* Queues a POST. body is copied; headers and ca_file (a PEM bundle of the
 * CAs to trust over https instead of curl's own bundle, NULL for that one)
 * are borrowed until the call's done callback. start_after_ms delays the
 * start (0 = now). */
shoal_err_t shoal_http_post(shoal_http_t *h, const char *url, const struct curl_slist *headers,
                            const char *ca_file, const char *body, size_t len, long timeout_ms,
                            long start_after_ms, void *user, char *errbuf, size_t errlen);

/* Calls submitted and not yet finished (delayed ones included). */
int shoal_http_pending(const shoal_http_t *h);

/* Runs transfers, waiting at most timeout_ms for activity on them or on
 * extra_fd (-1 for none). Starts delayed calls that are due. */
shoal_err_t shoal_http_run(shoal_http_t *h, int timeout_ms, int extra_fd, char *errbuf,
                           size_t errlen);

#endif
