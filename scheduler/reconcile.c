/*
 * The reconciler (see reconcile.h).
 */
#include "scheduler/reconcile.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "common/job.h"
#include "common/log.h"
#include "common/pg.h"
#include "common/service.h"
#include "scheduler/cache.h"
#include "scheduler/subtasks.h"
#include "scheduler/parts.h"

#define PASS_LIMIT 20000 /* tasks one pass looks at; the next pass takes the rest */
#define LOCK_SQL "hashtext('shoal.reconcile')"
#define CACHE_EXPIRE_LIMIT 1000 /* result cache entries one pass deletes at most */

struct shoal_reconcile {
    shoal_pg_t *pg;
    shoal_intake_conf_t ic; /* the scheduler's, on this connection */
    shoal_reconcile_conf_t conf;
    double last_ms; /* monotonic, when the last pass ran (0: never) */
};

shoal_reconcile_t *shoal_reconcile_new(const char *conninfo, const shoal_intake_conf_t *intake,
                                       const shoal_reconcile_conf_t *conf)
{
    shoal_reconcile_t *rc = calloc(1, sizeof(*rc));
    if (!rc)
        return NULL;
    if (!(rc->pg = shoal_pg_new(conninfo, "shoal-reconciler"))) {
        free(rc);
        return NULL;
    }
    rc->ic = *intake;
    rc->ic.pg = rc->pg;
    rc->conf = *conf;
    return rc;
}

void shoal_reconcile_destroy(shoal_reconcile_t *rc)
{
    if (!rc)
        return;
    shoal_pg_destroy(rc->pg);
    free(rc);
}

/* Fails rows [from, to) of r (one job's lost tasks) with reason through
 * shoal.record_batch, which counts them on the job and announces the job to
 * the mergers when they were its last. */
static shoal_err_t fail_tasks(shoal_reconcile_t *rc, PGresult *r, int from, int to,
                              const char *reason, int *failed, char *errbuf, size_t errlen)
{
    json_t *rows = json_array();
    for (int i = from; rows && i < to; i++) {
        json_t *row =
            json_pack("{s:s, s:s, s:i, s:s, s:s, s:i}", "task_id", PQgetvalue(r, i, 2), "job_id",
                      PQgetvalue(r, i, 0), "chunk", (int)strtol(PQgetvalue(r, i, 1), NULL, 10),
                      "status", "failed", "error", reason, "attempts", 0);
        if (!row || json_array_append_new(rows, row)) {
            json_decref(rows);
            rows = NULL;
        }
    }
    char *text = rows ? json_dumps(rows, JSON_COMPACT) : NULL;
    json_decref(rows);
    if (!text)
        return shoal_err_set(errbuf, errlen, SHOAL_ERR_NOMEM, "out of memory");
    const char *params[] = {text};
    shoal_err_t err =
        shoal_pg_exec(rc->pg, "SELECT count(*) FROM shoal.record_batch($1::jsonb, '[]'::jsonb)", 1,
                      params, NULL, errbuf, errlen);
    free(text);
    if (err == SHOAL_OK) {
        *failed += to - from;
        shoal_log_warn("reconcile", "lost tasks failed job_id=%s tasks=%d reason=\"%s\"",
                       PQgetvalue(r, from, 0), to - from, reason);
    }
    return err;
}

/* Publishes rows [from, to) of r (lost tasks of one part of a job, or of a
 * job sent as one message) again from the job's stored inputs; fails them
 * when the inputs cannot give them back. */
static shoal_err_t republish(shoal_reconcile_t *rc, PGresult *r, int from, int to, int *published,
                             int *failed, char *errbuf, size_t errlen)
{
    const char *job_id = PQgetvalue(r, from, 0);
    int part = (int)strtol(PQgetvalue(r, from, 4), NULL, 10);
    long base, n_chunks;
    shoal_err_t err;

    shoal_job_t *job =
        shoal_parts_load(rc->pg, job_id, part, &base, &n_chunks, &err, errbuf, errlen);
    if (!job && err == SHOAL_ERR_NOTFOUND)
        return fail_tasks(rc, r, from, to,
                          "the task's message was lost and the job's inputs are gone: cannot "
                          "publish it again",
                          failed, errbuf, errlen);
    if (!job && err == SHOAL_ERR_INVALID) {
        char reason[700];
        snprintf(reason, sizeof(reason), "cannot rebuild the task from the stored inputs: %s",
                 errbuf);
        return fail_tasks(rc, r, from, to, reason, failed, errbuf, errlen);
    }
    if (!job)
        return err;
    long *chunks = malloc((size_t)(to - from) * sizeof(*chunks));
    const char **subs = malloc((size_t)(to - from) * sizeof(*subs));
    if (!chunks || !subs) {
        free(chunks);
        free(subs);
        shoal_job_destroy(job);
        return shoal_err_set(errbuf, errlen, SHOAL_ERR_NOMEM, "out of memory");
    }
    /* chunk tasks go out as intake publishes them; batch mode's sub-tasks
     * (scheduler/subtasks.h) are rebuilt with their recorded items, from a
     * job sent as one message only (a sub-task may gather items of several
     * parts of a job sent in parts: such a one fails with the reason) */
    size_t nchunks = 0, nsubs = 0, bad = 0;
    int whole = base == 0 && n_chunks == (long)shoal_job_n_chunks(job);
    for (int i = from; i < to; i++) {
        long chunk = strtol(PQgetvalue(r, i, 1), NULL, 10);
        if (shoal_subtasks_is_sub(job_id, chunk, PQgetvalue(r, i, 2)))
            subs[nsubs++] = PQgetvalue(r, i, 2);
        else
            chunks[nchunks++] = chunk;
    }
    int n = 0, nsub = 0;
    err = nchunks ? shoal_intake_publish_range(&rc->ic, job, base, n_chunks, chunks, nchunks, &n,
                                               errbuf, errlen)
                  : SHOAL_OK;
    int sub_bad = 0;
    if (err == SHOAL_OK && nsubs && !whole) {
        err = shoal_err_set(errbuf, errlen, SHOAL_ERR_INVALID,
                            "sub-tasks of a job sent in parts are not rebuilt");
        sub_bad = 1;
    } else if (err == SHOAL_OK && nsubs) {
        err = shoal_subtasks_publish(&rc->ic, job, subs, nsubs, &nsub, &bad, errbuf, errlen);
        sub_bad = err == SHOAL_ERR_INVALID;
    }
    n += nsub;
    free(chunks);
    shoal_job_destroy(job);
    if (sub_bad) {
        /* one sub-task cannot be rebuilt: it ends with the reason, the
         * others go out on the next pass */
        char reason[700];
        snprintf(reason, sizeof(reason), "cannot publish the sub-task again: %s", errbuf);
        for (int i = from; i < to; i++)
            if (PQgetvalue(r, i, 2) == subs[bad])
                err = fail_tasks(rc, r, i, i + 1, reason, failed, errbuf, errlen);
        *published += n;
        free(subs);
        return err;
    }
    free(subs);
    if (err == SHOAL_OK) {
        *published += n;
        shoal_log_info("reconcile", "tasks published again job_id=%s tasks=%d", job_id, n);
    } else if (err == SHOAL_ERR_INVALID || err == SHOAL_ERR_LIMIT) {
        /* These tasks can never be published: end them with the reason. */
        char reason[700];
        snprintf(reason, sizeof(reason), "cannot publish the task again: %s", errbuf);
        err = fail_tasks(rc, r, from, to, reason, failed, errbuf, errlen);
    }
    return err;
}

