/*
 * Output is what the job asked for. A job's output.schema is enforced on
 * every answer: an answer that breaks it gets one repair call (the prompt,
 * the bad answer and what is wrong with it), which here fixes it; an answer
 * no repair can fix fails the task after its attempts, with the schema's
 * complaint. Truncated answers (simulator --p-truncated) are retried with
 * more output room, and every attempt's outcome shows in SQL. A truncated
 * answer uses up an attempt like any other, so the rate of cut answers is
 * kept low enough (one in ten) that no task runs out of attempts on them.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tests/support/check.h"
#include "tests/support/harness.h"

int main(void)
{
    static const char *const sim_args[] = {"--p-truncated", "0.1", "--seed", "11", NULL};
    harness_conf_t conf = {.workers = 1, .schedulers = 1, .sim_args = sim_args};
    harness_t *h = harness_start(&conf);
    char status[64];

    /* The simulator answers JSON {"sim": H, "echo": <prompt>}. The schema
     * wants the echo to mention a previous answer, which only the repair
     * prompt does: every task needs exactly one repair. */
    char *fixable = harness_job(
        "v-fix", 20, 1,
        "{\"output\": {\"format\": \"json\", \"schema\": {\"type\": \"object\", \"required\": "
        "[\"sim\", \"echo\"], \"properties\": {\"echo\": {\"type\": \"string\", \"pattern\": "
        "\"previous answer\"}}}}, \"max_attempts\": 8}");
    harness_produce(h, "shoal.jobs", "v-fix", fixable, strlen(fixable));
    free(fixable);
    /* A property the simulator never produces: no repair helps. */
    char *hopeless = harness_job("v-never", 10, 1,
                                 "{\"output\": {\"format\": \"json\", \"schema\": {\"type\": "
                                 "\"object\", \"required\": [\"answer\"]}}, \"max_attempts\": 2}");
    harness_produce(h, "shoal.jobs", "v-never", hopeless, strlen(hopeless));
    free(hopeless);

    harness_wait_job(h, "v-fix", 120, status, sizeof(status));
    assert_str_eq(status, "completed");
    assert_int_eq(
        harness_long(h, "SELECT count(*) FROM shoal.results WHERE job_id = 'v-fix'", NULL), 20);
    /* Each task: a first answer rejected by the schema, then its repair
     * accepted (truncated answers add retries, not results). */
    assert_int_eq(harness_long(h,
                               "SELECT count(*) FROM shoal.results WHERE job_id = 'v-fix' AND "
                               "output::jsonb->>'echo' LIKE '%previous answer%'",
                               NULL),
                  20);
    assert_int_ge(harness_long(h,
                               "SELECT count(*) FROM shoal.attempts WHERE job_id = 'v-fix' AND "
                               "outcome_kind = 'malformed' AND error LIKE 'output does not match "
                               "the schema: %'",
                               NULL),
                  20);
    assert_int_eq(harness_long(h,
                               "SELECT count(*) FROM shoal.attempts WHERE job_id = 'v-fix' AND "
                               "outcome = 'ok'",
                               NULL),
                  20);

    harness_wait_job(h, "v-never", 120, status, sizeof(status));
    assert_str_eq(status, "failed");
    assert_int_eq(harness_long(h,
                               "SELECT count(*) FROM shoal.tasks WHERE job_id = 'v-never' AND "
                               "status = 'failed'",
                               NULL),
                  10);
    /* The reason is the schema's complaint (or, where the last answer was
     * cut, the truncation). */
    assert_int_ge(harness_long(h,
                               "SELECT count(*) FROM shoal.tasks WHERE job_id = 'v-never' AND "
                               "error LIKE 'output does not match the schema: missing required "
                               "field \"answer\"%'",
                               NULL),
                  1);
    assert_int_eq(harness_long(h,
                               "SELECT count(*) FROM shoal.tasks WHERE job_id = 'v-never' AND "
                               "error NOT LIKE '%\"answer\"%' AND error NOT LIKE '%truncated%'",
                               NULL),
                  0);
    /* Two attempts each, each a call plus its repair (a truncated answer
     * takes the place of some of them): at most 40, and with one in ten
     * answers cut, far more than 10. */
    long bad = harness_long(h,
                            "SELECT count(*) FROM shoal.attempts WHERE job_id = 'v-never' AND "
                            "outcome_kind = 'malformed'",
                            NULL);
    assert_int_ge(bad, 10);
    assert_true(bad <= 40);

    /* Truncated answers happened and were retried, visible in SQL. */
    assert_int_ge(harness_long(h,
                               "SELECT count(*) FROM shoal.attempts WHERE outcome_kind = "
                               "'truncated' AND outcome = 'retry'",
                               NULL),
                  1);
    harness_stop(h);
    fprintf(stderr, "ok\n");
    return 0;
}
