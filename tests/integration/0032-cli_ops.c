/*
 * The CLI never leaves a user guessing, on a running stack:
 * - submit with Kafka unreachable says so in one line and exits 1 (librdkafka's
 *   own log lines stay out of it) instead of retrying for 30 s;
 * - status --follow on a job that does not exist says so and exits 4, while a
 *   job submitted a moment before is followed to its end;
 * - costs print with four significant digits ($0.0000 said nothing);
 * - a finished job's elapsed time is submitted-to-finished, a rejected one's 0;
 * - `shoal top --once` prints the model and the job's numbers; `shoal top`
 *   under tmux (fixed size, then a narrow one, then TERM=dumb) shows them,
 *   cuts lines instead of wrapping, and quits on q with exit 0.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/usd.h"
#include "tests/support/check.h"
#include "tests/support/harness.h"

static char out[1 << 16];

/* Writes text to a new file under dir; returns its path (static buffer). */
static const char *write_file(const char *dir, const char *name, const char *text)
{
    static char path[600];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    assert_true(f != NULL);
    assert_true(fputs(text, f) >= 0);
    assert_int_eq(fclose(f), 0);
    return path;
}

static int count_lines(const char *s)
{
    int n = 0;
    for (; *s; s++)
        n += *s == '\n';
    return n;
}

static void test_submit_unreachable(harness_t *h, const char *job_path)
{
    /* Port 1 on loopback: nothing listens. `timeout` only guards against a
     * hang (exit 124); the command's own limit is 2 s. */
    int rc = harness_sh(h, out, sizeof(out),
                        "timeout 60 %s submit --bootstrap 127.0.0.1:1 --kafka-timeout-ms 2000 %s "
                        "2>&1",
                        harness_bin("shoal"), job_path);
    fprintf(stderr, "submit, Kafka unreachable (exit %d):\n%s", rc, out);
    assert_int_eq(rc, 1);
    assert_int_eq(count_lines(out), 1);
    assert_str_contains(out, "could not reach Kafka at 127.0.0.1:1");
    assert_str_contains(out, "SHOAL_BOOTSTRAP");
}

static void test_follow_missing(harness_t *h)
{
    int rc = harness_sh(h, out, sizeof(out),
                        "timeout 60 %s status --follow --appear-timeout 2 no-such-job 2>&1",
                        harness_bin("shoal"));
    fprintf(stderr, "status --follow no-such-job (exit %d):\n%s", rc, out);
    assert_int_eq(rc, 4);
    assert_str_contains(out, "no job no-such-job");
}

/* The value after the last `key` in s (the last progress line), up to the
 * next space or comma. */
static void field(const char *s, const char *key, char *buf, size_t len)
{
    const char *p = NULL;
    for (const char *q = strstr(s, key); q; q = strstr(q + 1, key))
        p = q;
    if (!p)
        test_fail("no \"%s\" in: %s", key, s);
    p += strlen(key);
    snprintf(buf, len, "%.*s", (int)strcspn(p, " ,\n"), p);
}

