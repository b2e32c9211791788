/*
 * The merger stage. Workers record finished tasks with shoal.record_batch,
 * which announces on channel shoal_merge (at commit) every job whose last task
 * just ended. The merger LISTENs on its own connection and merges each with
 * scheduler/merge.h (shoal_merge_job: the merge itself and what a failed
 * merge means). After every (re)connect it also sweeps for finished jobs it
 * may have missed while away. Merging is a no-op on a job already merged, so
 * any number of mergers may run. Not thread-safe.
 */
#ifndef SHOAL_SCHEDULER_MERGER_H
#define SHOAL_SCHEDULER_MERGER_H

#include <librdkafka/rdkafka.h>
#include <stddef.h>

#include "common/err.h"

typedef struct shoal_merger shoal_merger_t;

/* conninfo is copied; producer and events_topic are borrowed (events of
 * merged jobs are sent through the outbox). */
shoal_merger_t *shoal_merger_new(const char *conninfo, rd_kafka_t *producer,
                                 const char *events_topic);

void shoal_merger_destroy(shoal_merger_t *m); /* NULL is ok */

/* Merges every job announced or found finished since the last call, then
 * publishes pending events. Never blocks on an idle connection. *merged (may
 * be NULL) counts jobs closed by this call. */
shoal_err_t shoal_merger_poll(shoal_merger_t *m, int *merged, char *errbuf, size_t errlen);

/* Whether tasks have ended since the last call: the connection also LISTENs
 * on shoal_room, which PostgreSQL notifies when a transaction takes tasks out
 * of the queue (room in the dispatcher's windows). Read by shoal_merger_poll;
 * a reconnect may miss one, which the dispatcher's timer covers. */
int shoal_merger_room(shoal_merger_t *m);

/* The socket to wait on for notifications, or -1 when disconnected. */
int shoal_merger_fd(shoal_merger_t *m);

#endif
