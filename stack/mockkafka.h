/*
 * A local Kafka for `shoal dev` and the integration tests: librdkafka's mock
 * cluster, which speaks the real Kafka protocol on 127.0.0.1 to any client in
 * any process (produce, fetch, consumer groups, offset commits; kcat works).
 * It keeps everything in memory and lives as long as the handle.
 *
 * The mock does not serve the admin CreateTopics request, so topics are made
 * here. Consumer groups work but each rebalance takes about
 * session.timeout.ms minus 1 s, and groups never form below 3000 ms: clients
 * of the mock should use session.timeout.ms=6000.
 */
#ifndef SHOAL_STACK_MOCKKAFKA_H
#define SHOAL_STACK_MOCKKAFKA_H

#include <stddef.h>

#include "common/err.h"

typedef struct shoal_mockkafka shoal_mockkafka_t;
struct rd_kafka_mock_cluster_s;

/* Starts a cluster of brokers (1-16) brokers. Returns an owned handle, or
 * NULL with the reason in errbuf. */
shoal_mockkafka_t *shoal_mockkafka_new(int brokers, char *errbuf, size_t errlen);

/* "127.0.0.1:port,..." for bootstrap.servers; borrowed for the life of m. */
const char *shoal_mockkafka_bootstraps(const shoal_mockkafka_t *m);

/* Creates topic with partitions (1-10000) partitions, replication factor 1.
 * SHOAL_ERR_INVALID for a bad name or count, or when the topic exists
 * (clients asking for an unknown topic's metadata auto-create it with the
 * mock's default of 4 partitions, so create topics before clients start). */
shoal_err_t shoal_mockkafka_create_topic(shoal_mockkafka_t *m, const char *topic, int partitions,
                                         char *errbuf, size_t errlen);

/* Creates shoal's topics: <prefix>.jobs (4 partitions), <prefix>.tasks.high,
 * <prefix>.tasks.normal, <prefix>.tasks.low (8 each), <prefix>.tasks.dlq (2)
 * and <prefix>.events (4). prefix NULL or "" means "shoal", the defaults.
 * Stops at the first failure. */
shoal_err_t shoal_mockkafka_create_default_topics(shoal_mockkafka_t *m, const char *prefix,
                                                  char *errbuf, size_t errlen);

/* The underlying rd_kafka_mock_cluster_t, for fault injection with
 * rdkafka_mock.h (broker down, request errors, latency); borrowed for the
 * life of m. */
struct rd_kafka_mock_cluster_s *shoal_mockkafka_cluster(shoal_mockkafka_t *m);

/* Shuts the cluster down; connected clients see the brokers disappear. NULL
 * is ok. */
void shoal_mockkafka_destroy(shoal_mockkafka_t *m);

#endif
