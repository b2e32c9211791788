/*
 * One stack with two schedulers and two workers, the main path: a 1000-item
 * job submitted with the shoal CLI ends completed with one result per item,
 * merged in item order; the same job_id submitted again is one job; a job
 * produced with kcat (no shoal client, no job_id) completes under an id
 * derived from its Kafka position and bytes (a hash, common/jobid.h); the
 * CLI's status and results commands report it; events mark each job's life.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "stack/proc.h"
#include "tests/support/check.h"
#include "tests/support/harness.h"

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    assert_true(f != NULL);
    fputs(text, f);
    assert_true(fclose(f) == 0);
}

int main(void)
{
    harness_conf_t conf = {.workers = 2, .schedulers = 2};
    harness_t *h = harness_start(&conf);
    char path[1024], out[1 << 16], status[64];
    const char *workdir = shoal_devstack_workdir(harness_stack(h));

    /* 1000 items, one per chunk, through `shoal submit`. */
    char *job = harness_job("big-1", 1000, 1, NULL);
    snprintf(path, sizeof(path), "%s/big.json", workdir);
    write_file(path, job);
    free(job);
    int rc = harness_sh(h, out, sizeof(out), "%s submit %s", harness_bin("shoal"), path);
    assert_int_eq(rc, 0);
    assert_str_eq(out, "big-1\n");
    harness_wait_job(h, "big-1", 180, status, sizeof(status));
    assert_str_eq(status, "completed");
    assert_int_eq(
        harness_long(h, "SELECT count(*) FROM shoal.results WHERE job_id = $1", "big-1", NULL),
        1000);
    assert_int_eq(
        harness_long(h, "SELECT tasks_total FROM shoal.jobs WHERE job_id = $1", "big-1", NULL),
        1000);
    /* Each result belongs to its item: the simulator echoes the prompt. */
    assert_int_eq(harness_long(h,
                               "SELECT count(*) FROM shoal.results r JOIN shoal.tasks t USING "
                               "(task_id) WHERE r.job_id = $1 AND position('item-' || "
                               "substr(t.item_ids[1], 2) IN r.output) = 0",
                               "big-1", NULL),
                  0);

    /* Merged output: 1000 chunks in item order. */
    rc = harness_sh(h, out, sizeof(out), "%s results big-1 | grep -o 'item-[0-9]*' | md5sum",
                    harness_bin("shoal"));
    assert_int_eq(rc, 0);
    char expect[64];
    assert_int_eq(harness_sh(h, expect, sizeof(expect),
                             "for i in $(seq 0 999); do printf 'item-%%05d\\n' $i; done | md5sum"),
                  0);
    assert_str_eq(out, expect);

    /* The same job_id again: still one job, no new calls. */
    json_t *before = harness_sim_stats(h);
    long calls_before = (long)json_integer_value(json_object_get(before, "requests"));
    json_decref(before);
    rc = harness_sh(h, out, sizeof(out), "%s submit %s", harness_bin("shoal"), path);
    assert_int_eq(rc, 0);

    /* A job from kcat, without job_id: the id comes from topic/partition/offset. */
    char *kjob = harness_job(NULL, 20, 4, "{\"merge\": \"jsonl\"}");
    snprintf(path, sizeof(path), "%s/kcat.json", workdir);
    write_file(path, kjob);
    free(kjob);
    rc = harness_sh(h, out, sizeof(out), "kcat -P -b \"$SHOAL_BOOTSTRAP\" -t shoal.jobs -p 0 %s",
                    path);
    assert_int_eq(rc, 0);
    char kid[256] = "";
    double deadline = check_now_s() + 60;
    while (!*kid && check_now_s() < deadline) {
        harness_str(h, kid, sizeof(kid),
                    "SELECT job_id FROM shoal.jobs WHERE job_id LIKE 'j-%' LIMIT 1", NULL);
        usleep(100000);
    }
    assert_true(*kid);
    harness_wait_job(h, kid, 60, status, sizeof(status));
    assert_str_eq(status, "completed");
    assert_int_eq(
        harness_long(h, "SELECT count(*) FROM shoal.results WHERE job_id = $1", kid, NULL), 5);
    rc = harness_sh(h, out, sizeof(out), "%s results '%s' | wc -l", harness_bin("shoal"), kid);
    assert_int_eq(rc, 0);
    assert_int_eq(strtol(out, NULL, 10), 5);

    /* A scheduler saw the duplicate and published nothing new. */
    assert_wait(harness_sh(h, NULL, 0,
                           "grep -q 'already known\" job_id=big-1 republished=0' "
                           "%s/logs/scheduler-*.log",
                           workdir) == 0,
                30, "a scheduler to report the duplicate big-1");
    json_t *ev = harness_events(h, "big-1", 2, 30);
    assert_int_eq(
        harness_long(h, "SELECT count(*) FROM shoal.jobs WHERE job_id = $1", "big-1", NULL), 1);
    assert_int_eq(
        harness_long(h, "SELECT count(*) FROM shoal.results WHERE job_id = $1", "big-1", NULL),
        1000);
    json_t *after = harness_sim_stats(h);
    long calls_after = (long)json_integer_value(json_object_get(after, "requests"));
    assert_int_eq(calls_after - calls_before, 5); /* only the kcat job's 5 chunks */
    assert_int_eq(json_integer_value(json_object_get(after, "repeated_prompts")), 0);
    json_decref(after);

    /* Events: accepted then completed for big-1 (the duplicate adds none). */
    int accepted = 0, completed = 0;
    size_t i;
    json_t *e;
    json_array_foreach(ev, i, e)
    {
        const char *type = json_string_value(json_object_get(e, "type"));
        accepted += type && !strcmp(type, "accepted");
        completed += type && !strcmp(type, "completed");
    }
    json_decref(ev);
    assert_int_eq(accepted, 1);
    assert_int_eq(completed, 1);

    /* status: exit 0 and the counts; an unknown job: exit 4. */
    rc = harness_sh(h, out, sizeof(out), "%s status big-1", harness_bin("shoal"));
    assert_int_eq(rc, 0);
    assert_str_contains(out, "completed: 1000/1000 tasks done");
    rc = harness_sh(h, out, sizeof(out), "%s status no-such-job 2>/dev/null", harness_bin("shoal"));
    assert_int_eq(rc, 4);

    harness_stop(h);
    fprintf(stderr, "ok\n");
    return 0;
}
