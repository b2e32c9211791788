/*
 * Throwaway PostgreSQL clusters.
 *
 * Start-up is "spawn the postmaster, then poll": the server counts as up when
 * its postmaster.pid names our child and says "ready" (the signal pg_ctl
 * uses) and PQping over TCP answers. Checking the PID file as well as the
 * ping matters because the port is chosen by binding port 0 and closing it,
 * so another server may grab it in between; then our postmaster exits with
 * "Address already in use" and we try another port, while the ping alone
 * might have been answered by the stranger.
 *
 * Messages from the server are read back from its log to explain failures, so
 * the children run with LC_ALL=C.
 */
#include "stack/pgcluster.h"

#include <errno.h>
#include <fcntl.h>
#include <glob.h>
#include <libpq-fe.h>
#include <netinet/in.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "stack/proc.h"
#include "stack/workdir.h"
#include "common/log.h"

#define START_TIMEOUT_MS 30000
#define STOP_TIMEOUT_MS 60000
#define SMART_TIMEOUT_MS 10000 /* then fast: clients of a test rarely leave */
#define KILL_TIMEOUT_MS 10000
#define INITDB_TIMEOUT_MS 120000
#define START_ATTEMPTS 10
#define POLL_MS 20
#define LOG_TAIL_BYTES 16384
#define UNIX_PATH_LIMIT 107 /* sizeof(sun_path) - 1 on Linux */
#define PASSWORD_BYTES 24   /* 192 random bits, written as hex */
#define ROOT_HINT                                                                                  \
    " (running as root: the directory and its parents must be accessible to user postgres)"

struct shoal_pgcluster {
    char *dir;
    int own_dir; /* created by new: destroy removes it */
    char *bindir;
    char *datadir;
    char *sockdir; /* "" when the path would be too long for a Unix socket */
    char *log_path;
    char *initdb_log;
    const char *user; /* "postgres" when running as root, else NULL */
    uid_t uid;
    gid_t gid;
    int port;
    int fast;     /* fsync, synchronous_commit and full_page_writes off */
    char *pgpass; /* <dir>/pgpass: the superuser's password, when it has one */
    shoal_proc_t *server;
    char *url;
};

static char *const child_env[] = {"LC_ALL=C", NULL};

static long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

/* Returns "a/b" (caller frees) or NULL when out of memory. */
static char *path_join(const char *a, const char *b)
{
    size_t n = strlen(a) + 1 + strlen(b) + 1;
    char *s = malloc(n);
    if (s)
        snprintf(s, n, "%s/%s", a, b);
    return s;
}

static int is_server_bindir(const char *dir)
{
    char p[4096];
    snprintf(p, sizeof(p), "%s/postgres", dir);
    if (access(p, X_OK) != 0)
        return 0;
    snprintf(p, sizeof(p), "%s/initdb", dir);
    return access(p, X_OK) == 0;
}

/* Version number encoded in a path such as /usr/lib/postgresql/15/bin:
 * the digits right after prefix, major * 1000 + minor (so 9.6 < 10). */
static long path_version(const char *path, size_t prefix_len)
{
    char *end;
    long major = strtol(path + prefix_len, &end, 10);
    long minor = 0;
    if (*end == '.')
        minor = strtol(end + 1, NULL, 10);
    return major * 1000 + minor;
}

/* The highest-versioned directory matching pattern that holds the server. */
static char *glob_bindir(const char *pattern, size_t prefix_len)
{
    glob_t g;
    char *best = NULL;
    long best_v = -1;
    if (glob(pattern, GLOB_ONLYDIR, NULL, &g) != 0)
        return NULL;
    for (size_t i = 0; i < g.gl_pathc; i++) {
        long v = path_version(g.gl_pathv[i], prefix_len);
        if (v > best_v && is_server_bindir(g.gl_pathv[i])) {
            best_v = v;
            best = g.gl_pathv[i];
        }
    }
    char *res = best ? strdup(best) : NULL;
    globfree(&g);
    return res;
}

