/*
 * Jobs sent in parts under their tenant's plan, and through the result
 * cache, on a running stack whose scheduler reads a tenants file
 * (SHOAL_TENANTS) and keeps the cache on:
 * - with 2 jobs per minute, two parted jobs of two parts each run (each
 *   counted once) and the third of the minute is rejected under its id with
 *   the reason a job sent whole gets; its parts, coming after, leave that
 *   reason alone;
 * - a parted job whose parts together have more items than the plan's max
 *   items is rejected naming the limit, with nothing of it left;
 * - the plan's default priority applies to a parted job that sets none;
 * - a parted job sent again under a new job_id makes no model call: every
 *   task is answered from the cache (the simulator's request count).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tests/support/check.h"
#include "tests/support/files.h"
#include "tests/support/harness.h"

/* Sends job id as a header and n_parts parts of per_part items each (one
 * item a chunk; ids and inputs unique across the job, inputs named by salt so
 * that only jobs of one salt share cache entries), all to partition 0 so
 * that jobs are handled in the order sent. extra: header fields (JSON object
 * members without braces, or ""). */
static void send_parted(harness_t *h, const char *id, const char *salt, const char *tenant,
                        int n_parts, int per_part, const char *extra)
{
    char msg[8192];
    int len = snprintf(msg, sizeof(msg),
                       "{\"job_id\": \"%s\", \"tenant\": \"%s\", \"model\": \"sim-small\", "
                       "\"prompt_template\": \"Echo:\\n{{input}}\", \"chunking\": "
                       "{\"max_items\": 1}, %s%s\"parts\": %d}",
                       id, tenant, extra, extra[0] ? ", " : "", n_parts);
    assert_true(len > 0 && (size_t)len < sizeof(msg));
    harness_produce_to(h, "shoal.jobs", 0, id, msg, (size_t)len);
    for (int k = 0; k < n_parts; k++) {
        len = snprintf(msg, sizeof(msg), "{\"job_id\": \"%s\", \"part\": %d, \"items\": [", id, k);
        for (int i = 0; i < per_part; i++)
            len += snprintf(msg + len, sizeof(msg) - (size_t)len,
                            "%s{\"id\": \"p%d-%d\", \"input\": \"%s: item %d of part %d\"}",
                            i ? ", " : "", k, i, salt, i, k);
        len += snprintf(msg + len, sizeof(msg) - (size_t)len, "]}");
        assert_true(len > 0 && (size_t)len < sizeof(msg));
        harness_produce_to(h, "shoal.jobs", 0, id, msg, (size_t)len);
    }
}

static long job_long(harness_t *h, const char *sql, const char *id)
{
    return harness_long(h, sql, id, NULL);
}

/* Waits for job id to end and checks it ended as want. */
static void expect_status(harness_t *h, const char *id, const char *want)
{
    char ended[32];
    harness_wait_job(h, id, 120, ended, sizeof(ended));
    assert_str_eq(ended, want);
}

/* The first column of sql's first row with $1 = id, into buf. */
static void job_str(harness_t *h, const char *sql, const char *id, char *buf, size_t len)
{
    harness_str(h, buf, len, sql, id, NULL);
}

/* A parted job rejected while it took parts keeps none of them. */
static void expect_nothing_kept(harness_t *h, const char *id)
{
    assert_int_eq(job_long(h, "SELECT count(*) FROM shoal.tasks WHERE job_id = $1", id), 0);
    assert_int_eq(job_long(h, "SELECT count(*) FROM shoal.job_parts WHERE job_id = $1", id), 0);
}

/* A one-message job sent after everything before it on partition 0: once
 * it completed, every earlier message was handled. */
static void barrier(harness_t *h, const char *id)
{
    char *job = harness_job(id, 1, 1, NULL);
    harness_produce_to(h, "shoal.jobs", 0, id, job, strlen(job));
    free(job);
    expect_status(h, id, "completed");
}

static void test_per_minute(harness_t *h)
{
    char err[4096], resets[64];

    /* the three jobs must fall in one UTC minute */
    assert_wait(harness_long(h, "SELECT extract(second FROM now())::int", NULL) < 30, 65,
                "the first half of a minute");
    const char *ids[] = {"plim-1", "plim-2", "plim-3"};
    for (int i = 0; i < 3; i++)
        send_parted(h, ids[i], ids[i], "limited", 2, 2, "");
    expect_status(h, "plim-1", "completed");
    expect_status(h, "plim-2", "completed");
    expect_status(h, "plim-3", "rejected");
    barrier(h, "barrier-1"); /* plim-3's parts are handled by now */
    job_str(h, "SELECT error FROM shoal.jobs WHERE job_id = $1", "plim-3", err, sizeof(err));
    fprintf(stderr, "third parted job of the minute: %s\n", err);
    assert_str_contains(err, "tenant limited: 2 jobs per minute reached (limit 2); resets at ");
    /* the window ends at the next whole minute after the job came */
    job_str(h,
            "SELECT to_char(date_trunc('minute', submitted_at AT TIME ZONE 'UTC') + "
            "interval '1 minute', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"') FROM shoal.jobs "
            "WHERE job_id = $1",
            "plim-3", resets, sizeof(resets));
    assert_str_contains(err, resets);
    expect_nothing_kept(h, "plim-3");
    /* the two that ran have all their items */
    assert_int_eq(job_long(h, "SELECT items_total FROM shoal.jobs WHERE job_id = $1", "plim-2"), 4);
}

