/*
 * Child processes of the local stack: PostgreSQL, the scheduler, workers and
 * the provider simulator that `shoal dev` and the integration tests start.
 *
 * A child is started with fork+exec; its stdin is /dev/null and its stdout and
 * stderr are either inherited or appended to a log file. The kernel sends it a
 * signal (SIGTERM unless told otherwise) when the spawning thread dies, so a
 * crashed test or a killed `shoal dev` never leaves servers behind. Because
 * Linux ties that signal to the thread, spawn from a thread that outlives the
 * children (normally the main thread).
 *
 * A handle reaps its own child and only that child. Handles are not
 * thread-safe: use each from one thread at a time.
 */
#ifndef SHOAL_STACK_PROC_H
#define SHOAL_STACK_PROC_H

#include <stddef.h>
#include <sys/types.h>

#include "common/err.h"

typedef struct shoal_proc shoal_proc_t;

typedef struct {
    /* "KEY=VALUE" entries added to the inherited environment, replacing a
     * variable of the same name; NULL-terminated; NULL adds nothing. */
    char *const *env_add;
    /* stdout and stderr are appended here (created with mode 0644 if
     * missing); NULL inherits the caller's. */
    const char *log_path;
    /* run the child as this user (needs root unless it is the current
     * user); NULL keeps the caller's identity */
    const char *user;
    /* working directory of the child; NULL keeps the caller's */
    const char *cwd;
    /* signal sent to the child when the spawning thread dies; 0 = SIGTERM */
    int death_sig;
} shoal_proc_opts_t;

/* Starts argv[0] (searched in PATH when it has no slash) with argv; name
 * labels it in messages (NULL = argv[0]); env_add and log_path as in
 * shoal_proc_opts_t. Returns an owned handle, or NULL with the reason when the
 * log cannot be opened or the program cannot be executed (reported here, not
 * as a child exiting 127). */
shoal_proc_t *shoal_proc_spawn(const char *name, char *const argv[], char *const env_add[],
                               const char *log_path, char *errbuf, size_t errlen);

/* Same with all options; opts may be NULL (all defaults). */
shoal_proc_t *shoal_proc_spawn_opts(const char *name, char *const argv[],
                                    const shoal_proc_opts_t *opts, char *errbuf, size_t errlen);

/* The label given at spawn; borrowed for the life of p. */
const char *shoal_proc_name(const shoal_proc_t *p);

/* The child's process ID; it stays valid (the child is not reaped) until
 * shoal_proc_alive, _wait or _stop observe the exit. */
pid_t shoal_proc_pid(const shoal_proc_t *p);

/* 1 while the child runs, 0 once it has exited (it is reaped then). */
int shoal_proc_alive(shoal_proc_t *p);

/* Exit code of a child that has exited, 128 + the signal number if a signal
 * killed it, -1 while it runs or when the status was lost (someone else
 * reaped it). */
int shoal_proc_exit_status(const shoal_proc_t *p);

/* Sends sig to the child. SHOAL_ERR_NOTFOUND once the child has been reaped
 * (its PID may belong to someone else by then), SHOAL_ERR_INVALID for a bad
 * signal number. */
shoal_err_t shoal_proc_kill(shoal_proc_t *p, int sig);

/* Waits up to timeout_ms (< 0: forever) for the child to exit. SHOAL_OK when
 * it has exited (at once if it already had), with the status as in
 * shoal_proc_exit_status in *exit_status (may be NULL); SHOAL_ERR_RETRY on
 * timeout; SHOAL_ERR_IO if waitpid fails. */
shoal_err_t shoal_proc_wait(shoal_proc_t *p, int timeout_ms, int *exit_status);

/* SIGTERM, up to grace_ms for the child to exit, then SIGKILL. SHOAL_OK once
 * it has exited (also when it already had); SHOAL_ERR_RETRY if even SIGKILL
 * did not end it within 10 s (a process stuck in the kernel). */
shoal_err_t shoal_proc_stop(shoal_proc_t *p, int grace_ms);

/* Stops the child if it still runs (5 s grace) and frees p. NULL is ok. */
void shoal_proc_destroy(shoal_proc_t *p);

/* Directory of the running executable, without a trailing slash, so sibling
 * binaries (shoal-scheduler, shoal-worker, shoal-sim) can be found. Caller
 * frees; NULL if /proc/self/exe cannot be read. */
char *shoal_proc_self_dir(void);

/* Polls path (which may not exist yet) until a complete line containing
 * needle appears and copies it without its line ending to out (truncated to
 * outlen - 1; out may be NULL). Reads from the start of the file, then only
 * what is appended. SHOAL_ERR_RETRY on timeout, SHOAL_ERR_IO on a read error. */
shoal_err_t shoal_proc_wait_file_line(const char *path, const char *needle, int timeout_ms,
                                      char *out, size_t outlen);

#endif
