/*
 * stack/mockkafka: the mock cluster creates shoal's topics, serves a producer
 * and a consumer group from ordinary client handles, answers kcat's metadata
 * request from another process, keeps its connections TCP_NODELAY, and
 * rejects bad topics.
 */
#include "stack/mockkafka.h"

#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <dirent.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tests/support/check.h"

#define NMSG 100
#define TOPIC "shoal.tasks.normal"

static int delivered_ok, delivered_err;

static void dr_cb(rd_kafka_t *rk, const rd_kafka_message_t *msg, void *opaque)
{
    (void)rk;
    (void)opaque;
    if (msg->err)
        delivered_err++;
    else
        delivered_ok++;
}

static void set(rd_kafka_conf_t *conf, const char *k, const char *v)
{
    char errstr[256];
    if (rd_kafka_conf_set(conf, k, v, errstr, sizeof(errstr)) != RD_KAFKA_CONF_OK)
        test_fail("%s=%s: %s", k, v, errstr);
}

static void produce(const char *bootstraps)
{
    char errstr[256];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    set(conf, "bootstrap.servers", bootstraps);
    rd_kafka_conf_set_dr_msg_cb(conf, dr_cb);
    rd_kafka_t *p = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr));
    if (!p)
        test_fail("producer: %s", errstr);
    for (int i = 0; i < NMSG; i++) {
        char key[16], val[32];
        snprintf(key, sizeof(key), "k%d", i);
        snprintf(val, sizeof(val), "%d", i);
        rd_kafka_resp_err_t err =
            rd_kafka_producev(p, RD_KAFKA_V_TOPIC(TOPIC), RD_KAFKA_V_KEY(key, strlen(key)),
                              RD_KAFKA_V_VALUE(val, strlen(val)),
                              RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END);
        if (err)
            test_fail("produce %d: %s", i, rd_kafka_err2str(err));
        rd_kafka_poll(p, 0);
    }
    assert_int_eq(rd_kafka_flush(p, 30000), RD_KAFKA_RESP_ERR_NO_ERROR);
    assert_int_eq(delivered_ok, NMSG);
    assert_int_eq(delivered_err, 0);
    rd_kafka_destroy(p);
}

static void consume(const char *bootstraps)
{
    char errstr[256];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    set(conf, "bootstrap.servers", bootstraps);
    set(conf, "group.id", "mockkafka-test");
    set(conf, "session.timeout.ms", "6000");
    set(conf, "auto.offset.reset", "earliest");
    rd_kafka_t *c = rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, sizeof(errstr));
    if (!c)
        test_fail("consumer: %s", errstr);
    rd_kafka_poll_set_consumer(c);
    rd_kafka_topic_partition_list_t *topics = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(topics, TOPIC, RD_KAFKA_PARTITION_UA);
    assert_int_eq(rd_kafka_subscribe(c, topics), RD_KAFKA_RESP_ERR_NO_ERROR);
    rd_kafka_topic_partition_list_destroy(topics);

    static char seen[NMSG];
    int got = 0, dups = 0;
    double deadline = check_now_s() + 60;
    while (got < NMSG && check_now_s() < deadline) {
        rd_kafka_message_t *msg = rd_kafka_consumer_poll(c, 200);
        if (!msg)
            continue;
        if (msg->err == RD_KAFKA_RESP_ERR_NO_ERROR) {
            char val[32];
            snprintf(val, sizeof(val), "%.*s", (int)msg->len, (const char *)msg->payload);
            char *end;
            long i = strtol(val, &end, 10);
            assert_true(*end == '\0' && i >= 0 && i < NMSG);
            if (seen[i])
                dups++;
            else
                got++;
            seen[i] = 1;
        } else if (msg->err != RD_KAFKA_RESP_ERR__PARTITION_EOF) {
            fprintf(stderr, "consumer event: %s\n", rd_kafka_message_errstr(msg));
        }
        rd_kafka_message_destroy(msg);
    }
    assert_int_eq(got, NMSG);
    assert_int_eq(dups, 0);
    assert_int_eq(rd_kafka_consumer_close(c), RD_KAFKA_RESP_ERR_NO_ERROR);
    rd_kafka_destroy(c);
}

/* kcat is another process and another client: the endpoint is real Kafka. */
static void kcat_metadata(const char *bootstraps)
{
    char cmd[512];
    snprintf(cmd, sizeof(cmd), "kcat -b '%s' -L -m 15 2>&1", bootstraps);
    FILE *f = popen(cmd, "r");
    assert_true(f != NULL);
    static char out[65536];
    size_t n = fread(out, 1, sizeof(out) - 1, f);
    out[n] = '\0';
    int st = pclose(f);
    if (WIFEXITED(st) && WEXITSTATUS(st) == 127)
        test_fail("kcat not found: install the kcat package (it checks the mock cluster from "
                  "another process)");
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
        test_fail("kcat -L failed (status %d): %s", st, out);
    assert_str_contains(out, "topic \"" TOPIC "\" with 8 partitions");
    assert_str_contains(out, "topic \"shoal.jobs\" with 4 partitions");
    assert_str_contains(out, "topic \"shoal.tasks.dlq\" with 2 partitions");
    assert_str_contains(out, "topic \"shoal.events\" with 4 partitions");
    assert_str_contains(out, "topic \"dev.tasks.high\" with 8 partitions");
    assert_str_contains(out, "3 brokers");
}

