/*
 * Batched result and attempt writes (see sink.h).
 */
#include "worker/sink.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"

/* Rows as JSON text, each owned; flushed as one array per kind. */
struct rows {
    char **text;
    size_t *len;
    size_t n, cap;
};

struct shoal_sink {
    shoal_pg_t *pg;
    struct rows results;
    struct rows attempts;
    void **tokens; /* one per result row */
    size_t bytes;
    long refused;
};

static void rows_clear(struct rows *r)
{
    for (size_t i = 0; i < r->n; i++)
        free(r->text[i]);
    r->n = 0;
}

static void rows_free(struct rows *r)
{
    rows_clear(r);
    free(r->text);
    free(r->len);
}

/* Takes ownership of text (NULL: SHOAL_ERR_NOMEM, as jansson's append of a
 * NULL row failed). */
static shoal_err_t rows_add(struct rows *r, char *text, size_t len)
{
    if (!text)
        return SHOAL_ERR_NOMEM;
    if (r->n == r->cap) {
        size_t ncap = r->cap ? r->cap * 2 : 256;
        char **nt = realloc(r->text, ncap * sizeof(*nt));
        if (nt)
            r->text = nt;
        size_t *nl = nt ? realloc(r->len, ncap * sizeof(*nl)) : NULL;
        if (!nl) {
            free(text);
            return SHOAL_ERR_NOMEM;
        }
        r->len = nl;
        r->cap = ncap;
    }
    r->text[r->n] = text;
    r->len[r->n++] = len;
    return SHOAL_OK;
}

/* Rows lo..hi as one JSON array; caller frees. */
static char *rows_array(const struct rows *r, size_t lo, size_t hi)
{
    size_t n = 3;
    for (size_t i = lo; i < hi; i++)
        n += r->len[i] + 1;
    char *out = malloc(n), *o = out;
    if (!out)
        return NULL;
    *o++ = '[';
    for (size_t i = lo; i < hi; i++) {
        if (i > lo)
            *o++ = ',';
        memcpy(o, r->text[i], r->len[i]);
        o += r->len[i];
    }
    *o++ = ']';
    *o = '\0';
    return out;
}

/* Bytes a row adds to the statement, roughly: its text plus the room the
 * keys took in the estimate this replaced. */
static size_t row_bytes(size_t len)
{
    return 256 + len;
}

shoal_sink_t *shoal_sink_new(shoal_pg_t *pg)
{
    shoal_sink_t *s = calloc(1, sizeof(*s));
    if (!s)
        return NULL;
    s->pg = pg;
    return s;
}

void shoal_sink_destroy(shoal_sink_t *s)
{
    if (!s)
        return;
    rows_free(&s->results);
    rows_free(&s->attempts);
    free(s->tokens);
    free(s);
}

void shoal_sink_add_attempt_text(shoal_sink_t *s, char *row, size_t len)
{
    if (rows_add(&s->attempts, row, len) == SHOAL_OK)
        s->bytes += row_bytes(len);
}

void shoal_sink_add_attempt(shoal_sink_t *s, json_t *attempt)
{
    char *text = attempt ? json_dumps(attempt, JSON_COMPACT) : NULL;
    json_decref(attempt);
    shoal_sink_add_attempt_text(s, text, text ? strlen(text) : 0);
}

shoal_err_t shoal_sink_add_result_text(shoal_sink_t *s, char *row, size_t len, void *token)
{
    if (s->results.n == s->results.cap) {
        /* the token array grows with the rows' (rows_add doubles the same way) */
        size_t ncap = s->results.cap ? s->results.cap * 2 : 256;
        void **nt = realloc(s->tokens, ncap * sizeof(*nt));
        if (!nt) {
            free(row);
            return SHOAL_ERR_NOMEM;
        }
        s->tokens = nt;
    }
    shoal_err_t e = rows_add(&s->results, row, len);
    if (e != SHOAL_OK)
        return e;
    s->bytes += row_bytes(len);
    s->tokens[s->results.n - 1] = token;
    return SHOAL_OK;
}

shoal_err_t shoal_sink_add_result(shoal_sink_t *s, json_t *result, void *token)
{
    char *text = result ? json_dumps(result, JSON_COMPACT) : NULL;
    json_decref(result);
    return shoal_sink_add_result_text(s, text, text ? strlen(text) : 0, token);
}

size_t shoal_sink_results(const shoal_sink_t *s)
{
    return s->results.n;
}

size_t shoal_sink_attempts(const shoal_sink_t *s)
{
    return s->attempts.n;
}

size_t shoal_sink_bytes(const shoal_sink_t *s)
{
    return s->bytes;
}

long shoal_sink_refused(const shoal_sink_t *s)
{
    return s->refused;
}

