/*
 * The worker's database side: one thread with its own PostgreSQL connection
 * and a queue, so no query ever blocks the loop that drives the model calls
 * and the Kafka consumer. The loop hands it work (check which tasks already
 * finished; write a batch of results) and picks up what is finished with
 * shoal_store_poll(); the thread writes a byte to wake_fd whenever something
 * finishes, so the loop's poll wakes at once. Work that fails because the
 * server is away is retried by the thread with backoff, in order, until it
 * succeeds or the store is destroyed; the loop meanwhile keeps running and
 * applies backpressure itself.
 *
 * The loop owns every task; the store only carries pointers to them and hands
 * them back. All functions are for the loop's thread.
 */
#ifndef SHOAL_WORKER_STORE_H
#define SHOAL_WORKER_STORE_H

#include <jansson.h>
#include <stddef.h>

#include "common/err.h"
#include "worker/sink.h"
#include "worker/task.h"

typedef struct shoal_store shoal_store_t;

typedef enum {
    SHOAL_STORE_CHECKED = 1,
    SHOAL_STORE_WRITTEN,
    SHOAL_STORE_CANCELLED, /* jobs cancelled lately (see shoal_store_watch_cancels) */
    SHOAL_STORE_RESERVED   /* budget reservations answered (see shoal_store_reserve) */
} shoal_store_kind_t;

/* What shoal_store_poll hands back; everything in it is borrowed for the
 * callback. */
typedef struct {
    shoal_store_kind_t kind;
    /* CHECKED: the tasks given to shoal_store_check, and for each one the
     * task's status in the database ("done", "failed", "pending", "queued";
     * NULL when it has no row) and the calls it has made already. */
    shoal_task_t **tasks;
    size_t ntasks;
    const char **status;
    const int *attempts;
    /* CHECKED: per task, 1 when its calls are reserved against a budget
     * (worker/budget.h), else 0. RESERVED: tasks and, in status, each
     * one's verdict ("granted", "wait", "refused:<reason>"). */
    const int *budgeted;
    /* WRITTEN: the tokens of the results now durable, the jobs whose last
     * task this write finished, and the sink to reuse (now empty). */
    void **tokens;
    size_t ntokens;
    int jobs_ended;
    shoal_sink_t *sink;
    /* CANCELLED: ids of jobs cancelled since the last report, each once. */
    const char *const *job_ids;
    size_t njobs;
} shoal_store_done_t;

/* Starts the thread; conninfo copied. NULL with the reason. */
shoal_store_t *shoal_store_new(const char *conninfo, int wake_fd, char *errbuf, size_t errlen);

/* Stops the thread (waiting for the statement running, if any) and drops
 * queued work: its tasks were never durable, their messages come again. */
void shoal_store_destroy(shoal_store_t *s); /* NULL ok */

/* Makes the thread look for cancelled jobs every every_ms (0: never, the
 * default) between its other work, and hand each newly cancelled job_id back
 * once in a CANCELLED completion. The look-up covers cancels from a minute
 * before the previous successful one, so a database away for a while does
 * not make the worker miss one; it never counts as pending work. */
void shoal_store_watch_cancels(shoal_store_t *s, long every_ms);

/* Queues a check of n tasks (array copied, tasks borrowed). */
shoal_err_t shoal_store_check(shoal_store_t *s, shoal_task_t *const *tasks, size_t n);

/* Queues a reservation of the next calls of n tasks (array copied, tasks
 * borrowed): rows and release are shoal.reserve_calls' arguments as JSON
 * text, taken over by the store (release may be NULL). Retried while the
 * server is away; a statement the server refuses answers "wait" for all. */
shoal_err_t shoal_store_reserve(shoal_store_t *s, shoal_task_t *const *tasks, size_t n, char *rows,
                                char *release);

/* Queues a write of sink's rows; the store owns sink until it comes back in
 * a WRITTEN completion. */
shoal_err_t shoal_store_write(shoal_store_t *s, shoal_sink_t *sink);

/* Calls fn for every finished piece of work, in order; fn takes ownership of
 * d->sink when it is set. Returns how many. */
int shoal_store_poll(shoal_store_t *s, void (*fn)(const shoal_store_done_t *d, void *arg),
                     void *arg);

/* Work queued or running. */
size_t shoal_store_pending(const shoal_store_t *s);
/* Writes queued or running. */
size_t shoal_store_writes_pending(const shoal_store_t *s);

/* Milliseconds the store has been failing to reach the database (0 = fine). */
double shoal_store_failing_ms(const shoal_store_t *s);

#endif
