/*
 * `shoal dev` and the CLI for integration tests (see devcli.h).
 */
#include "tests/support/devcli.h"

#include <signal.h>
#include <stdio.h>
#include <sys/wait.h>

#include "tests/support/check.h"
#include "tests/support/harness.h"

int devcli_run(char *out, size_t outlen, const char *home, const char *cmd)
{
    char full[4096];
    snprintf(full, sizeof(full),
             "env -u SHOAL_BOOTSTRAP -u SHOAL_PG -u SHOAL_MODELS -u SHOAL_SIM_URL "
             "SHOAL_HOME=%s %s 2>&1",
             home, cmd);
    FILE *p = popen(full, "r");
    assert_true(p != NULL);
    size_t n = fread(out, 1, outlen - 1, p);
    out[n] = '\0';
    int st = pclose(p);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

shoal_proc_t *devcli_start(const char *home, const char *workdir, const char *const *extra,
                           const char *log)
{
    char homeenv[600], logbuf[700], err[512];
    snprintf(homeenv, sizeof(homeenv), "SHOAL_HOME=%s", home);
    if (!log) {
        snprintf(logbuf, sizeof(logbuf), "%s.out", workdir);
        log = logbuf;
    }
    char *argv[24];
    int n = 0;
    argv[n++] = (char *)harness_bin("shoal");
    argv[n++] = "dev";
    argv[n++] = "--workers";
    argv[n++] = "1";
    argv[n++] = "--sim-latency-ms";
    argv[n++] = "5";
    argv[n++] = "--workdir";
    argv[n++] = (char *)workdir;
    for (int i = 0; extra && extra[i] && n < 23; i++)
        argv[n++] = (char *)extra[i];
    argv[n] = NULL;
    char *env[] = {homeenv, NULL};
    shoal_proc_t *p = shoal_proc_spawn("shoal-dev", argv, env, log, err, sizeof(err));
    if (!p)
        test_fail("could not start shoal dev: %s", err);
    if (shoal_proc_wait_file_line(log, "shoal dev is running", 90000, NULL, 0) != SHOAL_OK)
        test_fail("shoal dev did not come up (see %s)", log);
    return p;
}

void devcli_stop(shoal_proc_t *p)
{
    int status = -1;
    assert_int_eq(shoal_proc_kill(p, SIGINT), SHOAL_OK);
    assert_int_eq(shoal_proc_wait(p, 60000, &status), SHOAL_OK);
    assert_int_eq(status, 0);
    shoal_proc_destroy(p);
}
