/*
 * Merging one finished job: its chunk (or per-item) results become the job's
 * merged output, written as ordered pages in shoal.job_output, and the job is
 * closed completed, partial or failed with its event, in one transaction.
 * The merge itself is SQL: shoal.merge_job and shoal.merge_entries in
 * sql/009_dynamic_work.sql, section "Merge" (what each merge strategy
 * produces is documented there). This module runs it and decides what a
 * failure means: a lost connection is retried later, any other error ends
 * the job failed with the reason (shoal.fail_job), never leaves it running.
 * scheduler/merger.c decides when a job is due. Not thread-safe (one pg
 * handle per thread).
 */
#ifndef SHOAL_SCHEDULER_MERGE_H
#define SHOAL_SCHEDULER_MERGE_H

#include <stddef.h>

#include "common/err.h"
#include "common/pg.h"

typedef enum {
    SHOAL_MERGE_NOT_DUE = 0, /* not finished yet, or merged already (by anyone) */
    SHOAL_MERGE_CLOSED,      /* merged and closed now: status says how */
    SHOAL_MERGE_FAILED,      /* could not be merged: closed failed now, reason says why */
} shoal_merge_outcome_t;

typedef struct {
    shoal_merge_outcome_t outcome;
    char status[16];  /* completed, partial or failed; "" when not due */
    char reason[512]; /* SHOAL_MERGE_FAILED: why */
} shoal_merge_result_t;

/* Merges job_id if it is due. SHOAL_OK: *out says what happened (a merge that
 * failed for good is SHOAL_OK with SHOAL_MERGE_FAILED: the job is closed).
 * SHOAL_ERR_RETRY: PostgreSQL went away, nothing changed, try again later.
 * Other codes: even failing the job could not be recorded; errbuf says why. */
shoal_err_t shoal_merge_job(shoal_pg_t *pg, const char *job_id, shoal_merge_result_t *out,
                            char *errbuf, size_t errlen);

#endif
