/*
 * Child process management for the local stack.
 *
 * Spawning prepares everything that allocates (the environment array, the log
 * file descriptor, the user's IDs) before fork, so the child only makes
 * async-signal-safe calls until exec. An exec failure travels back to the
 * parent through a close-on-exec pipe: the parent reads either nothing (exec
 * succeeded and closed the pipe) or the failing step and errno, which lets
 * spawn report "no such file" instead of returning a child that exits 127.
 *
 * Waiting polls waitpid(WNOHANG) with a short, growing sleep rather than using
 * SIGCHLD, so the module installs no signal handlers and never reaps children
 * it did not start.
 */
#include "stack/proc.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <libgen.h>
#include <limits.h>
#include <pwd.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "common/log.h"

extern char **environ;

#define STOP_KILL_WAIT_MS 10000
#define DESTROY_GRACE_MS 5000
#define LINE_MAX_BYTES (64 * 1024)
#define SELF_EXE_MAX (64 * 1024)
#define FILE_POLL_MS 20

struct shoal_proc {
    char *name;
    pid_t pid;
    int exited; /* reaped: pid must not be signalled any more */
    int status; /* see shoal_proc_exit_status */
};

/* What the child reports through the error pipe when a step before exec
 * fails. */
enum child_step {
    STEP_FDS = 1,
    STEP_USER,
    STEP_CWD,
    STEP_EXEC,
};

struct child_report {
    int step;
    int err;
};

struct spawn_plan {
    char *const *argv;
    char **envp; /* NULL: inherit environ */
    int nullfd;
    int logfd; /* -1: inherit stdout and stderr */
    int errfd; /* write end of the error pipe */
    const char *cwd;
    int switch_user;
    uid_t uid;
    gid_t gid;
    int death_sig;
    pid_t parent;
};

