/*
 * Jobs sent in parts: a job too large for one Kafka message (about 1 MiB)
 * comes as a header and N part messages on the jobs topic, all keyed by the
 * job_id so they stay in order on one partition (README, "Large jobs in
 * parts"):
 *   header: the job without "items", with "parts": N and a job_id;
 *   part k: {"job_id": ..., "part": k, "items": [...]}, k from 0 to N-1.
 * Each message is validated as it comes. The header is checked as a job
 * (with a stand-in item) and recorded as a running job with no task; each
 * part is checked as the header's job with the part's items, its message
 * stored (compressed, one row per part) and its chunk tasks recorded pending,
 * numbered after the earlier parts' chunks (a chunk never spans parts). The
 * dispatcher (scheduler/dispatch.h) publishes the tasks once the last part is
 * in. An invalid part rejects the job under its id with the part's number and
 * reason; a redelivered header or part changes nothing. The scheduler holds
 * one part at a time. A job sent in parts must keep its inputs.
 */
#ifndef SHOAL_SCHEDULER_PARTS_H
#define SHOAL_SCHEDULER_PARTS_H

#include <stddef.h>

#include "common/err.h"
#include "common/job.h"
#include "common/pg.h"
#include "scheduler/intake.h"

/* Most parts a job may have, and most chunks (a task message's chunk number
 * is below 100000, common/taskmsg.c). */
#define SHOAL_PARTS_MAX 100000
#define SHOAL_PARTS_MAX_CHUNKS 100000

/* Handles value when it is a header or a part (*handled = 1; out as from
 * shoal_intake_job, SHOAL_OK meaning the offset may be stored); leaves
 * everything else to the caller (*handled = 0, SHOAL_OK). source is
 * topic/partition@offset, origin gives the id a message without a usable
 * job_id is rejected under (shoal_intake_derived). SHOAL_ERR_RETRY when
 * PostgreSQL failed. */
shoal_err_t shoal_parts_intake(const shoal_intake_conf_t *conf, const char *source,
                               shoal_intake_origin_t *origin, const void *value, size_t len,
                               int *handled, shoal_intake_result_t *out, char *errbuf,
                               size_t errlen);

/* The job as one part of it (part >= 0) or, for a job sent as one message
 * (part < 0), the whole job, rebuilt from its stored inputs with its
 * submission time set; *chunk_base is the part's first chunk, *n_chunks the
 * whole job's chunk count (see shoal_intake_publish_range). Caller destroys.
 * NULL with *err: SHOAL_ERR_NOTFOUND (no stored inputs), SHOAL_ERR_INVALID
 * (they do not parse), SHOAL_ERR_RETRY (PostgreSQL), reason in errbuf. */
shoal_job_t *shoal_parts_load(shoal_pg_t *pg, const char *job_id, int part, long *chunk_base,
                              long *n_chunks, shoal_err_t *err, char *errbuf, size_t errlen);

#endif
