/*
 * stack/proc: spawning with a log file and extra environment, exit statuses,
 * stop with and without a cooperative child, exec failures reported by spawn,
 * waiting for a log line, and children dying with the process that spawned
 * them.
 */
#include "stack/proc.h"

#include <errno.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tests/support/check.h"

static char tmpdir[] = "/tmp/shoal-proc-test-XXXXXX";

static void path_in_tmp(char *buf, size_t len, const char *name)
{
    snprintf(buf, len, "%s/%s", tmpdir, name);
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

static void test_echo_and_stop(void)
{
    char log[512], line[256], err[256];
    path_in_tmp(log, sizeof(log), "echo.log");
    char *argv[] = {"/bin/sh", "-c", "echo hello; sleep 30", NULL};
    shoal_proc_t *p = shoal_proc_spawn("echo", argv, NULL, log, err, sizeof(err));
    if (!p)
        test_fail("spawn: %s", err);
    assert_str_eq(shoal_proc_name(p), "echo");
    assert_true(shoal_proc_pid(p) > 0);
    assert_int_eq(shoal_proc_wait_file_line(log, "hello", 10000, line, sizeof(line)), SHOAL_OK);
    assert_str_eq(line, "hello");
    assert_true(shoal_proc_alive(p));
    assert_int_eq(shoal_proc_exit_status(p), -1);
    int st = -2;
    assert_int_eq(shoal_proc_wait(p, 50, &st), SHOAL_ERR_RETRY);
    assert_int_eq(st, -2);

    /* The shell dies from SIGTERM long before the grace ends: 128 + 15. */
    assert_int_eq(shoal_proc_stop(p, 20000), SHOAL_OK);
    assert_true(!shoal_proc_alive(p));
    assert_int_eq(shoal_proc_exit_status(p), 128 + SIGTERM);
    assert_int_eq(shoal_proc_wait(p, 0, &st), SHOAL_OK);
    assert_int_eq(st, 128 + SIGTERM);
    assert_int_eq(shoal_proc_kill(p, SIGTERM), SHOAL_ERR_NOTFOUND);
    assert_int_eq(shoal_proc_stop(p, 0), SHOAL_OK);
    shoal_proc_destroy(p);
}

static void test_exit_code(void)
{
    char err[256];
    char *argv[] = {"sh", "-c", "exit 3", NULL};
    shoal_proc_t *p = shoal_proc_spawn(NULL, argv, NULL, NULL, err, sizeof(err));
    if (!p)
        test_fail("spawn: %s", err);
    assert_str_eq(shoal_proc_name(p), "sh");
    int st = -1;
    assert_int_eq(shoal_proc_wait(p, 10000, &st), SHOAL_OK);
    assert_int_eq(st, 3);
    assert_int_eq(shoal_proc_exit_status(p), 3);
    shoal_proc_destroy(p);

    char *argv0[] = {"true", NULL};
    p = shoal_proc_spawn("true", argv0, NULL, NULL, err, sizeof(err));
    assert_true(p != NULL);
    assert_int_eq(shoal_proc_wait(p, -1, &st), SHOAL_OK);
    assert_int_eq(st, 0);
    shoal_proc_destroy(p);
}

/* A child that ignores SIGTERM is killed when the grace ends. */
static void test_stop_escalates(void)
{
    char log[512], err[256];
    path_in_tmp(log, sizeof(log), "stubborn.log");
    char *argv[] = {"/bin/sh", "-c", "trap '' TERM; echo ready; exec sleep 30", NULL};
    shoal_proc_t *p = shoal_proc_spawn("stubborn", argv, NULL, log, err, sizeof(err));
    if (!p)
        test_fail("spawn: %s", err);
    assert_int_eq(shoal_proc_wait_file_line(log, "ready", 10000, NULL, 0), SHOAL_OK);
    assert_int_eq(shoal_proc_kill(p, SIGTERM), SHOAL_OK);
    assert_int_eq(shoal_proc_wait(p, 200, NULL), SHOAL_ERR_RETRY);
    assert_int_eq(shoal_proc_stop(p, 200), SHOAL_OK);
    assert_int_eq(shoal_proc_exit_status(p), 128 + SIGKILL);
    shoal_proc_destroy(p);
}

static void test_env_and_append(void)
{
    char log[512], line[256], err[256];
    path_in_tmp(log, sizeof(log), "env.log");
    FILE *f = fopen(log, "w");
    assert_true(f != NULL);
    fputs("first line\n", f);
    fclose(f);

    assert_int_eq(setenv("SHOAL_PROC_TEST_KEEP", "kept", 1), 0);
    assert_int_eq(setenv("SHOAL_PROC_TEST_OVER", "old", 1), 0);
    char *env[] = {"SHOAL_PROC_TEST_NEW=fresh", "SHOAL_PROC_TEST_OVER=new", NULL};
    char *argv[] = {
        "/bin/sh", "-c",
        "echo \"vars $SHOAL_PROC_TEST_KEEP $SHOAL_PROC_TEST_NEW $SHOAL_PROC_TEST_OVER\";"
        " echo oops >&2; read x; echo \"stdin=[$x]\"",
        NULL};
    shoal_proc_t *p = shoal_proc_spawn("env", argv, env, log, err, sizeof(err));
    if (!p)
        test_fail("spawn: %s", err);
    int st = -1;
    assert_int_eq(shoal_proc_wait(p, 10000, &st), SHOAL_OK);
    assert_int_eq(st, 0);
    shoal_proc_destroy(p);

    assert_int_eq(shoal_proc_wait_file_line(log, "first", 0, line, sizeof(line)), SHOAL_OK);
    assert_str_eq(line, "first line");
    assert_int_eq(shoal_proc_wait_file_line(log, "vars", 0, line, sizeof(line)), SHOAL_OK);
    assert_str_eq(line, "vars kept fresh new");
    assert_int_eq(shoal_proc_wait_file_line(log, "oops", 0, line, sizeof(line)), SHOAL_OK);
    /* stdin is /dev/null, so read gets nothing and never blocks */
    assert_int_eq(shoal_proc_wait_file_line(log, "stdin=", 0, line, sizeof(line)), SHOAL_OK);
    assert_str_eq(line, "stdin=[]");
    /* truncated copy when out is small */
    char small[5];
    assert_int_eq(shoal_proc_wait_file_line(log, "vars", 0, small, sizeof(small)), SHOAL_OK);
    assert_str_eq(small, "vars");

    char *bad_env[] = {"NOEQUALS", NULL};
    p = shoal_proc_spawn("env", argv, bad_env, log, err, sizeof(err));
    assert_true(p == NULL);
    assert_str_contains(err, "KEY=VALUE");
}

static void test_cwd(void)
{
    char log[512], line[512], err[256];
    path_in_tmp(log, sizeof(log), "cwd.log");
    char *argv[] = {"/bin/sh", "-c", "echo \"cwd=$(pwd)\"", NULL};
    shoal_proc_opts_t opts = {.log_path = log, .cwd = tmpdir};
    shoal_proc_t *p = shoal_proc_spawn_opts("cwd", argv, &opts, err, sizeof(err));
    if (!p)
        test_fail("spawn: %s", err);
    assert_int_eq(shoal_proc_wait(p, 10000, NULL), SHOAL_OK);
    shoal_proc_destroy(p);
    assert_int_eq(shoal_proc_wait_file_line(log, "cwd=", 0, line, sizeof(line)), SHOAL_OK);
    assert_str_contains(line, tmpdir);

    opts.cwd = "/nonexistent-shoal-dir";
    p = shoal_proc_spawn_opts("cwd", argv, &opts, err, sizeof(err));
    assert_true(p == NULL);
    assert_str_contains(err, "working directory");
}

static void test_spawn_errors(void)
{
    char err[256] = "";
    char *argv[] = {"/nonexistent/shoal-no-such-binary", NULL};
    shoal_proc_t *p = shoal_proc_spawn("ghost", argv, NULL, NULL, err, sizeof(err));
    assert_true(p == NULL);
    assert_str_contains(err, "cannot execute");
    assert_str_contains(err, "shoal-no-such-binary");
    assert_str_contains(err, "No such file");

    err[0] = '\0';
    char *argv2[] = {"shoal-no-such-binary-in-path", NULL};
    p = shoal_proc_spawn(NULL, argv2, NULL, NULL, err, sizeof(err));
    assert_true(p == NULL);
    assert_str_contains(err, "No such file");

    err[0] = '\0';
    char *argv3[] = {"/bin/true", NULL};
    p = shoal_proc_spawn("t", argv3, NULL, "/nonexistent-dir/x.log", err, sizeof(err));
    assert_true(p == NULL);
    assert_str_contains(err, "could not open log file");

    char *empty[] = {NULL};
    p = shoal_proc_spawn("t", empty, NULL, NULL, err, sizeof(err));
    assert_true(p == NULL);

    shoal_proc_opts_t opts = {.user = "shoal-no-such-user"};
    p = shoal_proc_spawn_opts("t", argv3, &opts, err, sizeof(err));
    assert_true(p == NULL);
    assert_str_contains(err, "shoal-no-such-user");

    /* NULL handles are harmless */
    shoal_proc_destroy(NULL);
    assert_true(!shoal_proc_alive(NULL));
    assert_int_eq(shoal_proc_pid(NULL), -1);
    assert_int_eq(shoal_proc_kill(NULL, SIGTERM), SHOAL_ERR_NOTFOUND);
}

static void test_wait_file_line(void)
{
    char path[512], line[64];
    path_in_tmp(path, sizeof(path), "late.log");
    /* missing file: times out, no error */
    assert_int_eq(shoal_proc_wait_file_line(path, "x", 100, line, sizeof(line)), SHOAL_ERR_RETRY);

    /* a partial line does not match until its newline arrives */
    FILE *f = fopen(path, "w");
    assert_true(f != NULL);
    fputs("noise\r\nlistening port=12", f);
    fflush(f);
    assert_int_eq(shoal_proc_wait_file_line(path, "listening", 100, line, sizeof(line)),
                  SHOAL_ERR_RETRY);
    fputs("345\n", f);
    fclose(f);
    assert_int_eq(shoal_proc_wait_file_line(path, "listening", 100, line, sizeof(line)), SHOAL_OK);
    assert_str_eq(line, "listening port=12345");
    assert_int_eq(shoal_proc_wait_file_line(path, "noise", 0, line, sizeof(line)), SHOAL_OK);
    assert_str_eq(line, "noise");

    /* a writer that appears later is picked up while waiting */
    char cmd[700];
    snprintf(cmd, sizeof(cmd), "sleep 0.3; echo 'ready at last' >> %s", path);
    char *argv[] = {"/bin/sh", "-c", cmd, NULL};
    char err[256];
    shoal_proc_t *p = shoal_proc_spawn("late", argv, NULL, NULL, err, sizeof(err));
    if (!p)
        test_fail("spawn: %s", err);
    assert_int_eq(shoal_proc_wait_file_line(path, "at last", 10000, line, sizeof(line)), SHOAL_OK);
    assert_str_eq(line, "ready at last");
    shoal_proc_destroy(p);

    assert_int_eq(shoal_proc_wait_file_line(tmpdir, "x", 0, NULL, 0), SHOAL_ERR_IO);
}

static void test_self_dir(void)
{
    char *dir = shoal_proc_self_dir();
    assert_true(dir != NULL);
    assert_true(dir[0] == '/');
    char exe[4096];
    snprintf(exe, sizeof(exe), "%s/proc_test", dir);
    assert_true(access(exe, X_OK) == 0);
    free(dir);
}

/* A child outlives neither a crashed spawner nor an exited one. */
static void test_parent_death(void)
{
    int fds[2];
    assert_true(pipe(fds) == 0);
    pid_t mid = fork();
    assert_true(mid >= 0);
    if (mid == 0) {
        close(fds[0]);
        char *argv[] = {"sleep", "60", NULL};
        shoal_proc_t *p = shoal_proc_spawn("orphan", argv, NULL, NULL, NULL, 0);
        pid_t pid = shoal_proc_pid(p);
        ssize_t w = write(fds[1], &pid, sizeof(pid));
        _exit(w == (ssize_t)sizeof(pid) ? 0 : 1);
    }
    close(fds[1]);
    pid_t orphan = -1;
    assert_int_eq(read(fds[0], &orphan, sizeof(orphan)), sizeof(orphan));
    close(fds[0]);
    int st;
    assert_int_eq(waitpid(mid, &st, 0), mid);
    assert_true(orphan > 0);
    assert_wait(pid_gone(orphan), 10, "the orphaned child to die with its parent");
}

static void test_run_as_user(void)
{
    if (geteuid() != 0)
        return;
    struct passwd *pw = getpwnam("postgres");
    if (!pw)
        pw = getpwnam("nobody");
    if (!pw)
        return;
    char log[512], line[64], want[64], err[256];
    path_in_tmp(log, sizeof(log), "user.log");
    char *argv[] = {"id", "-u", NULL};
    shoal_proc_opts_t opts = {.log_path = log, .user = pw->pw_name, .cwd = "/"};
    shoal_proc_t *p = shoal_proc_spawn_opts("id", argv, &opts, err, sizeof(err));
    if (!p)
        test_fail("spawn as %s: %s", pw->pw_name, err);
    int st = -1;
    assert_int_eq(shoal_proc_wait(p, 10000, &st), SHOAL_OK);
    assert_int_eq(st, 0);
    shoal_proc_destroy(p);
    snprintf(want, sizeof(want), "%u", (unsigned)pw->pw_uid);
    assert_int_eq(shoal_proc_wait_file_line(log, want, 0, line, sizeof(line)), SHOAL_OK);
    assert_str_eq(line, want);
}

static void rm_tmp(void)
{
    const char *names[] = {"echo.log", "stubborn.log", "env.log",
                           "late.log", "user.log",     "cwd.log"};
    char path[512];
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        path_in_tmp(path, sizeof(path), names[i]);
        unlink(path);
    }
    assert_true(rmdir(tmpdir) == 0);
}

int main(void)
{
    assert_true(mkdtemp(tmpdir) != NULL);
    test_echo_and_stop();
    test_exit_code();
    test_stop_escalates();
    test_env_and_append();
    test_cwd();
    test_spawn_errors();
    test_wait_file_line();
    test_self_dir();
    test_parent_death();
    test_run_as_user();
    rm_tmp();
    printf("proc_test ok\n");
    return 0;
}
