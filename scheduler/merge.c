/*
 * Merging one finished job (see merge.h; the SQL is in
 * sql/009_dynamic_work.sql, section "Merge").
 */
#include "scheduler/merge.h"

#include <stdio.h>
#include <string.h>

shoal_err_t shoal_merge_job(shoal_pg_t *pg, const char *job_id, shoal_merge_result_t *out,
                            char *errbuf, size_t errlen)
{
    const char *params[] = {job_id, NULL};
    PGresult *r;
    char why[512];

    memset(out, 0, sizeof(*out));
    shoal_err_t err =
        shoal_pg_exec(pg, "SELECT shoal.merge_job($1)", 1, params, &r, why, sizeof(why));
    if (err == SHOAL_OK) {
        if (!PQgetisnull(r, 0, 0)) {
            out->outcome = SHOAL_MERGE_CLOSED;
            snprintf(out->status, sizeof(out->status), "%s", PQgetvalue(r, 0, 0));
        }
        PQclear(r);
        return SHOAL_OK;
    }
    if (shoal_err_retriable(err))
        return shoal_err_set(errbuf, errlen, err, "%s", why);
    /* The statement itself fails for this job's data: it would fail the same
     * way on every retry, so the job ends failed with the reason. merge_job's
     * transaction was rolled back whole, so no page of it remains. */
    why[strcspn(why, "\n")] = '\0'; /* the reason, not the PL/pgSQL context under it */
    snprintf(out->reason, sizeof(out->reason), "the merge failed: %s", why);
    params[1] = out->reason;
    err = shoal_pg_exec(pg, "SELECT shoal.fail_job($1, $2)", 2, params, NULL, errbuf, errlen);
    if (err != SHOAL_OK)
        return err;
    out->outcome = SHOAL_MERGE_FAILED;
    snprintf(out->status, sizeof(out->status), "failed");
    return SHOAL_OK;
}
