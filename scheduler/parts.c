/*
 * Jobs sent in parts (see parts.h).
 */
#include "scheduler/parts.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "common/estimate.h"
#include "common/jobsplit.h"
#include "common/log.h"
#include "scheduler/plan.h"

/* A part's task rows as text may not grow past this: 100,000 items of ids
 * of up to 200 characters, escaped, and the rows around them. */

/* A cheap look before decoding: a message without the text "part can be
 * neither a header nor a part, so a plain job is decoded only once. */
static int mentions_part(const char *s, size_t len)
{
    for (size_t i = 0; i + 5 <= len; i++)
        if (s[i] == '"' && !memcmp(s + i + 1, "part", 4))
            return 1;
    return 0;
}

/* The header's job (its document without "parts") with items[0..ilen), the
 * text of an items array without its brackets, as its items, parsed and
 * checked as shoal_job_parse does (models may be NULL), or for a stored
 * part (stored 1) rebuilt as shoal_job_parse_stored does. NULL with the
 * reason in why. */
static shoal_job_t *build(json_t *header, const char *items, size_t ilen, int stored,
                          const shoal_models_t *models, char *why, size_t whylen)
{
    static const char mid[] = ",\"items\":[";
    json_t *doc = json_copy(header);
    char *head = NULL, *text = NULL;
    if (doc) {
        json_object_del(doc, "parts"); /* -1 when absent: nothing to drop */
        json_object_del(doc, "items");
        head = json_dumps(doc, JSON_COMPACT);
    }
    json_decref(doc);
    size_t hlen = head ? strlen(head) : 0;
    /* head is "{...}" with at least the job_id: its "}" gives way to the items */
    if (hlen > 2 && (text = malloc(hlen + sizeof(mid) + ilen + 2))) {
        size_t n = hlen - 1;
        memcpy(text, head, n);
        memcpy(text + n, mid, sizeof(mid) - 1);
        n += sizeof(mid) - 1;
        if (ilen)
            memcpy(text + n, items, ilen);
        memcpy(text + n + ilen, "]}", 3);
    }
    free(head);
    if (!text) {
        snprintf(why, whylen, "out of memory");
        return NULL;
    }
    size_t tlen = strlen(text);
    shoal_job_t *job = stored ? shoal_job_parse_stored(text, tlen, why, whylen)
                              : shoal_job_parse(text, tlen, 0, models, why, whylen);
    free(text);
    return job;
}

/* The header's job with items (borrowed, an array) as its items. */
static shoal_job_t *compose(json_t *header, json_t *items, int stored, const shoal_models_t *models,
                            char *why, size_t whylen)
{
    if (!json_is_array(items)) {
        snprintf(why, whylen, "items: expected an array");
        return NULL;
    }
    char *text = json_dumps(items, JSON_COMPACT);
    if (!text) {
        snprintf(why, whylen, "out of memory");
        return NULL;
    }
    size_t len = strlen(text); /* "[...]" */
    shoal_job_t *job = build(header, text + 1, len - 2, stored, models, why, whylen);
    free(text);
    return job;
}

/* The text of the items of the object text[0..len) (its items array
 * without the brackets) into *items, *ilen: 0, or -1 with the reason in why
 * when the text could not be scanned as an object with an items array (the
 * caller then decodes it whole). A part's items are handed on as this text,
 * so that a part of tens of thousands of items is decoded at most once, or
 * not at all when its items are kept as text (common/job.h). */
static int items_text(const char *text, size_t len, const char **items, size_t *ilen, char *why,
                      size_t whylen)
{
    const char *item, *first = NULL, *last = NULL;
    size_t n;
    int r;

    shoal_jobsplit_t *split = shoal_jobsplit_new(text, len, why, whylen);
    if (!split)
        return -1;
    while ((r = shoal_jobsplit_next(split, &item, &n, why, whylen)) == 1) {
        if (!first)
            first = item;
        last = item + n;
    }
    shoal_jobsplit_destroy(split);
    *items = first;
    *ilen = first ? (size_t)(last - first) : 0;
    return r < 0 ? -1 : 0;
}

static char *text_of(const void *value, size_t len)
{
    char *s = malloc(len + 1);
    if (s) {
        memcpy(s, value, len);
        s[len] = '\0';
    }
    return s;
}

