/*
 * Batched result and attempt writes (see sink.h).
 */
#include "worker/sink.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"

/* Rows as compact JSON text, one after another in one buffer that reads as
 * a JSON array once closed: "[row,row,row" + "]". A row kept as jansson
 * objects took about 2 KiB (a hash table, a pair per field, a value per
 * field); as text it takes its printed length, about 300 bytes. */
struct rows {
    char *buf; /* "[" then the rows separated by commas; room for "]\0" */
    size_t len, cap;
    size_t *start; /* where each row begins in buf */
    size_t n, ncap;
};

#define ROWS_KEEP ((size_t)1 << 20) /* a larger buffer is freed once written */

struct shoal_sink {
    shoal_pg_t *pg;
    struct rows results;
    struct rows attempts;
    void **tokens;
    size_t ntokens, cap;
    long refused;
};

static void rows_free(struct rows *r)
{
    free(r->buf);
    free(r->start);
    memset(r, 0, sizeof(*r));
}

static void rows_clear(struct rows *r)
{
    if (r->cap > ROWS_KEEP) {
        rows_free(r);
        return;
    }
    r->len = 0;
    r->n = 0;
}

/* Appends row printed as compact JSON; takes ownership of row. */
static shoal_err_t rows_add(struct rows *r, json_t *row)
{
    if (!row)
        return SHOAL_ERR_NOMEM;
    size_t tlen = json_dumpb(row, NULL, 0, JSON_COMPACT);
    if (tlen == 0) {
        json_decref(row);
        return SHOAL_ERR_NOMEM;
    }
    if (r->n == r->ncap) {
        size_t ncap = r->ncap ? r->ncap * 2 : 64;
        size_t *ns = realloc(r->start, ncap * sizeof(*ns));
        if (!ns) {
            json_decref(row);
            return SHOAL_ERR_NOMEM;
        }
        r->start = ns;
        r->ncap = ncap;
    }
    /* "[" or ",", the row, and room to close the array: "]\0" */
    size_t need = r->len + 1 + tlen + 2;
    if (need > r->cap) {
        size_t ncap = r->cap ? r->cap : 4096;
        while (ncap < need)
            ncap *= 2;
        char *nb = realloc(r->buf, ncap);
        if (!nb) {
            json_decref(row);
            return SHOAL_ERR_NOMEM;
        }
        r->buf = nb;
        r->cap = ncap;
    }
    r->buf[r->len++] = r->n ? ',' : '[';
    r->start[r->n++] = r->len;
    r->len += json_dumpb(row, r->buf + r->len, tlen, JSON_COMPACT);
    json_decref(row);
    return SHOAL_OK;
}

