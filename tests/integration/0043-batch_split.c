/*
 * Batch mode on the local stack, with the simulator leaving out 20% of the
 * items of every answer:
 *   - a batch-mode job of 200 items in chunks of 10 completes with one
 *     per-item result per item, each item exactly once in the merged output,
 *     the items left out answered by sub-tasks, fewer sub-tasks than chunks
 *     (leftovers of several chunks travel together);
 *   - a sub-task whose message was lost (recorded queued, never produced: a
 *     worker that died between its commit and its produce) is published
 *     again by the reconciler from the job's stored inputs, with an item of
 *     another chunk than its own, and its job completes;
 *   - a context-mode job is unchanged: one result per chunk, no per-item
 *     results, no sub-task.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tests/support/check.h"
#include "tests/support/harness.h"

#define BATCH_FIELDS "{\"answer_mode\": \"batch\", \"merge\": \"jsonl\", \"max_attempts\": 10}"

/* Checks that the merged jsonl output of job_id has each of its n items
 * ("i00000".."i<n-1>") exactly once, with an output. */
static void check_merged(harness_t *h, const char *job_id, int n)
{
    static char out[1 << 17];
    harness_str(h, out, sizeof(out),
                "SELECT string_agg(body, '' ORDER BY page) FROM shoal.job_output WHERE job_id = $1",
                job_id, NULL);
    unsigned char *seen = calloc((size_t)n, 1);
    int lines = 0;
    for (char *line = out, *nl; *line; line = nl + 1) {
        nl = strchr(line, '\n');
        assert_true(nl != NULL);
        *nl = '\0';
        json_t *e = json_loads(line, 0, NULL);
        const char *id = json_string_value(json_object_get(e, "item_id"));
        assert_true(id != NULL && strlen(id) == 6);
        assert_true(json_is_string(json_object_get(e, "output")));
        assert_str_contains(json_string_value(json_object_get(e, "output")), id);
        long k = strtol(id + 1, NULL, 10);
        assert_true(k >= 0 && k < n);
        assert_int_eq(seen[k], 0);
        seen[k] = 1;
        lines++;
        json_decref(e);
    }
    assert_int_eq(lines, n);
    free(seen);
}

/* Waits for job_id to end and fails the test, with the first task error,
 * unless it completed. */
static void wait_completed(harness_t *h, const char *job_id, double timeout_s)
{
    char status[64], why[512];
    harness_wait_job(h, job_id, timeout_s, status, sizeof(status));
    if (strcmp(status, "completed") != 0) {
        harness_str(
            h, why, sizeof(why),
            "SELECT coalesce((SELECT error FROM shoal.jobs WHERE job_id = $1), '') || ' / ' "
            "|| coalesce((SELECT min(error) FROM shoal.tasks WHERE job_id = $1), '')",
            job_id, NULL);
        test_fail("job %s ended %s: %s", job_id, status, why);
    }
}

static void test_batch(harness_t *h)
{
    char *job = harness_job("batch-1", 200, 10, BATCH_FIELDS);
    harness_produce(h, "shoal.jobs", "batch-1", job, strlen(job));
    free(job);
    wait_completed(h, "batch-1", 120);

    assert_int_eq(harness_long(h,
                               "SELECT count(DISTINCT item_id) FROM shoal.item_results "
                               "WHERE job_id = 'batch-1'",
                               NULL),
                  200);
    assert_int_eq(
        harness_long(h, "SELECT count(*) FROM shoal.item_results WHERE job_id = 'batch-1'", NULL),
        200);
    /* 20% left out: sub-tasks answered some items, and every task ended */
    long subs = harness_long(h,
                             "SELECT count(*) FROM shoal.tasks WHERE job_id = 'batch-1' AND "
                             "parent_task_id IS NOT NULL",
                             NULL);
    assert_true(subs >= 1);
    assert_int_ge(harness_long(h,
                               "SELECT count(*) FROM shoal.item_results ir JOIN shoal.tasks t "
                               "USING (task_id) WHERE ir.job_id = 'batch-1' AND "
                               "t.parent_task_id IS NOT NULL",
                               NULL),
                  1);
    assert_int_eq(harness_long(h,
                               "SELECT tasks_total - tasks_done FROM shoal.jobs "
                               "WHERE job_id = 'batch-1'",
                               NULL),
                  0);
    assert_int_eq(
        harness_long(h, "SELECT tasks_total FROM shoal.jobs WHERE job_id = 'batch-1'", NULL),
        20 + subs);
    /* sub-tasks gathered leftovers of several chunks: some has two parents'
     * items (its items come from more than one chunk's item range) */
    assert_int_ge(harness_long(h,
                               "SELECT count(*) FROM shoal.tasks t WHERE t.job_id = 'batch-1' "
                               "AND t.parent_task_id IS NOT NULL AND (SELECT count(DISTINCT "
                               "substr(i, 2, 4)) FROM unnest(t.item_ids) i) > 1",
                               NULL),
                  1);
    check_merged(h, "batch-1", 200);
}

