/*
 * Bad input never crashes, blocks or vanishes: every job in the invalid
 * corpus (tests/data/jobs/invalid) is produced raw to the jobs topic, one
 * partition, in order, and a 3 MB message (over the 1 MiB default limit) to
 * another partition. Each must end as a
 * `rejected` job whose error contains the corpus's expected fragment, with a
 * `rejected` event; a good job produced behind them all still completes.
 */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tests/support/check.h"
#include "tests/support/harness.h"

#define MAX_CASES 200

struct bad {
    char file[256];
    char fragment[512];
    char *body;
    size_t len;
};

static char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    assert_true(f != NULL);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)n + 1);
    assert_true(buf != NULL);
    assert_int_eq(fread(buf, 1, (size_t)n, f), n);
    buf[n] = '\0';
    fclose(f);
    *len = (size_t)n;
    return buf;
}

static int load_cases(struct bad *cases)
{
    char dir[1024], path[1300], line[1024];
    snprintf(dir, sizeof(dir), "%s/tests/data/jobs/invalid", SHOAL_SOURCE_DIR);
    snprintf(path, sizeof(path), "%s/EXPECT", dir);
    FILE *f = fopen(path, "r");
    assert_true(f != NULL);
    int n = 0;
    while (fgets(line, sizeof(line), f) && n < MAX_CASES - 1) {
        if (line[0] == '#' || line[0] == '\n')
            continue;
        char *tab1 = strchr(line, '\t');
        assert_true(tab1 != NULL);
        *tab1 = '\0';
        char *frag = tab1 + 1;
        char *tab2 = strchr(frag, '\t');
        if (tab2)
            *tab2 = '\0';
        /* The list of known models differs from the corpus's models file. */
        char *paren = strstr(frag, " (known");
        if (paren)
            *paren = '\0';
        snprintf(cases[n].file, sizeof(cases[n].file), "%.200s", line);
        snprintf(cases[n].fragment, sizeof(cases[n].fragment), "%s", frag);
        snprintf(path, sizeof(path), "%.1000s/%.200s", dir, line);
        cases[n].body = slurp(path, &cases[n].len);
        n++;
    }
    fclose(f);
    /* Several MB in one message: over the scheduler's 1 MiB default limit
     * (and under the mock cluster's per-partition log size). */
    size_t big = 3u * 1024 * 1024;
    char *b = malloc(big + 1);
    assert_true(b != NULL);
    int head = snprintf(b, big,
                        "{\"tenant\":\"t\",\"model\":\"sim-small\",\"prompt_template\":"
                        "\"{{input}}\",\"items\":[{\"id\":\"a\",\"input\":\"");
    memset(b + head, 'x', big - (size_t)head - 4);
    memcpy(b + big - 4, "\"}]}", 4);
    b[big] = '\0';
    snprintf(cases[n].file, sizeof(cases[n].file), "(3 MB message)");
    snprintf(cases[n].fragment, sizeof(cases[n].fragment), "the limit is 1048576");
    cases[n].body = b;
    cases[n].len = big;
    return n + 1;
}

int main(void)
{
    static struct bad cases[MAX_CASES];
    int n = load_cases(cases);
    assert_int_ge(n, 21);

    harness_conf_t conf = {.workers = 1, .schedulers = 1};
    harness_t *h = harness_start(&conf);
    char status[64], error[2048], source[64], id[256];

    for (int i = 0; i < n - 1; i++)
        harness_produce_to(h, "shoal.jobs", 0, NULL, cases[i].body, cases[i].len);
    harness_produce_to(h, "shoal.jobs", 1, NULL, cases[n - 1].body, cases[n - 1].len);
    char *good = harness_job("good-after-bad", 10, 1, NULL);
    harness_produce_to(h, "shoal.jobs", 0, "good-after-bad", good, strlen(good));
    free(good);

    harness_wait_job(h, "good-after-bad", 120, status, sizeof(status));
    assert_str_eq(status, "completed");

    int rejected = 0;
    for (int i = 0; i < n; i++) {
        if (i == n - 1)
            snprintf(source, sizeof(source), "shoal.jobs/1@0");
        else
            snprintf(source, sizeof(source), "shoal.jobs/0@%d", i);
        harness_str(h, status, sizeof(status), "SELECT status FROM shoal.jobs WHERE source = $1",
                    source, NULL);
        harness_str(h, error, sizeof(error), "SELECT error FROM shoal.jobs WHERE source = $1",
                    source, NULL);
        if (strcmp(status, "rejected") != 0)
            test_fail("%s: expected rejected, got \"%s\"", cases[i].file, status);
        if (!strstr(error, cases[i].fragment))
            test_fail("%s: error \"%s\" lacks \"%s\"", cases[i].file, error, cases[i].fragment);
        rejected++;
    }
    assert_int_eq(rejected, n);
    assert_int_eq(
        harness_long(h, "SELECT count(*) FROM shoal.jobs WHERE status = 'rejected'", NULL), n);

    /* One rejected event per bad message, naming the job and the reason. */
    json_t *events = harness_events(h, NULL, n + 2, 60);
    int rejected_events = 0;
    size_t k;
    json_t *e;
    json_array_foreach(events, k, e)
    {
        const char *type = json_string_value(json_object_get(e, "type"));
        if (type && !strcmp(type, "rejected")) {
            rejected_events++;
            assert_true(json_string_value(json_object_get(e, "error")) != NULL);
            snprintf(id, sizeof(id), "%s", json_string_value(json_object_get(e, "job_id")));
            assert_int_eq(harness_long(h,
                                       "SELECT count(*) FROM shoal.jobs WHERE job_id = $1 AND "
                                       "status = 'rejected'",
                                       id, NULL),
                          1);
        }
    }
    json_decref(events);
    assert_int_eq(rejected_events, n);

    for (int i = 0; i < n; i++)
        free(cases[i].body);
    harness_stop(h);
    fprintf(stderr, "ok: %d bad jobs rejected\n", n);
    return 0;
}