static long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(long long ms)
{
    if (ms <= 0)
        return;
    struct timespec ts = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

/* Moves fd to a number >= 3 with close-on-exec set, so dup2 onto 0-2 in the
 * child can never clobber it. Returns the new fd or -1 (fd is closed either
 * way on failure). */
static int high_fd(int fd)
{
    if (fd < 0 || fd > 2)
        return fd;
    int nfd = fcntl(fd, F_DUPFD_CLOEXEC, 3);
    int saved = errno;
    close(fd);
    errno = saved;
    return nfd;
}

static void close_quietly(int fd)
{
    if (fd >= 0)
        close(fd);
}

/* Builds environ plus env_add (replacing same-named entries). The strings are
 * borrowed; only the array is allocated. */
static shoal_err_t build_env(char *const *env_add, char ***out, char *errbuf, size_t errlen)
{
    *out = NULL;
    if (!env_add || !env_add[0])
        return SHOAL_OK;
    size_t nenv = 0, nadd = 0;
    while (environ && environ[nenv])
        nenv++;
    while (env_add[nadd])
        nadd++;
    char **envp = calloc(nenv + nadd + 1, sizeof(*envp));
    if (!envp)
        return shoal_err_set(errbuf, errlen, SHOAL_ERR_NOMEM, "out of memory");
    memcpy(envp, environ, nenv * sizeof(*envp));
    size_t n = nenv;
    for (size_t i = 0; i < nadd; i++) {
        const char *eq = strchr(env_add[i], '=');
        if (!eq || eq == env_add[i]) {
            free(envp);
            return shoal_err_set(errbuf, errlen, SHOAL_ERR_INVALID,
                                 "environment entry \"%s\" is not KEY=VALUE", env_add[i]);
        }
        size_t klen = (size_t)(eq - env_add[i]) + 1; /* includes '=' */
        size_t j;
        for (j = 0; j < n; j++)
            if (strncmp(envp[j], env_add[i], klen) == 0)
                break;
        envp[j] = env_add[i];
        if (j == n)
            n++;
    }
    envp[n] = NULL;
    *out = envp;
    return SHOAL_OK;
}

static void child_fail(int errfd, int step, int err) __attribute__((noreturn));
static void child_fail(int errfd, int step, int err)
{
    struct child_report r = {step, err};
    ssize_t w;
    do {
        w = write(errfd, &r, sizeof(r));
    } while (w < 0 && errno == EINTR);
    _exit(127);
}

/* dup2 that also works when fd == target (dup2 would then keep FD_CLOEXEC). */
static int move_to(int fd, int target)
{
    if (fd == target)
        return fcntl(fd, F_SETFD, 0);
    return dup2(fd, target) < 0 ? -1 : 0;
}

/* Runs in the forked child: async-signal-safe calls only, then exec. */
static void child_exec(const struct spawn_plan *sp) __attribute__((noreturn));
static void child_exec(const struct spawn_plan *sp)
{
    /* Ignored signals and the blocked mask survive exec; give the program a
     * clean slate whatever the parent had set up. */
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    struct sigaction dfl;
    memset(&dfl, 0, sizeof(dfl));
    dfl.sa_handler = SIG_DFL;
    static const int reset[] = {SIGPIPE, SIGINT, SIGTERM, SIGQUIT, SIGHUP, SIGCHLD, SIGUSR1};
    for (size_t i = 0; i < sizeof(reset) / sizeof(reset[0]); i++)
        sigaction(reset[i], &dfl, NULL);

    if (move_to(sp->nullfd, 0) != 0)
        child_fail(sp->errfd, STEP_FDS, errno);
    if (sp->logfd >= 0 && (move_to(sp->logfd, 1) != 0 || move_to(sp->logfd, 2) != 0))
        child_fail(sp->errfd, STEP_FDS, errno);
#ifdef CLOSE_RANGE_CLOEXEC
    /* Keep the parent's sockets and files (listeners, database connections)
     * out of the child; failure only means an older kernel. */
    close_range(3, ~0U, CLOSE_RANGE_CLOEXEC);
#endif

    if (sp->switch_user) {
        if (setgroups(1, &sp->gid) != 0 || setgid(sp->gid) != 0 || setuid(sp->uid) != 0)
            child_fail(sp->errfd, STEP_USER, errno);
    }
    if (sp->cwd && chdir(sp->cwd) != 0)
        child_fail(sp->errfd, STEP_CWD, errno);
    /* Set after the user switch: changing credentials clears it. */
    prctl(PR_SET_PDEATHSIG, sp->death_sig);
    if (getppid() != sp->parent)
        _exit(127); /* the parent died before the line above */

    if (sp->envp)
        execvpe(sp->argv[0], sp->argv, sp->envp);
    else
        execvp(sp->argv[0], sp->argv);
    child_fail(sp->errfd, STEP_EXEC, errno);
}

static shoal_err_t lookup_user(const char *user, struct spawn_plan *sp, char *errbuf, size_t errlen)
{
    long sz = sysconf(_SC_GETPW_R_SIZE_MAX);
    size_t bufsz = sz > 0 ? (size_t)sz : 16384;
    char *buf = malloc(bufsz);
    if (!buf)
        return shoal_err_set(errbuf, errlen, SHOAL_ERR_NOMEM, "out of memory");
    struct passwd pw, *res = NULL;
    int rc = getpwnam_r(user, &pw, buf, bufsz, &res);
    if (rc != 0 || !res) {
        free(buf);
        return shoal_err_set(errbuf, errlen, SHOAL_ERR_NOTFOUND, "cannot find user \"%s\"%s%s",
                             user, rc ? ": " : "", rc ? strerror(rc) : "");
    }
    sp->uid = pw.pw_uid;
    sp->gid = pw.pw_gid;
    free(buf);
    if (sp->uid == geteuid())
        return SHOAL_OK; /* already that user: nothing to switch */
    if (geteuid() != 0)
        return shoal_err_set(errbuf, errlen, SHOAL_ERR_INVALID,
                             "cannot run as user \"%s\" without root privileges", user);
    sp->switch_user = 1;
    return SHOAL_OK;
}

static const char *step_what(int step)
{
    switch (step) {
    case STEP_FDS:
        return "could not set up standard input and output for";
    case STEP_USER:
        return "could not switch user for";
    case STEP_CWD:
        return "cannot change to the working directory of";
    default:
        return "cannot execute";
    }
}

shoal_proc_t *shoal_proc_spawn_opts(const char *name, char *const argv[],
                                    const shoal_proc_opts_t *opts, char *errbuf, size_t errlen)
{
    static const shoal_proc_opts_t defaults = {0};
    if (!opts)
        opts = &defaults;
    if (!argv || !argv[0] || !argv[0][0]) {
        shoal_err_set(errbuf, errlen, SHOAL_ERR_INVALID, "no program to run");
        return NULL;
    }
    if (!name)
        name = argv[0];

    struct spawn_plan sp;
    memset(&sp, 0, sizeof(sp));
    sp.argv = argv;
    sp.cwd = opts->cwd;
    sp.nullfd = sp.logfd = sp.errfd = -1;
    sp.death_sig = opts->death_sig > 0 ? opts->death_sig : SIGTERM;
    if (sp.death_sig >= NSIG) {
        shoal_err_set(errbuf, errlen, SHOAL_ERR_INVALID, "bad death signal %d", opts->death_sig);
        return NULL;
    }

    shoal_proc_t *p = calloc(1, sizeof(*p));
    int pipefd[2] = {-1, -1};
    if (!p || !(p->name = strdup(name))) {
        shoal_err_set(errbuf, errlen, SHOAL_ERR_NOMEM, "out of memory");
        goto fail;
    }
    p->pid = -1;
    p->status = -1;

    if (opts->user && lookup_user(opts->user, &sp, errbuf, errlen) != SHOAL_OK)
        goto fail;
    if (build_env(opts->env_add, &sp.envp, errbuf, errlen) != SHOAL_OK)
        goto fail;
    if (opts->log_path) {
        sp.logfd = high_fd(open(opts->log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644));
        if (sp.logfd < 0) {
            shoal_err_set(errbuf, errlen, SHOAL_ERR_IO, "could not open log file \"%s\": %s",
                          opts->log_path, strerror(errno));
            goto fail;
        }
    }
    sp.nullfd = high_fd(open("/dev/null", O_RDONLY | O_CLOEXEC));
    if (sp.nullfd < 0) {
        shoal_err_set(errbuf, errlen, SHOAL_ERR_IO, "could not open /dev/null: %s",
                      strerror(errno));
        goto fail;
    }
    if (pipe2(pipefd, O_CLOEXEC) != 0 || (pipefd[0] = high_fd(pipefd[0])) < 0 ||
        (pipefd[1] = high_fd(pipefd[1])) < 0) {
        shoal_err_set(errbuf, errlen, SHOAL_ERR_IO, "could not create a pipe: %s", strerror(errno));
        goto fail;
    }
    sp.errfd = pipefd[1];
    sp.parent = getpid();

    pid_t pid = fork();
    if (pid < 0) {
        shoal_err_set(errbuf, errlen, SHOAL_ERR_RETRY, "could not fork to run \"%s\": %s", name,
                      strerror(errno));
        goto fail;
    }
    if (pid == 0)
        child_exec(&sp);

    close(pipefd[1]);
    pipefd[1] = -1;
    struct child_report rep;
    ssize_t got;
    do {
        got = read(pipefd[0], &rep, sizeof(rep));
    } while (got < 0 && errno == EINTR);
    p->pid = pid;
    if (got == (ssize_t)sizeof(rep)) {
        shoal_proc_wait(p, -1, NULL);
        shoal_err_set(errbuf, errlen, rep.err == ENOENT ? SHOAL_ERR_NOTFOUND : SHOAL_ERR_IO,
                      "%s \"%s\" (%s): %s", step_what(rep.step), argv[0], name, strerror(rep.err));
        goto fail;
    }
    close(pipefd[0]);
    close_quietly(sp.logfd);
    close(sp.nullfd);
    free(sp.envp);
    shoal_log_debug("proc", "started name=%s pid=%d", p->name, (int)pid);
    return p;

fail:
    close_quietly(pipefd[0]);
    close_quietly(pipefd[1]);
    close_quietly(sp.logfd);
    close_quietly(sp.nullfd);
    free(sp.envp);
    if (p)
        free(p->name);
    free(p);
    return NULL;
}

shoal_proc_t *shoal_proc_spawn(const char *name, char *const argv[], char *const env_add[],
                               const char *log_path, char *errbuf, size_t errlen)
{
    shoal_proc_opts_t opts = {.env_add = env_add, .log_path = log_path};
    return shoal_proc_spawn_opts(name, argv, &opts, errbuf, errlen);
}

const char *shoal_proc_name(const shoal_proc_t *p)
{
    return p ? p->name : "";
}

pid_t shoal_proc_pid(const shoal_proc_t *p)
{
    return p ? p->pid : -1;
}

int shoal_proc_exit_status(const shoal_proc_t *p)
{
    return p && p->exited ? p->status : -1;
}

/* Returns 1 when the child has exited (and is reaped), 0 while it runs, -1 on
 * a waitpid error. */
static int reap(shoal_proc_t *p, int options)
{
    if (p->exited)
        return 1;
    int st = 0;
    pid_t r;
    do {
        r = waitpid(p->pid, &st, options);
    } while (r < 0 && errno == EINTR);
    if (r == 0)
        return 0;
    if (r < 0 && errno != ECHILD)
        return -1;
    p->exited = 1;
    if (r < 0)
        p->status = -1; /* reaped elsewhere (SIGCHLD ignored?): status lost */
    else if (WIFEXITED(st))
        p->status = WEXITSTATUS(st);
    else if (WIFSIGNALED(st))
        p->status = 128 + WTERMSIG(st);
    else
        p->status = -1;
    shoal_log_debug("proc", "exited name=%s pid=%d status=%d", p->name, (int)p->pid, p->status);
    return 1;
}

int shoal_proc_alive(shoal_proc_t *p)
{
    return p && reap(p, WNOHANG) == 0;
}

shoal_err_t shoal_proc_kill(shoal_proc_t *p, int sig)
{
    if (!p || reap(p, WNOHANG) != 0)
        return SHOAL_ERR_NOTFOUND;
    if (sig < 0 || sig >= NSIG)
        return SHOAL_ERR_INVALID;
    if (kill(p->pid, sig) != 0)
        return errno == EINVAL ? SHOAL_ERR_INVALID : SHOAL_ERR_IO;
    return SHOAL_OK;
}

shoal_err_t shoal_proc_wait(shoal_proc_t *p, int timeout_ms, int *exit_status)
{
    if (!p)
        return SHOAL_ERR_INVALID;
    int r;
    if (timeout_ms < 0) {
        r = reap(p, 0);
    } else {
        long long deadline = now_ms() + timeout_ms;
        long long step = 1;
        while ((r = reap(p, WNOHANG)) == 0) {
            long long left = deadline - now_ms();
            if (left <= 0)
                return SHOAL_ERR_RETRY;
            sleep_ms(step < left ? step : left);
            if (step < 50)
                step *= 2;
        }
    }
    if (r < 0)
        return SHOAL_ERR_IO;
    if (exit_status)
        *exit_status = p->status;
    return SHOAL_OK;
}

shoal_err_t shoal_proc_stop(shoal_proc_t *p, int grace_ms)
{
    if (!p)
        return SHOAL_OK;
    if (shoal_proc_kill(p, SIGTERM) == SHOAL_OK &&
        shoal_proc_wait(p, grace_ms < 0 ? 0 : grace_ms, NULL) == SHOAL_OK)
        return SHOAL_OK;
    if (p->exited)
        return SHOAL_OK;
    shoal_log_debug("proc", "killing name=%s pid=%d grace_ms=%d", p->name, (int)p->pid, grace_ms);
    shoal_proc_kill(p, SIGKILL);
    return shoal_proc_wait(p, STOP_KILL_WAIT_MS, NULL);
}

void shoal_proc_destroy(shoal_proc_t *p)
{
    if (!p)
        return;
    shoal_proc_stop(p, DESTROY_GRACE_MS);
    free(p->name);
    free(p);
}

char *shoal_proc_self_dir(void)
{
    size_t cap = 256;
    for (;;) {
        char *buf = malloc(cap);
        if (!buf)
            return NULL;
        ssize_t n = readlink("/proc/self/exe", buf, cap);
        if (n < 0) {
            free(buf);
            return NULL;
        }
        if ((size_t)n < cap) {
            buf[n] = '\0';
            char *slash = strrchr(buf, '/');
            if (!slash) {
                free(buf);
                return NULL;
            }
            if (slash == buf)
                slash[1] = '\0'; /* executable in / */
            else
                *slash = '\0';
            return buf;
        }
        free(buf);
        if (cap >= SELF_EXE_MAX)
            return NULL;
        cap *= 2;
    }
}

/* State of one wait_file_line call: the open file and the current line. */
struct line_reader {
    int fd;
    off_t pos;
    char *line;
    size_t len; /* bytes kept; a longer line keeps its first LINE_MAX_BYTES */
};

/* Reads what is new in the file; returns 1 and fills out on a match, 0 when
 * the end was reached without one, -1 on a read error. */
static int scan_new(struct line_reader *lr, const char *needle, char *out, size_t outlen)
{
    struct stat sb;
    if (fstat(lr->fd, &sb) == 0 && sb.st_size < lr->pos) {
        if (lseek(lr->fd, 0, SEEK_SET) < 0)
            return -1;
        lr->pos = 0; /* truncated or rewritten: start over */
        lr->len = 0;
    }
    char chunk[4096];
    for (;;) {
        ssize_t n = read(lr->fd, chunk, sizeof(chunk));
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -1;
        if (n == 0)
            return 0;
        lr->pos += n;
        for (ssize_t i = 0; i < n; i++) {
            if (chunk[i] != '\n') {
                if (lr->len < LINE_MAX_BYTES)
                    lr->line[lr->len++] = chunk[i];
                continue;
            }
            size_t len = lr->len;
            if (len > 0 && lr->line[len - 1] == '\r')
                len--;
            lr->line[len] = '\0';
            lr->len = 0;
            if (strstr(lr->line, needle)) {
                if (out && outlen > 0)
                    snprintf(out, outlen, "%s", lr->line);
                return 1;
            }
        }
    }
}

shoal_err_t shoal_proc_wait_file_line(const char *path, const char *needle, int timeout_ms,
                                      char *out, size_t outlen)
{
    if (out && outlen > 0)
        out[0] = '\0';
    if (!path || !needle)
        return SHOAL_ERR_INVALID;
    struct line_reader lr = {-1, 0, malloc(LINE_MAX_BYTES + 1), 0};
    if (!lr.line)
        return SHOAL_ERR_NOMEM;
    long long deadline = now_ms() + (timeout_ms > 0 ? timeout_ms : 0);
    shoal_err_t err = SHOAL_ERR_RETRY;
    for (;;) {
        if (lr.fd < 0) {
            lr.fd = open(path, O_RDONLY | O_CLOEXEC);
            if (lr.fd < 0 && errno != ENOENT) {
                err = SHOAL_ERR_IO;
                break;
            }
        }
        if (lr.fd >= 0) {
            int r = scan_new(&lr, needle, out, outlen);
            if (r != 0) {
                err = r > 0 ? SHOAL_OK : SHOAL_ERR_IO;
                break;
            }
        }
        long long left = deadline - now_ms();
        if (left <= 0)
            break;
        sleep_ms(left < FILE_POLL_MS ? left : FILE_POLL_MS);
    }
    close_quietly(lr.fd);
    free(lr.line);
    return err;
}
