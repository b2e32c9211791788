/*
 * The dispatcher: tasks of jobs that keep their inputs are recorded pending
 * and published from PostgreSQL in windows, so no job floods a task topic and
 * tenants share the fleet. Per priority, a tenant has at most `window` tasks
 * published and unfinished (queued); its jobs go oldest first; the tenants of
 * a priority are served in turn, and topped up as their tasks end. Each pass
 * publishes at most `pass_limit` tasks, rebuilding their messages one part of
 * a job at a time from the stored inputs (scheduler/parts.h), so memory does
 * not grow with a job. Resumed tasks (shoal resume) are pending too and go
 * out the same way. Jobs with "store_inputs": false are published by intake.
 *
 * One scheduler at a time dispatches (a session advisory lock per pass; the
 * others skip theirs). Runs in the scheduler's main loop on its own
 * PostgreSQL connection, a bounded pass every every_ms (at once after a full
 * pass, sooner when tasks have ended: shoal_dispatch_room). Not thread-safe.
 */
#ifndef SHOAL_SCHEDULER_DISPATCH_H
#define SHOAL_SCHEDULER_DISPATCH_H

#include <stddef.h>

#include "common/err.h"
#include "scheduler/intake.h"

typedef struct shoal_dispatch shoal_dispatch_t;

typedef struct {
    long every_ms;   /* time between passes */
    long window;     /* tasks queued and unfinished per tenant and priority */
    long pass_limit; /* tasks one pass publishes at most */
} shoal_dispatch_conf_t;

/* conninfo is copied; intake (its producer, topics and fault hook; not its
 * pg) is borrowed and must outlive the dispatcher. NULL when out of memory. */
shoal_dispatch_t *shoal_dispatch_new(const char *conninfo, const shoal_intake_conf_t *intake,
                                     const shoal_dispatch_conf_t *conf);

void shoal_dispatch_destroy(shoal_dispatch_t *d); /* NULL is ok */

/* Runs a pass when it is due (force: now). *published (may be NULL) counts
 * the tasks published. A job whose tasks can never be published (their
 * inputs are gone or no longer parse, or Kafka refuses a message for its
 * size) is failed with the reason. SHOAL_ERR_RETRY when PostgreSQL or Kafka
 * failed (the next pass tries again). */
shoal_err_t shoal_dispatch_poll(shoal_dispatch_t *d, int force, int *published, char *errbuf,
                                size_t errlen);

/* Milliseconds until a pass is due: 0 after a pass that hit pass_limit (more
 * is waiting, so the caller should not sleep), at most every_ms. */
long shoal_dispatch_due_ms(const shoal_dispatch_t *d);

/* Tasks have ended (PostgreSQL said so on channel shoal_room): the next pass
 * is due 10 ms after the last one instead of every_ms, so a window is topped
 * up as its tasks end, not up to every_ms later. */
void shoal_dispatch_room(shoal_dispatch_t *d);

#endif
