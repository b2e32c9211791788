/*
 * The result cache, scheduler side: before a job's tasks are published, each
 * chunk's key (common/cachekey.h) is computed from the task message it would
 * get, and the keys are looked up in PostgreSQL in one query per slice of
 * chunks (shoal.cache_answer, sql/014_cache.sql). A hit is answered there
 * without a call: its result row (marked cached), its task done, the job's
 * counters, and the mergers told when that was the job's last task. Only
 * misses are published, with their key in the message ("cache_key"); the
 * worker's answer to a miss is stored under that key when it is recorded.
 *
 * A job uses the cache when the scheduler's --cache-ttl-s is above 0 and the
 * job does not say "cache": false. Entries older than the TTL are ignored by
 * the look-up and deleted a few at a time by shoal_cache_expire (the
 * reconciler's loop). Not thread-safe: one look-up per publishing thread.
 */
#ifndef SHOAL_SCHEDULER_CACHE_H
#define SHOAL_SCHEDULER_CACHE_H

#include <stddef.h>

#include "common/err.h"
#include "common/job.h"
#include "common/models.h"
#include "common/pg.h"

/* Chunks looked up per query: bounds the query's size (about 70 bytes a
 * chunk) whatever the job's. */
#define SHOAL_CACHE_SLICE 10000

/* Whether job reads and writes the cache when the TTL is ttl_s seconds: not
 * with "cache": false, nor in batch mode (answer_mode "batch"). */
int shoal_cache_enabled(const shoal_job_t *job, long ttl_s);

/* The outcome of looking up some chunks of one job. */
typedef struct shoal_cache_lookup shoal_cache_lookup_t;

/* Computes the keys of chunks[0..n) of job (parsed, with its id set) with
 * models, and answers every chunk with an entry younger than ttl_s from the
 * cache, in PostgreSQL. *out gets a new look-up (caller destroys) that says
 * which chunks were answered and each one's key. A chunk whose key cannot be
 * made (its model is not in models) is neither answered nor keyed: it is
 * published without a key. SHOAL_ERR_RETRY when PostgreSQL failed (nothing
 * of that slice was answered), SHOAL_ERR_NOMEM; *out is NULL then. */
shoal_err_t shoal_cache_lookup_new(shoal_pg_t *pg, const shoal_job_t *job,
                                   const shoal_models_t *models, long ttl_s, const long *chunks,
                                   size_t n, shoal_cache_lookup_t **out, char *errbuf,
                                   size_t errlen);

/* As shoal_cache_lookup_new, for a job that is one part of a job sent in
 * parts (scheduler/parts.h): chunks are the whole job's numbers, the part's
 * chunk k being chunk_base + k. Hits are answered, and keys remembered, on
 * the whole job's tasks of those numbers. */
shoal_err_t shoal_cache_lookup_part_new(shoal_pg_t *pg, const shoal_job_t *job,
                                        const shoal_models_t *models, long ttl_s, long chunk_base,
                                        const long *chunks, size_t n, shoal_cache_lookup_t **out,
                                        char *errbuf, size_t errlen);

void shoal_cache_lookup_destroy(shoal_cache_lookup_t *l); /* NULL is ok */

/* Whether chunks[i] was answered from the cache (not to be published). */
int shoal_cache_lookup_hit(const shoal_cache_lookup_t *l, size_t i);

/* chunks[i]'s key as 64 hex digits, borrowed until destroy; NULL when it
 * has none. */
const char *shoal_cache_lookup_key(const shoal_cache_lookup_t *l, size_t i);

/* Chunks answered from the cache, and chunks that got no key. */
size_t shoal_cache_lookup_hits(const shoal_cache_lookup_t *l);
size_t shoal_cache_lookup_unkeyed(const shoal_cache_lookup_t *l);

/* Deletes at most limit entries older than ttl_s (none when ttl_s <= 0);
 * *deleted (may be NULL) counts them. SHOAL_ERR_RETRY when PostgreSQL
 * failed. */
shoal_err_t shoal_cache_expire(shoal_pg_t *pg, long ttl_s, int limit, int *deleted, char *errbuf,
                               size_t errlen);

#endif
