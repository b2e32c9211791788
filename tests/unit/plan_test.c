/*
 * scheduler/plan on known jobs and plans, without PostgreSQL: no tenants file
 * changes nothing; a plan's default priority fills in only a priority the job
 * left out; max items counts the items of earlier parts (items_before) with
 * the job's own, at the limit and one over; max prompt tokens judges the
 * largest call; the counted limits come back as the quota JSON, and no quota
 * comes back with a rejection.
 */
#include "scheduler/plan.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tests/support/check.h"

static shoal_tenants_t *tenants;

/* A job of tenant with n items ("item-<i>", one per chunk), extra fields
 * merged in (a JSON object's members, without braces, or ""). */
static shoal_job_t *job_of(const char *tenant, int n, const char *extra)
{
    char text[8192], why[1024];
    int len = snprintf(text, sizeof(text),
                       "{\"job_id\": \"j\", \"tenant\": \"%s\", \"model\": \"m\", "
                       "\"prompt_template\": \"Echo:\\n{{input}}\", "
                       "\"chunking\": {\"max_items\": 1}, %s%s\"items\": [",
                       tenant, extra, extra[0] ? ", " : "");
    for (int i = 0; i < n; i++)
        len += snprintf(text + len, sizeof(text) - (size_t)len,
                        "%s{\"id\": \"i%d\", \"input\": "
                        "\"item-%d\"}",
                        i ? ", " : "", i, i);
    len += snprintf(text + len, sizeof(text) - (size_t)len, "]}");
    assert_true(len > 0 && (size_t)len < sizeof(text));
    shoal_job_t *job = shoal_job_parse(text, (size_t)len, 0, NULL, why, sizeof(why));
    if (!job)
        test_fail("job does not parse: %s", why);
    return job;
}

static void test_no_tenants(void)
{
    char why[512];
    shoal_job_t *job = job_of("acme", 5, "");
    /* no limits: a thousand items before this part are fine */
    assert_int_eq(shoal_plan_apply(NULL, job, 1000, NULL, why, sizeof(why)), SHOAL_OK);
    assert_str_eq(shoal_job_priority(job), "normal");
    shoal_job_destroy(job);
}

static void test_default_priority(void)
{
    /* tenant, the job's own fields, the priority it runs at */
    static const char *const cases[][3] = {
        {"small", "", "high"},                        /* the plan's default */
        {"small", "\"priority\": \"low\"", "low"},    /* the job's own wins */
        {"limited", "", "normal"},                    /* a plan without one */
        {"nobody", "\"priority\": \"high\"", "high"}, /* no plan at all */
    };
    char why[512];
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        shoal_job_t *job = job_of(cases[i][0], 1, cases[i][1]);
        assert_int_eq(shoal_plan_apply(tenants, job, 0, NULL, why, sizeof(why)), SHOAL_OK);
        assert_str_eq(shoal_job_priority(job), cases[i][2]);
        shoal_job_destroy(job);
    }
}

static void test_max_items_running_total(void)
{
    char why[512];
    shoal_job_t *job = job_of("small", 2, "");

    /* 1 earlier + 2 = 3: at the limit */
    assert_int_eq(shoal_plan_apply(tenants, job, 1, NULL, why, sizeof(why)), SHOAL_OK);
    /* 2 earlier + 2 = 4: over, in the words a job sent whole gets */
    assert_int_eq(shoal_plan_apply(tenants, job, 2, NULL, why, sizeof(why)), SHOAL_ERR_LIMIT);
    assert_str_eq(why, "tenant small: the job has 4 items; the plan allows at most 3 per job "
                       "(split the job)");
    shoal_job_destroy(job);

    /* a whole job of 4 is told the same */
    job = job_of("small", 4, "");
    assert_int_eq(shoal_plan_apply(tenants, job, 0, NULL, why, sizeof(why)), SHOAL_ERR_LIMIT);
    assert_str_contains(why, "the job has 4 items");
    shoal_job_destroy(job);
}

static void test_max_prompt_tokens(void)
{
    char why[512], extra[4096];
    /* a system prompt of some 300 words makes every call long */
    int len = snprintf(extra, sizeof(extra), "\"system\": \"");
    for (int i = 0; i < 300; i++)
        len += snprintf(extra + len, sizeof(extra) - (size_t)len, "word%d ", i);
    snprintf(extra + len, sizeof(extra) - (size_t)len, "\"");
    shoal_job_t *job = job_of("tight", 2, extra);
    long max_call = shoal_plan_max_call_tokens(job);
    assert_true(max_call > 100);
    assert_int_eq(max_call, shoal_job_chunk_est_tokens(job, 0) > shoal_job_chunk_est_tokens(job, 1)
                                ? shoal_job_chunk_est_tokens(job, 0)
                                : shoal_job_chunk_est_tokens(job, 1));
    assert_int_eq(shoal_plan_apply(tenants, job, 0, NULL, why, sizeof(why)), SHOAL_ERR_LIMIT);
    assert_str_contains(why, "tenant tight: a call of the job has a prompt of about");
    assert_str_contains(why, "the plan allows at most 100");
    shoal_job_destroy(job);

    job = job_of("tight", 2, "");
    assert_true(shoal_plan_max_call_tokens(job) <= 100);
    assert_int_eq(shoal_plan_apply(tenants, job, 0, NULL, why, sizeof(why)), SHOAL_OK);
    shoal_job_destroy(job);
}

/* The counted limits handed over: none without a tenants file, none for a
 * plan that counts nothing, none with a rejection. */
static void test_quota(void)
{
    struct {
        int with_plans;
        const char *tenant;
        int n_items;
        long per_minute; /* 0: no quota */
    } cases[] = {
        {0, "limited", 1, 0}, {1, "small", 1, 0}, {1, "limited", 1, 2}, {1, "small", 4, 0}};
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char why[512];
        json_t *quota = json_null(); /* must be replaced */
        shoal_job_t *job = job_of(cases[i].tenant, cases[i].n_items, "");
        shoal_plan_apply(cases[i].with_plans ? tenants : NULL, job, 0, &quota, why, sizeof(why));
        if (cases[i].per_minute == 0)
            assert_true(quota == NULL);
        else
            assert_int_eq(json_integer_value(json_object_get(quota, "jobs_per_minute")),
                          cases[i].per_minute);
        json_decref(quota);
        shoal_job_destroy(job);
    }
}

static shoal_tenants_t *load_plans(void)
{
    static const char text[] = "{\"tenants\": {\"limited\": {\"jobs_per_minute\": 2},"
                               " \"small\": {\"max_items\": 3, \"default_priority\": \"high\"},"
                               " \"tight\": {\"max_prompt_tokens\": 100}}}";
    char err[1024];
    shoal_tenants_t *t = shoal_tenants_parse(text, sizeof(text) - 1, err, sizeof(err));
    if (!t)
        test_fail("tenants: %s", err);
    return t;
}

int main(void)
{
    tenants = load_plans();
    test_no_tenants();
    test_default_priority();
    test_max_items_running_total();
    test_max_prompt_tokens();
    test_quota();
    shoal_tenants_destroy(tenants);
    printf("plan_test: ok\n");
    return 0;
}
