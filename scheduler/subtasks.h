/*
 * Publishing batch-mode sub-tasks again (the reconciler's part of batch mode;
 * worker/split.h makes them). A worker records a sub-task (its items in
 * shoal.tasks.item_ids) and produces its message after the commit; when that
 * message never went out or was lost later, the reconciler (see
 * scheduler/reconcile.h) rebuilds it from the job's stored inputs: the
 * message of the sub-task's chunk with the sub-task's items
 * (common/subtask.h), the same message its worker produced. Not
 * thread-safe; runs on the caller's connection.
 */
#ifndef SHOAL_SCHEDULER_SUBTASKS_H
#define SHOAL_SCHEDULER_SUBTASKS_H

#include <stddef.h>

#include "common/err.h"
#include "common/job.h"
#include "scheduler/intake.h"

/* Whether task_id names a sub-task of job_id's chunk (anything but the
 * chunk's own task_id, "<job_id>:<chunk as 6 digits>"). */
int shoal_subtasks_is_sub(const char *job_id, long chunk, const char *task_id);

/* Produces the messages of sub-tasks task_ids[0..n) of job (parsed from its
 * stored inputs, with its id and submission time set) to the job's priority
 * topic, waits until Kafka acknowledged them, then marks them queued
 * (shoal.mark_subtasks_queued). Ids that are not sub-tasks of the job are
 * skipped. *published counts the messages produced. SHOAL_ERR_INVALID with
 * the reason when a sub-task cannot be rebuilt (its items are not in the
 * inputs: *bad, may be NULL, gets its index in task_ids) and nothing was
 * produced; SHOAL_ERR_LIMIT when Kafka refuses a message for its size;
 * SHOAL_ERR_RETRY when Kafka or PostgreSQL failed. */
shoal_err_t shoal_subtasks_publish(const shoal_intake_conf_t *c, const shoal_job_t *job,
                                   const char *const *task_ids, size_t n, int *published,
                                   size_t *bad, char *errbuf, size_t errlen);

#endif