/* Rows lo..hi-1 as a JSON array (caller frees); NULL when out of memory. */
static char *rows_slice(const struct rows *r, size_t lo, size_t hi)
{
    size_t from = lo < hi ? r->start[lo] : 0;
    size_t to = lo < hi ? (hi < r->n ? r->start[hi] - 1 : r->len) : 0;
    char *out = malloc(to - from + 3);
    if (!out)
        return NULL;
    out[0] = '[';
    memcpy(out + 1, r->buf + from, to - from);
    out[to - from + 1] = ']';
    out[to - from + 2] = '\0';
    return out;
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

void shoal_sink_add_attempt(shoal_sink_t *s, json_t *attempt)
{
    (void)rows_add(&s->attempts, attempt); /* a call record that cannot be kept is dropped */
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
    shoal_err_t err = rows_add(&s->results, result);
    if (err != SHOAL_OK)
        return err;
    s->tokens[s->ntokens++] = token;
    return SHOAL_OK;
}

size_t shoal_sink_results(const shoal_sink_t *s)
{
    return s->ntokens;
}

size_t shoal_sink_attempts(const shoal_sink_t *s)
{
    return s->attempts.n;
}

size_t shoal_sink_bytes(const shoal_sink_t *s)
{
    return s->results.len + s->attempts.len;
}

long shoal_sink_refused(const shoal_sink_t *s)
{
    return s->refused;
}

/* One call of shoal.record_batch with two JSON arrays as text. */
static shoal_err_t write_rows(shoal_pg_t *pg, const char *rtext, const char *atext, int *ended,
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

/* Writes rows lo..hi-1 of one kind alone. */
static shoal_err_t write_slice(shoal_pg_t *pg, const struct rows *rows, size_t lo, size_t hi,
                               int is_results, int *ended, char *errbuf, size_t errlen)
{
    char *text = rows_slice(rows, lo, hi);
    if (!text)
        return shoal_err_set(errbuf, errlen, SHOAL_ERR_NOMEM, "out of memory");
    shoal_err_t err = is_results ? write_rows(pg, text, "[]", ended, errbuf, errlen)
                                 : write_rows(pg, "[]", text, ended, errbuf, errlen);
    free(text);
    return err;
}

/* The database refused rows for good (SHOAL_ERR_INVALID: a value it will
 * never take). Halves the rows until the bad ones are alone; a refused
 * result is written instead as a failed task carrying the reason, so its job
 * still ends; a refused call record is dropped. A lost connection on the way
 * (SHOAL_ERR_RETRY) gives up: the whole batch is tried again later, and rows
 * already written are no-ops then. */
static shoal_err_t bisect(shoal_sink_t *s, const struct rows *rows, size_t lo, size_t hi,
                          int is_results, int *ended, char *errbuf, size_t errlen)
{
    if (lo >= hi)
        return SHOAL_OK;
    shoal_err_t err = write_slice(s->pg, rows, lo, hi, is_results, ended, errbuf, errlen);
    if (err != SHOAL_ERR_INVALID)
        return err;
    if (hi - lo > 1) {
        size_t mid = lo + (hi - lo) / 2;
        err = bisect(s, rows, lo, mid, is_results, ended, errbuf, errlen);
        if (err == SHOAL_OK)
            err = bisect(s, rows, mid, hi, is_results, ended, errbuf, errlen);
        return err;
    }
    /* The row as it was printed; a NUL in a string (which jsonb refuses)
     * reads back only when allowed. */
    size_t to = hi < rows->n ? rows->start[hi] - 1 : rows->len;
    json_t *row =
        json_loadb(rows->buf + rows->start[lo], to - rows->start[lo], JSON_ALLOW_NUL, NULL);
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
    struct rows one = {0};
    char *text = NULL;
    if (rows_add(&one, json_incref(row)) == SHOAL_OK)
        text = rows_slice(&one, 0, 1);
    rows_free(&one);
    err = text ? write_rows(s->pg, text, "[]", ended, errbuf, errlen)
               : shoal_err_set(errbuf, errlen, SHOAL_ERR_NOMEM, "out of memory");
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
    if (s->ntokens == 0 && s->attempts.n == 0)
        return SHOAL_OK;
    /* Close both arrays in place (rows_add left room) for one statement. */
    struct rows *rr = &s->results, *ar = &s->attempts;
    if (rr->n) {
        rr->buf[rr->len] = ']';
        rr->buf[rr->len + 1] = '\0';
    }
    if (ar->n) {
        ar->buf[ar->len] = ']';
        ar->buf[ar->len + 1] = '\0';
    }
    err = write_rows(s->pg, rr->n ? rr->buf : "[]", ar->n ? ar->buf : "[]", &ended, errbuf, errlen);
    if (err == SHOAL_ERR_INVALID) {
        ended = 0;
        err = bisect(s, ar, 0, ar->n, 0, &ended, errbuf, errlen);
        if (err == SHOAL_OK)
            err = bisect(s, rr, 0, rr->n, 1, &ended, errbuf, errlen);
    }
    if (err != SHOAL_OK)
        return err;
    if (jobs_ended)
        *jobs_ended = ended;
    for (size_t i = 0; i < s->ntokens; i++)
        if (done)
            done(s->tokens[i], arg);
    s->ntokens = 0;
    rows_clear(rr);
    rows_clear(ar);
    return SHOAL_OK;
}

void shoal_sink_set_pg(shoal_sink_t *s, shoal_pg_t *pg)
{
    s->pg = pg;
}