static char *path_bindir(void)
{
    const char *path = getenv("PATH");
    if (!path)
        return NULL;
    char *copy = strdup(path);
    char *res = NULL;
    for (char *dir = copy, *next; dir && !res; dir = next) {
        next = strchr(dir, ':');
        if (next)
            *next++ = '\0';
        if (dir[0] == '/' && is_server_bindir(dir))
            res = strdup(dir);
    }
    free(copy);
    return res;
}

static shoal_err_t find_bindir(char **out, char *errbuf, size_t errlen)
{
    const char *env = getenv("SHOAL_PG_BINDIR");
    if (env && env[0]) {
        if (!is_server_bindir(env))
            return shoal_err_set(errbuf, errlen, SHOAL_ERR_NOTFOUND,
                                 "cannot find initdb and postgres in SHOAL_PG_BINDIR=%s: point it "
                                 "at the PostgreSQL server's bin directory",
                                 env);
        *out = strdup(env);
    } else {
        *out = glob_bindir("/usr/lib/postgresql/*/bin", strlen("/usr/lib/postgresql/"));
        if (!*out)
            *out = glob_bindir("/usr/pgsql-*/bin", strlen("/usr/pgsql-"));
        if (!*out)
            *out = path_bindir();
        if (!*out)
            return shoal_err_set(errbuf, errlen, SHOAL_ERR_NOTFOUND,
                                 "cannot find PostgreSQL server binaries (initdb, postgres): "
                                 "install the postgresql package or set SHOAL_PG_BINDIR");
    }
    return *out ? SHOAL_OK : shoal_err_set(errbuf, errlen, SHOAL_ERR_NOMEM, "out of memory");
}

/* A port that was free a moment ago on 127.0.0.1, or -1. */
static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof(sa);
    int port = -1;
    if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0 &&
        getsockname(fd, (struct sockaddr *)&sa, &len) == 0)
        port = ntohs(sa.sin_port);
    close(fd);
    return port;
}

static off_t file_size(const char *path)
{
    struct stat sb;
    return stat(path, &sb) == 0 ? sb.st_size : 0;
}

/* Reads the end (at most LOG_TAIL_BYTES) of what path gained after offset
 * from into buf (NUL-terminated); empty on error. */
static void read_log_since(const char *path, off_t from, char *buf, size_t cap)
{
    buf[0] = '\0';
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return;
    off_t size = lseek(fd, 0, SEEK_END);
    if (size > from + (off_t)(cap - 1))
        from = size - (off_t)(cap - 1);
    size_t n = 0;
    if (size > from && lseek(fd, from, SEEK_SET) == from) {
        ssize_t r;
        while (n < cap - 1 && (r = read(fd, buf + n, cap - 1 - n)) > 0)
            n += (size_t)r;
    }
    buf[n] = '\0';
    close(fd);
}

/* The line that best explains a failure in log text: the first FATAL or
 * PANIC line (or initdb's "error:"), else the last non-empty line. Copies it
 * into out without the line ending. */
static void explain_line(const char *text, char *out, size_t outlen)
{
    static const char *marks[] = {"FATAL:", "PANIC:", "error:"};
    const char *best = NULL;
    for (size_t i = 0; i < sizeof(marks) / sizeof(marks[0]) && !best; i++)
        best = strstr(text, marks[i]);
    if (best) {
        while (best > text && best[-1] != '\n')
            best--;
    } else {
        const char *end = text + strlen(text);
        while (end > text && (end[-1] == '\n' || end[-1] == '\r'))
            end--;
        best = end;
        while (best > text && best[-1] != '\n')
            best--;
    }
    size_t len = strcspn(best, "\r\n");
    if (len == 0) {
        snprintf(out, outlen, "no output");
        return;
    }
    snprintf(out, outlen, "%.*s", (int)len, best);
}

/* postmaster.pid: line 1 is the PID, line 8 (PostgreSQL 10+) the status. */
static int pidfile_ready(const shoal_pgcluster_t *c)
{
    char path[4096], buf[1024];
    snprintf(path, sizeof(path), "%s/postmaster.pid", c->datadir);
    FILE *f = fopen(path, "re");
    if (!f)
        return 0;
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    char *end;
    long pid = strtol(buf, &end, 10);
    if (end == buf || *end != '\n' || pid != (long)shoal_proc_pid(c->server))
        return 0;
    const char *line = buf;
    for (int i = 1; i < 8 && line; i++) {
        line = strchr(line, '\n');
        if (line)
            line++;
    }
    if (!line || !*line)
        return 1; /* before PostgreSQL 10 there is no status: rely on the ping */
    return strncmp(line, "ready", 5) == 0;
}

