/*
 * OpenAI Batch files at the CLI (see batchfile.h).
 *
 * Results are read by keyset pages of top-level tasks (chunk order is item
 * order), so a job of any size streams in bounded memory. The last call of
 * a task is looked up only for tasks without an answer.
 */
#include "cli/batchfile.h"

#include <errno.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#define PAGE_TASKS "500"

char *shoal_batchfile_job_text(const char *text, size_t len, const shoal_models_t *models,
                               const shoal_oaibatch_opts_t *opts, size_t *out_len, char *errbuf,
                               size_t errlen)
{
    json_t *job = shoal_oaibatch_to_job(text, len, models, opts, errbuf, errlen);
    char *out = job ? json_dumps(job, JSON_COMPACT) : NULL;

    if (job && !out)
        shoal_err_set(errbuf, errlen, SHOAL_ERR_NOMEM, "out of memory");
    json_decref(job);
    if (out && out_len)
        *out_len = strlen(out);
    return out;
}

static const char page_sql[] =
    "SELECT t.chunk, u.item_id, t.status, coalesce(t.error, ''), "
    "       coalesce(ir.output, r.output), coalesce(ir.model, r.model, ''), "
    "       coalesce(ir.tokens_in, r.tokens_in, 0), coalesce(ir.tokens_out, r.tokens_out, 0), "
    "       coalesce(floor(extract(epoch FROM coalesce(ir.created_at, r.created_at)))::bigint, 0), "
    "       coalesce(a.http_status, 0), coalesce(a.outcome_kind, ''), "
    "       (SELECT j.status || coalesce(': ' || j.error, '') FROM shoal.jobs j "
    "        WHERE j.job_id = t.job_id) "
    "FROM (SELECT * FROM shoal.tasks WHERE job_id = $1 AND parent_task_id IS NULL AND chunk > $2 "
    "      ORDER BY chunk LIMIT " PAGE_TASKS ") t "
    "CROSS JOIN LATERAL unnest(t.item_ids) WITH ORDINALITY AS u(item_id, pos) "
    "LEFT JOIN shoal.results r ON r.task_id = t.task_id "
    "LEFT JOIN shoal.item_results ir ON ir.job_id = t.job_id AND ir.item_id = u.item_id "
    "LEFT JOIN LATERAL (SELECT x.http_status, x.outcome_kind FROM shoal.attempts x "
    "    WHERE r.task_id IS NULL AND ir.item_id IS NULL AND x.job_id = t.job_id "
    "    AND x.task_id = t.task_id ORDER BY x.finished_at DESC LIMIT 1) a ON true "
    "ORDER BY t.chunk, u.pos";

/* OpenAI's name for how an unanswered request ended, from its task's status
 * and its last call (http status, shoal.attempts.outcome_kind). */
static const char *error_code(const char *status, long http, const char *kind)
{
    if (strcmp(status, "cancelled") == 0)
        return "batch_cancelled";
    if (strcmp(status, "failed") != 0)
        return "batch_expired"; /* the job ended before the item's call did */
    if (strcmp(kind, "permanent") == 0)
        return http == 401   ? "authentication_error"
               : http == 403 ? "permission_error"
               : http == 404 ? "not_found_error"
                             : "invalid_request_error";
    if (strcmp(kind, "rate_limited") == 0)
        return "rate_limit_exceeded";
    if (strcmp(kind, "overloaded") == 0 || strcmp(kind, "server_error") == 0)
        return "server_error";
    if (strcmp(kind, "timeout") == 0)
        return "timeout";
    if (strcmp(kind, "connection") == 0)
        return "connection_error";
    if (strcmp(kind, "malformed") == 0)
        return "invalid_response";
    if (strcmp(kind, "truncated") == 0)
        return "output_truncated";
    return "failed";
}

static const char *provider_name(const shoal_models_t *models, const char *alias)
{
    const shoal_model_t *m = models ? shoal_models_find(models, alias) : NULL;

    return m && m->model ? m->model : alias;
}