/* One call of shoal.record_batch with two JSON arrays. */
static shoal_err_t write_text(shoal_pg_t *pg, const char *rtext, const char *atext, int *ended,
                              char *errbuf, size_t errlen)
{
    PGresult *r;
    const char *params[] = {rtext, atext};
    shoal_err_t err = shoal_pg_exec(pg, "SELECT * FROM shoal.record_batch($1::jsonb, $2::jsonb)", 2,
                                    params, &r, errbuf, errlen);
    if (err != SHOAL_OK)
        return err;
    if (ended)
        *ended += PQntuples(r);
    PQclear(r);
    return SHOAL_OK;
}

/* Results lo..rhi and attempts alo..ahi in one call. */
static shoal_err_t write_rows(shoal_sink_t *s, size_t rlo, size_t rhi, size_t alo, size_t ahi,
                              int *ended, char *errbuf, size_t errlen)
{
    char *rtext = rows_array(&s->results, rlo, rhi);
    char *atext = rows_array(&s->attempts, alo, ahi);
    shoal_err_t err = rtext && atext
                          ? write_text(s->pg, rtext, atext, ended, errbuf, errlen)
                          : shoal_err_set(errbuf, errlen, SHOAL_ERR_NOMEM, "out of memory");
    free(rtext);
    free(atext);
    return err;
}

/* The database refused rows for good (SHOAL_ERR_INVALID: a value it will
 * never take). Halves the rows until the bad ones are alone; a refused
 * result is written instead as a failed task carrying the reason, so its job
 * still ends; a refused call record is dropped. A lost connection on the way
 * (SHOAL_ERR_RETRY) gives up: the whole batch is tried again later, and rows
 * already written are no-ops then. */
static shoal_err_t bisect(shoal_sink_t *s, size_t lo, size_t hi, int is_results, int *ended,
                          char *errbuf, size_t errlen)
{
    size_t n = hi - lo;
    shoal_err_t err = is_results ? write_rows(s, lo, hi, 0, 0, ended, errbuf, errlen)
                                 : write_rows(s, 0, 0, lo, hi, ended, errbuf, errlen);
    if (err != SHOAL_ERR_INVALID)
        return err;
    if (n > 1) {
        err = bisect(s, lo, lo + n / 2, is_results, ended, errbuf, errlen);
        if (err == SHOAL_OK)
            err = bisect(s, lo + n / 2, hi, is_results, ended, errbuf, errlen);
        return err;
    }
    const struct rows *rows = is_results ? &s->results : &s->attempts;
    /* JSON_ALLOW_NUL: a \u0000 is one way a row is refused */
    json_t *row = json_loadb(rows->text[lo], rows->len[lo], JSON_ALLOW_NUL, NULL);
    const char *task_id = json_string_value(json_object_get(row, "task_id"));
    s->refused++;
    if (!is_results || !json_is_string(json_object_get(row, "output"))) {
        shoal_log_error("db", "database refused a row for good; dropped task_id=%s error=\"%s\"",
                        task_id ? task_id : "?", errbuf);
        json_decref(row);
        return SHOAL_OK;
    }
    char why[600];
    snprintf(why, sizeof(why), "the database refused the result: %.500s", errbuf);
    json_object_del(row, "output");
    json_object_set_new(row, "status", json_string("failed"));
    json_object_set_new(row, "error", json_string(why));
    char *one = json_dumps(row, JSON_COMPACT), *text = NULL;
    size_t len = one ? strlen(one) : 0;
    if (one && (text = malloc(len + 3)) != NULL)
        snprintf(text, len + 3, "[%s]", one);
    err = text ? write_text(s->pg, text, "[]", ended, errbuf, errlen)
               : shoal_err_set(errbuf, errlen, SHOAL_ERR_NOMEM, "out of memory");
    free(one);
    free(text);
    shoal_log_error("db", "database refused a result; task recorded failed task_id=%s error=\"%s\"",
                    task_id ? task_id : "?", why);
    json_decref(row);
    return err == SHOAL_ERR_INVALID ? SHOAL_OK : err;
}

shoal_err_t shoal_sink_flush(shoal_sink_t *s, void (*done)(void *token, void *arg), void *arg,
                             int *jobs_ended, char *errbuf, size_t errlen)
{
    int ended = 0;
    shoal_err_t err;

    if (jobs_ended)
        *jobs_ended = 0;
    if (s->results.n == 0 && s->attempts.n == 0)
        return SHOAL_OK;
    err = write_rows(s, 0, s->results.n, 0, s->attempts.n, &ended, errbuf, errlen);
    if (err == SHOAL_ERR_INVALID) {
        ended = 0;
        err = bisect(s, 0, s->attempts.n, 0, &ended, errbuf, errlen);
        if (err == SHOAL_OK)
            err = bisect(s, 0, s->results.n, 1, &ended, errbuf, errlen);
    }
    if (err != SHOAL_OK)
        return err;
    if (jobs_ended)
        *jobs_ended = ended;
    for (size_t i = 0; i < s->results.n; i++)
        if (done)
            done(s->tokens[i], arg);
    s->bytes = 0;
    rows_clear(&s->results);
    rows_clear(&s->attempts);
    return SHOAL_OK;
}

void shoal_sink_set_pg(shoal_sink_t *s, shoal_pg_t *pg)
{
    s->pg = pg;
}
