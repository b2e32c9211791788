/*
 * Job intake (see intake.h).
 */
#include "scheduler/intake.h"

#include <jansson.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>

#include "common/job.h"
#include "common/log.h"

#define ACK_TIMEOUT_MS 60000

/* Output tokens are unknown before the call: assume as many as the prompt,
 * capped by the model's max_output_tokens. A rough, documented guess. */
static double estimate_cost(const shoal_model_t *m, const json_t *tasks, long *tokens)
{
    double cost = 0;
    size_t i;
    json_t *t;

    *tokens = 0;
    json_array_foreach(tasks, i, t)
    {
        long in = (long)json_integer_value(json_object_get(t, "est_tokens"));
        long out =
            m && m->max_output_tokens > 0 && in > m->max_output_tokens ? m->max_output_tokens : in;
        *tokens += in;
        if (m) {
            shoal_usage_t u = {.input = in, .output = out};
            cost += shoal_model_cost(m, &u);
        }
    }
    return cost;
}

/* The id a rejected message is stored under: its own job_id when that is
 * readable and well formed, else one derived from where Kafka kept it. */
static void rejected_identity(const void *value, size_t len, size_t max_bytes, const char *derived,
                              char *id, size_t idlen, json_t **tenant)
{
    snprintf(id, idlen, "%s", derived);
    *tenant = NULL;
    if (len > max_bytes)
        return;
    json_t *doc = json_loadb(value, len, 0, NULL);
    if (!json_is_object(doc)) {
        json_decref(doc);
        return;
    }
    const char *jid = json_string_value(json_object_get(doc, "job_id"));
    if (jid && shoal_job_id_valid(jid))
        snprintf(id, idlen, "%s", jid);
    const char *tn = json_string_value(json_object_get(doc, "tenant"));
    if (tn && strlen(tn) <= 100)
        *tenant = json_string(tn);
    json_decref(doc);
}

static shoal_err_t record(shoal_pg_t *pg, json_t *jobrow, json_t *taskrows, char *status,
                          size_t statuslen, char *errbuf, size_t errlen)
{
    char *a = json_dumps(jobrow, JSON_COMPACT);
    char *b = json_dumps(taskrows, JSON_COMPACT);
    PGresult *r = NULL;
    shoal_err_t err;

    if (!a || !b) {
        err = shoal_err_set(errbuf, errlen, SHOAL_ERR_NOMEM, "out of memory");
    } else {
        const char *params[] = {a, b};
        err = shoal_pg_exec(pg, "SELECT shoal.record_job($1::jsonb, $2::jsonb)", 2, params, &r,
                            errbuf, errlen);
    }
    if (err == SHOAL_OK) {
        snprintf(status, statuslen, "%s", PQgetvalue(r, 0, 0));
        PQclear(r);
    }
    free(a);
    free(b);
    return err;
}

static shoal_err_t reject(const shoal_intake_conf_t *c, const char *source, const char *derived,
                          const void *value, size_t len, const char *reason,
                          shoal_intake_result_t *out, char *errbuf, size_t errlen)
{
    json_t *tenant;
    char status[64];

    rejected_identity(value, len, c->max_job_bytes, derived, out->job_id, sizeof(out->job_id),
                      &tenant);
    out->outcome = SHOAL_INTAKE_REJECTED;
    snprintf(out->reason, sizeof(out->reason), "%s", reason);
    json_t *row = json_pack("{s:s, s:s, s:s, s:s}", "job_id", out->job_id, "status", "rejected",
                            "error", out->reason, "source", source);
    if (tenant)
        json_object_set_new(row, "tenant", tenant);
    json_t *none = json_array();
    shoal_err_t err = record(c->pg, row, none, status, sizeof(status), errbuf, errlen);
    json_decref(row);
    json_decref(none);
    return err;
}

/* Produces the tasks still pending in PostgreSQL, waits for Kafka to
 * acknowledge them, then marks them queued. */
