/*
 * librdkafka's mock cluster behind a shoal handle.
 *
 * The mock cluster needs an rd_kafka_t to host it (configuration and logging);
 * a producer handle without bootstrap servers serves, and it never connects
 * anywhere. Its log lines arrive on librdkafka's threads and go straight to
 * shoal_log_debug, which is thread-safe: they only matter when debugging the
 * mock itself.
 */
#include "stack/mockkafka.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>
#include <stdio.h>
#include <stdlib.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <string.h>
#include <sys/socket.h>

#include "common/log.h"

#define MAX_BROKERS 16
#define MAX_PARTITIONS 10000
#define MAX_TOPIC_LEN 249 /* Kafka's limit */

struct shoal_mockkafka {
    rd_kafka_t *rk;
    rd_kafka_mock_cluster_t *mc;
};

static const struct {
    const char *suffix;
    int partitions;
} default_topics[] = {
    {"jobs", 4},      {"tasks.high", 8}, {"tasks.normal", 8},
    {"tasks.low", 8}, {"tasks.dlq", 2},  {"events", 4},
};

static void log_cb(const rd_kafka_t *rk, int level, const char *fac, const char *buf)
{
    (void)rk;
    shoal_log_debug("mockkafka", "librdkafka level=%d fac=%s detail=%s", level, fac, buf);
}

/* Sets TCP_NODELAY on this process's listening sockets on 127.0.0.1 that
 * serve one of the ports in bootstraps ("host:port,..."); the connections
 * they accept inherit it. Returns how many were set. */
static int no_delay(const char *bootstraps)
{
    int set = 0;
    DIR *dir = opendir("/proc/self/fd");
    struct dirent *e;
    if (!dir)
        return 0;
    while ((e = readdir(dir)) != NULL) {
        int fd = atoi(e->d_name), listening = 0;
        socklen_t len = sizeof(listening);
        struct sockaddr_in sa;
        socklen_t salen = sizeof(sa);
        char port[16];
        if (fd <= 2 || getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &len) != 0 ||
            !listening || getsockname(fd, (struct sockaddr *)&sa, &salen) != 0 ||
            sa.sin_family != AF_INET)
            continue;
        snprintf(port, sizeof(port), ":%u", (unsigned)ntohs(sa.sin_port));
        for (const char *p = strstr(bootstraps, port); p; p = strstr(p + 1, port)) {
            char end = p[strlen(port)];
            if (end == '\0' || end == ',') {
                int one = 1;
                set += setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) == 0;
                break;
            }
        }
    }
    closedir(dir);
    return set;
}

shoal_mockkafka_t *shoal_mockkafka_new(int brokers, char *errbuf, size_t errlen)
{
    if (brokers < 1 || brokers > MAX_BROKERS) {
        shoal_err_set(errbuf, errlen, SHOAL_ERR_INVALID,
                      "cannot start a mock cluster of %d brokers: use 1 to %d", brokers,
                      MAX_BROKERS);
        return NULL;
    }
    shoal_mockkafka_t *m = calloc(1, sizeof(*m));
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    char errstr[512];
    if (!m || !conf) {
        shoal_err_set(errbuf, errlen, SHOAL_ERR_NOMEM, "out of memory");
        goto fail;
    }
    /* Level 3 keeps the host handle's "no bootstrap.servers" warning quiet. */
    if (rd_kafka_conf_set(conf, "log_level", "3", errstr, sizeof(errstr)) != RD_KAFKA_CONF_OK ||
        rd_kafka_conf_set(conf, "client.id", "shoal-mockkafka", errstr, sizeof(errstr)) !=
            RD_KAFKA_CONF_OK) {
        shoal_err_set(errbuf, errlen, SHOAL_ERR_INVALID, "cannot configure the mock host: %s",
                      errstr);
        goto fail;
    }
    rd_kafka_conf_set_log_cb(conf, log_cb);
    m->rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr));
    if (!m->rk) {
        shoal_err_set(errbuf, errlen, SHOAL_ERR_IO, "could not create the mock host handle: %s",
                      errstr);
        goto fail;
    }
    conf = NULL; /* owned by rk now */
    m->mc = rd_kafka_mock_cluster_new(m->rk, brokers);
    if (!m->mc) {
        shoal_err_set(errbuf, errlen, SHOAL_ERR_IO,
                      "could not start the mock Kafka cluster (no free ports on 127.0.0.1?)");
        goto fail;
    }
    /* A real broker answers without Nagle's wait (Kafka sets TCP_NODELAY on
     * every connection); the mock does not, and a second small answer on a
     * connection then waited for the client's delayed ACK: a dispatcher's
     * produce acknowledgements took 48 ms instead of 6, in half its passes. */
    no_delay(rd_kafka_mock_cluster_bootstraps(m->mc));
    shoal_log_debug("mockkafka", "started brokers=%d bootstraps=%s", brokers,
                    rd_kafka_mock_cluster_bootstraps(m->mc));
    return m;