static shoal_err_t header(const shoal_intake_conf_t *c, const char *source,
                          shoal_intake_origin_t *origin, const void *value, size_t len, json_t *doc,
                          shoal_intake_result_t *out, char *errbuf, size_t errlen)
{
    char why[600], status[128];
    const char *jid = json_string_value(json_object_get(doc, "job_id"));
    json_t *parts = json_object_get(doc, "parts");
    json_int_t n = json_integer_value(parts);

    if (!jid || !shoal_job_id_valid(jid))
        snprintf(why, sizeof(why),
                 "job_id: a job sent in parts needs a job_id (its parts name it)");
    else if (!json_is_integer(parts) || n < 1 || n > SHOAL_PARTS_MAX)
        snprintf(why, sizeof(why), "parts: expected an integer from 1 to %d", SHOAL_PARTS_MAX);
    else if (json_object_get(doc, "items"))
        snprintf(why, sizeof(why),
                 "items: a job header carries no items; they come in its part messages");
    else if (json_is_false(json_object_get(doc, "store_inputs")))
        snprintf(why, sizeof(why),
                 "store_inputs: a job sent in parts is kept in PostgreSQL until its last part is "
                 "in, so it cannot set store_inputs to false");
    else if (len > c->max_job_bytes)
        snprintf(why, sizeof(why), "the job header is %zu bytes, more than the %zu allowed", len,
                 c->max_job_bytes);
    else
        why[0] = '\0';
    if (why[0])
        return shoal_intake_reject(c, source, shoal_intake_derived(origin), value, len, why, out,
                                   errbuf, errlen);

    /* The header is checked as a job whose one item stands in for the parts'. */
    json_t *standin = json_pack("[{s:s, s:s}]", "id", "-", "input", "-");
    char jwhy[512];
    shoal_job_t *job = standin ? compose(doc, standin, 0, c->models, jwhy, sizeof(jwhy)) : NULL;
    json_decref(standin);
    if (!job) {
        snprintf(why, sizeof(why), "job header: %s", standin ? jwhy : "out of memory");
        return shoal_intake_reject(c, source, shoal_intake_derived(origin), value, len, why, out,
                                   errbuf, errlen);
    }
    /* The tenant's plan, as for a job sent whole: its default priority, and
     * its limits as far as the header shows them (a call's prompt without
     * items); its counted limits are counted once, here. */
    char given[16], tenant[256];
    json_t *quota;
    snprintf(given, sizeof(given), "%s", shoal_job_priority(job));
    snprintf(tenant, sizeof(tenant), "%s", shoal_job_tenant(job));
    shoal_err_t err = shoal_plan_apply(c->tenants, job, 0, &quota, jwhy, sizeof(jwhy));
    if (err != SHOAL_OK) {
        shoal_job_destroy(job);
        if (err == SHOAL_ERR_NOMEM)
            return shoal_err_set(errbuf, errlen, SHOAL_ERR_RETRY, "out of memory");
        return shoal_intake_reject(c, source, shoal_intake_derived(origin), value, len, jwhy, out,
                                   errbuf, errlen);
    }
    snprintf(out->job_id, sizeof(out->job_id), "%s", jid);
    snprintf(out->priority, sizeof(out->priority), "%s", shoal_job_priority(job));
    /* The parts are composed with the stored header: a priority the plan
     * chose is written into it, so their tasks go out at that priority. */
    char *inputs = NULL;
    if (strcmp(given, shoal_job_priority(job))) {
        json_t *stored = json_copy(doc);
        if (stored && !json_object_set_new(stored, "priority", json_string(out->priority)))
            inputs = json_dumps(stored, JSON_COMPACT);
        json_decref(stored);
    } else {
        inputs = text_of(value, len);
    }
    json_t *settings = shoal_job_settings(job);
    if (settings)
        json_object_del(settings, "n_items");
    json_t *row =
        settings
            ? json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:o, s:i, s:i, s:f}", "job_id", jid,
                        "tenant", shoal_job_tenant(job), "priority", shoal_job_priority(job),
                        "model", shoal_job_model(job), "merge", shoal_job_merge(job),
                        "output_format", shoal_job_output_format(job), "source", source, "settings",
                        settings, "items_total", 0, "est_tokens", 0, "est_cost_usd", 0.0)
            : NULL;
    shoal_job_destroy(job);
    char *rowtext = row ? json_dumps(row, JSON_COMPACT) : NULL;
    char *quotatext = quota ? json_dumps(quota, JSON_COMPACT) : NULL;
    char parts_s[32];
    snprintf(parts_s, sizeof(parts_s), "%lld", (long long)n);
    json_decref(row);
    PGresult *r = NULL;
    if (!rowtext || !inputs || (quota && !quotatext)) {
        err = shoal_err_set(errbuf, errlen, SHOAL_ERR_NOMEM, "out of memory");
    } else {
        const char *params[] = {rowtext, inputs, parts_s, quotatext};
        err = shoal_pg_exec(
            c->pg, "SELECT shoal.record_job_header_admitted($1::jsonb, $2, $3::int, $4::jsonb)", 4,
            params, &r, errbuf, errlen);
    }
    json_decref(quota);
    free(rowtext);
    free(quotatext);
    free(inputs);
    if (err != SHOAL_OK)
        return err;
    snprintf(status, sizeof(status), "%s", PQgetvalue(r, 0, 0));
    PQclear(r);
    if (!strncmp(status, "quota:", 6)) {
        /* over the tenant's quota: nothing was recorded, the rejection is */
        shoal_tenants_quota_answer(status, tenant, why, sizeof(why));
        return shoal_intake_reject(c, source, shoal_intake_derived(origin), value, len, why, out,
                                   errbuf, errlen);
    }
    out->outcome = strcmp(status, "new") == 0 ? SHOAL_INTAKE_NEW : SHOAL_INTAKE_DUPLICATE;
    shoal_log_info("intake", "job header recorded job_id=%s parts=%lld status=%s", jid,
                   (long long)n, status);
    return SHOAL_OK;
}

