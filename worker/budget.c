/*
 * Worst-case call costs and reservations (see budget.h).
 */
#include "worker/budget.h"

#include <stdlib.h>
#include <string.h>

#include "common/models.h"

/* A token per this many bytes of request at most, for the reservation. */
#define BYTES_PER_TOKEN_MIN 3

static double dearest_prompt_price(const shoal_model_t *m)
{
    double p = m->input_usd_per_mtok;
    if (m->cached_input_usd_per_mtok > p)
        p = m->cached_input_usd_per_mtok;
    if (m->cache_write_usd_per_mtok > p)
        p = m->cache_write_usd_per_mtok;
    return p;
}

shoal_err_t shoal_budget_prepare(shoal_task_t *t, double *usd)
{
    json_t *req = json_loadb(t->request, t->request_len, 0, NULL);
    if (!json_is_object(req)) {
        json_decref(req);
        return SHOAL_ERR_INVALID;
    }
    json_t *mt = json_object_get(req, "max_tokens");
    long out;
    if (json_is_integer(mt) && json_integer_value(mt) > 0) {
        out = (long)json_integer_value(mt);
    } else {
        out = t->model->max_output_tokens > 0 ? t->model->max_output_tokens
                                              : SHOAL_BUDGET_DEFAULT_MAX_TOKENS;
        char *text = json_object_set_new(req, "max_tokens", json_integer(out)) == 0
                         ? json_dumps(req, JSON_COMPACT)
                         : NULL;
        if (!text) {
            json_decref(req);
            return SHOAL_ERR_NOMEM;
        }
        free(t->request);
        t->request = text;
        t->request_len = strlen(text);
    }
    json_decref(req);
    double in = (double)((t->request_len + BYTES_PER_TOKEN_MIN - 1) / BYTES_PER_TOKEN_MIN);
    *usd =
        (in * dearest_prompt_price(t->model) + (double)out * t->model->output_usd_per_mtok) / 1e6;
    return SHOAL_OK;
}

json_t *shoal_budget_row(const shoal_task_t *t, const char *id, const char *worker_id, double usd)
{
    long timeout = t->model->timeout_ms > 0 ? t->model->timeout_ms : t->timeout_ms;
    return json_pack("{s:s, s:s, s:s, s:s, s:s, s:f, s:I}", "id", id, "job_id", t->job_id,
                     "task_id", t->task_id, "model", t->model->alias, "worker_id", worker_id,
                     "amount_usd", usd, "ttl_ms",
                     (json_int_t)(timeout + SHOAL_BUDGET_EXPIRY_MARGIN_MS));
}

shoal_err_t shoal_budget_reserve(shoal_pg_t *pg, const char *rows, const char *release,
                                 char **verdict, size_t n, char *errbuf, size_t errlen)
{
    const char *params[] = {rows, release ? release : "[]"};
    PGresult *res;
    shoal_err_t e = shoal_pg_exec(pg,
                                  "SELECT n, verdict, reason FROM shoal.reserve_calls($1::jsonb, "
                                  "$2::jsonb) ORDER BY n",
                                  2, params, &res, errbuf, errlen);
    if (e != SHOAL_OK)
        return e;
    if ((size_t)PQntuples(res) != n) {
        shoal_err_set(errbuf, errlen, SHOAL_ERR_INVALID,
                      "shoal.reserve_calls answered %d rows for %zu calls", PQntuples(res), n);
        PQclear(res);
        return SHOAL_ERR_INVALID;
    }
    for (size_t i = 0; i < n; i++) {
        const char *v = PQgetvalue(res, (int)i, 1);
        const char *why = PQgetisnull(res, (int)i, 2) ? "" : PQgetvalue(res, (int)i, 2);
        size_t len = strlen(v) + strlen(why) + 2;
        if (!(verdict[i] = malloc(len))) {
            PQclear(res);
            return shoal_err_set(errbuf, errlen, SHOAL_ERR_NOMEM, "out of memory");
        }
        snprintf(verdict[i], len, "%s%s%s", v, strcmp(v, "refused") ? "" : ":",
                 strcmp(v, "refused") ? "" : why);
    }
    PQclear(res);
    return SHOAL_OK;
}

shoal_err_t shoal_budget_expire(shoal_pg_t *pg, long *expired, char *errbuf, size_t errlen)
{
    PGresult *res;
    shoal_err_t e =
        shoal_pg_exec(pg, "SELECT shoal.expire_reservations()", 0, NULL, &res, errbuf, errlen);
    if (e != SHOAL_OK)
        return e;
    *expired = strtol(PQgetvalue(res, 0, 0), NULL, 10);
    PQclear(res);
    return SHOAL_OK;
}
