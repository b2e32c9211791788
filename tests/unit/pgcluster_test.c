/*
 * stack/pgcluster: a throwaway cluster accepts connections, stops (fast,
 * immediate, killed from outside) and starts again on the same port with its
 * data, cleans up its directory, reuses a caller's directory, explains a
 * missing installation, and does not outlive a process that dies without
 * destroying it. A cluster with the default options is durable (a commit
 * survives SIGKILL of the postmaster without SET synchronous_commit) and
 * admits only clients that know its password, which stays in its 0600 file.
 */
#include "stack/pgcluster.h"

#include <errno.h>
#include <ftw.h>
#include <libpq-fe.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/log.h"
#include "tests/support/check.h"

static int dir_exists(const char *path)
{
    struct stat sb;
    return stat(path, &sb) == 0 && S_ISDIR(sb.st_mode);
}

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    remove(path);
    return 0;
}

static void rm_tree(const char *path)
{
    nftw(path, rm_entry, 16, FTW_DEPTH | FTW_PHYS | FTW_MOUNT);
}

/* A zombie counts as dead: it is only waiting for its new parent to reap it. */
static int pid_gone(pid_t pid)
{
    char path[64], buf[512];
    snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return 1;
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    const char *rp = strrchr(buf, ')');
    return !rp || rp[1] == '\0' || rp[2] == 'Z' || rp[2] == 'X';
}

static PGconn *connect_ok(const char *url)
{
    PGconn *conn = PQconnectdb(url);
    if (PQstatus(conn) != CONNECTION_OK)
        test_fail("connect: %s", PQerrorMessage(conn));
    return conn;
}

static void exec_ok(PGconn *conn, const char *sql)
{
    PGresult *res = PQexec(conn, sql);
    ExecStatusType st = PQresultStatus(res);
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK)
        test_fail("%s: %s", sql, PQerrorMessage(conn));
    PQclear(res);
}

/* The single value sql returns, as a string in out. */
static void query_value(PGconn *conn, const char *sql, char *out, size_t outlen)
{
    PGresult *res = PQexec(conn, sql);
    if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1)
        test_fail("%s: %s", sql, PQerrorMessage(conn));
    snprintf(out, outlen, "%s", PQgetvalue(res, 0, 0));
    PQclear(res);
}