/* Rejects the parted job jid that is taking parts with reason; a part whose
 * job is not taking parts is recorded as a rejected job of its own id (which
 * changes nothing when the id is known). */
static shoal_err_t reject_part(const shoal_intake_conf_t *c, const char *source,
                               shoal_intake_origin_t *origin, const void *value, size_t len,
                               const char *jid, const char *reason, shoal_intake_result_t *out,
                               char *errbuf, size_t errlen)
{
    PGresult *r;
    if (jid) {
        const char *params[] = {jid, reason};
        shoal_err_t err =
            shoal_pg_exec(c->pg,
                          "SELECT shoal.reject_parted_job(job_id, $2) FROM shoal.jobs "
                          "WHERE job_id = $1 AND status = 'running' AND parts_total IS NOT NULL",
                          2, params, &r, errbuf, errlen);
        if (err != SHOAL_OK)
            return err;
        int done = PQntuples(r) > 0;
        PQclear(r);
        if (done) {
            out->outcome = SHOAL_INTAKE_REJECTED;
            snprintf(out->job_id, sizeof(out->job_id), "%s", jid);
            snprintf(out->reason, sizeof(out->reason), "%s", reason);
            return SHOAL_OK;
        }
    }
    return shoal_intake_reject(c, source, shoal_intake_derived(origin), value, len, reason, out,
                               errbuf, errlen);
}

/* doc is the part message decoded, or (items NULL) its members but "items",
 * which the text holds as an array of n_items, whose elements' text is
 * itext[0..ilen) (as items_text gives it; NULL when not scanned). */
