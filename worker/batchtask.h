/*
 * A batch-mode task's answer (common/itembatch.h) read the way the worker
 * records it: each item answered (present, not null and, for JSON output,
 * matching the output schema) becomes a row of shoal.item_results; the items
 * left out are handed on whole, to be split off into a sub-task
 * (worker/split.h). The task's own result row gets, as its output, one JSON
 * object of the answered items keyed by item id, so shoal.results still holds
 * what the call gave. Stateless and thread-safe.
 */
#ifndef SHOAL_WORKER_BATCHTASK_H
#define SHOAL_WORKER_BATCHTASK_H

#include <jansson.h>
#include <stddef.h>

#include "common/err.h"
#include "worker/task.h"

/* What one answer gave. Every pointer is owned by the struct: release with
 * shoal_batchtask_answer_clear(), or take a field and set it to NULL. */
typedef struct {
    size_t n;        /* items asked */
    size_t answered; /* items with an answer */
    char *output;    /* {"<item id>": answer, ...} of the answered items, JSON text */
    char *item_rows; /* the answered items' shoal.item_results rows, JSON objects joined by
                      * commas (no brackets: a sink splices them into one array) */
    size_t item_rows_len;
    json_t *missing; /* the task items left out, in the task's order; NULL when none */
} shoal_batchtask_answer_t;

/* Reads content, the answer of a call of batch task t (t->items set), served
 * by model alias `model` on worker worker_id, into *out (zeroed first).
 * SHOAL_ERR_INVALID when no item is answered (why says why: the answer is not
 * an object keyed by item id, or the first item's problem): the call failed
 * like an invalid answer of any task. SHOAL_ERR_NOMEM. */
shoal_err_t shoal_batchtask_read(const shoal_task_t *t, const char *content, const char *model,
                                 const char *worker_id, shoal_batchtask_answer_t *out, char *why,
                                 size_t whylen);

void shoal_batchtask_answer_clear(shoal_batchtask_answer_t *a);

#endif