static int ping(const shoal_pgcluster_t *c)
{
    char conninfo[160];
    snprintf(conninfo, sizeof(conninfo),
             "host=127.0.0.1 port=%d user=postgres dbname=postgres connect_timeout=2 "
             "sslmode=disable",
             c->port);
    return PQping(conninfo) == PQPING_OK;
}

static void drop_server(shoal_pgcluster_t *c)
{
    shoal_proc_destroy(c->server);
    c->server = NULL;
}

/* Spawns the postmaster on c->port and waits for it. On an early exit, sets
 * *in_use when the log blames a resource another server still holds (the
 * port, shared memory) so the caller may retry. */
static shoal_err_t start_once(shoal_pgcluster_t *c, long long deadline, int *in_use, char *errbuf,
                              size_t errlen)
{
    char port[16], *sockdir = c->sockdir;
    snprintf(port, sizeof(port), "%d", c->port);
    /* Named on the command line either way, so a postgresql.conf edited by
     * hand cannot make a durable cluster silently unsafe. */
    char *sync = c->fast ? "fsync=off" : "fsync=on";
    char *commit = c->fast ? "synchronous_commit=off" : "synchronous_commit=on";
    char *fpw = c->fast ? "full_page_writes=off" : "full_page_writes=on";
    char *postgres = path_join(c->bindir, "postgres");
    if (!postgres)
        return shoal_err_set(errbuf, errlen, SHOAL_ERR_NOMEM, "out of memory");
    char *argv[] = {postgres,
                    "-D",
                    c->datadir,
                    "-p",
                    port,
                    "-k",
                    sockdir,
                    "-c",
                    "listen_addresses=127.0.0.1",
                    "-c",
                    sync,
                    "-c",
                    commit,
                    "-c",
                    fpw,
                    "-c",
                    "max_connections=200",
                    NULL};
    shoal_proc_opts_t opts = {.env_add = child_env,
                              .log_path = c->log_path,
                              .user = c->user,
                              .cwd = c->dir,
                              .death_sig = SIGINT};
    off_t log_from = file_size(c->log_path);
    *in_use = 0;
    c->server = shoal_proc_spawn_opts("postgres", argv, &opts, errbuf, errlen);
    free(postgres);
    if (!c->server)
        return SHOAL_ERR_IO;

    for (;;) {
        if (!shoal_proc_alive(c->server)) {
            char *text = malloc(LOG_TAIL_BYTES);
            char line[512] = "no output";
            if (text) {
                read_log_since(c->log_path, log_from, text, LOG_TAIL_BYTES);
                explain_line(text, line, sizeof(line));
                *in_use = strstr(text, "Address already in use") != NULL ||
                          strstr(text, "is still in use") != NULL;
            }
            free(text);
            int st = shoal_proc_exit_status(c->server);
            drop_server(c);
            return shoal_err_set(errbuf, errlen, SHOAL_ERR_IO,
                                 "PostgreSQL exited with status %d while starting: %s", st, line);
        }
        if (pidfile_ready(c) && ping(c))
            return SHOAL_OK;
        if (now_ms() >= deadline) {
            shoal_proc_kill(c->server, SIGQUIT);
            shoal_proc_wait(c->server, KILL_TIMEOUT_MS, NULL);
            drop_server(c);
            return shoal_err_set(errbuf, errlen, SHOAL_ERR_RETRY,
                                 "PostgreSQL did not accept connections on port %d within %d s",
                                 c->port, START_TIMEOUT_MS / 1000);
        }
        sleep_ms(POLL_MS);
    }
}

/* Starts the server, on a fresh free port when pick_port is set (retrying on
 * a clash) or on c->port (retrying while the old server's resources are
 * released). */
