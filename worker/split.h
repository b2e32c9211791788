/*
 * Splitting in batch mode: the items a batch task's answer left out go on in
 * a sub-task (common/subtask.h). One sub-task per task would cost one more
 * call per chunk even when the model dropped one item in ten, so the worker
 * gathers the leftovers of every task in one result write (worker/sink.h)
 * by job into as few sub-tasks as it may: each holds at most as many items,
 * and as many estimated tokens, as the largest of its parents (the job's
 * packing kept every chunk under max_items and max_tokens). A parent's
 * leftovers are never divided between sub-tasks.
 *
 * Ids: a sub-task's id is its first parent's (the smallest task_id of the
 * group) with the split level one above that parent's
 * (shoal_taskmsg_subtask_id). Every task hands its leftovers to exactly one
 * sub-task, so no two sub-tasks get the same id. A task at split level
 * SHOAL_TASKMSG_SPLIT_MAX cannot split (shoal_split_can).
 *
 * Each sub-task comes out as its row for shoal.record_subtasks and its
 * message, which the worker produces once the row is committed. Not
 * thread-safe: the worker's loop owns it.
 */
#ifndef SHOAL_WORKER_SPLIT_H
#define SHOAL_WORKER_SPLIT_H

#include <jansson.h>
#include <stddef.h>

#include "common/err.h"

typedef struct shoal_split shoal_split_t;

shoal_split_t *shoal_split_new(void);        /* NULL when out of memory */
void shoal_split_destroy(shoal_split_t *sp); /* NULL is ok */

/* Whether a task at this split level may still split. */
int shoal_split_can(long split_level);

/* Adds the leftovers of one batch task: msg is its whole task message (as
 * taken; reference taken), missing the items its answer left out (at least
 * one; reference taken), prio what shoal_split_flush hands back with the
 * sub-task (the priority the task came in at). On error both references are
 * released. SHOAL_ERR_INVALID for a message that is not a batch task's. */
shoal_err_t shoal_split_add(shoal_split_t *sp, json_t *msg, json_t *missing, int prio, char *errbuf,
                            size_t errlen);

/* Leftovers added and not yet flushed. */
size_t shoal_split_pending(const shoal_split_t *sp);

/* What one sub-task is: row and message are JSON text the callee may take
 * (set the pointer to NULL to keep it; else it is freed after the call). */
typedef struct {
    const char *task_id;
    const char *job_id;
    int prio;
    size_t n_items;
    char *row; /* {task_id, job_id, chunk, est_tokens, parents: [{task_id, item_ids}]} */
    size_t row_len;
    char *msg; /* the sub-task's message */
    size_t msg_len;
} shoal_split_sub_t;

/* Groups everything added into sub-tasks (see above) and calls emit for each,
 * by job in the order the jobs were first added, then forgets them. Returns
 * how many sub-tasks were emitted; a group whose message cannot be built
 * (out of memory) is dropped with a count in *dropped (may be NULL): its
 * parents still end, and their items have no answer. */
size_t shoal_split_flush(shoal_split_t *sp, void (*emit)(shoal_split_sub_t *sub, void *arg),
                         void *arg, size_t *dropped);

#endif
