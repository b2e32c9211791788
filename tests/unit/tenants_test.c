/*
 * common/tenants and common/jobid on known data: a tenants file read into
 * plans (own plan, default plan, none), every problem of a bad file named at
 * once, the per-job limits, the quota reasons with their reset times, and
 * the rows mirrored into shoal.tenants; content hashes, derived job ids that
 * change with the cluster, offset, timestamp and bytes and stay the same for
 * a redelivery, and random CLI ids.
 */
#include "common/tenants.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/jobid.h"
#include "tests/support/check.h"

static shoal_tenants_t *parse(const char *text, char *err, size_t errlen)
{
    return shoal_tenants_parse(text, strlen(text), err, errlen);
}

static void test_plans(void)
{
    char err[2048];
    shoal_tenants_t *t =
        parse("{\"default\": {\"jobs_per_minute\": 2, \"max_items\": 10},"
              " \"tenants\": {\"acme\": {\"jobs_per_minute\": 60, \"jobs_per_day\": 1000,"
              "  \"max_prompt_tokens\": 500, \"default_priority\": \"high\", \"daily_budget_usd\": "
              "2.5}}}",
              err, sizeof(err));
    assert_true(t != NULL);
    const shoal_tenant_plan_t *p = shoal_tenants_plan(t, "acme");
    assert_str_eq(p->name, "acme");
    assert_int_eq(p->jobs_per_minute, 60);
    assert_int_eq(p->jobs_per_day, 1000);
    assert_int_eq(p->max_prompt_tokens, 500);
    assert_int_eq(p->max_items, 0); /* left out: no limit, not the default's */
    assert_str_eq(p->default_priority, "high");
    assert_true(p->daily_budget_usd == 2.5);
    p = shoal_tenants_plan(t, "other");
    assert_str_eq(p->name, SHOAL_TENANTS_DEFAULT_NAME);
    assert_int_eq(p->jobs_per_minute, 2);
    assert_int_eq(p->max_items, 10);
    assert_true(p->default_priority == NULL);

    /* the rows of shoal.tenants: the default plan under "*" */
    json_t *rows = shoal_tenants_rows(t);
    assert_int_eq(json_array_size(rows), 2);
    char *dump = json_dumps(rows, JSON_COMPACT | JSON_SORT_KEYS);
    assert_str_contains(dump, "\"tenant\":\"*\"");
    assert_str_contains(dump, "\"default_priority\":\"high\"");
    assert_str_contains(dump, "\"jobs_per_day\":1000");
    free(dump);
    json_decref(rows);

    /* the counted limits for shoal.record_job_admitted */
    json_t *q = shoal_tenants_quota_json(shoal_tenants_plan(t, "acme"));
    assert_int_eq(json_integer_value(json_object_get(q, "jobs_per_minute")), 60);
    assert_true(json_real_value(json_object_get(q, "daily_budget_usd")) == 2.5);
    json_decref(q);
    shoal_tenants_destroy(t);

    /* no default plan: a tenant not listed has no limits */
    t = parse("{\"tenants\": {\"a\": {\"max_items\": 3}}}", err, sizeof(err));
    assert_true(t != NULL);
    assert_true(shoal_tenants_plan(t, "b") == NULL);
    assert_true(shoal_tenants_quota_json(shoal_tenants_plan(t, "a")) == NULL);
    shoal_tenants_destroy(t);
    /* no file at all */
    assert_true(shoal_tenants_plan(NULL, "a") == NULL);
    rows = shoal_tenants_rows(NULL);
    assert_int_eq(json_array_size(rows), 0);
    json_decref(rows);
}

static void test_bad_files(void)
{
    char err[4096];

    assert_true(parse("{\"tenants\": ", err, sizeof(err)) == NULL);
    assert_str_contains(err, "invalid JSON at line 1");
    assert_true(parse("[]", err, sizeof(err)) == NULL);
    assert_str_contains(err, "expected an object");

    /* every problem, one per line, each with its path */
    assert_true(parse("{\"default\": {\"jobs_per_minute\": 0},"
                      " \"tenants\": {\"a b\": {}, \"acme\": {\"max_items\": \"x\","
                      "  \"default_priority\": \"urgent\", \"daily_budget_usd\": -1,"
                      "  \"rpm\": 5}}, \"extra\": 1}",
                      err, sizeof(err)) == NULL);
    assert_str_contains(err, "tenants file: unknown field \"extra\"");
    assert_str_contains(err, "default: jobs_per_minute must be an integer from 1 to");
    assert_str_contains(err, "tenants.a b: a tenant name is 1 to 100 letters");
    assert_str_contains(err, "tenants.acme: max_items must be an integer");
    assert_str_contains(err, "tenants.acme: default_priority must be \"high\", \"normal\" or");
    assert_str_contains(err, "tenants.acme: daily_budget_usd must be a number above 0");
    assert_str_contains(err, "tenants.acme: unknown field \"rpm\"");
    int lines = 1;
    for (const char *p = err; *p; p++)
        lines += *p == '\n';
    assert_int_eq(lines, 7);

    /* bounded: 30 bad tenants name 20 problems and say there are more */
    char text[8192];
    size_t o = (size_t)snprintf(text, sizeof(text), "{\"tenants\": {");
    for (int i = 0; i < 30; i++)
        o += (size_t)snprintf(text + o, sizeof(text) - o, "%s\"t%d\": {\"max_items\": 0}",
                              i ? "," : "", i);
    snprintf(text + o, sizeof(text) - o, "}}");
    assert_true(parse(text, err, sizeof(err)) == NULL);
    assert_str_contains(err, "(10 more problems not shown)");

    assert_true(shoal_tenants_load("/nonexistent/tenants.json", err, sizeof(err)) == NULL);
    assert_str_contains(err, "cannot open");
}

