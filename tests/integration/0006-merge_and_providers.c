/*
 * What a job asks for is what it gets: json output merged as a JSON array,
 * multi-item chunks, an Anthropic-shaped provider merged as JSON lines,
 * chunks that never mix groups, a budget that rejects an expensive job, and
 * the CLI's exit codes for each ending.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tests/support/check.h"
#include "tests/support/harness.h"

static char *job_output(harness_t *h, const char *job_id)
{
    static char out[1 << 16];
    harness_str(h, out, sizeof(out), "SELECT output FROM shoal.jobs WHERE job_id = $1", job_id,
                NULL);
    return out;
}

int main(void)
{
    harness_conf_t conf = {.workers = 1, .schedulers = 1};
    harness_t *h = harness_start(&conf);
    char status[64], buf[4096];

    /* 10 items, 3 per chunk, JSON output, merged as a JSON array. */
    char *a = harness_job("m-json", 10, 3,
                          "{\"output\": {\"format\": \"json\"}, \"merge\": \"json_array\","
                          " \"prompt_template\": \"Return JSON for:\\n{{input}}\"}");
    harness_produce(h, "shoal.jobs", "m-json", a, strlen(a));
    free(a);

    /* Anthropic messages, 2 items per chunk, merged as JSON lines. */
    char *b = harness_job("m-claude", 6, 2, "{\"model\": \"sim-claude\", \"merge\": \"jsonl\"}");
    harness_produce(h, "shoal.jobs", "m-claude", b, strlen(b));
    free(b);

    /* Groups: chunks close where the group changes, whatever max_items says. */
    const char *c = "{\"job_id\": \"m-groups\", \"tenant\": \"t\", \"model\": \"sim-small\","
                    " \"prompt_template\": \"{{input}}\", \"chunking\": {\"max_items\": 10,"
                    " \"group_by\": \"group\"}, \"items\": ["
                    "{\"id\": \"a1\", \"input\": \"alpha one\", \"group\": \"a\"},"
                    "{\"id\": \"a2\", \"input\": \"alpha two\", \"group\": \"a\"},"
                    "{\"id\": \"b1\", \"input\": \"beta one\", \"group\": \"b\"},"
                    "{\"id\": \"b2\", \"input\": \"beta two\", \"group\": \"b\"},"
                    "{\"id\": \"b3\", \"input\": \"beta three\", \"group\": \"b\"}]}";
    harness_produce(h, "shoal.jobs", "m-groups", c, strlen(c));

    /* A budget far below the estimate: rejected before any call. */
    char *d = harness_job("m-budget", 50, 1, "{\"model\": \"sim-large\", \"budget_usd\": 1e-9}");
    harness_produce(h, "shoal.jobs", "m-budget", d, strlen(d));
    free(d);

    harness_wait_job(h, "m-json", 60, status, sizeof(status));
    assert_str_eq(status, "completed");
    json_error_t jerr;
    json_t *arr = json_loads(job_output(h, "m-json"), 0, &jerr);
    if (!json_is_array(arr))
        test_fail("m-json output is not a JSON array: %s", jerr.text);
    assert_int_eq(json_array_size(arr), 4);
    for (size_t i = 0; i < 4; i++) {
        json_t *el = json_array_get(arr, i);
        assert_true(json_is_object(el));
        const char *echo = json_string_value(json_object_get(el, "echo"));
        snprintf(buf, sizeof(buf), "item-%05zu", i * 3);
        assert_str_contains(echo, buf); /* chunk i starts with item 3i */
    }
    json_decref(arr);

    harness_wait_job(h, "m-claude", 60, status, sizeof(status));
    assert_str_eq(status, "completed");
    char *lines = job_output(h, "m-claude");
    int nlines = 0;
    for (char *line = lines; line && *line; nlines++) {
        char *nl = strchr(line, '\n');
        assert_true(nl != NULL);
        json_t *obj = json_loadb(line, (size_t)(nl - line), 0, &jerr);
        if (!json_is_object(obj))
            test_fail("m-claude line %d is not JSON: %s", nlines, jerr.text);
        assert_int_eq(json_integer_value(json_object_get(obj, "chunk")), nlines);
        assert_int_eq(json_array_size(json_object_get(obj, "items")), 2);
        snprintf(buf, sizeof(buf), "item-%05d", nlines * 2 + 1);
        assert_str_contains(json_string_value(json_object_get(obj, "output")), buf);
        json_decref(obj);
        line = nl + 1;
    }
    assert_int_eq(nlines, 3);
    /* The calls went out in the Anthropic shape and were priced as sim-claude. */
    assert_int_eq(harness_long(h,
                               "SELECT count(*) FROM shoal.attempts WHERE job_id = 'm-claude' AND "
                               "model = 'sim-claude' AND http_status = 200 AND tokens_in > 0 AND "
                               "cost_usd > 0 AND queue_ms >= 0",
                               NULL),
                  3);

    harness_wait_job(h, "m-groups", 60, status, sizeof(status));
    assert_str_eq(status, "completed");
    assert_int_eq(
        harness_long(h, "SELECT tasks_total FROM shoal.jobs WHERE job_id = 'm-groups'", NULL), 2);
    harness_str(h, buf, sizeof(buf),
                "SELECT string_agg(array_to_string(item_ids, ','), '|' ORDER BY chunk) FROM "
                "shoal.tasks WHERE job_id = 'm-groups'",
                NULL);
    assert_str_eq(buf, "a1,a2|b1,b2,b3");

    harness_wait_job(h, "m-budget", 60, status, sizeof(status));
    assert_str_eq(status, "rejected");
    harness_str(h, buf, sizeof(buf), "SELECT error FROM shoal.jobs WHERE job_id = 'm-budget'",
                NULL);
    assert_str_contains(buf, "budget_usd");

    /* CLI exit codes: completed 0, rejected 3, results of a rejected job 3. */
    assert_int_eq(harness_sh(h, NULL, 0, "%s status m-groups >/dev/null", harness_bin("shoal")), 0);
    assert_int_eq(harness_sh(h, NULL, 0, "%s status m-budget >/dev/null", harness_bin("shoal")), 3);
    assert_int_eq(
        harness_sh(h, NULL, 0, "%s results m-budget >/dev/null 2>&1", harness_bin("shoal")), 3);
    /* An invalid job file is refused by `shoal submit` itself: exit 2. */
    snprintf(buf, sizeof(buf), "%s submit %s/tests/data/jobs/invalid/empty_items.json 2>&1",
             harness_bin("shoal"), SHOAL_SOURCE_DIR);
    char out[1024];
    assert_int_eq(harness_sh(h, out, sizeof(out), "%s", buf), 2);
    assert_str_contains(out, "items: must not be empty");

    harness_stop(h);
    fprintf(stderr, "ok\n");
    return 0;
}
