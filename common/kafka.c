/*
 * librdkafka configuration and handle construction (see kafka.h).
 */
#include "common/kafka.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"

extern char **environ;

shoal_err_t shoal_topics_init(shoal_topics_t *t, const char *prefix, char *errbuf, size_t errlen)
{
    if (!prefix || !*prefix)
        prefix = "shoal";
    memset(t, 0, sizeof(*t));
    if (strlen(prefix) > 100)
        return shoal_err_set(errbuf, errlen, SHOAL_ERR_INVALID,
                             "topic-prefix: too long (%zu characters; the limit is 100)",
                             strlen(prefix));
    if (strspn(prefix, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-") !=
        strlen(prefix))
        return shoal_err_set(errbuf, errlen, SHOAL_ERR_INVALID,
                             "topic-prefix: \"%s\" may only contain letters, digits and . _ -",
                             prefix);
    snprintf(t->jobs, sizeof(t->jobs), "%s.jobs", prefix);
    snprintf(t->tasks_high, sizeof(t->tasks_high), "%s.tasks.high", prefix);
    snprintf(t->tasks_normal, sizeof(t->tasks_normal), "%s.tasks.normal", prefix);
    snprintf(t->tasks_low, sizeof(t->tasks_low), "%s.tasks.low", prefix);
    snprintf(t->dlq, sizeof(t->dlq), "%s.tasks.dlq", prefix);
    snprintf(t->events, sizeof(t->events), "%s.events", prefix);
    return SHOAL_OK;
}

const char *shoal_topics_task(const shoal_topics_t *t, const char *priority)
{
    if (priority && !strcmp(priority, "high"))
        return t->tasks_high;
    if (priority && !strcmp(priority, "low"))
        return t->tasks_low;
    return t->tasks_normal;
}

static void log_cb(const rd_kafka_t *rk, int level, const char *fac, const char *buf)
{
    (void)rk;
    /* SHOAL_KAFKA_* settings reach producers and consumers alike; a
     * consumer-only property on a producer is expected, not a problem. */
    if (!strcmp(fac, "CONFWARN") &&
        (strstr(buf, "is a consumer property") || strstr(buf, "is a producer property")))
        level = 7;
    /* syslog levels: 0-3 error, 4 warning, 5-6 info, 7 debug */
    shoal_log_level_t l = level <= 3   ? SHOAL_LOG_ERROR
                          : level == 4 ? SHOAL_LOG_WARN
                          : level <= 6 ? SHOAL_LOG_INFO
                                       : SHOAL_LOG_DEBUG;
    SHOAL_LOG_AT(l, "kafka", "%s fac=%s", buf, fac);
}

static shoal_err_t set(rd_kafka_conf_t *conf, const char *key, const char *val, const char *from,
                       char *errbuf, size_t errlen)
{
    char why[512];
    if (rd_kafka_conf_set(conf, key, val, why, sizeof(why)) != RD_KAFKA_CONF_OK)
        return shoal_err_set(errbuf, errlen, SHOAL_ERR_INVALID, "%s %s: %s", from, key, why);
    return SHOAL_OK;
}

/* Environment twins of shoal's own options that begin like a property's
 * variable (the CLI's --kafka-timeout-ms): they are not librdkafka's. */
static int own_variable(const char *assignment)
{
    static const char *const own[] = {"SHOAL_KAFKA_TIMEOUT_MS="};
    for (size_t i = 0; i < sizeof(own) / sizeof(own[0]); i++)
        if (!strncmp(assignment, own[i], strlen(own[i])))
            return 1;
    return 0;
}

rd_kafka_conf_t *shoal_kafka_conf_new(const char *bootstrap, const shoal_kprops_t *props,
                                      char *errbuf, size_t errlen)
{
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    char key[256];

    if (set(conf, "log.queue", "true", "default", errbuf, errlen) != SHOAL_OK)
        goto fail;
    rd_kafka_conf_set_log_cb(conf, log_cb);
    if (bootstrap && *bootstrap &&
        set(conf, "bootstrap.servers", bootstrap, "option --bootstrap", errbuf, errlen) != SHOAL_OK)
        goto fail;

    for (char **e = environ; *e; e++) {
        if (strncmp(*e, "SHOAL_KAFKA_", 12) != 0 || own_variable(*e))
            continue;
        const char *eq = strchr(*e, '=');
        size_t klen = eq ? (size_t)(eq - (*e + 12)) : 0;
        if (!eq || klen == 0 || klen >= sizeof(key))
            continue;
        for (size_t i = 0; i < klen; i++) {
            char c = (*e)[12 + i];
            key[i] = c == '_' ? '.' : (char)tolower((unsigned char)c);
        }
        key[klen] = '\0';
        if (set(conf, key, eq + 1, "environment", errbuf, errlen) != SHOAL_OK)
            goto fail;
    }

    for (int i = 0; props && i < props->n; i++) {
        const char *kv = props->kv[i];
        const char *eq = strchr(kv, '=');
        if (!eq || (size_t)(eq - kv) >= sizeof(key)) {
            shoal_err_set(errbuf, errlen, SHOAL_ERR_INVALID, "-X %s: expected key=value", kv);
            goto fail;
        }
        memcpy(key, kv, (size_t)(eq - kv));
        key[eq - kv] = '\0';
        if (set(conf, key, eq + 1, "-X", errbuf, errlen) != SHOAL_OK)
            goto fail;
    }
    return conf;
fail:
    rd_kafka_conf_destroy(conf);
    return NULL;
}

static int user_set(const shoal_kprops_t *props, const char *key)
{
    size_t kl = strlen(key);
    for (int i = 0; props && i < props->n; i++)
        if (!strncmp(props->kv[i], key, kl) && props->kv[i][kl] == '=')
            return 1;
    char env[256];
    size_t n = (size_t)snprintf(env, sizeof(env), "SHOAL_KAFKA_");
    for (const char *p = key; *p && n + 1 < sizeof(env); p++)
        env[n++] = *p == '.' ? '_' : (char)toupper((unsigned char)*p);
    env[n] = '\0';
    return getenv(env) != NULL;
}

/* Sets each key/value pair the user did not set; destroys conf on error. */
static rd_kafka_conf_t *apply_defaults(rd_kafka_conf_t *conf, const shoal_kprops_t *props,
                                       const char *const (*defaults)[2], size_t n, char *errbuf,
                                       size_t errlen)
{
    for (size_t i = 0; i < n; i++) {
        if (!user_set(props, defaults[i][0]) &&
            set(conf, defaults[i][0], defaults[i][1], "default", errbuf, errlen) != SHOAL_OK) {
            rd_kafka_conf_destroy(conf);
            return NULL;
        }
    }
    return conf;
}

static rd_kafka_t *make(rd_kafka_type_t type, rd_kafka_conf_t *conf, char *errbuf, size_t errlen)
{
    char why[512];
    rd_kafka_t *rk = rd_kafka_new(type, conf, why, sizeof(why));
    if (!rk) {
        rd_kafka_conf_destroy(conf);
        shoal_err_set(errbuf, errlen, SHOAL_ERR_INVALID, "could not create a Kafka client: %s",
                      why);
        return NULL;
    }
    rd_kafka_set_log_queue(rk, NULL); /* logs are served by rd_kafka_poll */
    return rk;
}

static void dr_cb(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
    (void)rk;
    (void)opaque;
    shoal_kafka_ack_t *ack = m->_private;
    if (!ack)
        return;
    ack->pending--;
    if (m->err && !ack->err)
        ack->err = m->err;
}

/* Requests go out whole, without Nagle's wait: librdkafka leaves it on, and
 * the last part of a request larger than a TCP segment (a job, a batch of
 * task messages) then waited for the broker's delayed acknowledgement, 40 ms
 * a time (a 740 KB job took 50 ms to reach the local stack's broker instead
 * of 6). */
#define NAGLE_DISABLE "true"

/* Entries of a defaults table: counted, not written down beside it. */
#define NDEFAULTS(d) (sizeof(d) / sizeof((d)[0]))

rd_kafka_t *shoal_kafka_producer_new(const char *bootstrap, const shoal_kprops_t *props,
                                     char *errbuf, size_t errlen)
{
    static const char *const defaults[][2] = {{"enable.idempotence", "true"},
                                              {"linger.ms", "5"},
                                              {"message.max.bytes", "16777216"},
                                              {"socket.nagle.disable", NAGLE_DISABLE}};
    rd_kafka_conf_t *conf = shoal_kafka_conf_new(bootstrap, props, errbuf, errlen);
    if (!conf ||
        !(conf = apply_defaults(conf, props, defaults, NDEFAULTS(defaults), errbuf, errlen)))
        return NULL;
    rd_kafka_conf_set_dr_msg_cb(conf, dr_cb);
    return make(RD_KAFKA_PRODUCER, conf, errbuf, errlen);
}

rd_kafka_t *shoal_kafka_consumer_new(const char *bootstrap, const char *group,
                                     const shoal_kprops_t *props, const char *const *topics,
                                     int ntopics, shoal_kafka_rebalance_cb *rebalance_cb,
                                     void *opaque, char *errbuf, size_t errlen)
{
    /* Prefetch about a hundred messages per partition, not librdkafka's 100,000:
     * a worker holds what it works on itself, and a deep local queue is
     * memory that waits (and is fetched again after a pause). A fetch brings
     * at most 128 KiB per partition (librdkafka's 1 MiB kept a worker on 8
     * partitions holding some 8 MB of fetched tasks; a larger message still
     * comes whole), and a partition holding 1 MiB fetches no more. Enough for
     * thousands of tasks a second: a fetch from a nearby broker takes
     * milliseconds. */
    static const char *const defaults[][2] = {
        {"enable.auto.commit", "true"},         {"auto.offset.reset", "earliest"},
        {"auto.commit.interval.ms", "500"},     {"queued.min.messages", "100"},
        {"queued.max.messages.kbytes", "1024"}, {"max.partition.fetch.bytes", "131072"},
        {"socket.nagle.disable", NAGLE_DISABLE}};
    rd_kafka_conf_t *conf = shoal_kafka_conf_new(bootstrap, props, errbuf, errlen);
    if (!conf ||
        !(conf = apply_defaults(conf, props, defaults, NDEFAULTS(defaults), errbuf, errlen)))
        return NULL;
    /* Not a default: storing offsets as messages arrive would let a crash
     * skip work that was taken but not finished. */
    if (set(conf, "group.id", group, "option --group", errbuf, errlen) != SHOAL_OK ||
        set(conf, "enable.auto.offset.store", "false", "required setting", errbuf, errlen) !=
            SHOAL_OK) {
        rd_kafka_conf_destroy(conf);
        return NULL;
    }
    if (rebalance_cb)
        rd_kafka_conf_set_rebalance_cb(conf, rebalance_cb);
    rd_kafka_conf_set_opaque(conf, opaque);
    rd_kafka_t *rk = make(RD_KAFKA_CONSUMER, conf, errbuf, errlen);
    if (!rk)
        return NULL;
    rd_kafka_poll_set_consumer(rk);

    rd_kafka_topic_partition_list_t *tl = rd_kafka_topic_partition_list_new(ntopics);
    for (int i = 0; i < ntopics; i++)
        rd_kafka_topic_partition_list_add(tl, topics[i], RD_KAFKA_PARTITION_UA);
    rd_kafka_resp_err_t e = rd_kafka_subscribe(rk, tl);
    rd_kafka_topic_partition_list_destroy(tl);
    if (e) {
        shoal_err_set(errbuf, errlen, SHOAL_ERR_INVALID, "could not subscribe: %s",
                      rd_kafka_err2str(e));
        rd_kafka_destroy(rk);
        return NULL;
    }
    return rk;
}

rd_kafka_t *shoal_kafka_reader_new(const char *bootstrap, const char *group,
                                   const shoal_kprops_t *props, char *errbuf, size_t errlen)
{
    rd_kafka_conf_t *conf = shoal_kafka_conf_new(bootstrap, props, errbuf, errlen);
    if (!conf || set(conf, "group.id", group, "group", errbuf, errlen) != SHOAL_OK ||
        set(conf, "enable.auto.commit", "false", "required setting", errbuf, errlen) != SHOAL_OK) {
        if (conf)
            rd_kafka_conf_destroy(conf);
        return NULL;
    }
    return make(RD_KAFKA_CONSUMER, conf, errbuf, errlen);
}

rd_kafka_topic_partition_list_t *shoal_kafka_partitions(rd_kafka_t *rk, const char *topic,
                                                        int timeout_ms, char *errbuf, size_t errlen)
{
    const struct rd_kafka_metadata *md = NULL;
    rd_kafka_topic_t *rkt = rd_kafka_topic_new(rk, topic, NULL);
    rd_kafka_resp_err_t e =
        rkt ? rd_kafka_metadata(rk, 0, rkt, &md, timeout_ms) : RD_KAFKA_RESP_ERR__FAIL;
    if (rkt)
        rd_kafka_topic_destroy(rkt);
    if (e || !md || md->topic_cnt != 1 || md->topics[0].err) {
        shoal_err_set(errbuf, errlen, SHOAL_ERR_RETRY, "metadata of %s: %s", topic,
                      rd_kafka_err2str(e                     ? e
                                       : md && md->topic_cnt ? md->topics[0].err
                                                             : RD_KAFKA_RESP_ERR__UNKNOWN_TOPIC));
        if (md)
            rd_kafka_metadata_destroy(md);
        return NULL;
    }
    rd_kafka_topic_partition_list_t *l =
        rd_kafka_topic_partition_list_new(md->topics[0].partition_cnt);
    for (int i = 0; i < md->topics[0].partition_cnt; i++)
        rd_kafka_topic_partition_list_add(l, topic, md->topics[0].partitions[i].id);
    rd_kafka_metadata_destroy(md);
    return l;
}

shoal_err_t shoal_kafka_produce(rd_kafka_t *rk, const char *topic, const char *key,
                                const void *value, size_t len, shoal_kafka_ack_t *ack, char *errbuf,
                                size_t errlen)
{
    rd_kafka_resp_err_t e;
    for (int tries = 0;; tries++) {
        e = rd_kafka_producev(
            rk, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_KEY(key, key ? strlen(key) : 0),
            RD_KAFKA_V_VALUE((void *)value, len), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
            RD_KAFKA_V_OPAQUE(ack), RD_KAFKA_V_END);
        /* A full local queue drains as deliveries complete: wait, then retry. */
        if (e != RD_KAFKA_RESP_ERR__QUEUE_FULL || tries > 600)
            break;
        rd_kafka_poll(rk, 100);
    }
    if (e)
        return shoal_err_set(errbuf, errlen,
                             e == RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE ? SHOAL_ERR_LIMIT
                                                                       : SHOAL_ERR_RETRY,
                             "could not produce to %s: %s", topic, rd_kafka_err2str(e));
    if (ack)
        ack->pending++;
    return SHOAL_OK;
}

shoal_err_t shoal_kafka_ack_wait(rd_kafka_t *rk, shoal_kafka_ack_t *ack, int timeout_ms,
                                 char *errbuf, size_t errlen)
{
    int waited = 0, late = 0;
    while (ack->pending > 0 && waited < timeout_ms) {
        rd_kafka_poll(rk, 50);
        waited += 50;
    }
    if (ack->pending > 0) {
        /* Give up on them, but never return while a delivery report could
         * still reach ack: purged messages report at once. */
        late = ack->pending;
        rd_kafka_purge(rk, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
        while (ack->pending > 0)
            rd_kafka_poll(rk, 50);
    }
    if (late)
        return shoal_err_set(errbuf, errlen, SHOAL_ERR_RETRY,
                             "%d messages not acknowledged within %d ms (is Kafka reachable?)",
                             late, timeout_ms);
    if (ack->err)
        return shoal_err_set(errbuf, errlen, SHOAL_ERR_RETRY, "Kafka refused a message: %s",
                             rd_kafka_err2str(ack->err));
    return SHOAL_OK;
}

shoal_err_t shoal_kafka_produce_sync(rd_kafka_t *rk, const char *topic, const char *key,
                                     const void *value, size_t len, int timeout_ms, char *errbuf,
                                     size_t errlen)
{
    shoal_kafka_ack_t ack = {0, 0};
    shoal_err_t err = shoal_kafka_produce(rk, topic, key, value, len, &ack, errbuf, errlen);
    if (err != SHOAL_OK)
        return err;
    return shoal_kafka_ack_wait(rk, &ack, timeout_ms, errbuf, errlen);
}

void shoal_kafka_print_properties(void)
{
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_conf_properties_show(stdout);
    rd_kafka_conf_destroy(conf);
}