static void test_lifecycle(void)
{
    char err[512], val[64];
    shoal_pgcluster_t *c = shoal_pgcluster_new(NULL, err, sizeof(err));
    if (!c)
        test_fail("new: %s", err);
    int port = shoal_pgcluster_port(c);
    assert_true(port > 0);
    assert_true(shoal_pgcluster_pid(c) > 0);
    char want[96];
    snprintf(want, sizeof(want), "postgresql://postgres@127.0.0.1:%d/postgres", port);
    assert_str_eq(shoal_pgcluster_url(c), want);
    char dir[512];
    snprintf(dir, sizeof(dir), "%s", shoal_pgcluster_dir(c));
    assert_true(dir_exists(dir));
    assert_true(access(shoal_pgcluster_log_path(c), R_OK) == 0);

    PGconn *conn = connect_ok(shoal_pgcluster_url(c));
    query_value(conn, "SELECT 1", val, sizeof(val));
    assert_str_eq(val, "1");
    query_value(conn, "SHOW fsync", val, sizeof(val));
    assert_str_eq(val, "off");
    query_value(conn, "SHOW max_connections", val, sizeof(val));
    assert_str_eq(val, "200");
    query_value(conn, "SHOW server_encoding", val, sizeof(val));
    assert_str_eq(val, "UTF8");
    exec_ok(conn, "CREATE TABLE t (x int); INSERT INTO t VALUES (42)");

    /* fast stop with a client connected */
    assert_int_eq(shoal_pgcluster_stop(c, SHOAL_PGCLUSTER_FAST), SHOAL_OK);
    assert_int_eq(shoal_pgcluster_pid(c), -1);
    assert_true(PQping(shoal_pgcluster_url(c)) != PQPING_OK);
    PGresult *res = PQexec(conn, "SELECT 1");
    assert_true(PQresultStatus(res) != PGRES_TUPLES_OK);
    PQclear(res);
    PQfinish(conn);
    assert_int_eq(shoal_pgcluster_stop(c, SHOAL_PGCLUSTER_FAST), SHOAL_OK); /* idempotent */

    assert_int_eq(shoal_pgcluster_start(c, err, sizeof(err)), SHOAL_OK);
    assert_int_eq(shoal_pgcluster_port(c), port);
    assert_int_eq(shoal_pgcluster_start(c, err, sizeof(err)), SHOAL_OK); /* already running */
    conn = connect_ok(shoal_pgcluster_url(c));
    query_value(conn, "SELECT x FROM t", val, sizeof(val));
    assert_str_eq(val, "42");
    /* synchronous_commit=off may lose the last commits in a crash; this one
     * is made durable explicitly */
    exec_ok(conn, "SET synchronous_commit = on; INSERT INTO t VALUES (43)");

    /* immediate stop: crash recovery on the next start keeps durable rows */
    assert_int_eq(shoal_pgcluster_stop(c, SHOAL_PGCLUSTER_IMMEDIATE), SHOAL_OK);
    PQfinish(conn);
    if (shoal_pgcluster_start(c, err, sizeof(err)) != SHOAL_OK)
        test_fail("start after immediate stop: %s", err);
    conn = connect_ok(shoal_pgcluster_url(c));
    query_value(conn, "SELECT count(*) FROM t", val, sizeof(val));
    assert_str_eq(val, "2");

    /* the postmaster killed from outside, a client still connected */
    pid_t pid = shoal_pgcluster_pid(c);
    assert_int_eq(kill(pid, SIGKILL), 0);
    assert_wait(pid_gone(pid), 10, "the killed postmaster to die");
    if (shoal_pgcluster_start(c, err, sizeof(err)) != SHOAL_OK)
        test_fail("start after SIGKILL: %s", err);
    assert_true(shoal_pgcluster_pid(c) != pid);
    PQfinish(conn);
    conn = connect_ok(shoal_pgcluster_url(c));
    query_value(conn, "SELECT count(*) FROM t", val, sizeof(val));
    assert_str_eq(val, "2");
    PQfinish(conn);

    /* smart stop with no client left */
    assert_int_eq(shoal_pgcluster_stop(c, SHOAL_PGCLUSTER_SMART), SHOAL_OK);
    assert_int_eq(shoal_pgcluster_pid(c), -1);
    assert_int_eq(shoal_pgcluster_start(c, err, sizeof(err)), SHOAL_OK);

    shoal_pgcluster_destroy(c);
    assert_true(!dir_exists(dir));
    assert_true(PQping(want) != PQPING_OK);
}

/* A dir that does not exist is created and removed; an existing one is kept
 * and its cluster reused. */
static void test_given_dir(void)
{
    char base[] = "/tmp/shoal-pgc-test-XXXXXX";
    assert_true(mkdtemp(base) != NULL);
    assert_int_eq(chmod(base, 0755), 0); /* the server's user must reach it */
    char err[512], sub[600], val[64];

    snprintf(sub, sizeof(sub), "%s/new", base);
    shoal_pgcluster_t *c = shoal_pgcluster_new(sub, err, sizeof(err));
    if (!c)
        test_fail("new(%s): %s", sub, err);
    assert_str_eq(shoal_pgcluster_dir(c), sub);
    shoal_pgcluster_destroy(c);
    assert_true(!dir_exists(sub));

    c = shoal_pgcluster_new(base, err, sizeof(err));
    if (!c)
        test_fail("new(%s): %s", base, err);
    PGconn *conn = connect_ok(shoal_pgcluster_url(c));
    exec_ok(conn, "CREATE TABLE kept (x int)");
    PQfinish(conn);
    shoal_pgcluster_destroy(c);
    assert_true(dir_exists(base));

    c = shoal_pgcluster_new(base, err, sizeof(err));
    if (!c)
        test_fail("new(%s) again: %s", base, err);
    conn = connect_ok(shoal_pgcluster_url(c));
    query_value(conn, "SELECT count(*) FROM kept", val, sizeof(val));
    assert_str_eq(val, "0");
    PQfinish(conn);
    shoal_pgcluster_destroy(c);
    assert_true(dir_exists(base));
    rm_tree(base);
}

