/*
 * The dispatcher (see dispatch.h).
 */
#include "scheduler/dispatch.h"

#include <stdlib.h>
#include <string.h>

#include "common/job.h"
#include "common/log.h"
#include "common/pg.h"
#include "common/service.h"
#include "scheduler/parts.h"

#define LOCK_SQL "hashtext('shoal.dispatch')"
/* Passes at least this far apart when announced room calls for them: a
 * window fills in a pass or two, not one per finished batch. */
#define ROOM_GAP_MS 10.0

/* How long a rebuilt part is kept through passes that publish nothing. */
#define HOLD_IDLE_MS 5000.0

struct shoal_dispatch {
    shoal_pg_t *pg;
    shoal_intake_conf_t ic; /* the scheduler's, on this connection */
    shoal_dispatch_conf_t conf;
    double last_ms; /* monotonic, when the last pass ran (0: never) */
    int full;       /* the last pass hit pass_limit: more is waiting */
    int room;       /* tasks ended since the last pass (shoal_dispatch_room) */
    /* The part last rebuilt, kept for the next pass: a window topped up a
     * few tasks at a time would otherwise decode the same part again and
     * again. One part at most, so memory stays bounded; passes that find
     * every window full publish nothing, and the part is let go only after
     * HOLD_IDLE_MS of those (dropping it at the first one rebuilt a whole
     * 20,000-item job each time a window had room again). */
    shoal_job_t *job;
    double idle_since_ms; /* monotonic, first pass that published nothing; 0 */
    char job_id[256];
    int part;
    long base, n_chunks;
};

shoal_dispatch_t *shoal_dispatch_new(const char *conninfo, const shoal_intake_conf_t *intake,
                                     const shoal_dispatch_conf_t *conf)
{
    shoal_dispatch_t *d = calloc(1, sizeof(*d));
    if (!d)
        return NULL;
    if (!(d->pg = shoal_pg_new(conninfo, "shoal-dispatcher"))) {
        free(d);
        return NULL;
    }
    d->ic = *intake;
    d->ic.pg = d->pg;
    d->conf = *conf;
    return d;
}

static void forget(shoal_dispatch_t *d)
{
    shoal_job_destroy(d->job);
    d->job = NULL;
    d->job_id[0] = '\0';
}

void shoal_dispatch_destroy(shoal_dispatch_t *d)
{
    if (!d)
        return;
    forget(d);
    shoal_pg_destroy(d->pg);
    free(d);
}

static shoal_err_t fail_job(shoal_dispatch_t *d, const char *job_id, const char *why, char *errbuf,
                            size_t errlen)
{
    char reason[800];
    snprintf(reason, sizeof(reason), "cannot publish the job's tasks: %s", why);
    const char *params[] = {job_id, reason};
    shoal_log_error("dispatch", "job failed job_id=%s reason=\"%s\"", job_id, reason);
    forget(d);
    return shoal_pg_exec(d->pg, "SELECT shoal.fail_job($1, $2)", 2, params, NULL, errbuf, errlen);
}

/* Publishes rows [from, to) of r: chunks of one part (or one whole job). */
static shoal_err_t publish(shoal_dispatch_t *d, PGresult *r, int from, int to, int *published,
                           char *errbuf, size_t errlen)
{
    const char *job_id = PQgetvalue(r, from, 0);
    int part = PQgetisnull(r, from, 1) ? -1 : (int)strtol(PQgetvalue(r, from, 1), NULL, 10);
    shoal_err_t err;

    if (!d->job || strcmp(d->job_id, job_id) || d->part != part) {
        forget(d);
        d->job =
            shoal_parts_load(d->pg, job_id, part, &d->base, &d->n_chunks, &err, errbuf, errlen);
        if (!d->job)
            return err == SHOAL_ERR_RETRY ? err : fail_job(d, job_id, errbuf, errbuf, errlen);
        snprintf(d->job_id, sizeof(d->job_id), "%s", job_id);
        d->part = part;
    }
    long *chunks = malloc((size_t)(to - from) * sizeof(*chunks));
    if (!chunks)
        return shoal_err_set(errbuf, errlen, SHOAL_ERR_NOMEM, "out of memory");
    for (int i = from; i < to; i++)
        chunks[i - from] = strtol(PQgetvalue(r, i, 2), NULL, 10);
    int n = 0;
    err = shoal_intake_publish_range(&d->ic, d->job, d->base, d->n_chunks, chunks,
                                     (size_t)(to - from), &n, errbuf, errlen);
    free(chunks);
    *published += n;
    if (err == SHOAL_ERR_INVALID || err == SHOAL_ERR_LIMIT) {
        char why[600];
        snprintf(why, sizeof(why), "%s", errbuf);
        return fail_job(d, job_id, why, errbuf, errlen);
    }
    shoal_log_debug("dispatch", "tasks published job_id=%s part=%d tasks=%d", job_id, part, n);
    return err;
}

