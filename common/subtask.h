/*
 * Sub-task messages of batch mode (common/itembatch.h): a sub-task carries
 * items that earlier answers left out, possibly gathered from several tasks
 * of one job. Its message is any task message of the job (the first parent's
 * as the worker holds it, or a chunk's as the reconciler rebuilds it from the
 * job's stored inputs) with the sub-task's id and items: every other field
 * (model, template, output, deadline) is the job's and the same in every
 * task of it. Both the worker and the reconciler build them here, so a
 * republished sub-task is the message its worker produced. Stateless and
 * thread-safe.
 */
#ifndef SHOAL_COMMON_SUBTASK_H
#define SHOAL_COMMON_SUBTASK_H

#include <stddef.h>

#include <jansson.h>

#include "common/job.h"

/* The message of sub-task task_id (see shoal_taskmsg_subtask_id): base's
 * fields with version 2, task_id, items (an array of task items, referenced,
 * not copied) and est_tokens; base's cache_key is dropped (a sub-task is never
 * a cache entry). Values are shared with base. Caller owns the reference;
 * NULL with the reason (no items, "out of memory"). */
json_t *shoal_subtask_message(const json_t *base, const char *task_id, json_t *items,
                              long est_tokens, char *errbuf, size_t errlen);

/* An index of job's items by id (a new object of positions), for
 * shoal_subtask_items over many sub-tasks of one job. Caller owns; NULL when
 * out of memory. */
json_t *shoal_subtask_index(const shoal_job_t *job);

/* The task items ({id, input}, and model or body when the item has them) of
 * job's items whose ids are in ids (an array of strings), in ids' order.
 * index is shoal_subtask_index(job), or NULL to build one for this call. Ids
 * the job does not have are skipped; *missing (may be NULL) counts them.
 * Caller owns; NULL when out of memory. */
json_t *shoal_subtask_items(const shoal_job_t *job, const json_t *index, const json_t *ids,
                            size_t *missing);

#endif
