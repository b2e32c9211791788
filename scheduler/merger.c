/*
 * The merger stage (see merger.h).
 */
#include "scheduler/merger.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "common/pg.h"
#include "scheduler/events.h"
#include "scheduler/merge.h"

struct shoal_merger {
    shoal_pg_t *pg;
    rd_kafka_t *producer;
    const char *events_topic;
    unsigned swept_at_connect; /* connection count at the last sweep */
    json_t *due;               /* set of job ids to merge (object used as a set) */
    int room;                  /* shoal_room heard since shoal_merger_room */
};

shoal_merger_t *shoal_merger_new(const char *conninfo, rd_kafka_t *producer,
                                 const char *events_topic)
{
    shoal_merger_t *m = calloc(1, sizeof(*m));
    if (!m)
        return NULL;
    m->pg = shoal_pg_new(conninfo, "shoal-merger");
    m->due = json_object();
    m->producer = producer;
    m->events_topic = events_topic;
    if (!m->pg || !m->due) {
        shoal_merger_destroy(m);
        return NULL;
    }
    shoal_pg_set_on_connect(m->pg, "LISTEN shoal_merge; LISTEN shoal_room");
    return m;
}

void shoal_merger_destroy(shoal_merger_t *m)
{
    if (!m)
        return;
    shoal_pg_destroy(m->pg);
    json_decref(m->due);
    free(m);
}

int shoal_merger_fd(shoal_merger_t *m)
{
    PGconn *c = shoal_pg_conn(m->pg);
    return c ? PQsocket(c) : -1;
}

static void on_notify(const char *channel, const char *payload, void *arg)
{
    shoal_merger_t *m = arg;
    if (!strcmp(channel, "shoal_merge") && payload && *payload)
        json_object_set_new(m->due, payload, json_true());
    else if (!strcmp(channel, "shoal_room"))
        m->room = 1;
}

int shoal_merger_room(shoal_merger_t *m)
{
    int room = m->room;
    m->room = 0;
    return room;
}

static shoal_err_t sweep(shoal_merger_t *m, char *errbuf, size_t errlen)
{
    PGresult *r;
    shoal_err_t err = shoal_pg_exec(m->pg,
                                    "SELECT job_id FROM shoal.jobs WHERE status = 'running' AND "
                                    "tasks_done + tasks_failed >= tasks_total",
                                    0, NULL, &r, errbuf, errlen);
    if (err != SHOAL_OK)
        return err;
    for (int i = 0; i < PQntuples(r); i++)
        json_object_set_new(m->due, PQgetvalue(r, i, 0), json_true());
    PQclear(r);
    m->swept_at_connect = shoal_pg_connects(m->pg);
    return SHOAL_OK;
}

/* Merges every job known to be due. */
static shoal_err_t merge_due(shoal_merger_t *m, int *merged, char *errbuf, size_t errlen)
{
    shoal_err_t err;
    const char *job_id;
    json_t *v;
    void *tmp;

    json_object_foreach_safe(m->due, tmp, job_id, v)
    {
        shoal_merge_result_t res;
        err = shoal_merge_job(m->pg, job_id, &res, errbuf, errlen);
        if (err == SHOAL_ERR_RETRY)
            return err; /* keep the job in the set; try again after reconnecting */
        if (err != SHOAL_OK) {
            /* Not even failing the job could be recorded: the sweep after the
             * next reconnect finds it again. */
            shoal_log_error("merger", "could not merge job job_id=%s error=\"%s\"", job_id, errbuf);
        } else if (res.outcome == SHOAL_MERGE_FAILED) {
            shoal_log_error("merger", "job failed, cannot merge it job_id=%s error=\"%s\"", job_id,
                            res.reason);
            if (merged)
                (*merged)++;
        } else if (res.outcome == SHOAL_MERGE_CLOSED) {
            shoal_log_info("merger", "job finished job_id=%s status=%s", job_id, res.status);
            if (merged)
                (*merged)++;
        }
        json_object_del(m->due, job_id);
    }
    return SHOAL_OK;
}

shoal_err_t shoal_merger_poll(shoal_merger_t *m, int *merged, char *errbuf, size_t errlen)
{
    shoal_err_t err;

    if (merged)
        *merged = 0;
    if ((err = shoal_pg_connect(m->pg, errbuf, errlen)) != SHOAL_OK)
        return err;
    /* A fresh connection may have missed notifications: look for them. */
    if (m->swept_at_connect != shoal_pg_connects(m->pg) &&
        (err = sweep(m, errbuf, errlen)) != SHOAL_OK)
        return err;
    /* A notification can arrive in the answer to one of this pass's own
     * statements, where no poll() on the socket will see it: read again after
     * each round until none came (bounded, the next poll picks up the rest). */
    for (int round = 0; round < 4; round++) {
        if ((err = shoal_pg_notifications(m->pg, on_notify, m, errbuf, errlen)) != SHOAL_OK)
            return err;
        if (round > 0 && json_object_size(m->due) == 0)
            break;
        if ((err = merge_due(m, merged, errbuf, errlen)) != SHOAL_OK)
            return err;
        if ((err = shoal_events_drain(m->pg, m->producer, m->events_topic, NULL, errbuf, errlen)) !=
            SHOAL_OK)
            return err;
    }
    return SHOAL_OK;
}
