/*
 * The whole fleet on one machine: a Kafka from librdkafka's mock cluster
 * (served from this process, a real Kafka protocol endpoint on 127.0.0.1), a
 * throwaway PostgreSQL cluster, the provider simulator, schedulers and
 * workers as child processes, and a models file pointing at the simulator
 * (or the caller's own models file).
 * Used by `shoal dev` and by every integration test and benchmark. Stopping
 * it stops every process it started and removes the work directory it made;
 * a work directory given by the caller is kept, and a later stack on it
 * carries on with its PostgreSQL data (the mock Kafka starts empty).
 * PostgreSQL runs durably with a password unless conf says otherwise (see
 * stack/pgcluster.h). Not thread-safe.
 */
#ifndef SHOAL_STACK_DEVSTACK_H
#define SHOAL_STACK_DEVSTACK_H

#include <stddef.h>

#include "common/err.h"

struct shoal_proc;
struct shoal_pgcluster;

#define SHOAL_DEVSTACK_MAX_PROCS 16

typedef struct {
    const char *workdir; /* NULL: a new directory under $TMPDIR or /tmp */
    const char *bindir;  /* holds shoal-scheduler, shoal-worker, shoal-sim */
    int workers;         /* worker processes (default 2 when 0) */
    int schedulers;      /* scheduler processes (default 1 when 0) */
    long sim_latency_ms;
    const char *const *worker_args; /* extra worker arguments, NULL-terminated, or NULL */
    const char *log_level;          /* for the children; NULL = info */
    const char *extra_models;       /* more "alias": {...} members for the models file */
    const char *const *sim_args;    /* extra simulator arguments (at most 57), or NULL */
    /* The user's models file instead of the one written for the simulator
     * (extra_models is then ignored); NULL = write one. The simulator starts
     * only if this file names ${SHOAL_SIM_URL}. */
    const char *models_path;
    /* PostgreSQL with fsync, synchronous_commit and full_page_writes off: a
     * crash of it may lose acknowledged results. For benchmarks. */
    int unsafe_fast;
} shoal_devstack_conf_t;

typedef struct shoal_devstack shoal_devstack_t;

/* Starts everything and waits until each piece answers. NULL with the reason
 * (and which log to read) on failure. */
shoal_devstack_t *shoal_devstack_new(const shoal_devstack_conf_t *conf, char *errbuf,
                                     size_t errlen);

void shoal_devstack_destroy(shoal_devstack_t *ds); /* NULL is ok */

/* Borrowed strings, valid until destroy. The simulator's URL is "" when it
 * was not started. */
const char *shoal_devstack_bootstrap(const shoal_devstack_t *ds);
const char *shoal_devstack_pg_url(const shoal_devstack_t *ds);
const char *shoal_devstack_sim_url(const shoal_devstack_t *ds);
const char *shoal_devstack_models_path(const shoal_devstack_t *ds);
const char *shoal_devstack_workdir(const shoal_devstack_t *ds);

/* Writes `export NAME='value'` lines for the CLI and for shells. */
shoal_err_t shoal_devstack_write_env(const shoal_devstack_t *ds, const char *path, char *errbuf,
                                     size_t errlen);

/* Stops every child (workers, schedulers, simulator) with SIGTERM and a grace
 * period, and checks how they ended: returns how many exited other than with
 * status 0 or printed a sanitizer report into their log, naming them in
 * report. Kafka and PostgreSQL keep running until destroy. */
int shoal_devstack_stop_procs(shoal_devstack_t *ds, char *report, size_t len);

/* Process control for fault tests. kind is "worker" or "scheduler". */
struct shoal_proc *shoal_devstack_proc(shoal_devstack_t *ds, const char *kind, int i);
shoal_err_t shoal_devstack_restart(shoal_devstack_t *ds, const char *kind, int i,
                                   char *const extra_env[], char *errbuf, size_t errlen);
struct shoal_pgcluster *shoal_devstack_pg(shoal_devstack_t *ds);

#endif
