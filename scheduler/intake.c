/*
 * Job intake (see intake.h).
 */
#include "scheduler/intake.h"

#include <jansson.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>

#include "common/estimate.h"
#include "common/job.h"
#include "common/jobcheck.h"
#include "common/jobid.h"
#include "common/jsonlex.h"
#include "common/jsontext.h"
#include "common/log.h"
#include "common/service.h"
#include "common/taskmsg.h"
#include "scheduler/cache.h"
#include "scheduler/parts.h"
#include "scheduler/plan.h"

#define ACK_TIMEOUT_MS 60000

/* Task rows as JSON text can be long: 20,000 one-item tasks are about 1 MB. */
#define ROWS_TEXT_MAX ((size_t)256 << 20)

/* A job's tasks are recorded in slices (sql/025_admission_slices.sql): the
 * first with the job row, in its transaction, small so that the job's first
 * calls start soon; the others in transactions of their own, between which
 * the dispatcher publishes what is recorded. */
#define ADMIT_FIRST_TASKS 1000
#define ADMIT_SLICE_TASKS 4000

char *shoal_intake_task_rows(const shoal_job_t *job, int with_task_ids)
{
    return shoal_intake_task_rows_range(job, with_task_ids, 0, shoal_job_n_chunks(job));
}

char *shoal_intake_task_rows_range(const shoal_job_t *job, int with_task_ids, size_t from,
                                   size_t to)
{
    const json_t *items = NULL; /* read only for an item not kept as text */
    char task_id[SHOAL_TASKMSG_ID_MAX];
    shoal_jsontext_t b;
    int bad = 0;

    if (to > shoal_job_n_chunks(job))
        to = shoal_job_n_chunks(job);
    shoal_jsontext_init(&b, ROWS_TEXT_MAX);
    shoal_jsontext_raw(&b, "[", 1);
    for (size_t k = from; k < to && !bad; k++) {
        size_t first, end;
        shoal_job_chunk_range(job, k, &first, &end);
        if (k > from)
            shoal_jsontext_raw(&b, ",", 1);
        shoal_jsontext_open(&b);
        /* a task id cannot fail for a parsed job with an id; checked all the same */
        if (with_task_ids && !(bad = shoal_taskmsg_task_id(shoal_job_id(job), k, task_id,
                                                           sizeof(task_id)) != SHOAL_OK))
            shoal_jsontext_key_str(&b, "task_id", task_id);
        shoal_jsontext_key_int(&b, "chunk", (long long)k);
        shoal_jsontext_key(&b, "item_ids");
        shoal_jsontext_raw(&b, "[", 1);
        for (size_t i = first; i < end && !bad; i++) {
            shoal_job_text_t id, input;
            if (i > first)
                shoal_jsontext_raw(&b, ",", 1);
            if (shoal_job_item_text(job, i, &id, &input)) {
                bad = shoal_jsontext_body(&b, id.body, id.len, id.escaped);
                continue;
            }
            if (!items && !(items = shoal_job_field(job, "items")))
                bad = 1;
            const json_t *v = json_object_get(json_array_get(items, i), "id");
            bad = bad || shoal_jsontext_strn(&b, json_string_value(v), json_string_length(v));
        }
        shoal_jsontext_raw(&b, "]", 1);
        shoal_jsontext_key_int(&b, "est_tokens", shoal_job_chunk_est_tokens(job, k));
        shoal_jsontext_close(&b);
    }
    shoal_jsontext_raw(&b, "]", 1);
    if (bad) {
        shoal_jsontext_free(&b);
        return NULL;
    }
    return shoal_jsontext_detach(&b, NULL);
}

/* The top-level job_id, tenant and model of a message too large to load:
 * read in one pass without building a tree, and only while the text is
 * plain JSON (common/jsonlex.h); the walk stops once all three are seen.
 * A string at depth 1 is always the value of the key just reported. */
struct identity_walk {
    int depth;
    const char *field; /* the wanted top-level member whose key came last, or NULL */
    json_t *doc;
};

