/*
 * Publishes the event outbox. Job state changes write their event into
 * shoal.event_outbox in the same transaction; this module moves those rows
 * to the events topic and deletes them once Kafka acknowledged them, so an
 * event is never lost to a crash (it may be sent twice). Rows are taken with
 * FOR UPDATE SKIP LOCKED, so several schedulers drain without waiting.
 */
#ifndef SHOAL_SCHEDULER_EVENTS_H
#define SHOAL_SCHEDULER_EVENTS_H

#include <librdkafka/rdkafka.h>
#include <stddef.h>

#include "common/err.h"
#include "common/pg.h"

/* Sends every waiting event to topic; *sent (may be NULL) counts them. */
shoal_err_t shoal_events_drain(shoal_pg_t *pg, rd_kafka_t *producer, const char *topic, int *sent,
                               char *errbuf, size_t errlen);

#endif
