/*
 * A throwaway PostgreSQL cluster for `shoal dev` and the integration tests,
 * built from the installed server binaries: initdb into <dir>/data, then the
 * postmaster on 127.0.0.1 and a free TCP port with durability turned off
 * (fsync, synchronous_commit, full_page_writes), trust authentication and
 * superuser "postgres". Server output goes to <dir>/postgres.log, initdb's to
 * <dir>/initdb.log.
 *
 * The postmaster is our direct child (no pg_ctl daemonizing): it is stopped
 * by PID, and the kernel sends it SIGINT (fast shutdown) when the thread that
 * started it dies, so a crashed test leaves no server behind. When running as
 * root the server runs as the "postgres" user, which must exist and be able
 * to reach the directory (every parent must be searchable by it).
 *
 * Because of synchronous_commit=off, a crash (an immediate stop, SIGKILL)
 * may lose transactions committed in the last moments before it, as a real
 * server configured so would; a session that needs a commit to survive a
 * simulated crash runs SET synchronous_commit = on. Fast and smart stops lose
 * nothing.
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

/* Creates and starts a cluster in dir, or in a new directory under $TMPDIR
 * (default /tmp) when dir is NULL. A dir that does not exist (its parent must)
 * is created and removed by destroy; an existing dir is kept, and a cluster
 * already in <dir>/data is reused. Returns once the server accepts
 * connections (at most 30 s), or NULL with the reason, such as the server's
 * FATAL line, in errbuf. */
shoal_pgcluster_t *shoal_pgcluster_new(const char *dir, char *errbuf, size_t errlen);

/* "postgresql://postgres@127.0.0.1:PORT/postgres"; borrowed for the life of c. */
const char *shoal_pgcluster_url(const shoal_pgcluster_t *c);

/* The TCP port; it stays the same across stop and start. */
int shoal_pgcluster_port(const shoal_pgcluster_t *c);

/* The postmaster's PID, -1 while stopped. */
pid_t shoal_pgcluster_pid(const shoal_pgcluster_t *c);

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
