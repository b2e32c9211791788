/*
 * The worker's part of the fleet-wide rate limits (sql/004_fleet.sql). Each
 * model's RPM and TPM hold for the whole fleet: one background thread with
 * its own PostgreSQL connection calls shoal.fleet_lease every refresh_ms for
 * all models at once, reporting what the worker sent, what was refused and
 * what it could use, and receives this worker's share of each limit as a
 * lease that expires after ttl_ms. The event loop only reads and adds to
 * mutex-guarded copies, so it never waits for the database.
 *
 * Shares:
 * - A model with no configured, header or learned limit is unlimited (slow
 *   start) until the fleet reports its first 429; from then on the learned
 *   rate applies (kept in the database, so restarts do not start over).
 * - A grant of zero (a newcomer while the others still hold the whole limit)
 *   is reported as SHOAL_FLEET_MIN_RATE, never as 0, since <= 0 means no limit.
 * - Before the first successful refresh: a quarter of the configured limit,
 *   because other workers may hold the rest.
 * - Store unreachable: the last share stays valid until its lease would have
 *   expired; then limit / (last known live workers + 1). If the whole fleet
 *   lost the store at once, the sum is n / (n + 1) of the limit; a worker cut
 *   off alone overshoots by at most that share while the others take its
 *   expired lease back. The thread reconnects with backoff (up to 5 s).
 *
 * Holds (a 429 with Retry-After, remaining 0, or a decrease of the learned
 * rate) are fleet-wide: the reporting worker's share shows its own at once,
 * the others' at their next refresh. Every function is thread-safe.
 */
#ifndef SHOAL_WORKER_FLEET_H
#define SHOAL_WORKER_FLEET_H

#include <stddef.h>

#include "common/models.h"

/* The rate given instead of a zero grant (units per second): small enough to
 * send nothing meaningful, positive so it is not read as "no limit". */
#define SHOAL_FLEET_MIN_RATE 0.001

typedef struct shoal_fleet shoal_fleet_t;

typedef struct {
    long refresh_ms; /* lease refresh period; default 500 */
    long ttl_ms;     /* lease lifetime; default 2000; must exceed refresh_ms */
    long timeout_ms; /* statement timeout of one refresh; default 2000 */
} shoal_fleet_conf_t;

/* Fills the defaults. */
void shoal_fleet_conf_init(shoal_fleet_conf_t *conf);

typedef struct {
    double rps, tps;             /* this worker's rates; <= 0: no limit */
    double limit_rps, limit_tps; /* the fleet-wide limit in force; <= 0: none known */
    double hold_until_unix;      /* send nothing before (wall clock seconds); 0: no hold */
    int learned;                 /* the limit was learned from 429s */
    int workers;                 /* live workers sharing the model (last known, >= 1) */
    int stale;                   /* not from a live lease: a fallback share */
    unsigned long version;       /* grows whenever any field above changes */
} shoal_fleet_share_t;

/* What the loop saw since its last report for one model. Fill with
 * shoal_fleet_report_init, then set what is known. */
typedef struct {
    double demand_rps, demand_tps;             /* what it could use now; < 0: unchanged */
    long sent, ok, rate_limited, tokens_used;  /* added up until the next refresh */
    long limit_requests, limit_tokens;         /* per minute, from headers; -1 absent */
    long remaining_requests, remaining_tokens; /* from headers; -1 absent */
    long reset_ms; /* time until the exhausted limit resets; -1 absent */
    long hold_ms;  /* Retry-After, already capped by the caller; -1 none */
} shoal_fleet_report_t;

void shoal_fleet_report_init(shoal_fleet_report_t *r);

/* Starts the refresh thread for every model in models (borrowed: it must
 * outlive the handle). worker_id names this worker's leases and must be
 * unique in the fleet; conninfo and worker_id are copied and conninfo is
 * never logged. conf may be NULL (defaults). Does not wait for the database.
 * Returns NULL with the reason in errbuf. */
shoal_fleet_t *shoal_fleet_new(const char *pg_conninfo, const char *worker_id,
                               const shoal_models_t *models, const shoal_fleet_conf_t *conf,
                               char *errbuf, size_t errlen);

/* Copies the current share of model (an index into models) into *out; an
 * index out of range reads as unlimited. Never blocks on the database. */
void shoal_fleet_share(shoal_fleet_t *f, size_t model, shoal_fleet_share_t *out);

/* Milliseconds from now until s's hold ends, 0 when there is none: for
 * loops that keep time on a monotonic clock. */
double shoal_fleet_hold_ms(const shoal_fleet_share_t *s);

/* Adds r to what the next refresh reports for model. A report with
 * rate_limited > 0 makes the thread refresh early (at most five times per
 * refresh period). Never blocks on the database. */
void shoal_fleet_report(shoal_fleet_t *f, size_t model, const shoal_fleet_report_t *r);

/* Counts successful refreshes so far (tests and metrics). */
unsigned long shoal_fleet_refreshes(shoal_fleet_t *f);

/* Stops the thread and removes this worker's leases so its share returns at
 * once (best effort: a lease left behind expires after ttl_ms). Takes at most
 * about timeout_ms when the server answers, longer only while a connection
 * attempt to an unresponsive host runs (libpq's connect_timeout). NULL ok. */
void shoal_fleet_destroy(shoal_fleet_t *f);

#endif
