/*
 * Batched result and attempt writes (see sink.h).
 */
#include "worker/sink.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "common/pgrow.h"
#include "worker/task.h"

/* Rows as text, each owned; flushed as one array per kind: results and
 * attempts are elements of PostgreSQL arrays of shoal.result_row and
 * shoal.attempt_row (common/pgrow.h), sub-task rows JSON objects. */
struct rows {
    char **text;
    size_t *len;
    size_t n, cap;
};

/* A sub-task's message, kept until shoal_sink_take_subtasks. */
struct sub {
    char *task_id;
    char *msg;
    size_t msg_len;
    int prio;
    int recorded; /* a flush recorded it new */
};

struct shoal_sink {
    shoal_pg_t *pg;
    struct rows results;
    struct rows attempts;
    void **tokens; /* one per result row */
    char **items;  /* per result row: its per-item rows (batch mode) or NULL */
    size_t *items_len;
    struct rows subrows; /* sub-task rows (batch mode), written before the results */
    struct sub *subs;
    size_t nsubs, capsubs;
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

static void items_clear(shoal_sink_t *s)
{
    for (size_t i = 0; s->items && i < s->results.n; i++) {
        free(s->items[i]);
        s->items[i] = NULL;
    }
}

static void subs_clear(shoal_sink_t *s)
{
    for (size_t i = 0; i < s->nsubs; i++) {
        free(s->subs[i].task_id);
        free(s->subs[i].msg);
    }
    s->nsubs = 0;
}

void shoal_sink_destroy(shoal_sink_t *s)
{
    if (!s)
        return;
    items_clear(s);
    free(s->items);
    free(s->items_len);
    rows_free(&s->subrows);
    subs_clear(s);
    free(s->subs);
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

/* A row given as a JSON object, as the row element of its composite type:
 * the members named in names, by position; a member that is missing or
 * null is NULL. Takes the object. */
static char *row_from_json(json_t *o, const char *const *names, size_t n, size_t *len)
{
    if (!json_is_object(o)) {
        json_decref(o);
        return NULL;
    }
    shoal_pgrow_t r;
    shoal_pgrow_init(&r, SHOAL_TASK_ROW_MAX);
    shoal_pgrow_open(&r);
    for (size_t i = 0; i < n; i++) {
        json_t *v = json_object_get(o, names[i]);
        if (json_is_string(v)) {
            shoal_pgrow_strn(&r, json_string_value(v), json_string_length(v));
        } else if (json_is_integer(v)) {
            shoal_pgrow_int(&r, (long long)json_integer_value(v));
        } else if (json_is_real(v)) {
            shoal_pgrow_real(&r, json_real_value(v));
        } else if (json_is_boolean(v)) {
            shoal_pgrow_str(&r, json_is_true(v) ? "true" : "false");
        } else if (v && !json_is_null(v)) {
            char *text = json_dumps(v, JSON_COMPACT);
            shoal_pgrow_str(&r, text ? text : "");
            free(text);
        } else {
            shoal_pgrow_null(&r);
        }
    }
    shoal_pgrow_close(&r);
    json_decref(o);
    return shoal_pgrow_detach(&r, len);
}

void shoal_sink_add_attempt(shoal_sink_t *s, json_t *attempt)
{
    size_t len = 0;
    char *text = row_from_json(attempt, shoal_task_attempt_fields, SHOAL_TASK_ATTEMPT_FIELDS, &len);
    shoal_sink_add_attempt_text(s, text, len);
}

shoal_err_t shoal_sink_add_result_text(shoal_sink_t *s, char *row, size_t len, void *token)
{
    if (s->results.n == s->results.cap) {
        /* the token array grows with the rows' (rows_add doubles the same way) */
        size_t ncap = s->results.cap ? s->results.cap * 2 : 256;
        void **nt = realloc(s->tokens, ncap * sizeof(*nt));
        if (nt)
            s->tokens = nt;
        char **ni = nt ? realloc(s->items, ncap * sizeof(*ni)) : NULL;
        if (ni)
            s->items = ni;
        size_t *nl = ni ? realloc(s->items_len, ncap * sizeof(*nl)) : NULL;
        if (!nl) {
            free(row);
            return SHOAL_ERR_NOMEM;
        }
        s->items_len = nl;
    }
    shoal_err_t e = rows_add(&s->results, row, len);
    if (e != SHOAL_OK)
        return e;
    s->bytes += row_bytes(len);
    s->tokens[s->results.n - 1] = token;
    s->items[s->results.n - 1] = NULL;
    s->items_len[s->results.n - 1] = 0;
    return SHOAL_OK;
}

shoal_err_t shoal_sink_add_result(shoal_sink_t *s, json_t *result, void *token)
{
    size_t len = 0;
    char *text = row_from_json(result, shoal_task_result_fields, SHOAL_TASK_RESULT_FIELDS, &len);
    return shoal_sink_add_result_text(s, text, len, token);
}

shoal_err_t shoal_sink_add_items_text(shoal_sink_t *s, char *rows, size_t len)
{
    if (!rows)
        return SHOAL_ERR_NOMEM;
    if (s->results.n == 0 || s->items[s->results.n - 1]) {
        free(rows);
        return SHOAL_ERR_INVALID;
    }
    s->items[s->results.n - 1] = rows;
    s->items_len[s->results.n - 1] = len;
    s->bytes += len;
    return SHOAL_OK;
}

shoal_err_t shoal_sink_add_subtask_text(shoal_sink_t *s, const char *task_id, char *row,
                                        size_t row_len, char *msg, size_t msg_len, int prio)
{
    char *id = row && msg ? strdup(task_id) : NULL;
    if (!id) {
        free(row);
        free(msg);
        return SHOAL_ERR_NOMEM;
    }
    if (rows_add(&s->subrows, row, row_len) != SHOAL_OK) { /* row freed */
        free(id);
        free(msg);
        return SHOAL_ERR_NOMEM;
    }
    if (s->nsubs == s->capsubs) {
        size_t ncap = s->capsubs ? s->capsubs * 2 : 16;
        struct sub *n = realloc(s->subs, ncap * sizeof(*n));
        if (!n) {
            /* the row stays: the sub-task is recorded, the reconciler publishes it */
            free(id);
            free(msg);
            return SHOAL_ERR_NOMEM;
        }
        s->subs = n;
        s->capsubs = ncap;
    }
    s->subs[s->nsubs++] = (struct sub){id, msg, msg_len, prio, 0};
    s->bytes += row_bytes(row_len);
    return SHOAL_OK;
}

size_t shoal_sink_subtasks(const shoal_sink_t *s)
{
    return s->subrows.n;
}

size_t shoal_sink_take_subtasks(shoal_sink_t *s,
                                void (*fn)(const char *task_id, const char *msg, size_t len,
                                           int prio, void *arg),
                                void *arg)
{
    size_t n = 0;
    for (size_t i = 0; i < s->nsubs; i++) {
        if (!s->subs[i].recorded)
            continue;
        n++;
        if (fn)
            fn(s->subs[i].task_id, s->subs[i].msg, s->subs[i].msg_len, s->subs[i].prio, arg);
    }
    subs_clear(s);
    return n;
}

/* Marks the sub-task the database just recorded. */
static void recorded(shoal_sink_t *s, const char *task_id)
{
    for (size_t i = 0; i < s->nsubs; i++)
        if (!strcmp(s->subs[i].task_id, task_id))
            s->subs[i].recorded = 1;
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

/* One call of shoal.record_rows with the two arrays, or, when there are
 * per-item rows or sub-tasks (itext, stext: JSON arrays; NULL when none), of
 * shoal.record_batch_split, which writes them in the same transaction. */
static shoal_err_t write_text(shoal_sink_t *s, const char *rtext, const char *atext,
                              const char *itext, const char *stext, int *ended, char *errbuf,
                              size_t errlen)
{
    PGresult *r;
    shoal_err_t err;
    if (!itext && !stext) {
        const char *params[] = {rtext, atext};
        err = shoal_pg_exec(s->pg,
                            "SELECT * FROM shoal.record_rows($1::shoal.result_row[], "
                            "$2::shoal.attempt_row[])",
                            2, params, &r, errbuf, errlen);
        if (err != SHOAL_OK)
            return err;
        if (ended)
            *ended += PQntuples(r);
        PQclear(r);
        return SHOAL_OK;
    }
    const char *params[] = {rtext, atext, itext ? itext : "[]", stext ? stext : "[]"};
    err = shoal_pg_exec(s->pg,
                        "SELECT kind, id FROM shoal.record_batch_split($1::shoal.result_row[], "
                        "$2::shoal.attempt_row[], $3::jsonb, $4::jsonb)",
                        4, params, &r, errbuf, errlen);
    if (err != SHOAL_OK)
        return err;
    for (int i = 0; i < PQntuples(r); i++) {
        if (!strcmp(PQgetvalue(r, i, 0), "subtask"))
            recorded(s, PQgetvalue(r, i, 1));
        else if (ended)
            (*ended)++;
    }
    PQclear(r);
    return SHOAL_OK;
}

/* The per-item rows of results lo..hi as one JSON array; NULL with *nomem
 * clear when they have none. */
static char *items_array(const shoal_sink_t *s, size_t lo, size_t hi, int *nomem)
{
    size_t n = 3;
    int any = 0;
    *nomem = 0;
    for (size_t i = lo; i < hi; i++)
        if (s->items[i]) {
            n += s->items_len[i] + 1;
            any = 1;
        }
    if (!any)
        return NULL;
    char *out = malloc(n), *o = out;
    if (!out) {
        *nomem = 1;
        return NULL;
    }
    *o++ = '[';
    for (size_t i = lo; i < hi; i++) {
        if (!s->items[i])
            continue;
        if (o > out + 1)
            *o++ = ',';
        memcpy(o, s->items[i], s->items_len[i]);
        o += s->items_len[i];
    }
    *o++ = ']';
    *o = '\0';
    return out;
}

/* Results lo..rhi (with their per-item rows), attempts alo..ahi and
 * sub-tasks slo..shi in one call. */
static shoal_err_t write_rows(shoal_sink_t *s, size_t rlo, size_t rhi, size_t alo, size_t ahi,
                              size_t slo, size_t shi, int *ended, char *errbuf, size_t errlen)
{
    int nomem = 0;
    char *rtext = shoal_pgrow_array(s->results.text + rlo, s->results.len + rlo, rhi - rlo);
    char *atext = shoal_pgrow_array(s->attempts.text + alo, s->attempts.len + alo, ahi - alo);
    char *itext = items_array(s, rlo, rhi, &nomem);
    char *stext = shi > slo ? rows_array(&s->subrows, slo, shi) : NULL;
    shoal_err_t err = rtext && atext && !nomem && (shi == slo || stext)
                          ? write_text(s, rtext, atext, itext, stext, ended, errbuf, errlen)
                          : shoal_err_set(errbuf, errlen, SHOAL_ERR_NOMEM, "out of memory");
    free(rtext);
    free(atext);
    free(itext);
    free(stext);
    return err;
}

/* What bisect() halves: call records, sub-tasks (written before the
 * results, so a job whose last chunk split stays open), then results with
 * their per-item rows. */
enum part { PART_ATTEMPTS, PART_SUBTASKS, PART_RESULTS };

/* The database refused rows for good (SHOAL_ERR_INVALID: a value it will
 * never take). Halves the rows until the bad ones are alone; a refused
 * result is written instead as a failed task carrying the reason (its
 * per-item rows dropped), so its job still ends; a refused call record or
 * sub-task is dropped. A lost connection on the way (SHOAL_ERR_RETRY) gives
 * up: the whole batch is tried again later, and rows already written are
 * no-ops then. */
static shoal_err_t bisect(shoal_sink_t *s, size_t lo, size_t hi, enum part part, int *ended,
                          char *errbuf, size_t errlen)
{
    size_t n = hi - lo;
    int is_results = part == PART_RESULTS;
    shoal_err_t err =
        part == PART_RESULTS    ? write_rows(s, lo, hi, 0, 0, 0, 0, ended, errbuf, errlen)
        : part == PART_SUBTASKS ? write_rows(s, 0, 0, 0, 0, lo, hi, ended, errbuf, errlen)
                                : write_rows(s, 0, 0, lo, hi, 0, 0, ended, errbuf, errlen);
    if (err != SHOAL_ERR_INVALID)
        return err;
    if (n > 1) {
        err = bisect(s, lo, lo + n / 2, part, ended, errbuf, errlen);
        if (err == SHOAL_OK)
            err = bisect(s, lo + n / 2, hi, part, ended, errbuf, errlen);
        return err;
    }
    s->refused++;
    if (part == PART_SUBTASKS) {
        json_t *row = json_loadb(s->subrows.text[lo], s->subrows.len[lo], 0, NULL);
        const char *task_id = json_string_value(json_object_get(row, "task_id"));
        shoal_log_error("db", "database refused a row for good; dropped task_id=%s error=\"%s\"",
                        task_id ? task_id : "?", errbuf);
        json_decref(row);
        return SHOAL_OK;
    }
    /* result and attempt rows: task_id is the first column of one, the
     * second of the other */
    const struct rows *rows = is_results ? &s->results : &s->attempts;
    char *f[SHOAL_TASK_ATTEMPT_FIELDS] = {0};
    int nf = shoal_pgrow_fields(rows->text[lo], rows->len[lo], f, SHOAL_TASK_ATTEMPT_FIELDS);
    const char *task_id = nf > 1 ? f[is_results ? 0 : 1] : NULL;
    if (!is_results || nf != SHOAL_TASK_RESULT_FIELDS || !f[4] /* output */) {
        shoal_log_error("db", "database refused a row for good; dropped task_id=%s error=\"%s\"",
                        task_id ? task_id : "?", errbuf);
        shoal_pgrow_fields_free(f, SHOAL_TASK_ATTEMPT_FIELDS);
        return SHOAL_OK;
    }
    char why[600];
    snprintf(why, sizeof(why), "the database refused the result: %.500s", errbuf);
    /* the same row, failed with the reason and without its output */
    shoal_pgrow_t r;
    shoal_pgrow_init(&r, SHOAL_TASK_ROW_MAX);
    shoal_pgrow_open(&r);
    for (int i = 0; i < nf; i++)
        shoal_pgrow_str(&r, i == 3 ? "failed" : i == 4 ? NULL : i == 10 ? why : f[i]);
    shoal_pgrow_close(&r);
    size_t len = 0;
    char *one = shoal_pgrow_detach(&r, &len);
    char *text = one ? shoal_pgrow_array(&one, &len, 1) : NULL;
    err = text ? write_text(s, text, "{}", NULL, NULL, ended, errbuf, errlen)
               : shoal_err_set(errbuf, errlen, SHOAL_ERR_NOMEM, "out of memory");
    free(one);
    free(text);
    shoal_log_error("db", "database refused a result; task recorded failed task_id=%s error=\"%s\"",
                    task_id ? task_id : "?", why);
    shoal_pgrow_fields_free(f, SHOAL_TASK_ATTEMPT_FIELDS);
    return err == SHOAL_ERR_INVALID ? SHOAL_OK : err;
}

shoal_err_t shoal_sink_flush(shoal_sink_t *s, void (*done)(void *token, void *arg), void *arg,
                             int *jobs_ended, char *errbuf, size_t errlen)
{
    int ended = 0;
    shoal_err_t err;

    if (jobs_ended)
        *jobs_ended = 0;
    if (s->results.n == 0 && s->attempts.n == 0 && s->subrows.n == 0)
        return SHOAL_OK;
    err = write_rows(s, 0, s->results.n, 0, s->attempts.n, 0, s->subrows.n, &ended, errbuf, errlen);
    if (err == SHOAL_ERR_INVALID) {
        ended = 0;
        err = bisect(s, 0, s->attempts.n, PART_ATTEMPTS, &ended, errbuf, errlen);
        if (err == SHOAL_OK && s->subrows.n > 0)
            err = bisect(s, 0, s->subrows.n, PART_SUBTASKS, &ended, errbuf, errlen);
        if (err == SHOAL_OK)
            err = bisect(s, 0, s->results.n, PART_RESULTS, &ended, errbuf, errlen);
    }
    if (err != SHOAL_OK)
        return err;
    if (jobs_ended)
        *jobs_ended = ended;
    for (size_t i = 0; i < s->results.n; i++)
        if (done)
            done(s->tokens[i], arg);
    s->bytes = 0;
    items_clear(s);
    rows_clear(&s->results);
    rows_clear(&s->attempts);
    rows_clear(&s->subrows);
    return SHOAL_OK;
}

void shoal_sink_set_pg(shoal_sink_t *s, shoal_pg_t *pg)
{
    s->pg = pg;
}
