/*
 * Batched, idempotent writes of finished tasks and call records. One commit
 * per row would cap the fleet at a few thousand tasks/s, so results and
 * attempts accumulate here and go to PostgreSQL as one call of
 * shoal.record_batch (one statement, one transaction). A failed flush keeps
 * the batch for the next try; nothing is acknowledged to Kafka until the
 * flush that carries it succeeded. Not thread-safe.
 */
#ifndef SHOAL_WORKER_SINK_H
#define SHOAL_WORKER_SINK_H

#include <jansson.h>
#include <stddef.h>

#include "common/err.h"
#include "common/pg.h"

typedef struct shoal_sink shoal_sink_t;

/* pg is borrowed. */
shoal_sink_t *shoal_sink_new(shoal_pg_t *pg);
void shoal_sink_destroy(shoal_sink_t *s); /* NULL ok; drops unflushed rows */

/* Takes ownership of attempt (an attempts row as JSON). */
void shoal_sink_add_attempt(shoal_sink_t *s, json_t *attempt);

/* Takes ownership of result (a finished task as JSON); token is handed back
 * to the done callback once the row is durable. */
shoal_err_t shoal_sink_add_result(shoal_sink_t *s, json_t *result, void *token);

size_t shoal_sink_results(const shoal_sink_t *s);
size_t shoal_sink_attempts(const shoal_sink_t *s);

/* Writes everything waiting. On SHOAL_OK calls done(token, arg) for every
 * result written and empties the batch; *jobs_ended (may be NULL) counts jobs
 * whose last task this flush finished. On error the batch stays. */
shoal_err_t shoal_sink_flush(shoal_sink_t *s, void (*done)(void *token, void *arg), void *arg,
                             int *jobs_ended, char *errbuf, size_t errlen);

#endif
