/*
 * The result cache, scheduler side (see cache.h). Keys are kept as text
 * (SHOAL_CACHEKEY_HEX bytes a chunk, so a job's largest look-up, 100,000
 * chunks, holds 6.5 MB); the chunks a slice's query answered come back as
 * an int[] and are matched to their positions through a sorted index.
 */
#include "scheduler/cache.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/cachekey.h"
#include "common/taskmsg.h"

struct shoal_cache_lookup {
    size_t n;
    char (*keys)[SHOAL_CACHEKEY_HEX]; /* "" when the chunk has no key */
    unsigned char *hit;
    size_t hits, unkeyed;
};

/* (chunk, position) pairs of one slice, sorted by chunk. */
struct pos {
    long chunk;
    size_t i;
};

static int by_chunk(const void *a, const void *b)
{
    long x = ((const struct pos *)a)->chunk, y = ((const struct pos *)b)->chunk;
    return (x > y) - (x < y);
}

int shoal_cache_enabled(const shoal_job_t *job, long ttl_s)
{
    /* A batch-mode answer is one result per item (shoal.item_results), which
     * a cached chunk answer would not write: such jobs go uncached. */
    return ttl_s > 0 && !json_is_false(shoal_job_field(job, "cache")) &&
           strcmp(shoal_job_mode(job), "batch") != 0;
}

void shoal_cache_lookup_destroy(shoal_cache_lookup_t *l)
{
    if (!l)
        return;
    free(l->keys);
    free(l->hit);
    free(l);
}

int shoal_cache_lookup_hit(const shoal_cache_lookup_t *l, size_t i)
{
    return i < l->n && l->hit[i];
}

const char *shoal_cache_lookup_key(const shoal_cache_lookup_t *l, size_t i)
{
    return i < l->n && l->keys[i][0] ? l->keys[i] : NULL;
}

size_t shoal_cache_lookup_hits(const shoal_cache_lookup_t *l)
{
    return l->hits;
}

size_t shoal_cache_lookup_unkeyed(const shoal_cache_lookup_t *l)
{
    return l->unkeyed;
}

/* The key of one chunk (its job's own number: a part's chunk minus the
 * part's first) into key ("" when it cannot be made: the model is not in
 * models). The key covers neither the chunk's number nor its task id, so
 * the message built from a part gives the key its renumbered message (and
 * the same chunk of the job sent whole) has. SHOAL_ERR_NOMEM only. */
static shoal_err_t chunk_key(const shoal_job_t *job, const shoal_models_t *models, long chunk,
                             char key[SHOAL_CACHEKEY_HEX], char *errbuf, size_t errlen)
{
    key[0] = '\0';
    if (chunk < 0 || (size_t)chunk >= shoal_job_n_chunks(job))
        return SHOAL_OK; /* the publisher reports it */
    json_t *task = shoal_taskmsg_key_view(job, (size_t)chunk);
    if (!task)
        return shoal_err_set(errbuf, errlen, SHOAL_ERR_NOMEM, "out of memory");
    shoal_err_t err = shoal_cachekey_task(task, models, key, errbuf, errlen);
    json_decref(task);
    if (err == SHOAL_ERR_INVALID) {
        key[0] = '\0';
        return SHOAL_OK;
    }
    return err;
}

