/*
 * Calls that keep failing: a model whose endpoint refuses connections cools
 * down (probed one call at a time, not hammered), and once it has failed for
 * longer than --down-after-ms its tasks fail with the reason (there is no
 * fallback), every call is recorded, each task goes to the dead-letter topic
 * with its error, and the job ends `failed` with a reason and an event. Garbage messages on the
 * task topics (text, and bytes that are not UTF-8) are dead-lettered without stopping the worker: a
 * good job behind them completes.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/kafka.h"
#include "tests/support/check.h"
#include "tests/support/faults.h"
#include "tests/support/harness.h"

int main(void)
{
    static const char *const worker_args[] = {"--down-after-ms", "3000", NULL};
    harness_conf_t conf = {.workers = 1,
                           .schedulers = 1,
                           .worker_args = worker_args,
                           .extra_models =
                               "\"sim-down\": {\"provider\": \"openai\", \"endpoint\": "
                               "\"http://127.0.0.1:1/v1/chat/completions\", \"model\": \"down\"}"};
    harness_t *h = harness_start(&conf);
    char status[64], buf[1024];

    const char *garbage = "this is not a task";
    harness_produce(h, "shoal.tasks.normal", "junk", garbage, strlen(garbage));
    const char binary[] = "\xff\xfe\x01 not UTF-8";
    harness_produce(h, "shoal.tasks.low", "junk2", binary, sizeof(binary) - 1);

    char *job = harness_job("down-1", 3, 1, "{\"model\": \"sim-down\", \"max_attempts\": 2}");
    harness_produce(h, "shoal.jobs", "down-1", job, strlen(job));
    free(job);
    char *ok = harness_job("fine-1", 5, 1, NULL);
    harness_produce(h, "shoal.jobs", "fine-1", ok, strlen(ok));
    free(ok);

    harness_wait_job(h, "fine-1", 60, status, sizeof(status));
    assert_str_eq(status, "completed");
    harness_wait_job(h, "down-1", 120, status, sizeof(status));
    assert_str_eq(status, "failed");
    harness_str(h, buf, sizeof(buf), "SELECT error FROM shoal.jobs WHERE job_id = 'down-1'", NULL);
    assert_str_eq(buf, "3 of 3 tasks failed");

    /* Every call was a transport failure, and the cooldown kept them few:
     * the three first tries, then single probes about a second apart. */
    long calls =
        harness_long(h, "SELECT count(*) FROM shoal.attempts WHERE job_id = 'down-1'", NULL);
    assert_int_ge(calls, 3);
    assert_true(calls <= 8);
    assert_int_eq(harness_long(h,
                               "SELECT count(*) FROM shoal.attempts WHERE job_id = 'down-1' AND "
                               "http_status <> 0",
                               NULL),
                  0);
    assert_int_eq(harness_long(h,
                               "SELECT count(*) FROM shoal.tasks WHERE job_id = 'down-1' AND "
                               "status = 'failed' AND error LIKE 'model sim-down failing for %'",
                               NULL),
                  3);

    /* The dead-letter topic holds the three tasks and the garbage messages. */
    json_t *dlq = faults_read_topic(h, "shoal.tasks.dlq", 5, 60);
    assert_int_eq(json_array_size(dlq), 5);
    int tasks = 0, raw = 0, hex = 0;
    size_t i;
    json_t *m;
    json_array_foreach(dlq, i, m)
    {
        assert_true(json_string_value(json_object_get(m, "error")) != NULL);
        if (json_object_get(m, "task")) {
            tasks++;
            assert_str_eq(json_string_value(json_object_get(json_object_get(m, "task"), "job_id")),
                          "down-1");
        }
        if (json_object_get(m, "raw")) {
            raw++;
            assert_str_eq(json_string_value(json_object_get(m, "raw")), garbage);
        }
        if (json_object_get(m, "raw_hex")) {
            hex++;
            assert_str_eq(json_string_value(json_object_get(m, "raw_hex")),
                          "fffe01206e6f74205554462d38");
        }
    }
    json_decref(dlq);
    assert_int_eq(tasks, 3);
    assert_int_eq(raw, 1);
    assert_int_eq(hex, 1);

    json_t *ev = harness_events(h, "down-1", 2, 30);
    json_t *last = json_array_get(ev, json_array_size(ev) - 1);
    assert_str_eq(json_string_value(json_object_get(last, "type")), "failed");
    assert_int_eq(json_integer_value(json_object_get(last, "tasks_failed")), 3);
    json_decref(ev);

    harness_stop(h);
    fprintf(stderr, "ok\n");
    return 0;
}