static shoal_err_t pass(shoal_dispatch_t *d, int *published, char *errbuf, size_t errlen)
{
    char window[32], limit[32];
    PGresult *r;
    shoal_err_t err;

    snprintf(window, sizeof(window), "%ld", d->conf.window);
    snprintf(limit, sizeof(limit), "%ld", d->conf.pass_limit);
    const char *params[] = {window, limit};
    if ((err = shoal_pg_exec(
             d->pg, "SELECT job_id, part, chunk FROM shoal.dispatch_pick($1::int, $2::int)", 2,
             params, &r, errbuf, errlen)) != SHOAL_OK)
        return err;
    int rows = PQntuples(r);
    d->full = rows >= d->conf.pass_limit;
    double now = shoal_service_now_ms();
    if (rows > 0)
        d->idle_since_ms = 0;
    else if (d->idle_since_ms <= 0)
        d->idle_since_ms = now;
    else if (now - d->idle_since_ms >= HOLD_IDLE_MS)
        forget(d); /* nothing has waited for a while: hold no part */
    for (int from = 0, to; from < rows && err == SHOAL_OK; from = to) {
        for (to = from + 1; to < rows && !strcmp(PQgetvalue(r, to, 0), PQgetvalue(r, from, 0)) &&
                            !strcmp(PQgetvalue(r, to, 1), PQgetvalue(r, from, 1)) &&
                            PQgetisnull(r, to, 1) == PQgetisnull(r, from, 1);
             to++)
            ;
        err = publish(d, r, from, to, published, errbuf, errlen);
    }
    PQclear(r);
    return err;
}

/* The gap between passes: every_ms, or ROOM_GAP_MS once tasks have ended. */
static double gap_ms(const shoal_dispatch_t *d)
{
    return d->room && ROOM_GAP_MS < d->conf.every_ms ? ROOM_GAP_MS : (double)d->conf.every_ms;
}

long shoal_dispatch_due_ms(const shoal_dispatch_t *d)
{
    if (d->full || d->last_ms <= 0)
        return 0;
    double left = d->last_ms + gap_ms(d) - shoal_service_now_ms();
    return left <= 0 ? 0 : (long)left + 1;
}

void shoal_dispatch_room(shoal_dispatch_t *d)
{
    d->room = 1;
}

shoal_err_t shoal_dispatch_poll(shoal_dispatch_t *d, int force, int *published, char *errbuf,
                                size_t errlen)
{
    int pub = 0;
    PGresult *r;
    shoal_err_t err;
    double now = shoal_service_now_ms();

    if (published)
        *published = 0;
    if (!force && !d->full && d->last_ms > 0 && now - d->last_ms < gap_ms(d))
        return SHOAL_OK;
    d->last_ms = now;
    d->full = 0;
    d->room = 0;
    if ((err = shoal_pg_exec(d->pg, "SELECT pg_try_advisory_lock(" LOCK_SQL ")", 0, NULL, &r,
                             errbuf, errlen)) != SHOAL_OK)
        return err;
    int mine = !strcmp(PQgetvalue(r, 0, 0), "t");
    PQclear(r);
    if (!mine)
        return SHOAL_OK; /* another scheduler is dispatching */
    err = pass(d, &pub, errbuf, errlen);
    /* A lost connection took the lock with it; otherwise give it back. */
    shoal_pg_exec(d->pg, "SELECT pg_advisory_unlock(" LOCK_SQL ")", 0, NULL, NULL, NULL, 0);
    if (published)
        *published = pub;
    return err;
}
