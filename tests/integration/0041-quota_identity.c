/*
 * Tenant quotas, job identity and shoal stats on a running stack whose
 * scheduler reads a tenants file (SHOAL_TENANTS):
 * - the plans are mirrored into shoal.tenants (the default plan as "*");
 * - with 2 jobs per minute, the third job of the minute is rejected naming the
 *   limit, the numbers and when it resets;
 * - a job over the plan's max items is rejected saying so, and the same id
 *   submitted again, fixed, replaces the rejection and runs;
 * - the plan's default priority applies to a job that sets none, not to one
 *   that sets its own;
 * - a job with other content under a finished or a running job's id is
 *   ignored and reported: a 'conflict' event, `shoal submit --wait` warns and
 *   exits 2, `shoal status` says so;
 * - every validation problem of a message is reported at once, by the
 *   scheduler (stored on the rejected job) and by `shoal submit` (one per line);
 * - `shoal stats` counts a finished job's jobs, calls, tokens and cost as
 *   shoal.attempts has them.
 */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tests/support/check.h"
#include "tests/support/files.h"
#include "tests/support/harness.h"

static char out[1 << 16];

static const char *write_file(const char *dir, const char *name, const char *text)
{
    static char path[600];
    return files_write(dir, name, text, path, sizeof(path));
}

static void produce(harness_t *h, const char *id, const char *text)
{
    harness_produce_to(h, "shoal.jobs", 0, id, text, strlen(text));
}

/* Waits for the job to end (or be rejected) and checks how. */
static void expect_status(harness_t *h, const char *id, const char *want)
{
    char status[32];
    harness_wait_job(h, id, 120, status, sizeof(status));
    if (strcmp(status, want) != 0)
        test_fail("job %s ended %s, expected %s", id, status, want);
}

/* Waits for the job to be in status (e.g. running), whatever it was. */
static void wait_status(harness_t *h, const char *id, const char *status)
{
    assert_wait(harness_long(h, "SELECT count(*) FROM shoal.jobs WHERE job_id = $1 AND status = $2",
                             id, status, NULL) == 1,
                120, status);
}

static void error_of(harness_t *h, const char *id, char *buf, size_t len)
{
    harness_str(h, buf, len, "SELECT error FROM shoal.jobs WHERE job_id = $1", id, NULL);
}

static void test_plans_mirrored(harness_t *h)
{
    /* the scheduler writes them once it has started */
    assert_wait(harness_long(h, "SELECT count(*) FROM shoal.tenants", NULL) == 3, 60,
                "the tenant plans in shoal.tenants");
    assert_int_eq(harness_long(h, "SELECT jobs_per_minute FROM shoal.tenants WHERE tenant = $1",
                               "limited", NULL),
                  2);
    assert_int_eq(harness_long(h, "SELECT jobs_per_day FROM shoal.tenant_plan($1)", "nobody", NULL),
                  1000);
}

static void test_per_minute(harness_t *h)
{
    char err[4096], want[64];

    /* the three jobs must fall in one UTC minute: start early in one */
    assert_wait(harness_long(h, "SELECT extract(second FROM now())::int", NULL) < 30, 65,
                "the first half of a minute");
    harness_str(h, want, sizeof(want),
                "SELECT 'resets at ' || to_char(date_trunc('minute', now() AT TIME ZONE 'UTC') "
                "+ interval '1 minute', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')",
                NULL);
    for (int i = 1; i <= 3; i++) {
        char id[32];
        snprintf(id, sizeof(id), "lim-%d", i);
        char *job = harness_job(id, 2, 1, "{\"tenant\": \"limited\"}");
        produce(h, id, job); /* one partition: handled in this order */
        free(job);
    }
    expect_status(h, "lim-1", "completed");
    expect_status(h, "lim-2", "completed");
    expect_status(h, "lim-3", "rejected");
    error_of(h, "lim-3", err, sizeof(err));
    fprintf(stderr, "third job of the minute: %s\n", err);
    assert_str_contains(err, "tenant limited: 2 jobs per minute reached (limit 2)");
    assert_str_contains(err, want);
    assert_int_eq(
        harness_long(h, "SELECT count(*) FROM shoal.tasks WHERE job_id = $1", "lim-3", NULL), 0);
}