static shoal_err_t pass(shoal_reconcile_t *rc, int *published, int *failed, char *errbuf,
                        size_t errlen)
{
    char pending[32], queued[32], limit[32];
    PGresult *r;
    shoal_err_t err;

    snprintf(pending, sizeof(pending), "%ld", rc->conf.pending_ms);
    snprintf(queued, sizeof(queued), "%ld", rc->conf.queued_ms);
    snprintf(limit, sizeof(limit), "%d", PASS_LIMIT);
    const char *params[] = {pending, queued, limit, rc->conf.paced ? "t" : "f"};
    /* Column 4 is the task's part, -1 for a job sent as one message. */
    if ((err = shoal_pg_exec(rc->pg,
                             "SELECT job_id, chunk, task_id, has_inputs, coalesce(part, -1) "
                             "FROM shoal.lost_tasks($1::bigint, $2::bigint, $3::int, $4::boolean) "
                             "ORDER BY 1, 5, 2, 3",
                             4, params, &r, errbuf, errlen)) != SHOAL_OK)
        return err;
    int rows = PQntuples(r);
    for (int from = 0, to; from < rows && err == SHOAL_OK; from = to) {
        for (to = from + 1; to < rows && !strcmp(PQgetvalue(r, to, 0), PQgetvalue(r, from, 0)) &&
                            !strcmp(PQgetvalue(r, to, 4), PQgetvalue(r, from, 4));
             to++)
            ;
        if (!strcmp(PQgetvalue(r, from, 3), "t"))
            err = republish(rc, r, from, to, published, failed, errbuf, errlen);
        else
            err = fail_tasks(rc, r, from, to,
                             "the task's message was lost and the job does not keep its inputs "
                             "(store_inputs false): cannot publish it again",
                             failed, errbuf, errlen);
    }
    PQclear(r);
    if (err != SHOAL_OK)
        return err;
    /* A job whose last task ended while no merger heard of it. */
    if ((err =
             shoal_pg_exec(rc->pg,
                           "SELECT count(pg_notify('shoal_merge', job_id)) FROM shoal.jobs "
                           "WHERE status = 'running' AND tasks_done + tasks_failed >= tasks_total",
                           0, NULL, NULL, errbuf, errlen)) != SHOAL_OK)
        return err;
    /* Expired cache entries, a few per pass so no pass takes long. */
    return shoal_cache_expire(rc->pg, rc->ic.cache_ttl_s, CACHE_EXPIRE_LIMIT, NULL, errbuf, errlen);
}

shoal_err_t shoal_reconcile_poll(shoal_reconcile_t *rc, int force, int *published, int *failed,
                                 char *errbuf, size_t errlen)
{
    int pub = 0, fail = 0;
    PGresult *r;
    shoal_err_t err;
    double now = shoal_service_now_ms();

    if (published)
        *published = 0;
    if (failed)
        *failed = 0;
    if (!force && rc->last_ms > 0 && now - rc->last_ms < (double)rc->conf.every_ms)
        return SHOAL_OK;
    rc->last_ms = now;
    if ((err = shoal_pg_exec(rc->pg, "SELECT pg_try_advisory_lock(" LOCK_SQL ")", 0, NULL, &r,
                             errbuf, errlen)) != SHOAL_OK)
        return err;
    int mine = !strcmp(PQgetvalue(r, 0, 0), "t");
    PQclear(r);
    if (!mine)
        return SHOAL_OK; /* another scheduler is reconciling */
    err = pass(rc, &pub, &fail, errbuf, errlen);
    /* A lost connection took the lock with it; otherwise give it back. */
    shoal_pg_exec(rc->pg, "SELECT pg_advisory_unlock(" LOCK_SQL ")", 0, NULL, NULL, NULL, 0);
    if (published)
        *published = pub;
    if (failed)
        *failed = fail;
    return err;
}
