/*
 * Every log line of every process of a stack parses: a run in text mode
 * read by a strict logfmt parser, and a run in JSON mode read by jansson
 * (tests/support/logparse.h). Both runs carry hostile text into the logs:
 * jobs rejected for a model name and a raw message with quotes, spaces, '='
 * and newlines in them, and a provider error body holding such text (the
 * simulator's fail marker, which it names in its 400). The text must come
 * back unchanged from the parsed lines, so nothing was cut or made into
 * fields of its own.
 */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tests/support/check.h"
#include "tests/support/harness.h"
#include "tests/support/logparse.h"

#define MARKER "FAIL \"quoted\" x=1 back\\slash"
#define BAD_MODEL "no \"such\" model=1\nsecond line"
/* how a rejection reason quotes it (common/jsondesc.h) */
#define BAD_MODEL_QUOTED "\"no \\\"such\\\" model=1\\nsecond line\""
#define RAW_JOB "not json \"at all\" key=value\n\ttab"

static char *slurp(const char *path)
{
    FILE *f = fopen(path, "rb");
    assert_true(f != NULL);
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap + 1);
    assert_true(buf != NULL);
    size_t got;
    while ((got = fread(buf + n, 1, cap - n, f)) > 0) {
        n += got;
        if (n == cap) {
            cap *= 2;
            buf = realloc(buf, cap + 1);
            assert_true(buf != NULL);
        }
    }
    fclose(f);
    buf[n] = '\0';
    return buf;
}

/* The simulator announces its port on stdout ("listening port=N", its
 * documented interface, sim/main.c), which the stack sends to the same file
 * as its log: that one line is not a log line, and is removed once. */
static void drop_port_line(char *text)
{
    char *p = strstr(text, "listening port=");
    assert_true(p != NULL && (p == text || p[-1] == '\n'));
    char *q = p + strlen("listening port=");
    assert_true(*q >= '0' && *q <= '9');
    while (*q >= '0' && *q <= '9')
        q++;
    assert_true(*q == '\n');
    memmove(p, q + 1, strlen(q + 1) + 1);
}

/* JSON text of o, which it consumes (caller frees). */
static char *dump_new(json_t *o)
{
    assert_true(o != NULL);
    char *text = json_dumps(o, 0);
    json_decref(o);
    assert_true(text != NULL);
    return text;
}

/* Does any parsed line have a member key whose value contains want? */
static int has_value(json_t *lines, const char *key, const char *want)
{
    size_t i;
    json_t *o;
    json_array_foreach(lines, i, o)
    {
        const char *v = json_string_value(json_object_get(o, key));
        if (v && strstr(v, want))
            return 1;
    }
    return 0;
}

static void run(int json)
{
    static const char *const sim_args[] = {"--fail-marker", MARKER, NULL};
    setenv("SHOAL_LOG_FORMAT", json ? "json" : "text", 1);
    harness_conf_t conf = {.workers = 1, .schedulers = 1, .sim_args = sim_args};
    harness_t *h = harness_start(&conf);
    char status[64];

    /* One partition, in order: once the last job ends, every other one has
     * been read. */
    char *extra = dump_new(json_pack("{s:s}", "model", BAD_MODEL));
    char *bad = harness_job("bad-model-1", 1, 1, extra);
    harness_produce_to(h, "shoal.jobs", 0, "bad-model-1", bad, strlen(bad));
    free(bad);
    free(extra);
    harness_produce_to(h, "shoal.jobs", 0, "raw-1", RAW_JOB, strlen(RAW_JOB));
    extra = dump_new(
        json_pack("{s:i, s:s}", "max_attempts", 1, "prompt_template", "say " MARKER " {{input}}"));
    char *fail = harness_job("fail-1", 1, 1, extra);
    harness_produce_to(h, "shoal.jobs", 0, "fail-1", fail, strlen(fail));
    free(fail);
    free(extra);
    char *ok = harness_job("ok-1", 3, 1, NULL);
    harness_produce_to(h, "shoal.jobs", 0, "ok-1", ok, strlen(ok));
    free(ok);

    harness_wait_job(h, "bad-model-1", 60, status, sizeof(status));
    assert_str_eq(status, "rejected");
    harness_wait_job(h, "fail-1", 60, status, sizeof(status));
    assert_str_eq(status, "failed");
    harness_wait_job(h, "ok-1", 60, status, sizeof(status));
    assert_str_eq(status, "completed");

    /* Stop the processes so their last lines are written, then read all. */
    char report[2048];
    assert_int_eq(shoal_devstack_stop_procs(harness_stack(h), report, sizeof(report)), 0);
    char dir[1024];
    snprintf(dir, sizeof(dir), "%s/logs", shoal_devstack_workdir(harness_stack(h)));
    DIR *d = opendir(dir);
    assert_true(d != NULL);
    json_t *all = json_array();
    int files = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        size_t n = strlen(e->d_name);
        /* The fleet's own processes; PostgreSQL's log is its own format. */
        if (n < 5 || strcmp(e->d_name + n - 4, ".log") != 0 ||
            (strncmp(e->d_name, "worker-", 7) != 0 && strncmp(e->d_name, "scheduler-", 10) != 0 &&
             strcmp(e->d_name, "sim.log") != 0))
            continue;
        char path[2048];
        snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
        char *text = slurp(path);
        if (strcmp(e->d_name, "sim.log") == 0)
            drop_port_line(text);
        json_t *lines = logparse_lines(text, json, path);
        fprintf(stderr, "%s: %zu lines parse\n", e->d_name, json_array_size(lines));
        assert_true(json_array_size(lines) > 0);
        json_array_extend(all, lines);
        json_decref(lines);
        free(text);
        files++;
    }
    closedir(d);
    assert_int_eq(files, 3); /* worker-0, scheduler-0, sim */

    /* The hostile text came through whole, as the value of one field. */
    assert_true(has_value(all, "reason", BAD_MODEL_QUOTED));
    assert_true(has_value(all, "job_id", "bad-model-1"));
    assert_true(has_value(all, "error", MARKER));
    assert_true(has_value(all, "job_id", "fail-1"));
    assert_true(has_value(all, "job_id", "ok-1"));
    json_decref(all);
    harness_stop(h);
}

int main(void)
{
    run(0);
    run(1);
    printf("0025-log_lines: ok\n");
    return 0;
}