static void test_max_items(harness_t *h)
{
    char err[4096];
    send_parted(h, "pbig", "pbig", "small", 2, 2, "");
    expect_status(h, "pbig", "rejected");
    job_str(h, "SELECT error FROM shoal.jobs WHERE job_id = $1", "pbig", err, sizeof(err));
    fprintf(stderr, "parted job over max items: %s\n", err);
    assert_str_eq(err, "tenant small: the job has 4 items; the plan allows at most 3 per job "
                       "(split the job)");
    expect_nothing_kept(h, "pbig");
}

static void test_default_priority(harness_t *h)
{
    const char *prio_of = "SELECT priority FROM shoal.jobs WHERE job_id = $1";
    char prio[32];
    send_parted(h, "pprio", "pprio", "small", 3, 1, "");
    expect_status(h, "pprio", "completed");
    job_str(h, prio_of, "pprio", prio, sizeof(prio));
    assert_str_eq(prio, "high");
    assert_int_eq(job_long(h, "SELECT items_total FROM shoal.jobs WHERE job_id = $1", "pprio"), 3);
    /* the parts' tasks are built from the stored header: it carries it */
    job_str(h, "SELECT doc::jsonb->>'priority' FROM shoal.job_inputs WHERE job_id = $1", "pprio",
            prio, sizeof(prio));
    assert_str_eq(prio, "high");

    /* one that sets its own keeps it */
    send_parted(h, "pown", "pown", "small", 1, 1, "\"priority\": \"low\"");
    expect_status(h, "pown", "completed");
    job_str(h, prio_of, "pown", prio, sizeof(prio));
    assert_str_eq(prio, "low");
}

/* Sends the parted job id (3 parts of 4 items) and returns the calls the
 * simulator served until it completed. */
static long run_parted(harness_t *h, const char *id)
{
    long before = harness_sim_requests(h);
    send_parted(h, id, "pcache", "test", 3, 4, "");
    expect_status(h, id, "completed");
    return harness_sim_requests(h) - before;
}

static void test_cache(harness_t *h)
{
    const char *cached = "SELECT tasks_cached FROM shoal.jobs WHERE job_id = $1";
    assert_int_eq(run_parted(h, "pcache-1"), 12);
    assert_int_eq(job_long(h, cached, "pcache-1"), 0);
    assert_int_eq(job_long(h,
                           "SELECT count(*) FROM shoal.tasks WHERE job_id = $1 "
                           "AND cache_key IS NOT NULL",
                           "pcache-1"),
                  12);

    /* the same job again, under another id: no call */
    assert_int_eq(run_parted(h, "pcache-2"), 0);
    assert_int_eq(job_long(h, cached, "pcache-2"), 12);
    assert_int_eq(job_long(h, "SELECT count(*) FROM shoal.attempts WHERE job_id = $1", "pcache-2"),
                  0);
    /* every chunk got the answer its own chunk got the first time */
    assert_int_eq(job_long(h,
                           "SELECT count(*) FROM shoal.results a JOIN shoal.results b "
                           "ON a.chunk = b.chunk AND a.output = b.output "
                           "WHERE a.job_id = 'pcache-1' AND b.job_id = $1 AND b.cached",
                           "pcache-2"),
                  12);
}

int main(void)
{
    char dir[] = "/tmp/shoal-partsq-XXXXXX", path[600];
    assert_true(mkdtemp(dir) != NULL);
    const char *tenants =
        files_write(dir, "tenants.json",
                    "{\"tenants\": {\"limited\": {\"jobs_per_minute\": 2},\n"
                    "   \"small\": {\"max_items\": 3, \"default_priority\": \"high\"}}}\n",
                    path, sizeof(path));
    setenv("SHOAL_TENANTS", tenants, 1);

    harness_conf_t conf = {.workers = 1, .schedulers = 1, .sim_latency_ms = 5, .cache = 1};
    harness_t *h = harness_start(&conf);
    assert_wait(harness_long(h, "SELECT count(*) FROM shoal.tenants", NULL) == 2, 60,
                "the tenant plans in shoal.tenants");
    test_per_minute(h);
    test_max_items(h);
    test_default_priority(h);
    test_cache(h);
    harness_stop(h);
    printf("0046-parts_quota_cache: ok\n");
    return 0;
}
