/*
 * Job intake (see intake.h).
 */
#include "scheduler/intake.h"

#include <jansson.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>

#include "common/job.h"
#include "common/jobcheck.h"
#include "common/log.h"
#include "common/taskmsg.h"

#define ACK_TIMEOUT_MS 60000

/* Output tokens are unknown before the call: assume as many as the prompt,
 * capped by the model's max_output_tokens. A rough, documented guess. */
static double estimate_cost(const shoal_model_t *m, const shoal_job_t *job, long *tokens)
{
    double cost = 0;

    *tokens = 0;
    for (size_t k = 0; k < shoal_job_n_chunks(job); k++) {
        long in = shoal_job_chunk_est_tokens(job, k);
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

/* One shoal.tasks row per chunk: task_id, chunk, item_ids, est_tokens. No
 * prompt text: that travels only in the task messages. */
static json_t *task_rows(const shoal_job_t *job)
{
    const json_t *items = json_object_get(shoal_job_json(job), "items");
    json_t *rows = json_array();
    char task_id[SHOAL_TASKMSG_ID_MAX];

    for (size_t k = 0; rows && k < shoal_job_n_chunks(job); k++) {
        size_t first, end;
        json_t *ids;

        /* cannot fail for a parsed job with an id; checked all the same */
        if (shoal_taskmsg_task_id(shoal_job_id(job), k, task_id, sizeof(task_id)) ||
            !(ids = json_array()))
            goto fail;
        shoal_job_chunk_range(job, k, &first, &end);
        for (size_t i = first; i < end; i++) {
            if (json_array_append(ids, json_object_get(json_array_get(items, i), "id"))) {
                json_decref(ids);
                goto fail;
            }
        }
        /* "o" hands ids over even when packing fails */
        if (json_array_append_new(rows,
                                  json_pack("{s:s, s:I, s:o, s:I}", "task_id", task_id, "chunk",
                                            (json_int_t)k, "item_ids", ids, "est_tokens",
                                            (json_int_t)shoal_job_chunk_est_tokens(job, k))))
            goto fail;
    }
    return rows;
fail:
    json_decref(rows);
    return NULL;
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
 * acknowledge them, then marks them queued. A job's deadline counts from
 * when it was first recorded, so tasks published again after a restart or a
 * redelivery of the job keep the deadline of the first publication. */
static shoal_err_t publish_pending(const shoal_intake_conf_t *c, shoal_job_t *job, int *published,
                                   char *errbuf, size_t errlen)
{
    const char *job_id = shoal_job_id(job);
    const char *params[] = {job_id};
    PGresult *r;
    shoal_err_t err;
    shoal_kafka_ack_t ack = {0, 0};
    const char *topic = shoal_topics_task(c->topics, shoal_job_priority(job));

    *published = 0;
    if ((err = shoal_pg_exec(
             c->pg,
             "SELECT t.chunk, floor(extract(epoch FROM j.submitted_at))::bigint "
             "FROM shoal.tasks t JOIN shoal.jobs j ON j.job_id = t.job_id "
             "WHERE t.job_id = $1 AND t.status = 'pending' AND t.parent_task_id IS NULL "
             "ORDER BY t.chunk",
             1, params, &r, errbuf, errlen)) != SHOAL_OK)
        return err;

    int rows = PQntuples(r);
    if (rows > 0) {
        char *end;
        long long submitted = strtoll(PQgetvalue(r, 0, 1), &end, 10);
        if (*end == '\0' && submitted > 0)
            shoal_job_set_submitted(job, submitted);
    }
    size_t cap = (size_t)rows * 12 + 3, alen = 0;
    char *chunks = malloc(cap);
    if (!chunks) {
        PQclear(r);
        return shoal_err_set(errbuf, errlen, SHOAL_ERR_NOMEM, "out of memory");
    }
    chunks[alen++] = '{';
    for (int i = 0; i < rows && err == SHOAL_OK; i++) {
        long chunk = strtol(PQgetvalue(r, i, 0), NULL, 10);
        if (chunk < 0 || (size_t)chunk >= shoal_job_n_chunks(job)) {
            err = shoal_err_set(errbuf, errlen, SHOAL_ERR_INVALID,
                                "chunk %ld of job %s is recorded but the job now splits into %zu "
                                "chunks (was the job changed under the same job_id?)",
                                chunk, job_id, shoal_job_n_chunks(job));
            break;
        }
        /* built one at a time, so only one message is held beyond the job */
        json_t *task = shoal_taskmsg_build(job, (size_t)chunk, errbuf, errlen);
        if (!task) {
            err = SHOAL_ERR_NOMEM;
            break;
        }
        char *value = json_dumps(task, JSON_COMPACT);
        if (!value) {
            json_decref(task);
            err = shoal_err_set(errbuf, errlen, SHOAL_ERR_NOMEM, "out of memory");
            break;
        }
        err = shoal_kafka_produce(c->producer, topic,
                                  json_string_value(json_object_get(task, "task_id")), value,
                                  strlen(value), &ack, errbuf, errlen);
        free(value);
        json_decref(task);
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

/* On a job recorded before: whether its recorded tasks still match the plan
 * made of this message now (taskrows). *mismatch is set when they do not,
 * with the reason in why; *same_source says whether this message is the one
 * the job was recorded from (a redelivery). */
static shoal_err_t check_plan(shoal_pg_t *pg, const char *job_id, const char *source,
                              const json_t *taskrows, int *mismatch, int *same_source, char *why,
                              size_t whylen, char *errbuf, size_t errlen)
{
    char *rows = json_dumps(taskrows, JSON_COMPACT);
    PGresult *r;

    *mismatch = *same_source = 0;
    if (!rows)
        return shoal_err_set(errbuf, errlen, SHOAL_ERR_NOMEM, "out of memory");
    const char *params[] = {job_id, source, rows};
    shoal_err_t err = shoal_pg_exec(pg,
                                    "SELECT reason, same_source FROM "
                                    "shoal.plan_mismatch($1, $2, $3::jsonb)",
                                    3, params, &r, errbuf, errlen);
    free(rows);
    if (err != SHOAL_OK)
        return err;
    if (PQntuples(r) > 0) {
        *mismatch = 1;
        *same_source = !strcmp(PQgetvalue(r, 0, 1), "t");
        snprintf(why, whylen, "%s", PQgetvalue(r, 0, 0));
    }
    PQclear(r);
    return SHOAL_OK;
}

/* Ends a recorded job failed with reason (in out->reason) and its event. */
static shoal_err_t fail_recorded(shoal_pg_t *pg, shoal_intake_result_t *out, char *errbuf,
                                 size_t errlen)
{
    const char *params[] = {out->job_id, out->reason};
    shoal_err_t err =
        shoal_pg_exec(pg, "SELECT shoal.fail_job($1, $2)", 2, params, NULL, errbuf, errlen);
    if (err == SHOAL_OK)
        out->outcome = SHOAL_INTAKE_FAILED;
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
    snprintf(out->priority, sizeof(out->priority), "%s", shoal_job_priority(job));

    long est_tokens;
    double est_cost =
        estimate_cost(shoal_models_find(c->models, shoal_job_model(job)), job, &est_tokens);
    double budget = shoal_job_budget_usd(job);
    if (budget > 0 && est_cost > budget) {
        snprintf(why, sizeof(why),
                 "budget_usd: the job is estimated at $%.4f (%ld prompt tokens), over its "
                 "budget of $%.4f; raise budget_usd or split the job",
                 est_cost, est_tokens, budget);
        shoal_job_destroy(job);
        return reject(c, source, derived, value, len, why, out, errbuf, errlen);
    }

    json_t *taskrows = task_rows(job);
    json_t *row =
        json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:o, s:I, s:I, s:f}", "job_id", out->job_id,
                  "tenant", shoal_job_tenant(job), "priority", shoal_job_priority(job), "model",
                  shoal_job_model(job), "merge", shoal_job_merge(job), "output_format",
                  shoal_job_output_format(job), "source", source, "settings",
                  shoal_job_settings(job), "items_total", (json_int_t)shoal_job_n_items(job),
                  "est_tokens", (json_int_t)est_tokens, "est_cost_usd", est_cost);
    out->tasks = (int)shoal_job_n_chunks(job);

    err = row && taskrows ? record(c->pg, row, taskrows, status, sizeof(status), errbuf, errlen)
                          : shoal_err_set(errbuf, errlen, SHOAL_ERR_NOMEM, "out of memory");
    json_decref(row);
    if (err == SHOAL_ERR_INVALID) {
        /* The database refuses this job for good: keep it visible as
         * rejected with the database's reason rather than drop it. */
        snprintf(why, sizeof(why), "could not record the job: %s", errbuf ? errbuf : "");
        json_decref(taskrows);
        shoal_job_destroy(job);
        return reject(c, source, derived, value, len, why, out, errbuf, errlen);
    }
    int running = err == SHOAL_OK && strcmp(status, "exists:running") == 0;
    if (err == SHOAL_OK)
        out->outcome = strcmp(status, "new") == 0 ? SHOAL_INTAKE_NEW : SHOAL_INTAKE_DUPLICATE;
    if (running) {
        /* Tasks are published from this message's chunk plan, so they must be
         * the tasks recorded. The same message planned differently now (a
         * scheduler upgrade between deliveries) can never run: the job fails
         * with the reason. Another message under the job's id does not get
         * to end the job that runs: nothing is published from it. */
        int mismatch, same_source;
        err = check_plan(c->pg, out->job_id, source, taskrows, &mismatch, &same_source, why,
                         sizeof(why), errbuf, errlen);
        if (err == SHOAL_OK && mismatch) {
            running = 0;
            snprintf(out->reason, sizeof(out->reason), "cannot fan out the job: %s", why);
            if (same_source)
                err = fail_recorded(c->pg, out, errbuf, errlen);
        }
    }
    json_decref(taskrows);
    if (err == SHOAL_OK && (out->outcome == SHOAL_INTAKE_NEW || running)) {
        err = publish_pending(c, job, &out->published, errbuf, errlen);
        if (err == SHOAL_ERR_LIMIT) {
            /* A task Kafka will never take: the job cannot run, so it ends
             * failed with the reason instead of waiting forever. */
            snprintf(out->reason, sizeof(out->reason),
                     "%s; raise the producer's message.max.bytes (-X message.max.bytes=N, and "
                     "the topic's max.message.bytes) or use smaller chunks",
                     errbuf ? errbuf : "a task message is too large");
            err = fail_recorded(c->pg, out, errbuf, errlen);
        }
    }
    shoal_job_destroy(job);
    return err;
}