static void test_submit_follow_cost_elapsed(harness_t *h, const char *dir)
{
    char jid[128], cost[64], want[64], elapsed[64], sql_elapsed[64];

    /* Submitted through the CLI and followed at once with the default grace:
     * the scheduler records it within it. */
    char *job = harness_job(NULL, 6, 1, NULL);
    const char *path = write_file(dir, "small.json", job);
    free(job);
    int rc = harness_sh(h, out, sizeof(out), "%s submit %s", harness_bin("shoal"), path);
    assert_int_eq(rc, 0);
    snprintf(jid, sizeof(jid), "%.*s", (int)strcspn(out, "\n"), out);
    assert_true(strlen(jid) > 4);
    rc = harness_sh(h, out, sizeof(out), "timeout 300 %s status --follow %s 2>&1",
                    harness_bin("shoal"), jid);
    fprintf(stderr, "status --follow %s (exit %d):\n%s", jid, rc, out);
    assert_int_eq(rc, 0);
    assert_str_contains(out, "completed: 6/6 tasks done");

    /* The cost as the database has it, in four significant digits: a few
     * hundred tokens at $0.15-0.60 per million, which %.4f printed as
     * $0.0000 or $0.0001. */
    harness_str(h, cost, sizeof(cost),
                "SELECT sum(cost_usd)::text FROM shoal.attempts WHERE job_id = $1", jid, NULL);
    double usd = strtod(cost, NULL);
    assert_true(usd > 0 && usd < 0.001);
    shoal_usd_format(usd, want, sizeof(want));
    field(out, "cost ", cost, sizeof(cost));
    assert_str_eq(cost, want);
    assert_true(strlen(cost) >= strlen("$0.000123")); /* digits enough to read */

    /* Elapsed is submitted to finished, however long after the end it is
     * asked for. */
    rc = harness_sh(h, out, sizeof(out), "%s status %s", harness_bin("shoal"), jid);
    assert_int_eq(rc, 0);
    field(out, "elapsed ", elapsed, sizeof(elapsed));
    harness_str(h, sql_elapsed, sizeof(sql_elapsed),
                "SELECT to_char(extract(epoch FROM finished_at - submitted_at), 'FM999990.0') "
                "|| 's' FROM shoal.jobs WHERE job_id = $1",
                jid, NULL);
    assert_str_eq(elapsed, sql_elapsed);

    /* A rejected job (its model is not in the models file) took no time. */
    const char *bad =
        write_file(dir, "bad.json",
                   "{\"job_id\": \"cli-rejected\", \"tenant\": \"test\", "
                   "\"model\": \"no-such-model\", \"prompt_template\": \"{{input}}\", "
                   "\"items\": [{\"id\": \"a\", \"input\": \"x\"}]}");
    rc = harness_sh(h, out, sizeof(out), "%s submit --no-validate %s", harness_bin("shoal"), bad);
    assert_int_eq(rc, 0);
    rc = harness_sh(h, out, sizeof(out), "timeout 120 %s status --follow cli-rejected 2>&1",
                    harness_bin("shoal"));
    fprintf(stderr, "status --follow cli-rejected (exit %d):\n%s", rc, out);
    assert_int_eq(rc, 3);
    assert_str_contains(out, "cli-rejected rejected");
    field(out, "elapsed ", elapsed, sizeof(elapsed));
    assert_str_eq(elapsed, "0.0s");

    snprintf(out, sizeof(out), "%s", jid);
}

/* Runs a tmux command on the test's own server (socket sock); output in out. */
static int tmux(harness_t *h, const char *sock, const char *args)
{
    return harness_sh(h, out, sizeof(out), "tmux -S %s %s 2>&1", sock, args);
}

/* Polls the pane until it shows every needle (NULL-terminated), to a
 * deadline; the last capture stays in out. */
static void wait_pane(harness_t *h, const char *sock, const char *const *needles)
{
    double deadline = check_now_s() + 30;
    for (;;) {
        int all = tmux(h, sock, "capture-pane -p -t top") == 0;
        for (int i = 0; all && needles[i]; i++)
            all = strstr(out, needles[i]) != NULL;
        if (all)
            return;
        if (check_now_s() > deadline)
            test_fail("the pane never showed \"%s\" and the rest; last capture:\n%s", needles[0],
                      out);
        usleep(100 * 1000);
    }
}

/* Sends q and waits for `shoal top` to write its exit status to rcfile. */
static void quit_and_check(harness_t *h, const char *sock, const char *rcfile)
{
    assert_int_eq(tmux(h, sock, "send-keys -t top q"), 0);
    double deadline = check_now_s() + 30;
    char rc[16] = "";
    while (check_now_s() < deadline) {
        FILE *f = fopen(rcfile, "r");
        if (f) {
            size_t n = fread(rc, 1, sizeof(rc) - 1, f);
            rc[n] = '\0';
            fclose(f);
            if (strchr(rc, '\n'))
                break;
        }
        usleep(100 * 1000);
    }
    assert_str_eq(rc, "0\n");
    unlink(rcfile);
}

/* Starts `shoal top` in a detached tmux session of cols x rows; when it ends
 * its exit status goes to rcfile. */
static void start_top(harness_t *h, const char *sock, const char *rcfile, int cols, int rows,
                      const char *term)
{
    char args[2048];
    unlink(rcfile);
    snprintf(args, sizeof(args),
             "new-session -d -s top -x %d -y %d \"env TERM=%s %s top; echo \\$? > %s\"", cols, rows,
             term, harness_bin("shoal"), rcfile);
    if (tmux(h, sock, args) != 0)
        test_fail("could not start tmux: %s", out);
}