static shoal_err_t publish_pending(const shoal_intake_conf_t *c, const char *job_id,
                                   const char *priority, json_t *tasks, int *published,
                                   char *errbuf, size_t errlen)
{
    const char *params[] = {job_id};
    PGresult *r;
    shoal_err_t err;
    shoal_kafka_ack_t ack = {0, 0};
    const char *topic = shoal_topics_task(c->topics, priority);

    *published = 0;
    if ((err = shoal_pg_exec(c->pg,
                             "SELECT chunk FROM shoal.tasks WHERE job_id = $1 AND status = "
                             "'pending' ORDER BY chunk",
                             1, params, &r, errbuf, errlen)) != SHOAL_OK)
        return err;

    int rows = PQntuples(r);
    size_t cap = (size_t)rows * 12 + 3, alen = 0;
    char *chunks = malloc(cap);
    if (!chunks) {
        PQclear(r);
        return shoal_err_set(errbuf, errlen, SHOAL_ERR_NOMEM, "out of memory");
    }
    chunks[alen++] = '{';
    for (int i = 0; i < rows && err == SHOAL_OK; i++) {
        long chunk = strtol(PQgetvalue(r, i, 0), NULL, 10);
        json_t *task = json_array_get(tasks, (size_t)chunk);
        if (!task) {
            err = shoal_err_set(errbuf, errlen, SHOAL_ERR_INVALID,
                                "chunk %ld of job %s is recorded but the job now splits into %zu "
                                "chunks (was the job changed under the same job_id?)",
                                chunk, job_id, json_array_size(tasks));
            break;
        }
        char *value = json_dumps(task, JSON_COMPACT);
        if (!value) {
            err = shoal_err_set(errbuf, errlen, SHOAL_ERR_NOMEM, "out of memory");
            break;
        }
        err = shoal_kafka_produce(c->producer, topic,
                                  json_string_value(json_object_get(task, "task_id")), value,
                                  strlen(value), &ack, errbuf, errlen);
        free(value);
        if (err != SHOAL_OK)
            break;
        alen += (size_t)snprintf(chunks + alen, cap - alen, "%s%ld", i ? "," : "", chunk);
        (*published)++;
        if (c->fault_kill_after > 0 && *published >= c->fault_kill_after) {
            shoal_kafka_ack_wait(c->producer, &ack, ACK_TIMEOUT_MS, NULL, 0);
            shoal_log_warn("intake", "fault injection: killing self job_id=%s published=%d", job_id,
                           *published);
            raise(SIGKILL);
        }
    }
    snprintf(chunks + alen, cap - alen, "}");
    PQclear(r);
    shoal_log_debug("intake", "tasks produced job_id=%s tasks=%d topic=%s", job_id, *published,
                    topic);
    /* Always settle what was produced, even after an error: ack lives here. */
    shoal_err_t werr = shoal_kafka_ack_wait(c->producer, &ack, ACK_TIMEOUT_MS,
                                            err == SHOAL_OK ? errbuf : NULL, errlen);
    if (err == SHOAL_OK)
        err = werr;
    if (err == SHOAL_OK && rows > 0) {
        const char *mp[] = {job_id, chunks};
        err = shoal_pg_exec(c->pg, "SELECT shoal.mark_queued($1, $2::int[])", 2, mp, NULL, errbuf,
                            errlen);
    }
    free(chunks);
    return err;
}