/* One row of page_sql as a line (caller frees); NULL when out of memory. */
static char *row_line(PGresult *r, int i, const char *job_id, const char *format,
                      const shoal_models_t *models, size_t *len)
{
    const char *status = PQgetvalue(r, i, 2), *kind = PQgetvalue(r, i, 10);
    const char *output = PQgetisnull(r, i, 4) ? NULL : PQgetvalue(r, i, 4);
    const char *task_error = PQgetvalue(r, i, 3);
    long http = strtol(PQgetvalue(r, i, 9), NULL, 10);
    char message[1200] = "";

    if (!output && *task_error)
        snprintf(message, sizeof(message), "%s", task_error);
    else if (!output)
        snprintf(message, sizeof(message), "not answered: the job ended %s", PQgetvalue(r, i, 11));
    if (strcmp(format, "openai-batch") == 0) {
        shoal_oaibatch_item_t it = {
            .job_id = job_id,
            .custom_id = PQgetvalue(r, i, 1),
            .output = output,
            .model = provider_name(models, PQgetvalue(r, i, 5)),
            .tokens_in = strtol(PQgetvalue(r, i, 6), NULL, 10),
            .tokens_out = strtol(PQgetvalue(r, i, 7), NULL, 10),
            .created_unix = strtoll(PQgetvalue(r, i, 8), NULL, 10),
            .error_code = output ? NULL : error_code(status, http, kind),
            .error_message = output ? NULL : message,
        };
        return shoal_oaibatch_output_line(&it, len);
    }
    json_t *o = json_pack(
        "{s:s, s:s, s:s?, s:s?, s:I, s:I, s:s?}", "id", PQgetvalue(r, i, 1), "status",
        output ? "done" : status, "output", output, "model", output ? PQgetvalue(r, i, 5) : NULL,
        "tokens_in", (json_int_t)strtoll(PQgetvalue(r, i, 6), NULL, 10), "tokens_out",
        (json_int_t)strtoll(PQgetvalue(r, i, 7), NULL, 10), "error", output ? NULL : message);
    char *text = o ? json_dumps(o, JSON_COMPACT) : NULL;

    json_decref(o);
    if (text && len)
        *len = strlen(text);
    return text;
}

shoal_err_t shoal_batchfile_write(shoal_pg_t *pg, const char *job_id, const char *format,
                                  const shoal_models_t *models, FILE *out, char *errbuf,
                                  size_t errlen)
{
    char after[24] = "-1";
    const char *params[] = {job_id, after};
    shoal_err_t err;

    if (strcmp(format, "openai-batch") != 0 && strcmp(format, "jsonl") != 0)
        return shoal_err_set(errbuf, errlen, SHOAL_ERR_INVALID,
                             "unknown format \"%s\" (text, jsonl or openai-batch)", format);
    if ((err = shoal_pg_exec(pg, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY", 0, NULL, NULL,
                             errbuf, errlen)) != SHOAL_OK)
        return err;
    for (;;) {
        PGresult *r;
        int n;

        if ((err = shoal_pg_exec(pg, page_sql, 2, params, &r, errbuf, errlen)) != SHOAL_OK)
            break;
        n = PQntuples(r);
        for (int i = 0; i < n && err == SHOAL_OK; i++) {
            size_t len = 0;
            char *line = row_line(r, i, job_id, format, models, &len);

            if (!line)
                err = shoal_err_set(errbuf, errlen, SHOAL_ERR_NOMEM, "out of memory");
            else if (fwrite(line, 1, len, out) != len || fputc('\n', out) == EOF)
                err = shoal_err_set(errbuf, errlen, SHOAL_ERR_IO, "could not write the output: %s",
                                    strerror(errno));
            free(line);
        }
        if (n > 0)
            snprintf(after, sizeof(after), "%s", PQgetvalue(r, n - 1, 0));
        PQclear(r);
        if (n == 0 || err != SHOAL_OK)
            break;
    }
    shoal_pg_exec(pg, "COMMIT", 0, NULL, NULL, NULL, 0);
    return err;
}