static void test_errors(shoal_mockkafka_t *m)
{
    char err[256];
    assert_int_eq(shoal_mockkafka_create_topic(m, "", 1, err, sizeof(err)), SHOAL_ERR_INVALID);
    assert_int_eq(shoal_mockkafka_create_topic(m, "bad topic", 1, err, sizeof(err)),
                  SHOAL_ERR_INVALID);
    assert_str_contains(err, "bad topic");
    assert_int_eq(shoal_mockkafka_create_topic(m, "ok", 0, err, sizeof(err)), SHOAL_ERR_INVALID);
    assert_str_contains(err, "0 partitions");
    assert_int_eq(shoal_mockkafka_create_topic(m, TOPIC, 8, err, sizeof(err)), SHOAL_ERR_INVALID);
    assert_str_contains(err, "exists already");
    assert_int_eq(shoal_mockkafka_create_default_topics(m, NULL, err, sizeof(err)),
                  SHOAL_ERR_INVALID);
    assert_int_eq(shoal_mockkafka_create_topic(NULL, "x", 1, err, sizeof(err)), SHOAL_ERR_INVALID);

    assert_true(shoal_mockkafka_new(0, err, sizeof(err)) == NULL);
    assert_str_contains(err, "brokers");
    shoal_mockkafka_destroy(NULL);
}

/* The broker's end of a connection from 127.0.0.1:local_port, found among
 * this process's descriptors (the mock cluster runs in it), or -1. */
static int accepted_fd(int broker_port, int local_port)
{
    int found = -1;
    DIR *dir = opendir("/proc/self/fd");
    struct dirent *e;
    assert_true(dir != NULL);
    while (found < 0 && (e = readdir(dir)) != NULL) {
        int fd = atoi(e->d_name);
        struct sockaddr_in me, peer;
        socklen_t ml = sizeof(me), pl = sizeof(peer);
        if (fd > 2 && getsockname(fd, (struct sockaddr *)&me, &ml) == 0 &&
            me.sin_family == AF_INET && ntohs(me.sin_port) == broker_port &&
            getpeername(fd, (struct sockaddr *)&peer, &pl) == 0 &&
            ntohs(peer.sin_port) == local_port)
            found = fd;
    }
    closedir(dir);
    return found;
}

/* Every broker's connections are TCP_NODELAY, as a real broker's are: its
 * small answers do not wait behind Nagle for the client's delayed ACK (a
 * dispatcher's acknowledgements took 48 ms instead of 6). */
static void test_no_delay(const char *bootstraps)
{
    int brokers = 0;
    for (const char *p = strstr(bootstraps, "127.0.0.1:"); p; p = strstr(p + 1, "127.0.0.1:")) {
        int port = atoi(p + 10);
        struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
        sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        int c = socket(AF_INET, SOCK_STREAM, 0);
        assert_true(c >= 0);
        assert_int_eq(connect(c, (struct sockaddr *)&sa, sizeof(sa)), 0);
        struct sockaddr_in me;
        socklen_t ml = sizeof(me);
        assert_int_eq(getsockname(c, (struct sockaddr *)&me, &ml), 0);
        int fd = -1;
        for (int i = 0; i < 200 && fd < 0; i++) {
            if ((fd = accepted_fd(port, ntohs(me.sin_port))) < 0)
                usleep(10000);
        }
        if (fd < 0)
            test_fail("broker on port %d never accepted the connection", port);
        int on = 0;
        socklen_t len = sizeof(on);
        assert_int_eq(getsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, &len), 0);
        if (!on)
            test_fail("broker on port %d: its connection is not TCP_NODELAY", port);
        close(c);
        brokers++;
    }
    assert_int_eq(brokers, 3);
}

int main(void)
{
    char err[256];
    shoal_mockkafka_t *m = shoal_mockkafka_new(3, err, sizeof(err));
    if (!m)
        test_fail("new: %s", err);
    const char *bs = shoal_mockkafka_bootstraps(m);
    assert_str_contains(bs, "127.0.0.1:");
    assert_true(shoal_mockkafka_cluster(m) != NULL);
    if (shoal_mockkafka_create_default_topics(m, NULL, err, sizeof(err)) != SHOAL_OK)
        test_fail("default topics: %s", err);
    if (shoal_mockkafka_create_default_topics(m, "dev", err, sizeof(err)) != SHOAL_OK)
        test_fail("default topics with prefix: %s", err);
    test_errors(m);
    test_no_delay(bs);

    produce(bs);
    consume(bs);
    kcat_metadata(bs);

    shoal_mockkafka_destroy(m);
    printf("mockkafka_test ok\n");
    return 0;
}