static shoal_err_t start_server(shoal_pgcluster_t *c, int pick_port, char *errbuf, size_t errlen)
{
    long long deadline = now_ms() + START_TIMEOUT_MS;
    for (int attempt = 1;; attempt++) {
        if (pick_port && (c->port = free_port()) < 0)
            return shoal_err_set(errbuf, errlen, SHOAL_ERR_IO,
                                 "could not find a free TCP port on 127.0.0.1: %s",
                                 strerror(errno));
        int in_use = 0;
        shoal_err_t err = start_once(c, deadline, &in_use, errbuf, errlen);
        if (err == SHOAL_OK) {
            shoal_log_debug("pgcluster", "started pid=%d port=%d attempt=%d",
                            (int)shoal_proc_pid(c->server), c->port, attempt);
            return SHOAL_OK;
        }
        if (!in_use || attempt >= START_ATTEMPTS || now_ms() >= deadline)
            return err == SHOAL_ERR_IO && in_use ? SHOAL_ERR_RETRY : err;
        shoal_log_debug("pgcluster", "port or memory in use, retrying port=%d attempt=%d", c->port,
                        attempt);
        if (!pick_port)
            sleep_ms(500);
    }
}

static shoal_err_t make_dir(shoal_pgcluster_t *c, const char *path, char *errbuf, size_t errlen)
{
    if (mkdir(path, 0700) != 0 && errno != EEXIST)
        return shoal_err_set(errbuf, errlen, SHOAL_ERR_IO, "could not create directory %s: %s",
                             path, strerror(errno));
    if (c->user && chown(path, c->uid, c->gid) != 0)
        return shoal_err_set(errbuf, errlen, SHOAL_ERR_IO,
                             "could not give directory %s to user %s: %s", path, c->user,
                             strerror(errno));
    return SHOAL_OK;
}

/* Writes text to a new file at path with mode 0600 (replacing one that
 * exists), owned by the server's user when own is set and we run as root. */
static shoal_err_t write_secret(shoal_pgcluster_t *c, const char *path, const char *text, int own,
                                char *errbuf, size_t errlen)
{
    unlink(path);
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0)
        return shoal_err_set(errbuf, errlen, SHOAL_ERR_IO, "could not create %s: %s", path,
                             strerror(errno));
    size_t len = strlen(text), off = 0;
    int ok = 1;
    while (ok && off < len) {
        ssize_t w = write(fd, text + off, len - off);
        if (w < 0 && errno == EINTR)
            continue;
        ok = w > 0;
        off += w > 0 ? (size_t)w : 0;
    }
    if (ok && own && c->user && fchown(fd, c->uid, c->gid) != 0)
        ok = 0;
    if (close(fd) != 0)
        ok = 0;
    if (!ok) {
        unlink(path);
        return shoal_err_set(errbuf, errlen, SHOAL_ERR_IO, "could not write %s: %s", path,
                             strerror(errno));
    }
    return SHOAL_OK;
}

/* A new random password for the superuser: into <dir>/pgpass for clients and
 * into pwfile (which the caller removes) for initdb. Never logged. */