static void test_max_items_then_fixed(harness_t *h)
{
    char status[32], err[4096];

    char *job = harness_job("fixme", 4, 1, "{\"tenant\": \"small\"}");
    produce(h, "fixme", job);
    free(job);
    expect_status(h, "fixme", "rejected");
    error_of(h, "fixme", err, sizeof(err));
    assert_str_eq(err, "tenant small: the job has 4 items; the plan allows at most 3 per job "
                       "(split the job)");

    /* fixed, under the same id: replaces the rejected row and runs, with the
     * plan's default priority as it sets none */
    job = harness_job("fixme", 3, 1, "{\"tenant\": \"small\"}");
    produce(h, "fixme", job);
    free(job);
    /* (the rejected row is there until the new message replaces it) */
    wait_status(h, "fixme", "completed");
    assert_int_eq(
        harness_long(h, "SELECT items_total FROM shoal.jobs WHERE job_id = $1", "fixme", NULL), 3);
    harness_str(h, status, sizeof(status), "SELECT priority FROM shoal.jobs WHERE job_id = $1",
                "fixme", NULL);
    assert_str_eq(status, "high");

    /* a job that sets its priority keeps it */
    job = harness_job("own-prio", 1, 1, "{\"tenant\": \"small\", \"priority\": \"low\"}");
    produce(h, "own-prio", job);
    free(job);
    expect_status(h, "own-prio", "completed");
    harness_str(h, status, sizeof(status), "SELECT priority FROM shoal.jobs WHERE job_id = $1",
                "own-prio", NULL);
    assert_str_eq(status, "low");
}

static void test_conflict(harness_t *h, const char *dir)
{
    char *job = harness_job("busy", 5, 1, NULL);
    const char *path = write_file(dir, "busy.json", job);
    free(job);
    int rc = harness_sh(h, out, sizeof(out), "timeout 300 %s submit --wait %s 2>&1",
                        harness_bin("shoal"), path);
    assert_int_eq(rc, 0);
    expect_status(h, "busy", "completed");

    /* the same file again is the same job: no warning */
    rc = harness_sh(h, out, sizeof(out), "timeout 300 %s submit --wait %s 2>&1",
                    harness_bin("shoal"), path);
    assert_int_eq(rc, 0);
    assert_true(strstr(out, "warning") == NULL);

    /* other content under the id: ignored, and said */
    job = harness_job("busy", 7, 1, NULL);
    path = write_file(dir, "busy2.json", job);
    free(job);
    rc = harness_sh(h, out, sizeof(out), "timeout 300 %s submit --wait %s 2>&1",
                    harness_bin("shoal"), path);
    fprintf(stderr, "submit --wait, other content under a finished job's id (exit %d):\n%s", rc,
            out);
    assert_int_eq(rc, 2);
    assert_str_contains(out, "warning: job busy already exists (completed) with other content");
    assert_int_eq(
        harness_long(h, "SELECT items_total FROM shoal.jobs WHERE job_id = $1", "busy", NULL), 5);
    json_t *events = harness_events(h, "busy", 0, 5);
    int conflicts = 0;
    for (size_t i = 0; i < json_array_size(events); i++) {
        const char *type = json_string_value(json_object_get(json_array_get(events, i), "type"));
        conflicts += type && !strcmp(type, "conflict");
    }
    json_decref(events);
    assert_int_eq(conflicts, 1);
    rc = harness_sh(h, out, sizeof(out), "%s status busy", harness_bin("shoal"));
    assert_int_eq(rc, 0);
    assert_str_contains(out, "warning: 1 submission with other content under this job_id was "
                             "ignored");
}

/* Other content under the id of a job still running: the job runs on
 * untouched, the submission is reported. The job calls a model whose
 * endpoint refuses connections, so it keeps retrying until cancelled. */
static void test_conflict_running(harness_t *h, const char *dir)
{
    char *job = harness_job(
        "run-1", 2, 1, "{\"tenant\": \"other\", \"model\": \"sim-down\", \"max_attempts\": 20}");
    produce(h, "run-1", job);
    free(job);
    wait_status(h, "run-1", "running");
    job = harness_job("run-1", 3, 1, "{\"tenant\": \"other\"}");
    int rc = harness_sh(h, out, sizeof(out), "timeout 300 %s submit --wait %s 2>&1",
                        harness_bin("shoal"), write_file(dir, "run2.json", job));
    free(job);
    fprintf(stderr, "submit --wait, other content under a running job's id (exit %d):\n%s", rc,
            out);
    assert_int_eq(rc, 2);
    assert_str_contains(out, "warning: job run-1 already exists (running) with other content");
    assert_int_eq(harness_long(h,
                               "SELECT items_total FROM shoal.jobs WHERE job_id = $1 AND "
                               "status = 'running'",
                               "run-1", NULL),
                  2);
    assert_int_eq(harness_long(h, "SELECT count(*) FROM shoal.job_conflicts WHERE job_id = $1",
                               "run-1", NULL),
                  1);
    rc = harness_sh(h, out, sizeof(out), "%s cancel run-1", harness_bin("shoal"));
    assert_int_eq(rc, 0);
}