static int identity_key(void *arg, const char *text, size_t len, int escaped)
{
    static const char *const wanted[] = {"job_id", "tenant", "model"};
    struct identity_walk *w = arg;
    w->field = NULL;
    for (size_t i = 0; w->depth == 1 && !escaped && i < sizeof(wanted) / sizeof(wanted[0]); i++)
        if (strlen(wanted[i]) == len && !memcmp(text, wanted[i], len))
            w->field = wanted[i];
    return 0;
}

static int identity_open(void *arg, int is_array)
{
    struct identity_walk *w = arg;
    (void)is_array;
    w->depth++;
    return 0;
}

static int identity_close(void *arg, int is_array)
{
    struct identity_walk *w = arg;
    (void)is_array;
    w->depth--;
    return 0;
}

static int identity_string(void *arg, const char *text, size_t len, int escaped)
{
    struct identity_walk *w = arg;
    if (w->depth == 1 && w->field && !escaped && len <= 100 && !json_object_get(w->doc, w->field))
        json_object_set_new(w->doc, w->field, json_stringn(text, len));
    return json_object_size(w->doc) == 3;
}

/* Numbers, literals and array positions tell nothing here. */
static int identity_number(void *arg, int is_int, long long value)
{
    (void)arg;
    (void)is_int;
    (void)value;
    return 0;
}

static int identity_literal(void *arg, char first)
{
    (void)arg;
    (void)first;
    return 0;
}

static int identity_index(void *arg, size_t i)
{
    (void)arg;
    (void)i;
    return 0;
}

static json_t *identity_of_large(const void *value, size_t len)
{
    static const shoal_jsonlex_visitor_t v = {identity_key,    identity_index,  identity_open,
                                              identity_close,  identity_string, identity_number,
                                              identity_literal};
    struct identity_walk w = {0, NULL, json_object()};
    if (w.doc)
        shoal_jsonlex_walk(value, len, &v, &w); /* what it read before stopping counts */
    return w.doc;
}

/* The id a rejected message is stored under: its own job_id when that is
 * readable and well formed, else one derived from where Kafka kept it; and
 * its tenant and model when readable (for per-tenant counts and stats). A
 * message over the size limit is not loaded, only scanned for those. */
static void rejected_identity(const void *value, size_t len, size_t max_bytes, const char *derived,
                              char *id, size_t idlen, json_t **tenant, json_t **model)
{
    snprintf(id, idlen, "%s", derived);
    *tenant = *model = NULL;
    json_t *doc = len > max_bytes ? identity_of_large(value, len) : json_loadb(value, len, 0, NULL);
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
    const char *m = json_string_value(json_object_get(doc, "model"));
    if (m && strlen(m) <= 100)
        *model = json_string(m);
    json_decref(doc);
}

/* Records the job row, its task rows and, when inputs is not NULL, the job's
 * inputs (the parsed document, prompts included) in one statement, counted
 * against quota (NULL: no limits) by shoal.record_job_admitted. */
static shoal_err_t record(shoal_pg_t *pg, json_t *jobrow, const char *taskrows,
                          const json_t *inputs, const json_t *quota, char *status, size_t statuslen,
                          char *errbuf, size_t errlen)
{
    char *a = json_dumps(jobrow, JSON_COMPACT);
    char *c = inputs ? json_dumps(inputs, JSON_COMPACT) : NULL;
    char *q = quota ? json_dumps(quota, JSON_COMPACT) : NULL;
    PGresult *r = NULL;
    shoal_err_t err;

    if (!a || (inputs && !c) || (quota && !q)) {
        err = shoal_err_set(errbuf, errlen, SHOAL_ERR_NOMEM, "out of memory");
    } else {
        const char *params[] = {a, taskrows, c, q};
        err = shoal_pg_exec(
            pg, "SELECT shoal.record_job_admitted($1::jsonb, $2::jsonb, $3::text, $4::jsonb)", 4,
            params, &r, errbuf, errlen);
    }
    free(c);
    free(q);
    if (err == SHOAL_OK) {
        snprintf(status, statuslen, "%s", PQgetvalue(r, 0, 0));
        PQclear(r);
    }
    free(a);
    return err;
}