static shoal_err_t part(const shoal_intake_conf_t *c, const char *source,
                        shoal_intake_origin_t *origin, const void *value, size_t len, json_t *doc,
                        size_t n_items, const char *itext, size_t ilen, shoal_intake_result_t *out,
                        char *errbuf, size_t errlen)
{
    char why[700], jwhy[512];
    const char *jid = json_string_value(json_object_get(doc, "job_id"));
    json_t *jpart = json_object_get(doc, "part"), *items = json_object_get(doc, "items");
    json_int_t k = json_integer_value(jpart);
    int scanned_items = !items;
    const char *key;
    json_t *v;

    if (!jid || !shoal_job_id_valid(jid))
        return shoal_intake_reject(c, source, shoal_intake_derived(origin), value, len,
                                   "job_id: a part needs the job_id of its job's header", out,
                                   errbuf, errlen);
    snprintf(out->job_id, sizeof(out->job_id), "%s", jid);
    why[0] = '\0';
    if (!json_is_integer(jpart) || k < 0 || k >= SHOAL_PARTS_MAX)
        snprintf(why, sizeof(why), "part: expected an integer from 0 to %d", SHOAL_PARTS_MAX - 1);
    else if (scanned_items ? n_items == 0 : !json_is_array(items) || json_array_size(items) == 0)
        snprintf(why, sizeof(why), "part %lld: items: expected a non-empty array", (long long)k);
    else if (len > c->max_job_bytes)
        snprintf(why, sizeof(why), "part %lld: the message is %zu bytes, more than the %zu allowed",
                 (long long)k, len, c->max_job_bytes);
    json_object_foreach(doc, key, v)
    {
        if (!why[0] && strcmp(key, "job_id") && strcmp(key, "part") && strcmp(key, "items"))
            snprintf(why, sizeof(why),
                     "part %lld: unknown field \"%.64s\" (a part has job_id, part and items)",
                     (long long)k, key);
    }
    if (why[0])
        return reject_part(c, source, origin, value, len, jid, why, out, errbuf, errlen);

    /* A job rejected as a whole message (its header over a limit, say)
     * keeps its reason: its parts are ignored, not recorded in its place. */
    char part_s[32];
    snprintf(part_s, sizeof(part_s), "%lld", (long long)k);
    const char *params[] = {jid, part_s};
    PGresult *r;
    shoal_err_t err = shoal_pg_exec(
        c->pg,
        "SELECT j.status, i.doc, j.items_total, EXISTS (SELECT 1 FROM shoal.job_parts p "
        "WHERE p.job_id = j.job_id AND p.part = $2::int) "
        "FROM shoal.jobs j LEFT JOIN shoal.job_inputs i ON i.job_id = j.job_id "
        "WHERE j.job_id = $1 AND (j.parts_total IS NOT NULL OR j.status = 'rejected')",
        2, params, &r, errbuf, errlen);
    if (err != SHOAL_OK)
        return err;
    if (PQntuples(r) == 0 || PQgetisnull(r, 0, 1) || strcmp(PQgetvalue(r, 0, 0), "running")) {
        int none = PQntuples(r) == 0;
        if (!none)
            snprintf(out->reason, sizeof(out->reason), "the job is %s", PQgetvalue(r, 0, 0));
        PQclear(r);
        if (!none) {
            out->outcome = SHOAL_INTAKE_DUPLICATE;
            return SHOAL_OK;
        }
        snprintf(why, sizeof(why),
                 "part %lld came before its job's header (send the header first, with the job_id "
                 "as the key of every message)",
                 (long long)k);
        return reject_part(c, source, origin, value, len, NULL, why, out, errbuf, errlen);
    }
    json_t *hdr = json_loads(PQgetvalue(r, 0, 1), 0, NULL);
    /* Items recorded from the earlier parts; a part seen before is not
     * judged again (record_job_part says it is a duplicate). Parts of one
     * job come in order on one partition, so the count stays true until
     * this part is recorded. */
    size_t items_before = (size_t)strtoul(PQgetvalue(r, 0, 2), NULL, 10);
    int seen = !strcmp(PQgetvalue(r, 0, 3), "t");
    PQclear(r);
    if (!hdr)
        return shoal_err_set(errbuf, errlen, SHOAL_ERR_NOMEM, "cannot decode the stored header");
    /* Plain items are judged and kept as text (no item is decoded); any
     * other part, or one that fails a check, is parsed whole, which words
     * the reason. */
    int scanned = 0, unsure = 1;
    shoal_job_t *job = NULL;
    if (itext || items_text(value, len, &itext, &ilen, jwhy, sizeof(jwhy)) == 0) {
        scanned = 1;
        job = shoal_job_parse_part(hdr, itext, ilen, c->models, &unsure, jwhy, sizeof(jwhy));
        if (!job && unsure)
            job = build(hdr, itext, ilen, 0, c->models, jwhy, sizeof(jwhy));
    }
    if (!scanned && !scanned_items)
        job = compose(hdr, items, 0, c->models, jwhy, sizeof(jwhy));
    json_decref(hdr);
    if (!job) {
        snprintf(why, sizeof(why), "part %lld: %s", (long long)k, jwhy);
        return reject_part(c, source, origin, value, len, jid, why, out, errbuf, errlen);
    }
    /* The tenant's plan, as for a job sent whole: the items so far against
     * its max items, this part's calls against its max prompt tokens. */
    if (!seen && (err = shoal_plan_apply(c->tenants, job, items_before, NULL, why, sizeof(why))) !=
                     SHOAL_OK) {
        shoal_job_destroy(job);
        if (err == SHOAL_ERR_NOMEM)
            return shoal_err_set(errbuf, errlen, SHOAL_ERR_RETRY, "out of memory");
        return reject_part(c, source, origin, value, len, jid, why, out, errbuf, errlen);
    }
    snprintf(out->priority, sizeof(out->priority), "%s", shoal_job_priority(job));
    shoal_estimate_t est;
    if (shoal_estimate_job(job, c->models, NULL, &est, jwhy, sizeof(jwhy)) != SHOAL_OK)
        memset(&est, 0, sizeof(est));
    double cost = est.n_models ? est.models[0].cost_usd : 0;
    char *rowtext = shoal_intake_task_rows(job, 0); /* chunks within the part */
    char *msg = text_of(value, len);
    char items_s[32], tokens_s[32], cost_s[64];
    snprintf(items_s, sizeof(items_s), "%zu", shoal_job_n_items(job));
    snprintf(tokens_s, sizeof(tokens_s), "%ld", shoal_job_est_tokens(job));
    snprintf(cost_s, sizeof(cost_s), "%.17g", cost);
    out->tasks = (int)shoal_job_n_chunks(job);
    shoal_job_destroy(job);
    if (!rowtext || !msg) {
        free(rowtext);
        free(msg);
        return shoal_err_set(errbuf, errlen, SHOAL_ERR_NOMEM, "out of memory");
    }
    const char *p[] = {jid, part_s, msg, rowtext, items_s, tokens_s, cost_s, source};
    err = shoal_pg_exec(c->pg,
                        "SELECT shoal.record_job_part($1, $2::int, $3, $4::jsonb, $5::int, "
                        "$6::bigint, $7::double precision, $8)",
                        8, p, &r, errbuf, errlen);
    free(rowtext);
    free(msg);
    if (err != SHOAL_OK)
        return err;
    const char *status = PQgetvalue(r, 0, 0);
    if (!strncmp(status, "rejected:", 9)) {
        out->outcome = SHOAL_INTAKE_REJECTED;
        snprintf(out->reason, sizeof(out->reason), "%s", status + 9);
    } else if (!strncmp(status, "added:", 6) || !strcmp(status, "complete")) {
        out->outcome = SHOAL_INTAKE_NEW;
        shoal_log_info("intake", "job part recorded job_id=%s part=%lld tasks=%d status=%s", jid,
                       (long long)k, out->tasks, status);
    } else {
        out->outcome = SHOAL_INTAKE_DUPLICATE;
        snprintf(out->reason, sizeof(out->reason), "part %lld not recorded again: %s", (long long)k,
                 status);
    }
    PQclear(r);
    return SHOAL_OK;
}

