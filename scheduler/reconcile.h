/*
 * The reconciler: PostgreSQL is the source of truth and Kafka the transport,
 * so every few seconds the scheduler looks in PostgreSQL for tasks of running
 * jobs whose message is not (or no longer) on a task topic, and publishes
 * them again from the job's stored inputs (shoal.job_inputs):
 *   - pending tasks reset by `shoal resume` (shoal.resume_job), at once;
 *   - pending tasks never published --reconcile-pending-ms after they were
 *     recorded (an intake that died between recording and publishing);
 *   - queued tasks with no call recorded --reconcile-after-ms after they were
 *     queued (a topic's retention expired while the fleet was down, a broker
 *     lost the message, a crash lost a write).
 * Batch mode's sub-tasks count too (a worker that died between recording a
 * sub-task and producing its message): they are rebuilt with their recorded
 * items (scheduler/subtasks.h).
 * With a dispatcher (conf.paced), pending tasks of jobs that keep their
 * inputs are the dispatcher's, resumed ones included, and only queued tasks
 * (and pending tasks of jobs without inputs) can be lost. Messages are built
 * one part of a job at a time (scheduler/parts.h).
 * Publishing twice is harmless: workers skip tasks that are done and attach a
 * second delivery of a task they run to the first. A task of a job that keeps
 * no inputs ("store_inputs": false) cannot be rebuilt: it fails with that
 * reason, so its job still ends. Running jobs whose tasks have all ended are
 * announced to the mergers again (channel shoal_merge), so no job stays
 * `running` with nothing in flight.
 *
 * One scheduler at a time reconciles (a session advisory lock; the others
 * skip their pass). Runs on its own PostgreSQL connection in the scheduler's
 * main loop; a pass handles at most a bounded number of tasks. Not
 * thread-safe.
 */
#ifndef SHOAL_SCHEDULER_RECONCILE_H
#define SHOAL_SCHEDULER_RECONCILE_H

#include <stddef.h>

#include "common/err.h"
#include "scheduler/intake.h"

typedef struct shoal_reconcile shoal_reconcile_t;

typedef struct {
    long every_ms;   /* time between passes */
    long pending_ms; /* a never-published pending task is lost after this */
    long queued_ms;  /* a queued task with no call is lost after this */
    int paced;       /* a dispatcher (scheduler/dispatch.h) publishes pending tasks of jobs
                        that keep their inputs: they are never lost, pending_ms is unused */
} shoal_reconcile_conf_t;

/* conninfo is copied; intake (its producer, topics and fault hook; not its
 * pg) is borrowed and must outlive the reconciler. NULL when out of memory. */
shoal_reconcile_t *shoal_reconcile_new(const char *conninfo, const shoal_intake_conf_t *intake,
                                       const shoal_reconcile_conf_t *conf);

void shoal_reconcile_destroy(shoal_reconcile_t *rc); /* NULL is ok */

/* Runs a pass when every_ms has passed since the last one (force: now).
 * *published and *failed (may be NULL) count the tasks published again and
 * the tasks failed because their job keeps no inputs. SHOAL_ERR_RETRY when
 * PostgreSQL or Kafka failed (the next pass tries again). */
shoal_err_t shoal_reconcile_poll(shoal_reconcile_t *rc, int force, int *published, int *failed,
                                 char *errbuf, size_t errlen);

#endif
