/*
 * PostgreSQL access on libpq: one connection per handle, connected lazily and
 * re-established after any failure, with every error classified in one place:
 * SHOAL_ERR_RETRY when the server went away, is starting or shutting down, or
 * a serialization or deadlock failure happened (the caller retries the same
 * work later), SHOAL_ERR_INVALID for everything else (the statement itself is
 * wrong for this data). Not thread-safe: one handle per thread.
 */
#ifndef SHOAL_COMMON_PG_H
#define SHOAL_COMMON_PG_H

#include <libpq-fe.h>
#include <stddef.h>

#include "common/err.h"

typedef struct shoal_pg shoal_pg_t;

/* conninfo: a libpq conninfo string or URI ("" uses the PG* environment).
 * Copied. application_name is reported to the server (pg_stat_activity).
 * Does not connect yet. */
shoal_pg_t *shoal_pg_new(const char *conninfo, const char *application_name);

void shoal_pg_destroy(shoal_pg_t *pg); /* NULL is ok */

/* SQL run after every (re)connect, e.g. "LISTEN shoal_merge". Copied. */
void shoal_pg_set_on_connect(shoal_pg_t *pg, const char *sql);

/* fn(seconds, arg) is called after every shoal_pg_exec on this handle with
 * the time it took, on the calling thread (metrics). NULL fn: none. */
void shoal_pg_set_observer(shoal_pg_t *pg, void (*fn)(double seconds, void *arg), void *arg);

/* Connects if not connected. The error never contains the conninfo. */
shoal_err_t shoal_pg_connect(shoal_pg_t *pg, char *errbuf, size_t errlen);

/* The live connection, or NULL when disconnected. Borrowed. */
PGconn *shoal_pg_conn(shoal_pg_t *pg);

/* Counts connections made so far (a reconnect shows as growth). */
unsigned shoal_pg_connects(const shoal_pg_t *pg);

/* Runs sql with text parameters (params may hold NULLs for SQL NULL). With
 * nparams == 0 several ;-separated statements may be given. On SHOAL_OK, *res
 * (when res is not NULL) is the result, caller PQclear()s; otherwise *res is
 * NULL and errbuf says why. */
shoal_err_t shoal_pg_exec(shoal_pg_t *pg, const char *sql, int nparams, const char *const *params,
                          PGresult **res, char *errbuf, size_t errlen);

/* Reads pending notifications; calls fn(channel, payload, arg) for each.
 * Returns SHOAL_ERR_RETRY when the connection is lost. */
shoal_err_t shoal_pg_notifications(shoal_pg_t *pg,
                                   void (*fn)(const char *channel, const char *payload, void *arg),
                                   void *arg, char *errbuf, size_t errlen);

#endif
