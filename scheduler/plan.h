/*
 * A tenant's plan (common/tenants.h) applied to one job before it is
 * recorded: its default priority for a job that sets none, and its per-job
 * limits (max items, max prompt tokens of one call). The counted limits (jobs
 * per minute and per day, daily budget) are counted in PostgreSQL when the
 * job is recorded (shoal.record_job_admitted, sql/015_quota.sql); this module
 * hands them over as the quota JSON. A job sent as one message and a job sent
 * in parts (scheduler/parts.h) go through the same function, so both are
 * judged, and rejected, with the same words. Stateless and thread-safe.
 */
#ifndef SHOAL_SCHEDULER_PLAN_H
#define SHOAL_SCHEDULER_PLAN_H

#include <jansson.h>
#include <stddef.h>

#include "common/err.h"
#include "common/job.h"
#include "common/tenants.h"

/* Applies the plan of job's tenant in tenants (NULL: no tenants file, no
 * limits) to job (parsed): the plan's default priority when the job sets
 * none, then its max items, counting items_before (items of the same job
 * recorded before, from its earlier parts; 0 for a whole job) plus job's
 * own, and its max prompt tokens of one call over job's chunks. quota (may
 * be NULL) gets the plan's counted limits for shoal.record_job_admitted, a
 * new reference or NULL when the plan counts nothing. SHOAL_OK,
 * SHOAL_ERR_LIMIT with the reason in why (*quota NULL), SHOAL_ERR_NOMEM. */
shoal_err_t shoal_plan_apply(const shoal_tenants_t *tenants, shoal_job_t *job, size_t items_before,
                             json_t **quota, char *why, size_t whylen);

/* The largest estimated prompt of one of job's calls, in tokens (0 when the
 * job has no chunk). */
long shoal_plan_max_call_tokens(const shoal_job_t *job);

#endif