static shoal_err_t make_password(shoal_pgcluster_t *c, const char *pwfile, char *errbuf,
                                 size_t errlen)
{
    unsigned char raw[PASSWORD_BYTES];
    char pw[2 * PASSWORD_BYTES + 2], line[2 * PASSWORD_BYTES + 32];
    size_t got = 0;
    while (got < sizeof(raw)) {
        ssize_t n = getrandom(raw + got, sizeof(raw) - got, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return shoal_err_set(errbuf, errlen, SHOAL_ERR_IO, "could not generate a password: %s",
                                 strerror(errno));
        got += (size_t)n;
    }
    for (size_t i = 0; i < sizeof(raw); i++)
        snprintf(pw + 2 * i, 3, "%02x", raw[i]);
    /* Any host and port: the file belongs to this cluster alone, and a
     * cluster reused from a work folder may get another port. */
    snprintf(line, sizeof(line), "*:*:*:postgres:%s\n", pw);
    shoal_err_t err = write_secret(c, c->pgpass, line, 0, errbuf, errlen);
    if (err == SHOAL_OK) {
        snprintf(line, sizeof(line), "%s\n", pw);
        err = write_secret(c, pwfile, line, 1, errbuf, errlen);
    }
    memset(pw, 0, sizeof(pw));
    memset(line, 0, sizeof(line));
    memset(raw, 0, sizeof(raw));
    return err;
}

static shoal_err_t run_initdb(shoal_pgcluster_t *c, int trust, char *errbuf, size_t errlen)
{
    char *initdb = path_join(c->bindir, "initdb");
    char *pwfile = path_join(c->dir, "initdb.pw");
    char pwarg[4200];
    if (!initdb || !pwfile) {
        free(initdb);
        free(pwfile);
        return shoal_err_set(errbuf, errlen, SHOAL_ERR_NOMEM, "out of memory");
    }
    char *argv[16] = {initdb, "-D", c->datadir, "-U", "postgres", "-E", "UTF8", "--locale=C"};
    int argc = 8;
    if (c->fast)
        argv[argc++] = "--no-sync";
    if (trust) {
        unlink(c->pgpass); /* left by an earlier attempt: this cluster has none */
        argv[argc++] = "--auth=trust";
    } else {
        shoal_err_t err = make_password(c, pwfile, errbuf, errlen);
        if (err != SHOAL_OK) {
            free(initdb);
            free(pwfile);
            return err;
        }
        snprintf(pwarg, sizeof(pwarg), "--pwfile=%s", pwfile);
        argv[argc++] = "--auth=scram-sha-256";
        argv[argc++] = pwarg;
    }
    argv[argc] = NULL;
    shoal_proc_opts_t opts = {
        .env_add = child_env, .log_path = c->initdb_log, .user = c->user, .cwd = c->dir};
    off_t log_from = file_size(c->initdb_log);
    shoal_proc_t *p = shoal_proc_spawn_opts("initdb", argv, &opts, errbuf, errlen);
    free(initdb);
    if (!p) {
        unlink(pwfile);
        free(pwfile);
        size_t n = errbuf ? strlen(errbuf) : 0;
        if (c->user && n + 1 < errlen)
            snprintf(errbuf + n, errlen - n, "%s", ROOT_HINT);
        return SHOAL_ERR_IO;
    }
    int st = -1;
    shoal_err_t err = shoal_proc_wait(p, INITDB_TIMEOUT_MS, &st);
    shoal_proc_destroy(p);
    unlink(pwfile);
    free(pwfile);
    if (err != SHOAL_OK)
        return shoal_err_set(errbuf, errlen, SHOAL_ERR_RETRY, "initdb did not finish within %d s",
                             INITDB_TIMEOUT_MS / 1000);
    if (st != 0) {
        char *text = malloc(LOG_TAIL_BYTES);
        char line[512] = "no output";
        if (text) {
            read_log_since(c->initdb_log, log_from, text, LOG_TAIL_BYTES);
            explain_line(text, line, sizeof(line));
        }
        free(text);
        return shoal_err_set(errbuf, errlen, SHOAL_ERR_IO, "initdb failed with status %d: %s%s", st,
                             line, c->user ? ROOT_HINT : "");
    }
    return SHOAL_OK;
}

static shoal_err_t lookup_postgres_user(shoal_pgcluster_t *c, char *errbuf, size_t errlen)
{
    char buf[16384];
    struct passwd pw, *res = NULL;
    if (getpwnam_r("postgres", &pw, buf, sizeof(buf), &res) != 0 || !res)
        return shoal_err_set(errbuf, errlen, SHOAL_ERR_NOTFOUND,
                             "cannot run PostgreSQL as root and there is no \"postgres\" user: "
                             "create one or run as an ordinary user");
    c->user = "postgres";
    c->uid = pw.pw_uid;
    c->gid = pw.pw_gid;
    return SHOAL_OK;
}

static shoal_err_t create_dir(shoal_pgcluster_t *c, const char *dir, char *errbuf, size_t errlen)
{
    if (!dir) {
        const char *tmp = getenv("TMPDIR");
        if (!tmp || !tmp[0])
            tmp = "/tmp";
        c->dir = path_join(tmp, "shoal-pg-XXXXXX");
        if (!c->dir)
            return shoal_err_set(errbuf, errlen, SHOAL_ERR_NOMEM, "out of memory");
        if (!mkdtemp(c->dir))
            return shoal_err_set(errbuf, errlen, SHOAL_ERR_IO,
                                 "could not create a directory in %s: %s (set TMPDIR to a "
                                 "writable directory)",
                                 tmp, strerror(errno));
        c->own_dir = 1;
    } else {
        if (!(c->dir = strdup(dir)))
            return shoal_err_set(errbuf, errlen, SHOAL_ERR_NOMEM, "out of memory");
        if (mkdir(dir, 0700) == 0) {
            c->own_dir = 1;
        } else if (errno != EEXIST) {
            return shoal_err_set(errbuf, errlen, SHOAL_ERR_IO, "could not create directory %s: %s",
                                 dir, strerror(errno));
        }
    }
    /* A directory of our own can simply belong to the server's user. */
    if (c->own_dir && c->user && chown(c->dir, c->uid, c->gid) != 0)
        return shoal_err_set(errbuf, errlen, SHOAL_ERR_IO,
                             "could not give directory %s to user %s: %s", c->dir, c->user,
                             strerror(errno));
    return SHOAL_OK;
}

/* The URL clients use: with passfile=<path> (percent-encoded) when the
 * cluster has a password file. NULL when out of memory. */
static char *make_url(const shoal_pgcluster_t *c)
{
    static const char hex[] = "0123456789ABCDEF";
    const char *pass = access(c->pgpass, F_OK) == 0 ? c->pgpass : NULL;
    size_t cap = 96 + (pass ? 3 * strlen(pass) + 16 : 0);
    char *url = malloc(cap);
    if (!url)
        return NULL;
    size_t n = (size_t)snprintf(url, cap, "postgresql://postgres@127.0.0.1:%d/postgres", c->port);
    if (pass) {
        n += (size_t)snprintf(url + n, cap - n, "?passfile=");
        for (const unsigned char *p = (const unsigned char *)pass; *p; p++) {
            if ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
                strchr("/-._~", *p)) {
                url[n++] = (char)*p;
            } else {
                url[n++] = '%';
                url[n++] = hex[*p >> 4];
                url[n++] = hex[*p & 15];
            }
        }
        url[n] = '\0';
    }
    return url;
}