static void test_errors(void)
{
    char err[512] = "";
    assert_int_eq(setenv("SHOAL_PG_BINDIR", "/nonexistent/bin", 1), 0);
    shoal_pgcluster_t *c = shoal_pgcluster_new(NULL, err, sizeof(err));
    assert_true(c == NULL);
    assert_str_contains(err, "SHOAL_PG_BINDIR");
    assert_int_eq(unsetenv("SHOAL_PG_BINDIR"), 0);

    c = shoal_pgcluster_new("/nonexistent/parent/dir", err, sizeof(err));
    assert_true(c == NULL);
    assert_str_contains(err, "could not create directory");

    if (geteuid() == 0) {
        /* a directory the server's user cannot enter */
        char base[] = "/tmp/shoal-pgc-test-XXXXXX";
        assert_true(mkdtemp(base) != NULL);
        char sub[600];
        snprintf(sub, sizeof(sub), "%s/inner", base);
        c = shoal_pgcluster_new(sub, err, sizeof(err));
        assert_true(c == NULL);
        assert_str_contains(err, "accessible to user postgres");
        rm_tree(base);
    }

    shoal_pgcluster_destroy(NULL);
    assert_int_eq(shoal_pgcluster_stop(NULL, SHOAL_PGCLUSTER_FAST), SHOAL_OK);
    assert_int_eq(shoal_pgcluster_pid(NULL), -1);
}

/* A process that dies without destroy takes its server with it. */
static void test_parent_death(void)
{
    struct {
        pid_t pid;
        char dir[512];
    } info;
    memset(&info, 0, sizeof(info));
    int fds[2];
    assert_true(pipe(fds) == 0);
    pid_t mid = fork();
    assert_true(mid >= 0);
    if (mid == 0) {
        close(fds[0]);
        char err[512];
        shoal_pgcluster_t *c = shoal_pgcluster_new(NULL, err, sizeof(err));
        if (!c) {
            fprintf(stderr, "new in child: %s\n", err);
            _exit(1);
        }
        info.pid = shoal_pgcluster_pid(c);
        snprintf(info.dir, sizeof(info.dir), "%s", shoal_pgcluster_dir(c));
        ssize_t w = write(fds[1], &info, sizeof(info));
        _exit(w == (ssize_t)sizeof(info) ? 0 : 1);
    }
    close(fds[1]);
    assert_int_eq(read(fds[0], &info, sizeof(info)), sizeof(info));
    close(fds[0]);
    int st;
    assert_int_eq(waitpid(mid, &st, 0), mid);
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    assert_true(info.pid > 0);
    assert_wait(pid_gone(info.pid), 30, "the server to shut down after its parent died");
    assert_true(dir_exists(info.dir));
    rm_tree(info.dir);
}

/* The whole text of a small file into buf ("" when unreadable). */
static void read_file(const char *path, char *buf, size_t len)
{
    buf[0] = '\0';
    FILE *f = fopen(path, "r");
    if (!f)
        return;
    size_t n = fread(buf, 1, len - 1, f);
    buf[n] = '\0';
    fclose(f);
}

static void connect_fails(const char *conninfo, const char *why)
{
    PGconn *conn = PQconnectdb(conninfo);
    if (PQstatus(conn) == CONNECTION_OK)
        test_fail("connected without %s", why);
    PQfinish(conn);
}