shoal_err_t shoal_parts_intake(const shoal_intake_conf_t *c, const char *source,
                               shoal_intake_origin_t *origin, const void *value, size_t len,
                               int *handled, shoal_intake_result_t *out, char *errbuf,
                               size_t errlen)
{
    *handled = 0;
    if (!value || len > c->max_job_bytes || !mentions_part(value, len))
        return SHOAL_OK;
    /* A part is scanned, not decoded: its items are judged as text, or
     * decoded once when the job is built from them (part). Anything the scan
     * does not take for an object with an items array is decoded whole. */
    char why[256];
    size_t n_items = 0;
    const char *item, *first = NULL, *last = NULL;
    size_t ilen;
    int r = -1;
    shoal_jobsplit_t *split = shoal_jobsplit_new(value, len, why, sizeof(why));
    if (split)
        while ((r = shoal_jobsplit_next(split, &item, &ilen, why, sizeof(why))) == 1) {
            if (!n_items++)
                first = item;
            last = item + ilen;
        }
    json_t *members = split && r == 0 ? shoal_jobsplit_header(split) : NULL;
    shoal_err_t err = SHOAL_OK;
    if (json_is_object(members) && json_object_get(members, "part") &&
        !json_object_get(members, "parts") && !json_object_get(members, "prompt_template")) {
        *handled = 1;
        err = part(c, source, origin, value, len, members, n_items, first,
                   first ? (size_t)(last - first) : 0, out, errbuf, errlen);
        shoal_jobsplit_destroy(split);
        return err;
    }
    shoal_jobsplit_destroy(split);
    json_t *doc = json_loadb(value, len, 0, NULL);
    if (json_is_object(doc) && json_object_get(doc, "parts")) {
        *handled = 1;
        err = header(c, source, origin, value, len, doc, out, errbuf, errlen);
    } else if (json_is_object(doc) && json_object_get(doc, "part") &&
               !json_object_get(doc, "prompt_template")) {
        *handled = 1;
        err = part(c, source, origin, value, len, doc,
                   json_array_size(json_object_get(doc, "items")), NULL, 0, out, errbuf, errlen);
    }
    json_decref(doc);
    return err;
}

