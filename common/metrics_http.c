/*
 * GET /metrics over libmicrohttpd (see metrics_http.h). One internal polling
 * thread: scrapes are rare and each renders the whole registry, so a thread
 * pool would only let collect callbacks (database queries) pile up.
 */
#include "common/metrics_http.h"

#include <arpa/inet.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>

struct shoal_metrics_http {
    shoal_metrics_t *metrics;
    struct MHD_Daemon *daemon;
    int port;
};

static enum MHD_Result reply(struct MHD_Connection *conn, unsigned status, const char *text)
{
    struct MHD_Response *r =
        MHD_create_response_from_buffer(strlen(text), (void *)text, MHD_RESPMEM_PERSISTENT);
    if (!r)
        return MHD_NO;
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "text/plain; charset=utf-8");
    enum MHD_Result ret = MHD_queue_response(conn, status, r);
    MHD_destroy_response(r);
    return ret;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version, const char *upload,
                                  size_t *upload_len, void **req_cls)
{
    shoal_metrics_http_t *h = cls;
    (void)version;
    (void)upload;
    /* The first call only announces the headers; answer on the second, when
     * any body (ignored) has been read. */
    if (!*req_cls) {
        *req_cls = h;
        return MHD_YES;
    }
    if (*upload_len) {
        *upload_len = 0;
        return MHD_YES;
    }
    if (strcmp(url, "/metrics") != 0)
        return reply(conn, MHD_HTTP_NOT_FOUND, "not found: metrics are at /metrics\n");
    if (strcmp(method, MHD_HTTP_METHOD_GET) != 0 && strcmp(method, MHD_HTTP_METHOD_HEAD) != 0)
        return reply(conn, MHD_HTTP_METHOD_NOT_ALLOWED, "only GET /metrics\n");
    size_t len = 0;
    char *text = shoal_metrics_render(h->metrics, &len);
    if (!text)
        return reply(conn, MHD_HTTP_INTERNAL_SERVER_ERROR, "out of memory rendering metrics\n");
    struct MHD_Response *r = MHD_create_response_from_buffer(len, text, MHD_RESPMEM_MUST_FREE);
    if (!r) {
        free(text);
        return MHD_NO;
    }
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "text/plain; version=0.0.4");
    enum MHD_Result ret = MHD_queue_response(conn, MHD_HTTP_OK, r);
    MHD_destroy_response(r);
    return ret;
}

shoal_metrics_http_t *shoal_metrics_http_new(shoal_metrics_t *m, const char *bind, int port,
                                             char *errbuf, size_t errlen)
{
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_port = htons((unsigned short)port);
    if (inet_pton(AF_INET, bind && *bind ? bind : "127.0.0.1", &sa.sin_addr) != 1) {
        shoal_err_set(errbuf, errlen, SHOAL_ERR_INVALID,
                      "metrics-bind: \"%s\" is not an IPv4 address", bind);
        return NULL;
    }
    shoal_metrics_http_t *h = calloc(1, sizeof(*h));
    if (!h) {
        shoal_err_set(errbuf, errlen, SHOAL_ERR_NOMEM, "out of memory");
        return NULL;
    }
    h->metrics = m;
    h->daemon = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_POLL, 0, NULL, NULL,
                                 on_request, h, MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&sa,
                                 MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)30,
                                 MHD_OPTION_CONNECTION_LIMIT, (unsigned)64, MHD_OPTION_END);
    if (!h->daemon) {
        shoal_err_set(errbuf, errlen, SHOAL_ERR_IO,
                      "could not listen on %s:%d for metrics (port in use?)",
                      bind && *bind ? bind : "127.0.0.1", port);
        free(h);
        return NULL;
    }
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(h->daemon, MHD_DAEMON_INFO_BIND_PORT);
    h->port = di ? (int)di->port : port;
    return h;
}

int shoal_metrics_http_port(const shoal_metrics_http_t *h)
{
    return h ? h->port : 0;
}

void shoal_metrics_http_destroy(shoal_metrics_http_t *h)
{
    if (!h)
        return;
    MHD_stop_daemon(h->daemon);
    free(h);
}

shoal_err_t shoal_metrics_http_serve(const char *bind, long port, shoal_metrics_t **metrics,
                                     shoal_metrics_http_t **http, char *errbuf, size_t errlen)
{
    *metrics = NULL;
    *http = NULL;
    if (port <= 0)
        return SHOAL_OK;
    if (!(*metrics = shoal_metrics_new()))
        return shoal_err_set(errbuf, errlen, SHOAL_ERR_NOMEM, "out of memory");
    if (!(*http = shoal_metrics_http_new(*metrics, bind, (int)port, errbuf, errlen))) {
        shoal_metrics_destroy(*metrics);
        *metrics = NULL;
        return SHOAL_ERR_IO;
    }
    return SHOAL_OK;
}

void shoal_metrics_http_stop(shoal_metrics_t *metrics, shoal_metrics_http_t *http)
{
    shoal_metrics_http_destroy(http);
    shoal_metrics_destroy(metrics);
}
