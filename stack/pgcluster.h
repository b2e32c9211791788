/*
 * A PostgreSQL cluster for `shoal dev` and the tests, built from the
 * installed server binaries: initdb into <dir>/data, then the postmaster on
 * 127.0.0.1 and a free TCP port, superuser "postgres". Server output goes to
 * <dir>/postgres.log, initdb's to <dir>/initdb.log.
 *
 * Two settings, chosen at creation (shoal_pgcluster_opts_t):
 * - Durability. By default fsync, synchronous_commit and full_page_writes are
 *   on, so a crash of the server (SIGKILL, an immediate stop) loses no
 *   acknowledged commit. unsafe_fast turns all three off (and initdb's sync):
 *   then such a crash may lose transactions committed in its last moments, as
 *   a real server configured so would. Fast and smart stops lose nothing.
 * - Authentication. By default the superuser has a password generated when
 *   the cluster is created, checked with scram-sha-256 on TCP and on the Unix
 *   socket, so other local users cannot connect. It is stored only in
 *   <dir>/pgpass (mode 0600, PGPASSFILE format) and reaches clients as that
 *   file's path: the URL carries passfile=<dir>/pgpass, never the password.
 *   trust skips all this (any local user may connect as superuser).
 * shoal_pgcluster_new is the throwaway of unit tests: unsafe_fast and trust.
 *
 * The postmaster is our direct child (no pg_ctl daemonizing): it is stopped
 * by PID, and the kernel sends it SIGINT (fast shutdown) when the thread that
 * started it dies, so a crashed test leaves no server behind. When running as
 * root the server runs as the "postgres" user, which must exist and be able
 * to reach the directory (every parent must be searchable by it).
 *
 * Binaries are looked up in $SHOAL_PG_BINDIR, then the highest version under
 * /usr/lib/postgresql/<v>/bin (Debian) and /usr/pgsql-<v>/bin (RPM), then
 * PATH. Handles are not thread-safe.
 */
#ifndef SHOAL_STACK_PGCLUSTER_H
#define SHOAL_STACK_PGCLUSTER_H

#include <stddef.h>
#include <sys/types.h>

#include "common/err.h"

typedef struct shoal_pgcluster shoal_pgcluster_t;

/* Shutdown modes for shoal_pgcluster_stop (PostgreSQL's own names). */
enum {
    SHOAL_PGCLUSTER_SMART = 0,     /* SIGTERM: wait for clients to disconnect */
    SHOAL_PGCLUSTER_FAST = 1,      /* SIGINT: disconnect clients, clean shutdown */
    SHOAL_PGCLUSTER_IMMEDIATE = 2, /* SIGQUIT: like a crash, recovery on restart */
};

typedef struct {
    int unsafe_fast; /* fsync, synchronous_commit, full_page_writes off */
    int trust;       /* no password: every local user may connect */
} shoal_pgcluster_opts_t;

/* Creates and starts a cluster in dir, or in a new directory under $TMPDIR
 * (default /tmp) when dir is NULL; opts NULL means all zero (durable, with a
 * password). A dir that does not exist (its parent must) is created and
 * removed by destroy; an existing dir is kept, and a cluster already in
 * <dir>/data is reused with its password (trust applies only at creation).
 * Returns once the server accepts connections (at most 30 s), or NULL with
 * the reason, such as the server's FATAL line, in errbuf. */
shoal_pgcluster_t *shoal_pgcluster_new_opts(const char *dir, const shoal_pgcluster_opts_t *opts,
                                            char *errbuf, size_t errlen);

/* shoal_pgcluster_new_opts with unsafe_fast and trust: for unit tests. */
shoal_pgcluster_t *shoal_pgcluster_new(const char *dir, char *errbuf, size_t errlen);

/* "postgresql://postgres@127.0.0.1:PORT/postgres", followed by
 * "?passfile=<dir>/pgpass" (percent-encoded) when the cluster has a password;
 * no secret in it. Borrowed for the life of c. */
const char *shoal_pgcluster_url(const shoal_pgcluster_t *c);

/* The TCP port; it stays the same across stop and start. */
int shoal_pgcluster_port(const shoal_pgcluster_t *c);

/* The postmaster's PID, -1 while stopped. */
pid_t shoal_pgcluster_pid(const shoal_pgcluster_t *c);

/* 1 while the postmaster runs, 0 once it has exited, stopped or crashed
 * (a postmaster killed from outside is reaped here); 0 for NULL. */
int shoal_pgcluster_alive(shoal_pgcluster_t *c);

/* 1 when the cluster runs with fsync, synchronous_commit and full_page_writes on. */
int shoal_pgcluster_durable(const shoal_pgcluster_t *c);

/* The cluster's directory and the server log path; borrowed for the life of c. */
const char *shoal_pgcluster_dir(const shoal_pgcluster_t *c);
const char *shoal_pgcluster_log_path(const shoal_pgcluster_t *c);

/* Stops the server with mode SHOAL_PGCLUSTER_* (other values count as FAST)
 * and waits for the postmaster to exit. SMART escalates to FAST after 10 s,
 * FAST and IMMEDIATE to the next after 60 s, then SIGKILL. SHOAL_OK also when
 * it was not running or had died; SHOAL_ERR_IO if it could not be ended. */
shoal_err_t shoal_pgcluster_stop(shoal_pgcluster_t *c, int mode);

/* Starts a stopped (or crashed) server again on the same port and data
 * directory and waits until it accepts connections; SHOAL_OK at once if it
 * runs. SHOAL_ERR_RETRY if it did not come up in 30 s (for instance the port
 * was taken meanwhile), SHOAL_ERR_IO if it exited, with the reason in errbuf. */
shoal_err_t shoal_pgcluster_start(shoal_pgcluster_t *c, char *errbuf, size_t errlen);

/* Fast-stops the server if it runs, removes the directory if new created it,
 * and frees c. NULL is ok. */
void shoal_pgcluster_destroy(shoal_pgcluster_t *c);

#endif
