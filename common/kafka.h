/*
 * Thin librdkafka wrappers shared by every binary. Configuration comes from a
 * bootstrap list, then SHOAL_KAFKA_<PROPERTY> environment variables (dots as
 * underscores: SHOAL_KAFKA_SECURITY_PROTOCOL=SASL_SSL), then -X key=value
 * pairs; later wins. Any librdkafka property passes through untouched and its
 * own error text becomes ours. librdkafka's log lines are forwarded to
 * common/log through the handle's poll loop, never printed from its threads.
 */
#ifndef SHOAL_COMMON_KAFKA_H
#define SHOAL_COMMON_KAFKA_H

#include <librdkafka/rdkafka.h>
#include <stddef.h>

#include "common/err.h"
#include "common/opt.h"

/* Topic names; prefix "shoal" gives shoal.jobs, shoal.tasks.high, ... */
typedef struct {
    char jobs[128];
    char tasks_high[128];
    char tasks_normal[128];
    char tasks_low[128];
    char dlq[128];
    char events[128];
} shoal_topics_t;

/* Fills t from a prefix (NULL or "" means "shoal"). SHOAL_ERR_INVALID when
 * the prefix is longer than 100 characters or holds characters Kafka does not
 * allow in topic names. */
shoal_err_t shoal_topics_init(shoal_topics_t *t, const char *prefix, char *errbuf, size_t errlen);

/* The task topic for a priority ("high", "normal", "low"); normal if unknown. */
const char *shoal_topics_task(const shoal_topics_t *t, const char *priority);

/* Builds a configuration (caller owns, or hands it to rd_kafka_new). */
rd_kafka_conf_t *shoal_kafka_conf_new(const char *bootstrap, const shoal_kprops_t *props,
                                      char *errbuf, size_t errlen);

/* A producer with acks=all and idempotence on: a delivered message is written
 * once. Caller destroys with rd_kafka_destroy after rd_kafka_flush. */
rd_kafka_t *shoal_kafka_producer_new(const char *bootstrap, const shoal_kprops_t *props,
                                     char *errbuf, size_t errlen);

/* A consumer in group `group`, with offsets stored only by the caller
 * (enable.auto.offset.store=false) and committed in the background, so an
 * offset moves only past work that is finished (enable.auto.offset.store is
 * forced off; -X cannot turn it on). Subscribed to topics[0..n). */
typedef void(shoal_kafka_rebalance_cb)(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                                       rd_kafka_topic_partition_list_t *partitions, void *opaque);

/* rebalance_cb (may be NULL) must assign/unassign as librdkafka documents;
 * opaque is passed to it. */
rd_kafka_t *shoal_kafka_consumer_new(const char *bootstrap, const char *group,
                                     const shoal_kprops_t *props, const char *const *topics,
                                     int ntopics, shoal_kafka_rebalance_cb *rebalance_cb,
                                     void *opaque, char *errbuf, size_t errlen);

/* A consumer handle in group `group` that never subscribes, so it never
 * joins the group: for reading the group's committed offsets
 * (rd_kafka_committed), watermarks, or partitions it assigns itself. It
 * commits nothing. NULL with the reason. */
rd_kafka_t *shoal_kafka_reader_new(const char *bootstrap, const char *group,
                                   const shoal_kprops_t *props, char *errbuf, size_t errlen);

/* Every partition of topic, from the cluster's metadata, as a new list
 * (caller destroys; offsets unset). NULL with "metadata of <topic>: <why>". */
rd_kafka_topic_partition_list_t *shoal_kafka_partitions(rd_kafka_t *rk, const char *topic,
                                                        int timeout_ms, char *errbuf,
                                                        size_t errlen);

/* Delivery tracking for a group of messages: pending counts messages not yet
 * acknowledged, err keeps the first delivery error. Owned by the caller; must
 * outlive the deliveries it tracks. */
typedef struct {
    rd_kafka_resp_err_t err;
    int pending;
} shoal_kafka_ack_t;

/* Queues one message (value copied) on a producer from shoal_kafka_producer_new;
 * its delivery is counted in ack (may be NULL). Waits while the local queue is
 * full. */
shoal_err_t shoal_kafka_produce(rd_kafka_t *rk, const char *topic, const char *key,
                                const void *value, size_t len, shoal_kafka_ack_t *ack, char *errbuf,
                                size_t errlen);

/* Serves delivery reports until every message in ack is acknowledged or
 * failed. Past timeout_ms the producer's queued and in-flight messages are
 * purged (SHOAL_ERR_RETRY): when it returns, nothing refers to ack any more,
 * so a stack-allocated ack is safe. One batch at a time per producer. */
shoal_err_t shoal_kafka_ack_wait(rd_kafka_t *rk, shoal_kafka_ack_t *ack, int timeout_ms,
                                 char *errbuf, size_t errlen);

/* Produces one message and waits (up to timeout_ms) until the broker has
 * acknowledged it. For the CLI and low-rate paths, not for fan-out. */
shoal_err_t shoal_kafka_produce_sync(rd_kafka_t *rk, const char *topic, const char *key,
                                     const void *value, size_t len, int timeout_ms, char *errbuf,
                                     size_t errlen);

/* Prints librdkafka's property list (for -X list). */
void shoal_kafka_print_properties(void);

#endif
