/*
 * Serves a metrics registry (common/metrics.h) as GET /metrics on a TCP port,
 * in the Prometheus text format, from a thread of its own (libmicrohttpd's
 * internal polling thread), so a scrape never runs on a process's event loop;
 * collect callbacks run on that thread too. Anything but GET or HEAD of
 * /metrics is answered 404 or 405.
 */
#ifndef SHOAL_COMMON_METRICS_HTTP_H
#define SHOAL_COMMON_METRICS_HTTP_H

#include <stddef.h>

#include "common/err.h"
#include "common/metrics.h"
#include "common/opt.h"

typedef struct shoal_metrics_http shoal_metrics_http_t;

/* Option table rows for --metrics-port and --metrics-bind of a binary whose
 * configuration struct `type` has `long port_field` and `const char *
 * bind_field`. */
/* clang-format off */
#define SHOAL_METRICS_HTTP_OPTS(type, port_field, bind_field)                                      \
    {"metrics-port", SHOAL_OPT_INT, offsetof(type, port_field), "0", 0, 65535,                     \
     "serve Prometheus metrics on GET /metrics at this TCP port; 0 = off"},                        \
    {"metrics-bind", SHOAL_OPT_STR, offsetof(type, bind_field), "127.0.0.1", 0, 0,                 \
     "IPv4 address the metrics port listens on (0.0.0.0: every interface)"}
/* clang-format on */

/* Starts serving m (borrowed: it must outlive the handle) on bind:port.
 * port 0 picks a free port (see shoal_metrics_http_port). NULL with the
 * reason in errbuf (bad address, port in use). */
shoal_metrics_http_t *shoal_metrics_http_new(shoal_metrics_t *m, const char *bind, int port,
                                             char *errbuf, size_t errlen);

/* The port bound. */
int shoal_metrics_http_port(const shoal_metrics_http_t *h);

/* Stops the thread, waiting for a scrape in progress. NULL ok. */
void shoal_metrics_http_destroy(shoal_metrics_http_t *h);

/* A binary's start: with port > 0, a new registry in *metrics served on
 * bind:port by *http; with port 0 (off), both NULL. SHOAL_OK, or the reason
 * in errbuf (nothing left to free). */
shoal_err_t shoal_metrics_http_serve(const char *bind, long port, shoal_metrics_t **metrics,
                                     shoal_metrics_http_t **http, char *errbuf, size_t errlen);

/* Stops serving, then frees the registry. Either may be NULL. */
void shoal_metrics_http_stop(shoal_metrics_t *metrics, shoal_metrics_http_t *http);

#endif