const char *shoal_intake_derived(shoal_intake_origin_t *o)
{
    if (!o->id[0])
        shoal_jobid_derive(o->cluster_id, o->topic, o->partition, o->offset, o->timestamp_ms,
                           o->value, o->len, o->id);
    return o->id;
}

shoal_err_t shoal_intake_reject(const shoal_intake_conf_t *c, const char *source,
                                const char *derived, const void *value, size_t len,
                                const char *reason, shoal_intake_result_t *out, char *errbuf,
                                size_t errlen)
{
    json_t *tenant, *model;
    char status[64];

    rejected_identity(value, len, c->max_job_bytes, derived, out->job_id, sizeof(out->job_id),
                      &tenant, &model);
    out->outcome = SHOAL_INTAKE_REJECTED;
    snprintf(out->reason, sizeof(out->reason), "%s", reason);
    char hash[SHOAL_JOBID_HASH_LEN];
    shoal_jobid_content_hash(value, len, hash);
    json_t *row =
        json_pack("{s:s, s:s, s:s, s:s, s:s}", "job_id", out->job_id, "status", "rejected", "error",
                  out->reason, "source", source, "content_hash", hash);
    if (tenant)
        json_object_set_new(row, "tenant", tenant);
    if (model)
        json_object_set_new(row, "model", model);
    shoal_err_t err = record(c->pg, row, "[]", NULL, NULL, status, sizeof(status), errbuf, errlen);
    if (err == SHOAL_OK && !strncmp(status, "conflict:", 9))
        snprintf(out->reason, sizeof(out->reason),
                 "a job with other content runs under job_id %s (%s): this message was ignored "
                 "(and is invalid: %s)",
                 out->job_id, status + 9, reason);
    json_decref(row);
    return err;
}

shoal_err_t shoal_intake_publish(const shoal_intake_conf_t *c, shoal_job_t *job, const long *chunks,
                                 size_t n, int *published, char *errbuf, size_t errlen)
{
    return shoal_intake_publish_range(c, job, 0, (long)shoal_job_n_chunks(job), chunks, n,
                                      published, errbuf, errlen);
}

