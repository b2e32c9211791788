/*
 * Batched result and attempt writes (see sink.h).
 */
#include "worker/sink.h"

#include <stdlib.h>

struct shoal_sink {
    shoal_pg_t *pg;
    json_t *results;
    json_t *attempts;
    void **tokens;
    size_t ntokens, cap;
};

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
    if (json_array_append_new(s->results, result) != 0)
        return SHOAL_ERR_NOMEM;
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

shoal_err_t shoal_sink_flush(shoal_sink_t *s, void (*done)(void *token, void *arg), void *arg,
                             int *jobs_ended, char *errbuf, size_t errlen)
{
    PGresult *r;
    shoal_err_t err;

    if (jobs_ended)
        *jobs_ended = 0;
    if (s->ntokens == 0 && json_array_size(s->attempts) == 0)
        return SHOAL_OK;
    char *results = json_dumps(s->results, JSON_COMPACT);
    char *attempts = json_dumps(s->attempts, JSON_COMPACT);
    if (!results || !attempts) {
        free(results);
        free(attempts);
        return shoal_err_set(errbuf, errlen, SHOAL_ERR_NOMEM, "out of memory");
    }
    const char *params[] = {results, attempts};
    err = shoal_pg_exec(s->pg, "SELECT * FROM shoal.record_batch($1::jsonb, $2::jsonb)", 2, params,
                        &r, errbuf, errlen);
    free(results);
    free(attempts);
    if (err != SHOAL_OK)
        return err;
    if (jobs_ended)
        *jobs_ended = PQntuples(r);
    PQclear(r);
    for (size_t i = 0; i < s->ntokens; i++)
        if (done)
            done(s->tokens[i], arg);
    s->ntokens = 0;
    json_array_clear(s->results);
    json_array_clear(s->attempts);
    return SHOAL_OK;
}