shoal_job_t *shoal_parts_load(shoal_pg_t *pg, const char *job_id, int part, long *chunk_base,
                              long *n_chunks, shoal_err_t *err, char *errbuf, size_t errlen)
{
    char part_s[32], why[512];
    PGresult *r;
    snprintf(part_s, sizeof(part_s), "%d", part);
    const char *params[] = {job_id, part_s};
    const char *sql =
        part < 0 ? "SELECT i.doc, floor(extract(epoch FROM j.submitted_at))::bigint, NULL, 0, 0 "
                   "FROM shoal.job_inputs i JOIN shoal.jobs j ON j.job_id = i.job_id "
                   "WHERE i.job_id = $1 AND $2::int < 0"
                 : "SELECT i.doc, floor(extract(epoch FROM j.submitted_at))::bigint, p.doc, "
                   "p.chunk_first, (SELECT sum(chunks) FROM shoal.job_parts q "
                   "WHERE q.job_id = $1) "
                   "FROM shoal.job_inputs i JOIN shoal.jobs j ON j.job_id = i.job_id "
                   "JOIN shoal.job_parts p ON p.job_id = i.job_id AND p.part = $2::int "
                   "WHERE i.job_id = $1";
    if ((*err = shoal_pg_exec(pg, sql, 2, params, &r, errbuf, errlen)) != SHOAL_OK)
        return NULL;
    if (PQntuples(r) == 0) {
        PQclear(r);
        *err = shoal_err_set(errbuf, errlen, SHOAL_ERR_NOTFOUND, "the job's inputs are gone");
        return NULL;
    }
    long long submitted = strtoll(PQgetvalue(r, 0, 1), NULL, 10);
    shoal_job_t *job = NULL;
    if (part < 0) {
        /* The stored document is the job as the scheduler parsed it: parsing
         * it again (without the models file, which may have changed, and
         * without the checks it passed) gives the same chunks and the same
         * task messages. */
        job = shoal_job_parse_stored(PQgetvalue(r, 0, 0), (size_t)PQgetlength(r, 0, 0), why,
                                     sizeof(why));
        *chunk_base = 0;
        *n_chunks = job ? (long)shoal_job_n_chunks(job) : 0;
    } else {
        json_t *hdr = json_loads(PQgetvalue(r, 0, 0), 0, NULL);
        const char *items;
        size_t ilen;
        int scanned = 0, unsure = 1;
        snprintf(why, sizeof(why), "the stored header is not JSON");
        /* Its items are kept as text when they are plain, so that their
         * task messages are written from it (no item is decoded); else the
         * part is decoded as it was at intake. */
        if (hdr && items_text(PQgetvalue(r, 0, 2), (size_t)PQgetlength(r, 0, 2), &items, &ilen, why,
                              sizeof(why)) == 0) {
            scanned = 1;
            job = shoal_job_parse_stored_part(hdr, items, ilen, &unsure, why, sizeof(why));
            if (!job && unsure)
                job = build(hdr, items, ilen, 1, NULL, why, sizeof(why));
        }
        if (hdr && !scanned) {
            json_t *pdoc = json_loads(PQgetvalue(r, 0, 2), 0, NULL);
            snprintf(why, sizeof(why), "the stored part is not JSON");
            if (pdoc)
                job = compose(hdr, json_object_get(pdoc, "items"), 1, NULL, why, sizeof(why));
            json_decref(pdoc);
        }
        json_decref(hdr);
        *chunk_base = strtol(PQgetvalue(r, 0, 3), NULL, 10);
        *n_chunks = strtol(PQgetvalue(r, 0, 4), NULL, 10);
    }
    PQclear(r);
    if (!job) {
        *err = shoal_err_set(errbuf, errlen, SHOAL_ERR_INVALID,
                             "cannot rebuild the job from its stored inputs: %s", why);
        return NULL;
    }
    shoal_job_set_submitted(job, submitted);
    *err = SHOAL_OK;
    return job;
}
