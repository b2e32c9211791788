/*
 * `shoal dev` without --demo: it writes its connection settings to
 * $SHOAL_HOME/dev.env, where the other commands find them with no flags and
 * no SHOAL_* variables set; a job submitted that way completes and its
 * results print; Ctrl-C (SIGINT) stops every process it started, removes its
 * work directory and the file, and exits 0.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "stack/proc.h"
#include "tests/support/check.h"
#include "tests/support/devcli.h"
#include "tests/support/harness.h"

int main(void)
{
    char home[] = "/tmp/shoal-home-XXXXXX", envfile[512], homeenv[600], log[600], err[512];
    char out[1 << 14], line[1024], job[1024];
    assert_true(mkdtemp(home) != NULL);
    snprintf(envfile, sizeof(envfile), "%s/dev.env", home);
    snprintf(homeenv, sizeof(homeenv), "SHOAL_HOME=%s", home);
    snprintf(log, sizeof(log), "%s/dev.out", home);

    char *argv[] = {(char *)harness_bin("shoal"), "dev", "--sim-latency-ms", "5", NULL};
    char *env[] = {homeenv, NULL};
    shoal_proc_t *dev = shoal_proc_spawn("shoal-dev", argv, env, log, err, sizeof(err));
    if (!dev)
        test_fail("could not start shoal dev: %s", err);
    if (shoal_proc_wait_file_line(log, "shoal dev is running", 60000, NULL, 0) != SHOAL_OK)
        test_fail("shoal dev did not come up (see %s)", log);
    assert_int_eq(shoal_proc_wait_file_line(envfile, "export SHOAL_PG=", 1000, line, sizeof(line)),
                  SHOAL_OK);
    assert_int_eq(shoal_proc_wait_file_line(log, "logs in ", 1000, line, sizeof(line)), SHOAL_OK);
    /* "... logs in <workdir>/logs": the work directory without "/logs". */
    char workdir[512];
    const char *wd = strstr(line, "logs in ") + strlen("logs in ");
    assert_true(strlen(wd) > strlen("/logs"));
    snprintf(workdir, sizeof(workdir), "%.*s", (int)(strlen(wd) - strlen("/logs")), wd);
    assert_true(strstr(workdir, "/logs") == NULL);
    assert_true(access(workdir, F_OK) == 0);

    /* Submit, wait and read results through dev.env alone. */
    char *text = harness_job("via-env", 8, 2, NULL);
    snprintf(job, sizeof(job), "%s/job.json", home);
    FILE *f = fopen(job, "w");
    assert_true(f != NULL);
    fputs(text, f);
    assert_true(fclose(f) == 0);
    free(text);
    snprintf(line, sizeof(line), "%s submit --wait %s", harness_bin("shoal"), job);
    int rc = devcli_run(out, sizeof(out), home, line);
    if (rc != 0)
        test_fail("submit --wait exited %d:\n%s", rc, out);
    assert_str_contains(out, "job via-env completed: 4/4 tasks done");
    snprintf(line, sizeof(line), "%s results via-env", harness_bin("shoal"));
    assert_int_eq(devcli_run(out, sizeof(out), home, line), 0);
    assert_str_contains(out, "item-00000");
    assert_str_contains(out, "item-00007");

    /* Ctrl-C: everything stops and is cleaned up. */
    assert_int_eq(shoal_proc_kill(dev, SIGINT), SHOAL_OK);
    int status = -1;
    assert_int_eq(shoal_proc_wait(dev, 60000, &status), SHOAL_OK);
    assert_int_eq(status, 0);
    assert_true(access(envfile, F_OK) != 0);
    assert_true(access(workdir, F_OK) != 0);
    char cmd[700];
    snprintf(cmd, sizeof(cmd), "pgrep -f '[%c]%s' >/dev/null", workdir[0], workdir + 1);
    assert_int_eq(system(cmd), 256); /* pgrep: no process matched */
    shoal_proc_destroy(dev);
    unlink(job);
    unlink(log);
    rmdir(home);
    fprintf(stderr, "ok\n");
    return 0;
}