shoal_pgcluster_t *shoal_pgcluster_new(const char *dir, char *errbuf, size_t errlen)
{
    shoal_pgcluster_opts_t opts = {.unsafe_fast = 1, .trust = 1};
    return shoal_pgcluster_new_opts(dir, &opts, errbuf, errlen);
}

shoal_pgcluster_t *shoal_pgcluster_new_opts(const char *dir, const shoal_pgcluster_opts_t *opts,
                                            char *errbuf, size_t errlen)
{
    static const shoal_pgcluster_opts_t defaults = {0, 0};
    shoal_pgcluster_t *c = calloc(1, sizeof(*c));
    if (!c) {
        shoal_err_set(errbuf, errlen, SHOAL_ERR_NOMEM, "out of memory");
        return NULL;
    }
    if (!opts)
        opts = &defaults;
    c->port = -1;
    c->fast = opts->unsafe_fast != 0;
    if (find_bindir(&c->bindir, errbuf, errlen) != SHOAL_OK)
        goto fail;
    if (geteuid() == 0 && lookup_postgres_user(c, errbuf, errlen) != SHOAL_OK)
        goto fail;
    if (create_dir(c, dir, errbuf, errlen) != SHOAL_OK)
        goto fail;
    c->datadir = path_join(c->dir, "data");
    c->sockdir = path_join(c->dir, "sock");
    c->log_path = path_join(c->dir, "postgres.log");
    c->initdb_log = path_join(c->dir, "initdb.log");
    c->pgpass = path_join(c->dir, "pgpass");
    if (!c->datadir || !c->sockdir || !c->log_path || !c->initdb_log || !c->pgpass) {
        shoal_err_set(errbuf, errlen, SHOAL_ERR_NOMEM, "out of memory");
        goto fail;
    }
    if (strlen(c->sockdir) + strlen("/.s.PGSQL.65535.lock") > UNIX_PATH_LIMIT)
        c->sockdir[0] = '\0'; /* too long for a Unix socket: TCP only */
    else if (make_dir(c, c->sockdir, errbuf, errlen) != SHOAL_OK)
        goto fail;

    char version[4096];
    snprintf(version, sizeof(version), "%s/PG_VERSION", c->datadir);
    if (access(version, F_OK) != 0) {
        if (make_dir(c, c->datadir, errbuf, errlen) != SHOAL_OK ||
            run_initdb(c, opts->trust, errbuf, errlen) != SHOAL_OK)
            goto fail;
    }
    if (start_server(c, 1, errbuf, errlen) != SHOAL_OK)
        goto fail;
    if (!(c->url = make_url(c))) {
        shoal_err_set(errbuf, errlen, SHOAL_ERR_NOMEM, "out of memory");
        goto fail;
    }
    return c;

fail:
    shoal_pgcluster_destroy(c);
    return NULL;
}

