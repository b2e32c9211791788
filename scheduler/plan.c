/*
 * Tenant plans applied at intake (see plan.h).
 */
#include "scheduler/plan.h"

long shoal_plan_max_call_tokens(const shoal_job_t *job)
{
    long max_call = 0;

    for (size_t k = 0; k < shoal_job_n_chunks(job); k++)
        if (shoal_job_chunk_est_tokens(job, k) > max_call)
            max_call = shoal_job_chunk_est_tokens(job, k);
    return max_call;
}

shoal_err_t shoal_plan_apply(const shoal_tenants_t *tenants, shoal_job_t *job, size_t items_before,
                             json_t **quota, char *why, size_t whylen)
{
    const shoal_tenant_plan_t *plan = shoal_tenants_plan(tenants, shoal_job_tenant(job));

    if (quota)
        *quota = NULL;
    if (!plan)
        return SHOAL_OK;
    if (plan->default_priority && !shoal_job_priority_given(job) &&
        shoal_job_set_priority(job, plan->default_priority) != SHOAL_OK)
        return shoal_err_set(why, whylen, SHOAL_ERR_NOMEM, "out of memory");
    shoal_err_t err =
        shoal_tenants_check_job(plan, shoal_job_tenant(job), items_before + shoal_job_n_items(job),
                                shoal_plan_max_call_tokens(job), why, whylen);
    if (err == SHOAL_OK && quota)
        *quota = shoal_tenants_quota_json(plan);
    return err;
}