/* Looks up positions [from, to) of chunks in one query and marks the hits. */
static shoal_err_t lookup_slice(shoal_pg_t *pg, const char *job_id, long ttl_s, const long *chunks,
                                size_t from, size_t to, shoal_cache_lookup_t *l, char *errbuf,
                                size_t errlen)
{
    size_t cap_c = (to - from) * 12 + 3, cap_k = (to - from) * (SHOAL_CACHEKEY_HEX + 1) + 3;
    char *cl = malloc(cap_c), *kl = malloc(cap_k);
    struct pos *idx = malloc((to - from) * sizeof(*idx));
    size_t nc = 0, nk = 0, m = 0;
    shoal_err_t err = SHOAL_OK;

    if (!cl || !kl || !idx) {
        err = shoal_err_set(errbuf, errlen, SHOAL_ERR_NOMEM, "out of memory");
        goto out;
    }
    cl[nc++] = '{';
    kl[nk++] = '{';
    for (size_t i = from; i < to; i++) {
        if (!l->keys[i][0])
            continue;
        nc += (size_t)snprintf(cl + nc, cap_c - nc, "%s%ld", m ? "," : "", chunks[i]);
        nk += (size_t)snprintf(kl + nk, cap_k - nk, "%s%s", m ? "," : "", l->keys[i]);
        idx[m].chunk = chunks[i];
        idx[m++].i = i;
    }
    snprintf(cl + nc, cap_c - nc, "}");
    snprintf(kl + nk, cap_k - nk, "}");
    if (m == 0)
        goto out;
    qsort(idx, m, sizeof(*idx), by_chunk);

    char ttl[32];
    snprintf(ttl, sizeof(ttl), "%ld", ttl_s);
    const char *params[] = {job_id, cl, kl, ttl};
    PGresult *r;
    err = shoal_pg_exec(pg, "SELECT shoal.cache_answer($1, $2::int[], $3::text[], $4::float8)", 4,
                        params, &r, errbuf, errlen);
    if (err != SHOAL_OK)
        goto out;
    /* "{3,7,12}": the chunks answered */
    const char *p = PQgetvalue(r, 0, 0);
    while (*p) {
        char *end;
        if (*p < '0' || *p > '9') {
            p++;
            continue;
        }
        struct pos want = {strtol(p, &end, 10), 0};
        p = end;
        struct pos *hit = bsearch(&want, idx, m, sizeof(*idx), by_chunk);
        if (hit && !l->hit[hit->i]) {
            l->hit[hit->i] = 1;
            l->hits++;
        }
    }
    PQclear(r);
out:
    free(cl);
    free(kl);
    free(idx);
    return err;
}

shoal_err_t shoal_cache_lookup_new(shoal_pg_t *pg, const shoal_job_t *job,
                                   const shoal_models_t *models, long ttl_s, const long *chunks,
                                   size_t n, shoal_cache_lookup_t **out, char *errbuf,
                                   size_t errlen)
{
    return shoal_cache_lookup_part_new(pg, job, models, ttl_s, 0, chunks, n, out, errbuf, errlen);
}

shoal_err_t shoal_cache_lookup_part_new(shoal_pg_t *pg, const shoal_job_t *job,
                                        const shoal_models_t *models, long ttl_s, long chunk_base,
                                        const long *chunks, size_t n, shoal_cache_lookup_t **out,
                                        char *errbuf, size_t errlen)
{
    shoal_cache_lookup_t *l = calloc(1, sizeof(*l));
    shoal_err_t err = SHOAL_OK;

    *out = NULL;
    if (!l || !(l->keys = calloc(n ? n : 1, sizeof(*l->keys))) ||
        !(l->hit = calloc(n ? n : 1, 1))) {
        shoal_cache_lookup_destroy(l);
        return shoal_err_set(errbuf, errlen, SHOAL_ERR_NOMEM, "out of memory");
    }
    l->n = n;
    for (size_t from = 0; from < n && err == SHOAL_OK; from += SHOAL_CACHE_SLICE) {
        size_t to = n - from > SHOAL_CACHE_SLICE ? from + SHOAL_CACHE_SLICE : n;
        for (size_t i = from; i < to && err == SHOAL_OK; i++) {
            err = chunk_key(job, models, chunks[i] - chunk_base, l->keys[i], errbuf, errlen);
            if (err == SHOAL_OK && !l->keys[i][0])
                l->unkeyed++;
        }
        if (err == SHOAL_OK)
            err = lookup_slice(pg, shoal_job_id(job), ttl_s, chunks, from, to, l, errbuf, errlen);
    }
    if (err != SHOAL_OK) {
        shoal_cache_lookup_destroy(l);
        return err;
    }
    *out = l;
    return SHOAL_OK;
}

shoal_err_t shoal_cache_expire(shoal_pg_t *pg, long ttl_s, int limit, int *deleted, char *errbuf,
                               size_t errlen)
{
    char ttl[32], lim[32];
    PGresult *r;

    if (deleted)
        *deleted = 0;
    if (ttl_s <= 0)
        return SHOAL_OK;
    snprintf(ttl, sizeof(ttl), "%ld", ttl_s);
    snprintf(lim, sizeof(lim), "%d", limit);
    const char *params[] = {ttl, lim};
    shoal_err_t err = shoal_pg_exec(pg, "SELECT shoal.cache_expire($1::float8, $2::int)", 2, params,
                                    &r, errbuf, errlen);
    if (err != SHOAL_OK)
        return err;
    if (deleted)
        *deleted = (int)strtol(PQgetvalue(r, 0, 0), NULL, 10);
    PQclear(r);
    return SHOAL_OK;
}