static void test_all_errors(harness_t *h, const char *dir)
{
    char err[4096];
    const char *bad = "{\"job_id\": \"bad-1\", \"tenant\": \"test\", \"model\": \"sim-small\","
                      " \"priority\": \"urgent\", \"prompt_template\": \"no placeholder\","
                      " \"items\": [{\"id\": \"a\", \"input\": 1}], \"max_attempts\": 99}";
    produce(h, "bad-1", bad);
    expect_status(h, "bad-1", "rejected");
    error_of(h, "bad-1", err, sizeof(err));
    fprintf(stderr, "problems stored: %s\n", err);
    assert_str_contains(err, "priority: \"urgent\" is not one of");
    assert_str_contains(err, "prompt_template: must contain {{input}}");
    assert_str_contains(err, "items[0].input: expected a string, got an integer");
    assert_str_contains(err, "max_attempts:");

    /* the CLI prints them one per line */
    int rc = harness_sh(h, out, sizeof(out), "%s submit %s 2>&1", harness_bin("shoal"),
                        write_file(dir, "bad.json", bad));
    fprintf(stderr, "submit of an invalid file (exit %d):\n%s", rc, out);
    assert_int_eq(rc, 2);
    int lines = 0;
    for (const char *p = out; *p; p++)
        lines += *p == '\n';
    assert_int_eq(lines, 5);
    assert_str_contains(out, "\n  items[0].input: expected a string, got an integer\n");
}

static void test_stats(harness_t *h)
{
    char want[64];
    int rc = harness_sh(h, out, sizeof(out), "%s stats --json --tenant test --since 1h",
                        harness_bin("shoal"));
    fprintf(stderr, "stats --json --tenant test:\n%s", out);
    assert_int_eq(rc, 0);
    json_t *rows = json_loads(out, 0, NULL);
    assert_true(json_is_array(rows));
    /* busy, and bad-1 rejected under the model it names (the second busy
     * was ignored, not recorded) */
    assert_int_eq(json_array_size(rows), 1);
    json_t *row = json_array_get(rows, 0);
    assert_str_eq(json_string_value(json_object_get(row, "model")), "sim-small");
    assert_int_eq(json_integer_value(json_object_get(row, "jobs")), 1);
    assert_int_eq(json_integer_value(json_object_get(row, "jobs_rejected")), 1);
    long calls = harness_long(h,
                              "SELECT count(*) FROM shoal.attempts a JOIN shoal.jobs j USING "
                              "(job_id) WHERE j.tenant = 'test'",
                              NULL);
    assert_int_ge(calls, 5);
    assert_int_eq(json_integer_value(json_object_get(row, "calls")), calls);
    assert_int_eq(json_integer_value(json_object_get(row, "tokens_in")),
                  harness_long(h,
                               "SELECT sum(a.tokens_in) FROM shoal.attempts a JOIN shoal.jobs j "
                               "USING (job_id) WHERE j.tenant = 'test'",
                               NULL));
    harness_str(h, want, sizeof(want),
                "SELECT round(sum(a.cost_usd)::numeric, 9)::text FROM shoal.attempts a JOIN "
                "shoal.jobs j USING (job_id) WHERE j.tenant = 'test'",
                NULL);
    double cost = json_real_value(json_object_get(row, "cost_usd"));
    assert_true(cost > 0);
    assert_true(cost - strtod(want, NULL) < 1e-9 && strtod(want, NULL) - cost < 1e-9);
    assert_int_eq(json_integer_value(json_object_get(row, "calls_429")), 0);
    /* the second busy with the same content was the same job: no call, no hit */
    assert_int_eq(json_integer_value(json_object_get(row, "cache_hits")),
                  harness_long(h,
                               "SELECT count(*) FROM shoal.cache_hits c JOIN shoal.jobs j USING "
                               "(job_id) WHERE j.tenant = 'test'",
                               NULL));
    json_decref(rows);

    /* the table form, and a bad range refused */
    rc = harness_sh(h, out, sizeof(out), "%s stats", harness_bin("shoal"));
    assert_int_eq(rc, 0);
    assert_str_contains(out, "limited");
    assert_str_contains(out, "sim-small");
    rc =
        harness_sh(h, out, sizeof(out), "%s stats --since yesterdayish 2>&1", harness_bin("shoal"));
    assert_int_eq(rc, 2);
}

int main(void)
{
    char dir[] = "/tmp/shoal-quota-XXXXXX";
    assert_true(mkdtemp(dir) != NULL);
    const char *tenants =
        write_file(dir, "tenants.json",
                   "{\"default\": {\"jobs_per_day\": 1000},\n"
                   " \"tenants\": {\"limited\": {\"jobs_per_minute\": 2},\n"
                   "   \"small\": {\"max_items\": 3, \"default_priority\": \"high\"}}}\n");
    setenv("SHOAL_TENANTS", tenants, 1);

    harness_conf_t conf = {.workers = 1,
                           .schedulers = 1,
                           .sim_latency_ms = 5,
                           .extra_models = "\"sim-down\": {\"provider\": \"openai\", \"endpoint\": "
                                           "\"http://127.0.0.1:1/v1/chat/completions\", "
                                           "\"model\": \"down\"}"};
    harness_t *h = harness_start(&conf);
    test_plans_mirrored(h);
    test_per_minute(h);
    test_max_items_then_fixed(h);
    test_conflict(h, dir);
    test_conflict_running(h, dir);
    test_all_errors(h, dir);
    test_stats(h);
    harness_stop(h);
    printf("0041-quota_identity: ok\n");
    return 0;
}
