/*
 * Batched, idempotent writes of finished tasks and call records. One commit
 * per row would cap the fleet at a few thousand tasks/s, so results and
 * attempts accumulate here and go to PostgreSQL as one call of
 * shoal.record_batch (one statement, one transaction). A failed flush keeps
 * the batch for the next try; nothing is acknowledged to Kafka until the
 * flush that carries it succeeded. Rows the database refuses for good are
 * found by halving the batch: a refused result is recorded as a failed task
 * with the reason instead, so its job still ends. Not thread-safe; a sink may
 * be filled on one thread and flushed on another, one at a time.
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
/* The same with the row as JSON text (len bytes, from malloc; ownership
 * taken; NULL is dropped). */
void shoal_sink_add_attempt_text(shoal_sink_t *s, char *row, size_t len);

/* Takes ownership of result (a finished task as JSON); token is handed back
 * to the done callback once the row is durable. */
shoal_err_t shoal_sink_add_result(shoal_sink_t *s, json_t *result, void *token);
/* The same with the row as JSON text (len bytes, from malloc; ownership
 * taken); SHOAL_ERR_NOMEM for a NULL row. */
shoal_err_t shoal_sink_add_result_text(shoal_sink_t *s, char *row, size_t len, void *token);

/* Batch mode (worker/batchtask.h): the per-item rows of the result added
 * last, JSON objects joined by commas (ownership taken), written in the same
 * transaction as that result (shoal.record_batch_split) and dropped with it
 * when the database refuses it. SHOAL_ERR_INVALID when there is no result to
 * attach them to or it has some already; SHOAL_ERR_NOMEM for NULL. */
shoal_err_t shoal_sink_add_items_text(shoal_sink_t *s, char *rows, size_t len);

/* Batch mode (worker/split.h): a sub-task's row for shoal.record_subtasks
 * and its message (both JSON text from malloc, ownership taken; task_id
 * copied), written before the results of the same flush. prio comes back
 * with the message from shoal_sink_take_subtasks. SHOAL_ERR_NOMEM. */
shoal_err_t shoal_sink_add_subtask_text(shoal_sink_t *s, const char *task_id, char *row,
                                        size_t row_len, char *msg, size_t msg_len, int prio);

/* Sub-task rows waiting to be written. */
size_t shoal_sink_subtasks(const shoal_sink_t *s);

/* After a successful flush: calls fn (may be NULL) with the message of each
 * sub-task that flush recorded new (a sub-task the database had already, or
 * did not record because its job ended, is not handed back), then forgets
 * every message. Returns how many were handed back. The messages are the
 * caller's to produce; borrowed for the call. */
size_t shoal_sink_take_subtasks(shoal_sink_t *s,
                                void (*fn)(const char *task_id, const char *msg, size_t len,
                                           int prio, void *arg),
                                void *arg);

size_t shoal_sink_results(const shoal_sink_t *s);
size_t shoal_sink_attempts(const shoal_sink_t *s);

/* Bytes the waiting rows will take in the statement, roughly (for a cap). */
size_t shoal_sink_bytes(const shoal_sink_t *s);

/* Rows the database refused for good so far (see above). */
long shoal_sink_refused(const shoal_sink_t *s);

/* Points the sink at another connection (pg borrowed). */
void shoal_sink_set_pg(shoal_sink_t *s, shoal_pg_t *pg);

/* Writes everything waiting. On SHOAL_OK calls done(token, arg) for every
 * result written and empties the batch; *jobs_ended (may be NULL) counts jobs
 * whose last task this flush finished. On error the batch stays. */
shoal_err_t shoal_sink_flush(shoal_sink_t *s, void (*done)(void *token, void *arg), void *arg,
                             int *jobs_ended, char *errbuf, size_t errlen);

#endif