shoal_err_t shoal_intake_publish_range(const shoal_intake_conf_t *c, shoal_job_t *job,
                                       long chunk_base, long n_chunks, const long *chunks, size_t n,
                                       int *published, char *errbuf, size_t errlen)
{
    const char *job_id = shoal_job_id(job);
    shoal_err_t err = SHOAL_OK;
    shoal_kafka_ack_t ack = {0, 0};
    const char *topic = shoal_topics_task(c->topics, shoal_job_priority(job));

    *published = 0;
    /* The result cache answers what it can before anything is produced, a
     * part's chunks by their job-wide numbers as its messages carry them. */
    shoal_cache_lookup_t *cached = NULL;
    if (shoal_cache_enabled(job, c->cache_ttl_s) && n > 0) {
        if ((err = shoal_cache_lookup_part_new(c->pg, job, c->models, c->cache_ttl_s, chunk_base,
                                               chunks, n, &cached, errbuf, errlen)) != SHOAL_OK)
            return err;
        if (shoal_cache_lookup_hits(cached) || shoal_cache_lookup_unkeyed(cached))
            shoal_log_info("intake", "result cache job_id=%s hits=%zu misses=%zu unkeyed=%zu",
                           job_id, shoal_cache_lookup_hits(cached),
                           n - shoal_cache_lookup_hits(cached), shoal_cache_lookup_unkeyed(cached));
    }
    size_t cap = n * 12 + 3, alen = 0;
    char *list = malloc(cap);
    char task_id[SHOAL_TASKMSG_ID_MAX];
    /* A part of a job sent in parts numbers its chunks from chunk_base. */
    shoal_taskmsg_writer_t *w =
        list ? shoal_taskmsg_writer_new(job, n_chunks, errbuf, errlen) : NULL;
    if (!w) {
        free(list);
        shoal_cache_lookup_destroy(cached);
        return list ? SHOAL_ERR_NOMEM
                    : shoal_err_set(errbuf, errlen, SHOAL_ERR_NOMEM, "out of memory");
    }
    list[alen++] = '{';
    size_t listed = 0;
    /* the tasks' publication, recorded once Kafka has acknowledged them */
    char produced_at[32];
    snprintf(produced_at, sizeof(produced_at), "%.6f", shoal_service_unix_s());
    for (size_t i = 0; i < n && err == SHOAL_OK; i++) {
        long chunk = chunks[i] - chunk_base;
        if (cached && shoal_cache_lookup_hit(cached, i))
            continue;
        if (chunk < 0 || (size_t)chunk >= shoal_job_n_chunks(job)) {
            err = shoal_err_set(errbuf, errlen, SHOAL_ERR_INVALID,
                                "chunk %ld of job %s is recorded but the job now splits into %zu "
                                "chunks (was the job changed under the same job_id?)",
                                chunks[i], job_id, shoal_job_n_chunks(job));
            break;
        }
        /* written one at a time into one buffer: only one message is held
         * beyond the job (Kafka copies it) */
        const char *key = cached ? shoal_cache_lookup_key(cached, i) : NULL;
        size_t vlen;
        const char *value =
            shoal_taskmsg_writer_text(w, (size_t)chunk, chunks[i], key, &vlen, errbuf, errlen);
        if (!value) {
            err = SHOAL_ERR_NOMEM;
            break;
        }
        if (shoal_taskmsg_task_id(job_id, (size_t)chunks[i], task_id, sizeof(task_id)) !=
            SHOAL_OK) {
            err = shoal_err_set(errbuf, errlen, SHOAL_ERR_INVALID,
                                "cannot number chunk %ld of job %s", chunks[i], job_id);
            break;
        }
        err = shoal_kafka_produce(c->producer, topic, task_id, value, vlen, &ack, errbuf, errlen);
        if (err != SHOAL_OK)
            break;
        alen += (size_t)snprintf(list + alen, cap - alen, "%s%ld", listed++ ? "," : "", chunks[i]);
        (*published)++;
        if (c->fault_kill_after > 0 && *published >= c->fault_kill_after) {
            shoal_kafka_ack_wait(c->producer, &ack, ACK_TIMEOUT_MS, NULL, 0);
            shoal_log_warn("intake", "fault injection: killing self job_id=%s published=%d", job_id,
                           *published);
            raise(SIGKILL);
        }
    }
    snprintf(list + alen, cap - alen, "}");
    shoal_log_debug("intake", "tasks produced job_id=%s tasks=%d topic=%s", job_id, *published,
                    topic);
    /* Always settle what was produced, even after an error: ack lives here. */
    shoal_err_t werr = shoal_kafka_ack_wait(c->producer, &ack, ACK_TIMEOUT_MS,
                                            err == SHOAL_OK ? errbuf : NULL, errlen);
    if (err == SHOAL_OK)
        err = werr;
    if (err == SHOAL_OK && *published > 0 && c->on_published)
        c->on_published(shoal_job_priority(job), *published, c->on_published_arg);
    shoal_cache_lookup_destroy(cached);
    shoal_taskmsg_writer_destroy(w);
    if (err == SHOAL_OK && listed > 0) {
        const char *mp[] = {job_id, list, produced_at};
        err = shoal_pg_exec(c->pg,
                            "SELECT shoal.mark_queued($1, $2::int[], "
                            "to_timestamp($3::double precision))",
                            3, mp, NULL, errbuf, errlen);
    }
    free(list);
    return err;
}

/* Produces the tasks still pending in PostgreSQL (shoal_intake_publish). A
 * job's deadline counts from when it was first recorded, so tasks published
 * again after a restart or a redelivery of the job keep the deadline of the
 * first publication. */
