/*
 * Models the worker cannot serve. The worker runs with a models file of its
 * own (--models) that lacks an alias the scheduler knows: that job's tasks
 * fail with a reason naming the model, and the job still ends. A model whose
 * endpoint refuses connections for good: with the job's fallback_models the
 * fallback serves every task (results name the fallback as model and the
 * original as model_requested; the calls to the fallback carry fallback_from),
 * and with no fallback the tasks fail once the model has failed longer than
 * --down-after-ms, and the job ends. Meanwhile a healthy job on the same
 * worker completes.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "sim/sim.h"
#include "tests/support/check.h"
#include "tests/support/faults.h"
#include "tests/support/harness.h"

#define DOWN "\"http://127.0.0.1:1/v1/chat/completions\""

int main(void)
{
    char err[512], dir[] = "/tmp/shoal-it12-XXXXXX", models[600], text[4096], status[64], buf[1024];

    /* The worker's models point at a simulator of this process. */
    shoal_sim_conf_t sc;
    shoal_sim_conf_init(&sc);
    sc.latency_ms = 10;
    shoal_sim_t *sim = shoal_sim_new(&sc, err, sizeof(err));
    if (!sim)
        test_fail("could not start a simulator: %s", err);
    assert_true(mkdtemp(dir) != NULL);
    snprintf(models, sizeof(models), "%s/worker-models.json", dir);
    snprintf(text, sizeof(text),
             "{\"models\": {\n"
             "  \"sim-small\": {\"provider\": \"openai\", \"endpoint\": "
             "\"http://127.0.0.1:%d/v1/chat/completions\", \"model\": \"sim-small\"},\n"
             "  \"alt\": {\"provider\": \"openai\", \"endpoint\": "
             "\"http://127.0.0.1:%d/v1/chat/completions\", \"model\": \"alt\"},\n"
             "  \"gone\": {\"provider\": \"openai\", \"endpoint\": " DOWN ", \"model\": \"gone\"}\n"
             "}}\n",
             shoal_sim_port(sim), shoal_sim_port(sim));
    faults_write_file(models, text);

    const char *wargs[] = {"--down-after-ms", "3000", "--models", models, NULL};
    harness_conf_t conf = {
        .workers = 1,
        .schedulers = 1,
        .worker_args = wargs,
        .extra_models =
            "\"alt\": {\"provider\": \"openai\", \"endpoint\": " DOWN ", \"model\": \"alt\"},\n"
            "\"gone\": {\"provider\": \"openai\", \"endpoint\": " DOWN ", \"model\": \"gone\"},\n"
            "\"sched-only\": {\"provider\": \"openai\", "
            "\"endpoint\": " DOWN ", \"model\": \"sched-only\"}"};
    harness_t *h = harness_start(&conf);

    struct {
        const char *id;
        int n;
        const char *extra;
    } jobs[] = {
        {"unk-1", 3, "{\"model\": \"sched-only\"}"},
        {"fb-1", 10,
         "{\"model\": \"gone\", \"fallback_models\": [\"alt\"], \"max_attempts\": 3, "
         "\"prompt_template\": \"Fallback:\\n{{input}}\"}"},
        {"down-1", 4, "{\"model\": \"gone\", \"max_attempts\": 3}"},
        {"ok-1", 10, NULL},
    };
    for (size_t i = 0; i < sizeof(jobs) / sizeof(jobs[0]); i++) {
        char *job = harness_job(jobs[i].id, jobs[i].n, 1, jobs[i].extra);
        harness_produce(h, "shoal.jobs", jobs[i].id, job, strlen(job));
        free(job);
    }

    /* A healthy job on the worker's own file completes. */
    harness_wait_job(h, "ok-1", 60, status, sizeof(status));
    faults_assert_once(h, "ok-1", 10);

    /* Unknown alias: failed with the model named, the job ends. */
    harness_wait_job(h, "unk-1", 60, status, sizeof(status));
    assert_str_eq(status, "failed");
    assert_int_eq(harness_long(h,
                               "SELECT count(*) FROM shoal.tasks WHERE job_id = 'unk-1' AND "
                               "status = 'failed' AND error LIKE '%sched-only%' AND error LIKE "
                               "'%not in this worker''s models file%'",
                               NULL),
                  3);
    assert_int_eq(
        harness_long(h, "SELECT count(*) FROM shoal.attempts WHERE job_id = 'unk-1'", NULL), 0);

    /* Down for good, with a fallback: the fallback served every task. */
    harness_wait_job(h, "fb-1", 90, status, sizeof(status));
    faults_assert_once(h, "fb-1", 10);
    assert_int_eq(harness_long(h,
                               "SELECT count(*) FROM shoal.results WHERE job_id = 'fb-1' AND "
                               "model = 'alt' AND model_requested = 'gone'",
                               NULL),
                  10);
    assert_int_eq(harness_long(h,
                               "SELECT count(*) FROM shoal.attempts WHERE job_id = 'fb-1' AND "
                               "outcome = 'ok' AND model = 'alt' AND fallback_from = 'gone'",
                               NULL),
                  10);
    /* Calls to the fallback carry fallback_from; calls to the original none. */
    assert_int_eq(harness_long(h,
                               "SELECT count(*) FROM shoal.attempts WHERE job_id = 'fb-1' AND "
                               "model = 'alt' AND fallback_from IS DISTINCT FROM 'gone'",
                               NULL),
                  0);
    assert_int_eq(harness_long(h,
                               "SELECT count(*) FROM shoal.attempts WHERE job_id = 'fb-1' AND "
                               "model = 'gone' AND (fallback_from IS NOT NULL OR outcome = 'ok')",
                               NULL),
                  0);

    /* Down for good, no fallback: the tasks fail with the reason, the job ends. */
    harness_wait_job(h, "down-1", 90, status, sizeof(status));
    assert_str_eq(status, "failed");
    assert_int_eq(harness_long(h,
                               "SELECT count(*) FROM shoal.tasks WHERE job_id = 'down-1' AND "
                               "status = 'failed' AND error LIKE 'model gone failing for %'",
                               NULL),
                  4);
    assert_int_eq(harness_long(h,
                               "SELECT count(*) FROM shoal.attempts WHERE job_id = 'down-1' AND "
                               "(outcome = 'ok' OR http_status <> 0)",
                               NULL),
                  0);
    harness_str(h, buf, sizeof(buf), "SELECT error FROM shoal.jobs WHERE job_id = 'down-1'", NULL);
    assert_str_eq(buf, "4 of 4 tasks failed");

    /* The worker's simulator served exactly the good tasks. */
    shoal_sim_stats_t *st = malloc(sizeof(*st));
    assert_true(st != NULL);
    shoal_sim_stats(sim, st);
    assert_int_eq(st->by_status[200], 20);
    assert_int_eq(st->repeated_prompts, 0);
    free(st);

    harness_stop(h);
    shoal_sim_destroy(sim);
    remove(models);
    rmdir(dir);
    fprintf(stderr, "ok\n");
    return 0;
}