static void test_lost_subtask(harness_t *h)
{
    char *job = harness_job("lostsub-1", 40, 10, BATCH_FIELDS);
    harness_produce(h, "shoal.jobs", "lostsub-1", job, strlen(job));
    free(job);
    wait_completed(h, "lostsub-1", 120);

    /* Item i00035 (chunk 3) loses its answer and goes to a sub-task of chunk
     * 0 recorded an hour ago whose message never went out; the job runs
     * again. */
    assert_int_eq(
        harness_long(
            h,
            "WITH d AS (DELETE FROM shoal.item_results WHERE job_id = 'lostsub-1' AND item_id = "
            "'i00035' RETURNING 1), "
            "t AS (INSERT INTO shoal.tasks (task_id, job_id, chunk, item_ids, est_tokens, "
            "parent_task_id, status, queued_at, created_at) VALUES ($1, 'lostsub-1', 0, "
            "ARRAY['i00035'], 10, 'lostsub-1:000000', 'queued', now() - interval '1 hour', "
            "now() - interval '1 hour') RETURNING 1), "
            "j AS (UPDATE shoal.jobs SET status = 'running', tasks_total = tasks_total + 1, "
            "output = NULL, output_pages = NULL, output_chars = NULL, finished_at = NULL "
            "WHERE job_id = 'lostsub-1' RETURNING 1) "
            "SELECT (SELECT count(*) FROM d) + (SELECT count(*) FROM t) + (SELECT count(*) FROM j)",
            "lostsub-1:000000.900", NULL),
        3);
    wait_completed(h, "lostsub-1", 60);
    char by[64];
    harness_str(h, by, sizeof(by),
                "SELECT task_id FROM shoal.item_results WHERE job_id = 'lostsub-1' AND "
                "item_id = 'i00035'",
                NULL);
    assert_str_eq(by, "lostsub-1:000000.900");
    assert_int_eq(harness_long(h,
                               "SELECT count(*) FROM shoal.attempts WHERE task_id = "
                               "'lostsub-1:000000.900' AND outcome = 'ok'",
                               NULL),
                  1);
    check_merged(h, "lostsub-1", 40);
}

static void test_context(harness_t *h)
{
    char *job = harness_job("ctx-1", 20, 5, NULL);
    harness_produce(h, "shoal.jobs", "ctx-1", job, strlen(job));
    free(job);
    wait_completed(h, "ctx-1", 60);
    assert_int_eq(
        harness_long(h, "SELECT count(*) FROM shoal.results WHERE job_id = 'ctx-1'", NULL), 4);
    assert_int_eq(
        harness_long(h, "SELECT count(*) FROM shoal.item_results WHERE job_id = 'ctx-1'", NULL), 0);
    assert_int_eq(harness_long(h,
                               "SELECT count(*) FROM shoal.tasks WHERE job_id = 'ctx-1' AND "
                               "parent_task_id IS NOT NULL",
                               NULL),
                  0);
    char out[4096];
    harness_str(h, out, sizeof(out), "SELECT output FROM shoal.jobs WHERE job_id = 'ctx-1'", NULL);
    assert_str_contains(out, "item-00019");
}

int main(void)
{
    static const char *const sim_args[] = {"--p-drop-item", "0.2", NULL};
    harness_conf_t conf = {
        .workers = 1, .schedulers = 1, .sim_latency_ms = 20, .sim_args = sim_args};
    harness_t *h = harness_start(&conf);
    char err[512];
    /* A lost queued task is republished after 2 s here (10 min by default). */
    char *const env[] = {"SHOAL_RECONCILE_AFTER_MS=2000", "SHOAL_RECONCILE_EVERY_MS=500", NULL};
    if (shoal_devstack_restart(harness_stack(h), "scheduler", 0, env, err, sizeof(err)) != SHOAL_OK)
        test_fail("could not restart the scheduler: %s", err);

    test_batch(h);
    test_lost_subtask(h);
    test_context(h);

    harness_stop(h);
    fprintf(stderr, "ok\n");
    return 0;
}