static void test_durable_password(void)
{
    char base[] = "/tmp/shoal-pgc-test-XXXXXX";
    assert_true(mkdtemp(base) != NULL);
    assert_int_eq(chmod(base, 0755), 0); /* the server's user must reach it */
    /* A ~/.pgpass of the user running the tests must not let us in. */
    assert_int_eq(setenv("PGPASSFILE", "/nonexistent/pgpass", 1), 0);
    char err[512], val[64], pgpass[700], text[4096], conninfo[1024];

    shoal_pgcluster_t *c = shoal_pgcluster_new_opts(base, NULL, err, sizeof(err));
    if (!c)
        test_fail("new_opts: %s", err);
    assert_int_eq(shoal_pgcluster_durable(c), 1);
    int port = shoal_pgcluster_port(c);
    snprintf(pgpass, sizeof(pgpass), "%s/pgpass", base);
    struct stat sb;
    assert_int_eq(stat(pgpass, &sb), 0);
    assert_int_eq(sb.st_mode & 0777, 0600);
    read_file(pgpass, text, sizeof(text));
    assert_true(strncmp(text, "*:*:*:postgres:", 15) == 0);
    char password[128];
    snprintf(password, sizeof(password), "%.*s", (int)strcspn(text + 15, "\n"), text + 15);
    assert_int_eq(strlen(password), 48);
    char want[1024];
    snprintf(want, sizeof(want), "postgresql://postgres@127.0.0.1:%d/postgres?passfile=%s", port,
             pgpass);
    assert_str_eq(shoal_pgcluster_url(c), want);
    snprintf(conninfo, sizeof(conninfo), "%s/initdb.pw", base);
    assert_true(access(conninfo, F_OK) != 0);

    /* Who may connect: the URL's password file, or the password itself. */
    snprintf(conninfo, sizeof(conninfo), "postgresql://postgres@127.0.0.1:%d/postgres", port);
    connect_fails(conninfo, "a password over TCP");
    snprintf(conninfo, sizeof(conninfo),
             "postgresql://postgres:not-the-password@127.0.0.1:%d/postgres", port);
    connect_fails(conninfo, "the right password");
    snprintf(conninfo, sizeof(conninfo), "host=%s/sock port=%d user=postgres dbname=postgres", base,
             port);
    connect_fails(conninfo, "a password over the Unix socket");
    snprintf(conninfo, sizeof(conninfo), "postgresql://postgres:%s@127.0.0.1:%d/postgres", password,
             port);
    PGconn *conn = connect_ok(conninfo);
    PQfinish(conn);

    conn = connect_ok(shoal_pgcluster_url(c));
    const char *settings[] = {"fsync", "synchronous_commit", "full_page_writes"};
    for (size_t i = 0; i < 3; i++) {
        char sql[64];
        snprintf(sql, sizeof(sql), "SHOW %s", settings[i]);
        query_value(conn, sql, val, sizeof(val));
        assert_str_eq(val, "on");
    }
    /* A plain commit, then SIGKILL of the postmaster: the row survives. */
    exec_ok(conn, "CREATE TABLE t (x int); INSERT INTO t VALUES (1)");
    pid_t pid = shoal_pgcluster_pid(c);
    assert_int_eq(kill(pid, SIGKILL), 0);
    assert_wait(pid_gone(pid), 10, "the killed postmaster to die");
    PQfinish(conn);
    if (shoal_pgcluster_start(c, err, sizeof(err)) != SHOAL_OK)
        test_fail("start after SIGKILL: %s", err);
    conn = connect_ok(shoal_pgcluster_url(c));
    query_value(conn, "SELECT count(*) FROM t", val, sizeof(val));
    assert_str_eq(val, "1");
    PQfinish(conn);
    shoal_pgcluster_destroy(c);

    /* Reused, even asked for trust, it keeps its password. */
    shoal_pgcluster_opts_t fast = {.unsafe_fast = 1, .trust = 1};
    c = shoal_pgcluster_new_opts(base, &fast, err, sizeof(err));
    if (!c)
        test_fail("new_opts again: %s", err);
    assert_int_eq(shoal_pgcluster_durable(c), 0);
    assert_true(strstr(shoal_pgcluster_url(c), "?passfile=") != NULL);
    snprintf(conninfo, sizeof(conninfo), "postgresql://postgres@127.0.0.1:%d/postgres",
             shoal_pgcluster_port(c));
    connect_fails(conninfo, "a password after reuse");
    conn = connect_ok(shoal_pgcluster_url(c));
    query_value(conn, "SHOW fsync", val, sizeof(val));
    assert_str_eq(val, "off");
    query_value(conn, "SELECT count(*) FROM t", val, sizeof(val));
    assert_str_eq(val, "1");
    PQfinish(conn);
    shoal_pgcluster_destroy(c);

    /* The password is in no log. */
    const char *logs[] = {"postgres.log", "initdb.log"};
    for (size_t i = 0; i < 2; i++) {
        static char logtext[1 << 20];
        char path[700];
        snprintf(path, sizeof(path), "%s/%s", base, logs[i]);
        read_file(path, logtext, sizeof(logtext));
        assert_true(logtext[0] != '\0');
        assert_true(strstr(logtext, password) == NULL);
    }
    assert_int_eq(unsetenv("PGPASSFILE"), 0);
    rm_tree(base);
}

int main(void)
{
    shoal_log_init("pgcluster_test", SHOAL_LOG_DEBUG, 0);
    test_lifecycle();
    test_durable_password();
    test_given_dir();
    test_errors();
    test_parent_death();
    printf("pgcluster_test ok\n");
    return 0;
}
