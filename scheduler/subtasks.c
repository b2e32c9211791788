/*
 * Publishing sub-tasks again (see subtasks.h).
 */
#include "scheduler/subtasks.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "common/pg.h"
#include "common/subtask.h"
#include "common/taskmsg.h"

#define ACK_TIMEOUT_MS 30000

int shoal_subtasks_is_sub(const char *job_id, long chunk, const char *task_id)
{
    char own[SHOAL_TASKMSG_ID_MAX];
    if (chunk < 0 || shoal_taskmsg_task_id(job_id, (size_t)chunk, own, sizeof(own)) != SHOAL_OK)
        return 0;
    return strcmp(own, task_id) != 0;
}

/* The message of one recorded sub-task (row i of r: task_id, chunk,
 * est_tokens, item_ids as JSON) into *text (caller frees). */
static shoal_err_t rebuild(const shoal_job_t *job, const json_t *index, PGresult *r, int i,
                           char **text, char *errbuf, size_t errlen)
{
    const char *task_id = PQgetvalue(r, i, 0);
    long chunk = strtol(PQgetvalue(r, i, 1), NULL, 10);
    long est = strtol(PQgetvalue(r, i, 2), NULL, 10);
    json_t *ids = json_loads(PQgetvalue(r, i, 3), 0, NULL);
    json_t *base = NULL, *items = NULL, *msg = NULL;
    size_t missing = 0;
    shoal_err_t err = SHOAL_OK;

    *text = NULL;
    if (chunk < 0 || (size_t)chunk >= shoal_job_n_chunks(job)) {
        err = shoal_err_set(errbuf, errlen, SHOAL_ERR_INVALID,
                            "sub-task %s names chunk %ld but the job has %zu chunks", task_id,
                            chunk, shoal_job_n_chunks(job));
        goto out;
    }
    /* the chunk is in range: building its message fails only for memory */
    if (!ids || !(base = shoal_taskmsg_build(job, (size_t)chunk, errbuf, errlen)) ||
        !(items = shoal_subtask_items(job, index, ids, &missing))) {
        err = shoal_err_set(errbuf, errlen, SHOAL_ERR_NOMEM, "out of memory");
        goto out;
    }
    if (missing > 0 || json_array_size(items) == 0) {
        err = shoal_err_set(errbuf, errlen, SHOAL_ERR_INVALID,
                            "%zu items of sub-task %s are not in the job's stored inputs", missing,
                            task_id);
        goto out;
    }
    if (!(msg = shoal_subtask_message(base, task_id, items, est, errbuf, errlen)) ||
        !(*text = json_dumps(msg, JSON_COMPACT)))
        err = shoal_err_set(errbuf, errlen, SHOAL_ERR_NOMEM, "out of memory");
out:
    json_decref(ids);
    json_decref(base);
    json_decref(items);
    json_decref(msg);
    return err;
}

shoal_err_t shoal_subtasks_publish(const shoal_intake_conf_t *c, const shoal_job_t *job,
                                   const char *const *task_ids, size_t n, int *published,
                                   size_t *bad, char *errbuf, size_t errlen)
{
    const char *job_id = shoal_job_id(job);
    const char *topic = shoal_topics_task(c->topics, shoal_job_priority(job));
    json_t *want = json_array();
    char *wanted = NULL, **msgs = NULL;
    PGresult *r = NULL;
    shoal_err_t err = SHOAL_OK;
    int rows = 0;

    *published = 0;
    for (size_t i = 0; want && i < n; i++)
        if (json_array_append_new(want, json_string(task_ids[i]))) {
            json_decref(want);
            want = NULL;
        }
    if (!want || !(wanted = json_dumps(want, JSON_COMPACT))) {
        json_decref(want);
        return shoal_err_set(errbuf, errlen, SHOAL_ERR_NOMEM, "out of memory");
    }
    json_decref(want);
    const char *params[] = {wanted, job_id};
    if ((err = shoal_pg_exec(c->pg,
                             "SELECT task_id, chunk, coalesce(est_tokens, 0), "
                             "to_json(item_ids)::text FROM shoal.tasks "
                             "WHERE task_id IN (SELECT jsonb_array_elements_text($1::jsonb)) "
                             "AND job_id = $2 AND parent_task_id IS NOT NULL ORDER BY task_id",
                             2, params, &r, errbuf, errlen)) != SHOAL_OK) {
        free(wanted);
        return err;
    }
    rows = PQntuples(r);
    /* every message built before any is produced: one that cannot be is
     * reported, with nothing half published */
    json_t *index = shoal_job_n_items(job) > 0 ? shoal_subtask_index(job) : NULL;
    if (!(msgs = calloc((size_t)(rows > 0 ? rows : 1), sizeof(*msgs))) ||
        (shoal_job_n_items(job) > 0 && !index))
        err = shoal_err_set(errbuf, errlen, SHOAL_ERR_NOMEM, "out of memory");
    for (int i = 0; err == SHOAL_OK && i < rows; i++) {
        if ((err = rebuild(job, index, r, i, &msgs[i], errbuf, errlen)) == SHOAL_ERR_INVALID) {
            for (size_t k = 0; bad && k < n; k++)
                if (!strcmp(task_ids[k], PQgetvalue(r, i, 0)))
                    *bad = k;
        }
    }
    json_decref(index);
    shoal_kafka_ack_t ack = {0, 0};
    for (int i = 0; err == SHOAL_OK && i < rows; i++) {
        err = shoal_kafka_produce(c->producer, topic, PQgetvalue(r, i, 0), msgs[i], strlen(msgs[i]),
                                  &ack, errbuf, errlen);
        if (err == SHOAL_OK)
            (*published)++;
    }
    /* settle what was produced, even after an error: ack lives here */
    shoal_err_t werr = shoal_kafka_ack_wait(c->producer, &ack, ACK_TIMEOUT_MS,
                                            err == SHOAL_OK ? errbuf : NULL, errlen);
    if (err == SHOAL_OK)
        err = werr;
    if (err == SHOAL_OK && rows > 0)
        err = shoal_pg_exec(c->pg,
                            "SELECT shoal.mark_subtasks_queued("
                            "ARRAY(SELECT jsonb_array_elements_text($1::jsonb)))",
                            1, params, NULL, errbuf, errlen);
    if (err == SHOAL_OK && rows > 0)
        shoal_log_debug("reconcile", "sub-tasks produced job_id=%s tasks=%d topic=%s", job_id, rows,
                        topic);
    for (int i = 0; msgs && i < rows; i++)
        free(msgs[i]);
    free(msgs);
    PQclear(r);
    free(wanted);
    return err;
}