static shoal_err_t publish_pending(const shoal_intake_conf_t *c, shoal_job_t *job, int *published,
                                   char *errbuf, size_t errlen)
{
    const char *params[] = {shoal_job_id(job)};
    PGresult *r;
    shoal_err_t err;

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
    long *chunks = malloc((size_t)(rows > 0 ? rows : 1) * sizeof(*chunks));
    if (!chunks) {
        PQclear(r);
        return shoal_err_set(errbuf, errlen, SHOAL_ERR_NOMEM, "out of memory");
    }
    for (int i = 0; i < rows; i++)
        chunks[i] = strtol(PQgetvalue(r, i, 0), NULL, 10);
    PQclear(r);
    err = shoal_intake_publish(c, job, chunks, (size_t)rows, published, errbuf, errlen);
    free(chunks);
    return err;
}

/* On a job recorded before: whether its recorded tasks still match the plan
 * made of this message now (taskrows). *mismatch is set when they do not,
 * with the reason in why; *same_source says whether this message is the one
 * the job was recorded from (a redelivery). */
static shoal_err_t check_plan(shoal_pg_t *pg, const char *job_id, const char *source,
                              const char *taskrows, int *mismatch, int *same_source, char *why,
                              size_t whylen, char *errbuf, size_t errlen)
{
    PGresult *r;

    *mismatch = *same_source = 0;
    const char *params[] = {job_id, source, taskrows};
    shoal_err_t err = shoal_pg_exec(pg,
                                    "SELECT reason, same_source FROM "
                                    "shoal.plan_mismatch($1, $2, $3::jsonb)",
                                    3, params, &r, errbuf, errlen);
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

/* Records job's tasks from chunk from on, a slice of ADMIT_SLICE_TASKS per
 * transaction (shoal.record_job_tasks, which keeps a task already there),
 * and tells c->on_slice before each, so that what is recorded runs while the
 * rest is written. */
static shoal_err_t record_slices(const shoal_intake_conf_t *c, const shoal_job_t *job,
                                 const char *job_id, size_t from, char *errbuf, size_t errlen)
{
    size_t n = shoal_job_n_chunks(job);
    shoal_err_t err = SHOAL_OK;

    for (size_t k = from; k < n && err == SHOAL_OK; k += ADMIT_SLICE_TASKS) {
        if (c->on_slice)
            c->on_slice(c->on_slice_arg);
        char *rows = shoal_intake_task_rows_range(job, 1, k, k + ADMIT_SLICE_TASKS);
        if (!rows)
            return shoal_err_set(errbuf, errlen, SHOAL_ERR_RETRY, "out of memory");
        const char *params[] = {job_id, rows};
        err = shoal_pg_exec(c->pg, "SELECT shoal.record_job_tasks($1, $2::jsonb)", 2, params, NULL,
                            errbuf, errlen);
        free(rows);
    }
    return err;
}

/* For a job recorded before: its tasks not recorded yet (a scheduler that
 * stopped between the slices of its admission). */
static shoal_err_t tasks_missing(shoal_pg_t *pg, const char *job_id, long *missing, char *errbuf,
                                 size_t errlen)
{
    const char *params[] = {job_id};
    PGresult *r;
    shoal_err_t err =
        shoal_pg_exec(pg, "SELECT shoal.job_tasks_missing($1)", 1, params, &r, errbuf, errlen);
    if (err != SHOAL_OK)
        return err;
    *missing =
        PQntuples(r) > 0 && !PQgetisnull(r, 0, 0) ? strtol(PQgetvalue(r, 0, 0), NULL, 10) : 0;
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
    return shoal_intake_job_ts(c, topic, partition, offset, -1, value, len, out, errbuf, errlen);
}

shoal_err_t shoal_intake_job_ts(const shoal_intake_conf_t *c, const char *topic, int partition,
                                long long offset, long long timestamp_ms, const void *value,
                                size_t len, shoal_intake_result_t *out, char *errbuf, size_t errlen)
{
    char source[300], why[4096], status[4096];
    char hash[SHOAL_JOBID_HASH_LEN];
    shoal_err_t err;

    memset(out, 0, sizeof(*out));
    snprintf(source, sizeof(source), "%s/%d@%lld", topic, partition, offset);
    shoal_intake_origin_t origin = {
        c->cluster_id,      topic,           partition, offset, timestamp_ms,
        value ? value : "", value ? len : 0, ""};

    /* A job sent in parts: its header and each part (scheduler/parts.h). */
    int parted = 0;
    err = shoal_parts_intake(c, source, &origin, value, len, &parted, out, errbuf, errlen);
    if (parted)
        return err;
    const char *derived = shoal_intake_derived(&origin);
    shoal_jobid_content_hash(value ? value : "", value ? len : 0, hash);

    shoal_job_t *job =
        shoal_job_parse(value ? value : "", len, c->max_job_bytes, c->models, why, sizeof(why));
    if (!job)
        return shoal_intake_reject(c, source, derived, value ? value : "", len, why, out, errbuf,
                                   errlen);
    if (!shoal_job_id(job) && shoal_job_set_id(job, derived) != SHOAL_OK) {
        shoal_job_destroy(job);
        return shoal_err_set(errbuf, errlen, SHOAL_ERR_RETRY, "out of memory");
    }
    json_t *quota;
    if ((err = shoal_plan_apply(c->tenants, job, 0, &quota, why, sizeof(why))) != SHOAL_OK) {
        shoal_job_destroy(job);
        if (err == SHOAL_ERR_NOMEM)
            return shoal_err_set(errbuf, errlen, SHOAL_ERR_RETRY, "out of memory");
        return shoal_intake_reject(c, source, derived, value, len, why, out, errbuf, errlen);
    }
    snprintf(out->job_id, sizeof(out->job_id), "%s", shoal_job_id(job));
    snprintf(out->priority, sizeof(out->priority), "%s", shoal_job_priority(job));

    /* The job's own model, as `shoal estimate` reports it; the models were
     * checked by shoal_job_parse, so this fails only without a models file. */
    shoal_estimate_t est;
    if (shoal_estimate_job(job, c->models, NULL, &est, why, sizeof(why)) != SHOAL_OK)
        memset(&est, 0, sizeof(est));
    const shoal_estimate_model_t *em = est.n_models ? &est.models[0] : NULL;
    double est_cost = em ? em->cost_usd : 0;
    double budget = shoal_job_budget_usd(job);
    /* Budgets are hard (sql/016_budgets.sql): every call is reserved against
     * budget_usd and the job stops, partial, where it runs out. Only a budget
     * that cannot pay for even one call of the estimate is refused here. */
    double per_call = est.calls > 0 ? est_cost / (double)est.calls : est_cost;
    if (budget > 0 && per_call > budget) {
        snprintf(why, sizeof(why),
                 "budget_usd: one call of the job is estimated at $%.6f (the whole job at "
                 "$%.4f, %ld prompt tokens), over its budget of $%.6f; raise budget_usd",
                 per_call, est_cost, shoal_job_est_tokens(job), budget);
        shoal_job_destroy(job);
        json_decref(quota);
        return shoal_intake_reject(c, source, derived, value, len, why, out, errbuf, errlen);
    }

    size_t n_chunks = shoal_job_n_chunks(job);
    size_t first = n_chunks < ADMIT_FIRST_TASKS ? n_chunks : ADMIT_FIRST_TASKS;
    char *taskrows = shoal_intake_task_rows_range(job, 1, 0, first);
    json_t *row =
        json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:o, s:I, s:I, s:f}", "job_id", out->job_id,
                  "tenant", shoal_job_tenant(job), "priority", shoal_job_priority(job), "model",
                  shoal_job_model(job), "merge", shoal_job_merge(job), "output_format",
                  shoal_job_output_format(job), "source", source, "settings",
                  shoal_job_settings(job), "items_total", (json_int_t)shoal_job_n_items(job),
                  "est_tokens", (json_int_t)shoal_job_est_tokens(job), "est_cost_usd", est_cost);
    if (row && (json_object_set_new(row, "content_hash", json_string(hash)) ||
                json_object_set_new(row, "tasks_total", json_integer((json_int_t)n_chunks)))) {
        json_decref(row);
        row = NULL;
    }
    if (row && em &&
        (json_object_set_new(row, "est_calls", json_integer((json_int_t)est.calls)) ||
         json_object_set_new(row, "est_tokens_out", json_integer((json_int_t)em->tokens_out)) ||
         json_object_set_new(row, "est_duration_s", json_real(em->duration_s)))) {
        json_decref(row);
        row = NULL;
    }
    out->tasks = (int)shoal_job_n_chunks(job);

    /* The inputs are kept, so that lost tasks can be published again, unless
     * the job says "store_inputs": false. */
    const json_t *inputs = json_is_false(json_object_get(shoal_job_json(job), "store_inputs"))
                               ? NULL
                               : shoal_job_json(job);
    err = row && taskrows
              ? record(c->pg, row, taskrows, inputs, quota, status, sizeof(status), errbuf, errlen)
              : shoal_err_set(errbuf, errlen, SHOAL_ERR_NOMEM, "out of memory");
    json_decref(row);
    json_decref(quota);
    if (err == SHOAL_OK && !strncmp(status, "quota:", 6)) {
        /* over the tenant's quota: nothing was recorded, the rejection is */
        shoal_tenants_quota_answer(status, shoal_job_tenant(job), why, sizeof(why));
        free(taskrows);
        shoal_job_destroy(job);
        return shoal_intake_reject(c, source, derived, value, len, why, out, errbuf, errlen);
    }
    if (err == SHOAL_OK && !strncmp(status, "conflict:", 9)) {
        /* Another job holds the id: announced (event, shoal.job_conflicts),
         * and nothing is published from this message. */
        snprintf(out->reason, sizeof(out->reason),
                 "a job with other content is %s under job_id %s: this message (%s) was ignored",
                 status + 9, out->job_id, source);
        out->outcome = SHOAL_INTAKE_DUPLICATE;
        free(taskrows);
        shoal_job_destroy(job);
        return SHOAL_OK;
    }
    if (err == SHOAL_ERR_INVALID) {
        /* The database refuses this job for good: keep it visible as
         * rejected with the database's reason rather than drop it. */
        snprintf(why, sizeof(why), "could not record the job: %s", errbuf ? errbuf : "");
        free(taskrows);
        shoal_job_destroy(job);
        return shoal_intake_reject(c, source, derived, value, len, why, out, errbuf, errlen);
    }
    int running = err == SHOAL_OK && strcmp(status, "exists:running") == 0;
    if (err == SHOAL_OK)
        out->outcome = strcmp(status, "new") == 0 ? SHOAL_INTAKE_NEW : SHOAL_INTAKE_DUPLICATE;
    if (out->outcome == SHOAL_INTAKE_NEW) {
        err = record_slices(c, job, out->job_id, first, errbuf, errlen);
        if (err == SHOAL_ERR_INVALID) {
            /* Refused for good after the job was recorded: it cannot run. */
            snprintf(out->reason, sizeof(out->reason), "could not record the job's tasks: %s",
                     errbuf ? errbuf : "");
            err = fail_recorded(c->pg, out, errbuf, errlen);
            free(taskrows);
            shoal_job_destroy(job);
            return err;
        }
    }
    if (running) {
        /* The rest of an admission cut short, then the whole plan to check. */
        long missing = 0;
        err = tasks_missing(c->pg, out->job_id, &missing, errbuf, errlen);
        if (err == SHOAL_OK && missing > 0)
            err = record_slices(c, job, out->job_id, 0, errbuf, errlen);
        free(taskrows);
        taskrows = err == SHOAL_OK ? shoal_intake_task_rows(job, 1) : NULL;
        if (err == SHOAL_OK && !taskrows)
            err = shoal_err_set(errbuf, errlen, SHOAL_ERR_RETRY, "out of memory");
    }
    if (running && err == SHOAL_OK) {
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
    free(taskrows);
    /* Paced: the dispatcher publishes the tasks of a job that keeps its
     * inputs; only a job without stored inputs is published here. */
    if (c->paced && inputs)
        running = 0;
    if (err == SHOAL_OK && (out->outcome == SHOAL_INTAKE_NEW || running) && !(c->paced && inputs)) {
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