static void test_limits(void)
{
    char err[512];
    shoal_tenants_t *t = parse("{\"tenants\": {\"acme\": {\"max_items\": 100, "
                               "\"max_prompt_tokens\": 2000}}}",
                               err, sizeof(err));
    const shoal_tenant_plan_t *p = shoal_tenants_plan(t, "acme");

    assert_int_eq(shoal_tenants_check_job(p, "acme", 100, 2000, err, sizeof(err)), SHOAL_OK);
    assert_int_eq(shoal_tenants_check_job(p, "acme", 101, 10, err, sizeof(err)), SHOAL_ERR_LIMIT);
    assert_str_eq(err, "tenant acme: the job has 101 items; the plan allows at most 100 per job "
                       "(split the job)");
    assert_int_eq(shoal_tenants_check_job(p, "acme", 1, 2001, err, sizeof(err)), SHOAL_ERR_LIMIT);
    assert_str_contains(err, "a call of the job has a prompt of about 2001 tokens; the plan "
                             "allows at most 2000");
    assert_int_eq(shoal_tenants_check_job(NULL, "x", 1000000, 1 << 30, err, sizeof(err)), SHOAL_OK);
    shoal_tenants_destroy(t);
}

static void test_reasons(void)
{
    char why[512];

    /* 2024-05-01T12:01:00Z is 1714564860 */
    assert_int_eq(
        shoal_tenants_quota_reason("acme", "minute", 60, 60, 1714564860, why, sizeof(why)),
        SHOAL_ERR_LIMIT);
    assert_str_eq(why, "tenant acme: 60 jobs per minute reached (limit 60); resets at "
                       "2024-05-01T12:01:00Z");
    /* what shoal.record_job_admitted answers, read back */
    assert_int_eq(
        shoal_tenants_quota_answer("quota:day:1000:1000:1714608000", "acme", why, sizeof(why)),
        SHOAL_ERR_LIMIT);
    assert_str_eq(why, "tenant acme: 1000 jobs per day reached (limit 1000); resets at "
                       "2024-05-02T00:00:00Z");
    assert_int_eq(
        shoal_tenants_quota_answer("quota:budget:2.61:2.5:1714608000", "acme", why, sizeof(why)),
        SHOAL_ERR_LIMIT);
    assert_str_eq(why, "tenant acme: daily budget of $2.50 reached ($2.6100 spent today); resets "
                       "at 2024-05-02T00:00:00Z");
    assert_int_eq(shoal_tenants_quota_answer("new", "acme", why, sizeof(why)), SHOAL_ERR_INVALID);
    assert_int_eq(shoal_tenants_quota_answer("quota:minute:x", "acme", why, sizeof(why)),
                  SHOAL_ERR_INVALID);
    assert_int_eq(shoal_tenants_quota_answer("quota:hour:1:1:1", "acme", why, sizeof(why)),
                  SHOAL_ERR_INVALID);
}

static void test_jobid(void)
{
    char a[SHOAL_JOBID_LEN], b[SHOAL_JOBID_LEN], h[SHOAL_JOBID_HASH_LEN];
    const char *msg = "{\"tenant\":\"a\"}";

    /* the content hash is SHA-256's (FIPS 180-4 vector) */
    shoal_jobid_content_hash("abc", 3, h);
    assert_str_eq(h, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");

    /* a redelivery is the same job; anything else about the message is not */
    shoal_jobid_derive("clusterA", "shoal.jobs", 0, 5, 1700000000000LL, msg, strlen(msg), a);
    assert_int_eq(strlen(a), SHOAL_JOBID_LEN - 1);
    assert_true(strncmp(a, "j-", 2) == 0);
    shoal_jobid_derive("clusterA", "shoal.jobs", 0, 5, 1700000000000LL, msg, strlen(msg), b);
    assert_str_eq(a, b);
    shoal_jobid_derive("clusterB", "shoal.jobs", 0, 5, 1700000000000LL, msg, strlen(msg), b);
    assert_true(strcmp(a, b) != 0); /* another Kafka cluster */
    shoal_jobid_derive("clusterA", "shoal.jobs", 0, 5, 1700000000001LL, msg, strlen(msg), b);
    assert_true(strcmp(a, b) != 0); /* the topic recreated: offset 5 again, later */
    shoal_jobid_derive("clusterA", "shoal.jobs", 0, 6, 1700000000000LL, msg, strlen(msg), b);
    assert_true(strcmp(a, b) != 0);
    shoal_jobid_derive("clusterA", "shoal.jobs", 0, 5, 1700000000000LL, "{}", 2, b);
    assert_true(strcmp(a, b) != 0);

    char r1[64], r2[64];
    assert_int_eq(shoal_jobid_random(r1, sizeof(r1)), SHOAL_OK);
    assert_int_eq(shoal_jobid_random(r2, sizeof(r2)), SHOAL_OK);
    assert_int_eq(strlen(r1), 36);
    assert_true(strncmp(r1, "job-", 4) == 0);
    assert_true(strcmp(r1, r2) != 0);
    assert_int_eq(shoal_jobid_random(r1, 36), SHOAL_ERR_LIMIT);
}

int main(void)
{
    test_plans();
    test_bad_files();
    test_limits();
    test_reasons();
    test_jobid();
    printf("tenants_test: ok\n");
    return 0;
}