/* A tmux server socket of its own for each session: a server whose last
 * session just ended may still be exiting when the next one would start. */
static void next_sock(char *sock, size_t len, const char *dir)
{
    static int n;
    snprintf(sock, len, "%s/tmux-%d.sock", dir, n++);
}

static void test_top(harness_t *h, const char *dir, const char *jid)
{
    char sock[600], rcfile[600], frame[1 << 14];
    snprintf(sock, sizeof(sock), "%s/tmux.sock", dir);
    snprintf(rcfile, sizeof(rcfile), "%s/top.rc", dir);

    /* One frame for scripts: the model, and the job with its numbers. */
    assert_int_eq(harness_sh(h, out, sizeof(out), "%s top --once", harness_bin("shoal")), 0);
    fprintf(stderr, "shoal top --once:\n%s", out);
    assert_str_contains(out, "MODEL");
    assert_str_contains(out, "sim-small");
    assert_str_contains(out, jid);
    assert_str_contains(out, "6/6");
    assert_str_contains(out, "queue (tasks not done yet):  high 0  normal 0  low 0");
    assert_true(strchr(out, '\033') == NULL); /* no escape codes in a pipe */

    /* Live, 120 x 40. */
    const char *const live[] = {"sim-small", jid, "6/6", "completed", "(q quits)", NULL};
    next_sock(sock, sizeof(sock), dir);
    start_top(h, sock, rcfile, 120, 40, "xterm");
    wait_pane(h, sock, live);
    snprintf(frame, sizeof(frame), "%s", out);
    fprintf(stderr, "shoal top under tmux:\n%s", frame);
    /* The model's row starts a line, under the header. */
    assert_str_contains(frame, "\nMODEL ");
    assert_str_contains(frame, "\nsim-small ");
    quit_and_check(h, sock, rcfile);

    /* Narrow, 40 x 12: lines are cut, so the second line is the queue line,
     * not the end of a wrapped first one, and no line is longer. */
    const char *const narrow[] = {"shoal top", "queue (", NULL};
    next_sock(sock, sizeof(sock), dir);
    start_top(h, sock, rcfile, 40, 12, "xterm");
    wait_pane(h, sock, narrow);
    fprintf(stderr, "shoal top at 40 x 12:\n%s", out);
    assert_true(strncmp(out, "shoal top", 9) == 0);
    const char *second = strchr(out, '\n');
    assert_true(second != NULL && strncmp(second + 1, "queue (", 7) == 0);
    quit_and_check(h, sock, rcfile);

    /* A dumb terminal gets frames one after the other, no escape codes. */
    const char *const dumb[] = {"sim-small", jid, NULL};
    next_sock(sock, sizeof(sock), dir);
    start_top(h, sock, rcfile, 120, 40, "dumb");
    wait_pane(h, sock, dumb);
    assert_true(strstr(out, "[K") == NULL && strstr(out, "[?25") == NULL);
    quit_and_check(h, sock, rcfile);

    tmux(h, sock, "kill-server"); /* the sessions ended with top: usually no server left */
}

int main(void)
{
    char dir[] = "/tmp/shoal-cliops-XXXXXX", jid[128];
    assert_true(mkdtemp(dir) != NULL);
    harness_conf_t conf = {.workers = 1, .schedulers = 1, .sim_latency_ms = 5};
    harness_t *h = harness_start(&conf);

    char *job = harness_job("cli-ready", 2, 1, NULL);
    const char *job_path = write_file(dir, "job.json", job);
    test_submit_unreachable(h, job_path);
    test_follow_missing(h);

    /* The stack is up and its scheduler reads jobs before the timed cases. */
    char status[32];
    harness_produce(h, "shoal.jobs", "cli-ready", job, strlen(job));
    free(job);
    harness_wait_job(h, "cli-ready", 120, status, sizeof(status));
    assert_str_eq(status, "completed");

    test_submit_follow_cost_elapsed(h, dir);
    snprintf(jid, sizeof(jid), "%s", out);
    test_top(h, dir, jid);

    harness_stop(h);
    char cmd[700];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    assert_int_eq(system(cmd), 0);
    fprintf(stderr, "ok\n");
    return 0;
}
