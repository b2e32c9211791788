/*
 * Batched result and attempt writes (see sink.h).
 */
#include "worker/sink.h"

#include <stdio.h>
#include <stdlib.h>

#include "common/log.h"

struct shoal_sink {
    shoal_pg_t *pg;
    json_t *results;
    json_t *attempts;
    void **tokens;
    size_t ntokens, cap;
    size_t bytes;
    long refused;
};

/* Bytes a row adds to the statement, roughly: its strings plus the keys. */
static size_t row_bytes(json_t *row)
{
    size_t n = 256;
    const char *k;
    json_t *v;
    json_object_foreach(row, k, v)
    {
        if (json_is_string(v))
            n += json_string_length(v);
    }
    return n;
}

shoal_sink_t *shoal_sink_new(shoal_pg_t *pg)
{
    shoal_sink_t *s = calloc(1, sizeof(*s));
    if (!s)
        return NULL;
    s->pg = pg;
    s->results = json_array();
    s->attempts = json_array();
    if (!s->results || !s->attempts) {
        shoal_sink_destroy(s);
        return NULL;
    }
    return s;
}

void shoal_sink_destroy(shoal_sink_t *s)
{
    if (!s)
        return;
    json_decref(s->results);
    json_decref(s->attempts);
    free(s->tokens);
    free(s);
}

void shoal_sink_add_attempt(shoal_sink_t *s, json_t *attempt)
{
    if (attempt)
        s->bytes += row_bytes(attempt);
    json_array_append_new(s->attempts, attempt);
}

shoal_err_t shoal_sink_add_result(shoal_sink_t *s, json_t *result, void *token)
{
    if (s->ntokens == s->cap) {
        size_t ncap = s->cap ? s->cap * 2 : 256;
        void **nt = realloc(s->tokens, ncap * sizeof(*nt));
        if (!nt) {
            json_decref(result);
            return SHOAL_ERR_NOMEM;
        }
        s->tokens = nt;
        s->cap = ncap;
    }
    size_t add = result ? row_bytes(result) : 0;
    if (json_array_append_new(s->results, result) != 0)
        return SHOAL_ERR_NOMEM;
    s->bytes += add;
    s->tokens[s->ntokens++] = token;
    return SHOAL_OK;
}

size_t shoal_sink_results(const shoal_sink_t *s)
{
    return s->ntokens;
}

size_t shoal_sink_attempts(const shoal_sink_t *s)
{
    return json_array_size(s->attempts);
}

size_t shoal_sink_bytes(const shoal_sink_t *s)
{
    return s->bytes;
}

long shoal_sink_refused(const shoal_sink_t *s)
{
    return s->refused;
}

/* One call of shoal.record_batch. */
static shoal_err_t write_rows(shoal_pg_t *pg, json_t *results, json_t *attempts, int *ended,
                              char *errbuf, size_t errlen)
{
    PGresult *r;
    char *rtext = json_dumps(results, JSON_COMPACT);
    char *atext = json_dumps(attempts, JSON_COMPACT);
    if (!rtext || !atext) {
        free(rtext);
        free(atext);
        return shoal_err_set(errbuf, errlen, SHOAL_ERR_NOMEM, "out of memory");
    }
    const char *params[] = {rtext, atext};
    shoal_err_t err = shoal_pg_exec(pg, "SELECT * FROM shoal.record_batch($1::jsonb, $2::jsonb)", 2,
                                    params, &r, errbuf, errlen);
    free(rtext);
    free(atext);
    if (err != SHOAL_OK)
        return err;
    if (ended)
        *ended += PQntuples(r);
    PQclear(r);
    return SHOAL_OK;
}

static json_t *slice(json_t *a, size_t lo, size_t hi)
{
    json_t *out = json_array();
    for (size_t i = lo; out && i < hi; i++)
        json_array_append(out, json_array_get(a, i));
    return out;
}

/* The database refused rows for good (SHOAL_ERR_INVALID: a value it will
 * never take). Halves the rows until the bad ones are alone; a refused
 * result is written instead as a failed task carrying the reason, so its job
 * still ends; a refused call record is dropped. A lost connection on the way
 * (SHOAL_ERR_RETRY) gives up: the whole batch is tried again later, and rows
 * already written are no-ops then. */
static shoal_err_t bisect(shoal_sink_t *s, json_t *rows, int is_results, int *ended, char *errbuf,
                          size_t errlen)
{
    json_t *none = json_array();
    size_t n = json_array_size(rows);
    shoal_err_t err = is_results ? write_rows(s->pg, rows, none, ended, errbuf, errlen)
                                 : write_rows(s->pg, none, rows, ended, errbuf, errlen);
    json_decref(none);
    if (err != SHOAL_ERR_INVALID)
        return err;
    if (n > 1) {
        json_t *a = slice(rows, 0, n / 2), *b = slice(rows, n / 2, n);
        err = a && b ? bisect(s, a, is_results, ended, errbuf, errlen) : SHOAL_ERR_NOMEM;
        if (err == SHOAL_OK)
            err = bisect(s, b, is_results, ended, errbuf, errlen);
        json_decref(a);
        json_decref(b);
        return err;
    }
    json_t *row = json_array_get(rows, 0);
    const char *task_id = json_string_value(json_object_get(row, "task_id"));
    s->refused++;
    if (!is_results || !json_is_string(json_object_get(row, "output"))) {
        shoal_log_error("db", "database refused a row for good; dropped task_id=%s error=\"%s\"",
                        task_id ? task_id : "?", errbuf);
        return SHOAL_OK;
    }
    char why[600];
    snprintf(why, sizeof(why), "the database refused the result: %.500s", errbuf);
    json_t *failed = json_deep_copy(row);
    json_t *one = json_array();
    json_object_del(failed, "output");
    json_object_set_new(failed, "status", json_string("failed"));
    json_object_set_new(failed, "error", json_string(why));
    json_array_append_new(one, failed);
    json_t *none2 = json_array();
    err = write_rows(s->pg, one, none2, ended, errbuf, errlen);
    json_decref(one);
    json_decref(none2);
    shoal_log_error("db", "database refused a result; task recorded failed task_id=%s error=\"%s\"",
                    task_id ? task_id : "?", why);
    return err == SHOAL_ERR_INVALID ? SHOAL_OK : err;
}

shoal_err_t shoal_sink_flush(shoal_sink_t *s, void (*done)(void *token, void *arg), void *arg,
                             int *jobs_ended, char *errbuf, size_t errlen)
{
    int ended = 0;
    shoal_err_t err;

    if (jobs_ended)
        *jobs_ended = 0;
    if (s->ntokens == 0 && json_array_size(s->attempts) == 0)
        return SHOAL_OK;
    err = write_rows(s->pg, s->results, s->attempts, &ended, errbuf, errlen);
    if (err == SHOAL_ERR_INVALID) {
        ended = 0;
        err = bisect(s, s->attempts, 0, &ended, errbuf, errlen);
        if (err == SHOAL_OK)
            err = bisect(s, s->results, 1, &ended, errbuf, errlen);
    }
    if (err != SHOAL_OK)
        return err;
    if (jobs_ended)
        *jobs_ended = ended;
    for (size_t i = 0; i < s->ntokens; i++)
        if (done)
            done(s->tokens[i], arg);
    s->ntokens = 0;
    s->bytes = 0;
    json_array_clear(s->results);
    json_array_clear(s->attempts);
    return SHOAL_OK;
}

void shoal_sink_set_pg(shoal_sink_t *s, shoal_pg_t *pg)
{
    s->pg = pg;
}
