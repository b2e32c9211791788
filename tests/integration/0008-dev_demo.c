/*
 * The run command's path: `shoal dev --demo` starts its own stack, runs the
 * sample job end to end, prints the merged output and the SQL summary, writes
 * and then removes its connection file, stops everything it started, and
 * ends with the RESULT line.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tests/support/check.h"
#include "tests/support/harness.h"

int main(void)
{
    char home[] = "/tmp/shoal-home-XXXXXX", cmd[2048], out[1 << 16], envfile[512];
    assert_true(mkdtemp(home) != NULL);
    snprintf(cmd, sizeof(cmd),
             "SHOAL_HOME=%s SHOAL_EXAMPLES=%s/examples %s dev --demo --sim-latency-ms 5 2>&1", home,
             SHOAL_SOURCE_DIR, harness_bin("shoal"));
    FILE *p = popen(cmd, "r");
    assert_true(p != NULL);
    size_t n = fread(out, 1, sizeof(out) - 1, p);
    out[n] = '\0';
    int st = pclose(p);
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
        test_fail("shoal dev --demo failed (status %d):\n%s", st, out);

    assert_str_contains(out, "export SHOAL_BOOTSTRAP='127.0.0.1:");
    assert_str_contains(out, "export SHOAL_PG='postgresql://");
    assert_str_contains(out, "job demo completed: 6/6 tasks done");
    assert_str_contains(out, "a cordless drill"); /* the last item, in the merged output */
    assert_str_contains(out, "model=sim-small calls=6");
    /* Where its stack lived: "# ... logs in <workdir>/logs". */
    char workdir[512] = "";
    const char *w = strstr(out, "logs in ");
    assert_true(w != NULL);
    snprintf(workdir, sizeof(workdir), "%.*s", (int)strcspn(w + 8, "\n"), w + 8);
    assert_true(strlen(workdir) > 5 && !strcmp(workdir + strlen(workdir) - 5, "/logs"));
    workdir[strlen(workdir) - 5] = '\0';

    /* The last line is the RESULT line. */
    while (n > 0 && out[n - 1] == '\n')
        out[--n] = '\0';
    char *last = strrchr(out, '\n');
    assert_str_eq(last ? last + 1 : out,
                  "RESULT bench=demo job=demo status=completed tasks=6 results=6");

    /* It cleaned up after itself. */
    snprintf(envfile, sizeof(envfile), "%s/dev.env", home);
    assert_true(access(envfile, F_OK) != 0);
    assert_true(access(workdir, F_OK) != 0);
    /* "[/]tmp/..." matches the path but not this shell's own command line. */
    snprintf(cmd, sizeof(cmd), "pgrep -f '[%c]%s' >/dev/null", workdir[0], workdir + 1);
    assert_int_eq(system(cmd), 256); /* pgrep: no process matched */
    rmdir(home);
    fprintf(stderr, "ok\n");
    return 0;
}