fail:
    if (conf)
        rd_kafka_conf_destroy(conf);
    shoal_mockkafka_destroy(m);
    return NULL;
}

const char *shoal_mockkafka_bootstraps(const shoal_mockkafka_t *m)
{
    return m && m->mc ? rd_kafka_mock_cluster_bootstraps(m->mc) : "";
}

static int valid_topic(const char *t)
{
    size_t n = strlen(t);
    if (n == 0 || n > MAX_TOPIC_LEN || strcmp(t, ".") == 0 || strcmp(t, "..") == 0)
        return 0;
    return strspn(t, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-") == n;
}

shoal_err_t shoal_mockkafka_create_topic(shoal_mockkafka_t *m, const char *topic, int partitions,
                                         char *errbuf, size_t errlen)
{
    if (!m || !m->mc)
        return shoal_err_set(errbuf, errlen, SHOAL_ERR_INVALID, "no mock cluster");
    if (!topic || !valid_topic(topic))
        return shoal_err_set(errbuf, errlen, SHOAL_ERR_INVALID,
                             "cannot create topic \"%s\": names are 1-%d characters of "
                             "[a-zA-Z0-9._-]",
                             topic ? topic : "(null)", MAX_TOPIC_LEN);
    if (partitions < 1 || partitions > MAX_PARTITIONS)
        return shoal_err_set(errbuf, errlen, SHOAL_ERR_INVALID,
                             "cannot create topic \"%s\" with %d partitions: use 1 to %d", topic,
                             partitions, MAX_PARTITIONS);
    rd_kafka_resp_err_t err = rd_kafka_mock_topic_create(m->mc, topic, partitions, 1);
    if (err == RD_KAFKA_RESP_ERR_TOPIC_ALREADY_EXISTS)
        return shoal_err_set(errbuf, errlen, SHOAL_ERR_INVALID, "topic \"%s\" exists already",
                             topic);
    if (err)
        return shoal_err_set(errbuf, errlen, SHOAL_ERR_IO, "could not create topic \"%s\": %s",
                             topic, rd_kafka_err2str(err));
    shoal_log_debug("mockkafka", "created topic=%s partitions=%d", topic, partitions);
    return SHOAL_OK;
}

shoal_err_t shoal_mockkafka_create_default_topics(shoal_mockkafka_t *m, const char *prefix,
                                                  char *errbuf, size_t errlen)
{
    if (!prefix || !prefix[0])
        prefix = "shoal";
    for (size_t i = 0; i < sizeof(default_topics) / sizeof(default_topics[0]); i++) {
        char name[MAX_TOPIC_LEN + 2];
        int n = snprintf(name, sizeof(name), "%s.%s", prefix, default_topics[i].suffix);
        if (n < 0 || (size_t)n >= sizeof(name))
            return shoal_err_set(errbuf, errlen, SHOAL_ERR_INVALID,
                                 "topic prefix \"%s\" is too long", prefix);
        shoal_err_t err =
            shoal_mockkafka_create_topic(m, name, default_topics[i].partitions, errbuf, errlen);
        if (err != SHOAL_OK)
            return err;
    }
    return SHOAL_OK;
}

struct rd_kafka_mock_cluster_s *shoal_mockkafka_cluster(shoal_mockkafka_t *m)
{
    return m ? m->mc : NULL;
}

void shoal_mockkafka_destroy(shoal_mockkafka_t *m)
{
    if (!m)
        return;
    if (m->mc)
        rd_kafka_mock_cluster_destroy(m->mc);
    if (m->rk)
        rd_kafka_destroy(m->rk);
    free(m);
}