shoal_err_t shoal_intake_job(const shoal_intake_conf_t *c, const char *topic, int partition,
                             long long offset, const void *value, size_t len,
                             shoal_intake_result_t *out, char *errbuf, size_t errlen)
{
    char source[300], derived[300], why[512], status[64];
    shoal_err_t err;

    memset(out, 0, sizeof(*out));
    snprintf(source, sizeof(source), "%s/%d@%lld", topic, partition, offset);
    snprintf(derived, sizeof(derived), "%s-p%d-o%lld", topic, partition, offset);

    shoal_job_t *job =
        shoal_job_parse(value ? value : "", len, c->max_job_bytes, c->models, why, sizeof(why));
    if (!job)
        return reject(c, source, derived, value ? value : "", len, why, out, errbuf, errlen);
    if (!shoal_job_id(job) && shoal_job_set_id(job, derived) != SHOAL_OK) {
        shoal_job_destroy(job);
        snprintf(why, sizeof(why),
                 "the job has no job_id and none can be derived from topic \"%s\"; set job_id",
                 topic);
        return reject(c, source, derived, value, len, why, out, errbuf, errlen);
    }
    snprintf(out->job_id, sizeof(out->job_id), "%s", shoal_job_id(job));

    json_t *tasks = shoal_job_tasks(job, why, sizeof(why));
    if (!tasks) {
        shoal_job_destroy(job);
        return reject(c, source, derived, value, len, why, out, errbuf, errlen);
    }
    long est_tokens;
    double est_cost =
        estimate_cost(shoal_models_find(c->models, shoal_job_model(job)), tasks, &est_tokens);
    double budget = shoal_job_budget_usd(job);
    if (budget > 0 && est_cost > budget) {
        snprintf(why, sizeof(why),
                 "budget_usd: the job is estimated at $%.4f (%ld prompt tokens), over its "
                 "budget of $%.4f; raise budget_usd or split the job",
                 est_cost, est_tokens, budget);
        json_decref(tasks);
        shoal_job_destroy(job);
        return reject(c, source, derived, value, len, why, out, errbuf, errlen);
    }

    json_t *taskrows = json_array();
    size_t i;
    json_t *t;
    json_array_foreach(tasks, i, t)
    {
        json_t *ids = json_array();
        size_t k;
        json_t *item;
        json_array_foreach(json_object_get(t, "items"), k, item)
            json_array_append(ids, json_object_get(item, "id"));
        json_array_append_new(taskrows, json_pack("{s:O, s:O, s:o, s:O}", "task_id",
                                                  json_object_get(t, "task_id"), "chunk",
                                                  json_object_get(t, "chunk"), "item_ids", ids,
                                                  "est_tokens", json_object_get(t, "est_tokens")));
    }
    json_t *row =
        json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:o, s:I, s:I, s:f}", "job_id", out->job_id,
                  "tenant", shoal_job_tenant(job), "priority", shoal_job_priority(job), "model",
                  shoal_job_model(job), "merge", shoal_job_merge(job), "output_format",
                  shoal_job_output_format(job), "source", source, "settings",
                  shoal_job_settings(job), "items_total", (json_int_t)shoal_job_n_items(job),
                  "est_tokens", (json_int_t)est_tokens, "est_cost_usd", est_cost);
    out->tasks = (int)json_array_size(tasks);

    err = row && taskrows ? record(c->pg, row, taskrows, status, sizeof(status), errbuf, errlen)
                          : shoal_err_set(errbuf, errlen, SHOAL_ERR_NOMEM, "out of memory");
    json_decref(row);
    json_decref(taskrows);
    if (err == SHOAL_ERR_INVALID) {
        /* The database refuses this job for good: keep it visible as
         * rejected with the database's reason rather than drop it. */
        snprintf(why, sizeof(why), "could not record the job: %s", errbuf ? errbuf : "");
        json_decref(tasks);
        shoal_job_destroy(job);
        return reject(c, source, derived, value, len, why, out, errbuf, errlen);
    }
    if (err == SHOAL_OK) {
        out->outcome = strcmp(status, "new") == 0 ? SHOAL_INTAKE_NEW : SHOAL_INTAKE_DUPLICATE;
        if (out->outcome == SHOAL_INTAKE_NEW || strcmp(status, "exists:running") == 0)
            err = publish_pending(c, out->job_id, shoal_job_priority(job), tasks, &out->published,
                                  errbuf, errlen);
        if (err == SHOAL_ERR_LIMIT) {
            /* A task Kafka will never take: the job cannot run, so it ends
             * failed with the reason instead of waiting forever. */
            snprintf(out->reason, sizeof(out->reason),
                     "%s; raise the producer's message.max.bytes (-X message.max.bytes=N, and "
                     "the topic's max.message.bytes) or use smaller chunks",
                     errbuf ? errbuf : "a task message is too large");
            const char *params[] = {out->job_id, out->reason};
            err = shoal_pg_exec(c->pg, "SELECT shoal.fail_job($1, $2)", 2, params, NULL, errbuf,
                                errlen);
            if (err == SHOAL_OK)
                out->outcome = SHOAL_INTAKE_FAILED;
        }
    }
    json_decref(tasks);
    shoal_job_destroy(job);
    return err;
}
