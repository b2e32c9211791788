/*
 * Tenant plans: the tenants file the scheduler reads at start (--tenants /
 * SHOAL_TENANTS), checked whole with every problem named, and the limits of
 * each plan that intake enforces.
 *
 *   { "default": { "jobs_per_minute": 60 },
 *     "tenants": { "acme": { "jobs_per_minute": 600, "jobs_per_day": 100000,
 *                            "max_prompt_tokens": 50000, "max_items": 100000,
 *                            "default_priority": "high", "daily_budget_usd": 250 } } }
 *
 * Every field of a plan is optional; a field left out is no limit. A tenant
 * not listed gets the "default" plan, or no limits when there is none. Jobs
 * per minute and per day count accepted jobs (rejected ones do not count) in
 * fixed UTC windows: the minute and the day a job is submitted in, so a limit
 * reached resets at the next whole minute or at midnight UTC. max_prompt_tokens
 * bounds the estimated prompt tokens of one call (system, template and the
 * chunk's items, as `shoal estimate` counts them), not characters.
 *
 * A loaded set is read-only and may be shared between threads.
 */
#ifndef SHOAL_COMMON_TENANTS_H
#define SHOAL_COMMON_TENANTS_H

#include <stddef.h>

#include <jansson.h>

#include "common/err.h"

/* The name the default plan is stored under in shoal.tenants: no tenant can
 * have it (tenant names are letters, digits and . _ -). */
#define SHOAL_TENANTS_DEFAULT_NAME "*"

/* At most this many problems of a tenants file are reported at once. */
#define SHOAL_TENANTS_MAX_ERRORS 20

typedef struct shoal_tenants shoal_tenants_t;

/* One plan; 0 (and NULL) mean no limit. */
typedef struct {
    const char *name;             /* the tenant, or SHOAL_TENANTS_DEFAULT_NAME */
    long jobs_per_minute;         /* accepted jobs in one UTC minute */
    long jobs_per_day;            /* accepted jobs in one UTC day */
    long max_prompt_tokens;       /* estimated prompt tokens of one call */
    long max_items;               /* items in one job */
    const char *default_priority; /* "high", "normal" or "low" for jobs that set none */
    double daily_budget_usd;      /* spend in one UTC day (enforced by the budget checks) */
} shoal_tenant_plan_t;

/* Reads and checks a tenants file. Returns an owned set, or NULL with every
 * problem found (up to SHOAL_TENANTS_MAX_ERRORS, one per line, each naming
 * its JSON path) in errbuf. */
shoal_tenants_t *shoal_tenants_load(const char *path, char *errbuf, size_t errlen);

/* As shoal_tenants_load() on text already in memory. */
shoal_tenants_t *shoal_tenants_parse(const char *text, size_t len, char *errbuf, size_t errlen);

void shoal_tenants_destroy(shoal_tenants_t *t); /* NULL is ok */

/* The plan of tenant: its own, else the default plan, else NULL (no limits).
 * t may be NULL (no tenants file). Borrowed until shoal_tenants_destroy(). */
const shoal_tenant_plan_t *shoal_tenants_plan(const shoal_tenants_t *t, const char *tenant);

/* Every plan (the default one included) as an array of objects with the
 * columns of shoal.tenants, for shoal.set_tenants(). New reference; NULL when
 * out of memory. t may be NULL: an empty array. */
json_t *shoal_tenants_rows(const shoal_tenants_t *t);

/* The limits of plan a job is judged by before it is recorded: items in the
 * job and the largest estimated prompt of one of its calls. SHOAL_OK, or
 * SHOAL_ERR_LIMIT with the limit and both numbers in errbuf ("tenant acme:
 * the job has 120 items; the plan allows at most 100 per job"). plan may be
 * NULL (no limits). */
shoal_err_t shoal_tenants_check_job(const shoal_tenant_plan_t *plan, const char *tenant,
                                    size_t n_items, long max_call_tokens, char *errbuf,
                                    size_t errlen);

/* The reason a job over a counted limit is rejected with: kind is
 * "minute", "day" or "budget"; count what was reached (jobs, or dollars
 * spent for "budget"), limit the plan's number, reset_unix when the window
 * ends (seconds since the epoch, UTC), e.g.
 *   tenant acme: 60 jobs per minute reached (limit 60); resets at 12:01:00Z
 * SHOAL_ERR_INVALID for an unknown kind. */
shoal_err_t shoal_tenants_quota_reason(const char *tenant, const char *kind, double count,
                                       double limit, long long reset_unix, char *buf, size_t len);

/* The counted limits of plan as the p_quota argument of
 * shoal.record_job_admitted (jobs_per_minute, jobs_per_day,
 * daily_budget_usd), or NULL when plan is NULL or counts nothing. New
 * reference. */
json_t *shoal_tenants_quota_json(const shoal_tenant_plan_t *plan);

/* Reads shoal.record_job_admitted's over-quota answer
 * ("quota:<kind>:<count>:<limit>:<reset unix s>") into the reason the job is
 * rejected with (shoal_tenants_quota_reason). SHOAL_ERR_INVALID when answer
 * is not such an answer. */
shoal_err_t shoal_tenants_quota_answer(const char *answer, const char *tenant, char *buf,
                                       size_t len);

#endif