const char *shoal_pgcluster_url(const shoal_pgcluster_t *c)
{
    return c && c->url ? c->url : "";
}

int shoal_pgcluster_port(const shoal_pgcluster_t *c)
{
    return c ? c->port : -1;
}

pid_t shoal_pgcluster_pid(const shoal_pgcluster_t *c)
{
    return c && c->server ? shoal_proc_pid(c->server) : -1;
}

int shoal_pgcluster_alive(shoal_pgcluster_t *c)
{
    return c && c->server && shoal_proc_alive(c->server);
}

int shoal_pgcluster_durable(const shoal_pgcluster_t *c)
{
    return c && !c->fast;
}

const char *shoal_pgcluster_dir(const shoal_pgcluster_t *c)
{
    return c ? c->dir : "";
}

const char *shoal_pgcluster_log_path(const shoal_pgcluster_t *c)
{
    return c ? c->log_path : "";
}

shoal_err_t shoal_pgcluster_stop(shoal_pgcluster_t *c, int mode)
{
    if (!c || !c->server)
        return SHOAL_OK;
    static const int sigs[] = {SIGTERM, SIGINT, SIGQUIT, SIGKILL};
    int first = mode >= SHOAL_PGCLUSTER_SMART && mode <= SHOAL_PGCLUSTER_IMMEDIATE
                    ? mode
                    : SHOAL_PGCLUSTER_FAST;
    for (int i = first; i < 4; i++) {
        if (shoal_proc_kill(c->server, sigs[i]) == SHOAL_ERR_NOTFOUND)
            break; /* already exited and reaped */
        int timeout = sigs[i] == SIGKILL   ? KILL_TIMEOUT_MS
                      : sigs[i] == SIGTERM ? SMART_TIMEOUT_MS
                                           : STOP_TIMEOUT_MS;
        if (shoal_proc_wait(c->server, timeout, NULL) == SHOAL_OK)
            break;
        shoal_log_debug("pgcluster", "server did not stop, escalating pid=%d signal=%d",
                        (int)shoal_proc_pid(c->server), sigs[i]);
    }
    if (shoal_proc_alive(c->server))
        return SHOAL_ERR_IO;
    shoal_log_debug("pgcluster", "stopped port=%d status=%d", c->port,
                    shoal_proc_exit_status(c->server));
    drop_server(c);
    return SHOAL_OK;
}

shoal_err_t shoal_pgcluster_start(shoal_pgcluster_t *c, char *errbuf, size_t errlen)
{
    if (!c)
        return shoal_err_set(errbuf, errlen, SHOAL_ERR_INVALID, "no cluster");
    if (c->server) {
        if (shoal_proc_alive(c->server))
            return SHOAL_OK;
        drop_server(c); /* crashed or killed from outside: start afresh */
    }
    shoal_err_t err = start_server(c, 0, errbuf, errlen);
    if (err != SHOAL_OK && errbuf && errlen > 0) {
        size_t n = strlen(errbuf);
        if (n < errlen)
            snprintf(errbuf + n, errlen - n, " (server log: %s)", c->log_path);
    }
    return err;
}

void shoal_pgcluster_destroy(shoal_pgcluster_t *c)
{
    if (!c)
        return;
    shoal_pgcluster_stop(c, SHOAL_PGCLUSTER_FAST);
    if (c->own_dir && c->dir)
        shoal_workdir_remove(c->dir);
    free(c->dir);
    free(c->bindir);
    free(c->datadir);
    free(c->sockdir);
    free(c->log_path);
    free(c->initdb_log);
    free(c->pgpass);
    free(c->url);
    free(c);
}
