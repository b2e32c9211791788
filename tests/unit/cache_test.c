/*
 * The result cache on a throwaway PostgreSQL with the migrations applied
 * (scheduler/cache.h, sql/014_cache.sql), jobs recorded with
 * shoal.record_job and answers recorded with shoal.record_batch as workers
 * record them:
 *   - a first job misses everywhere and keeps each chunk's key on its task;
 *     answers of the task's own model are stored under their key with the
 *     successful call's cost, a fallback's answer and a failed task are not;
 *   - the same job again is answered from the cache without publishing:
 *     result rows marked cached, tasks done, counters moved, hits counted,
 *     the mergers told once every chunk is answered; shoal.cache_savings
 *     shows the hits, tokens and dollars saved;
 *   - a cached answer is not stored again; entries past the TTL are ignored
 *     and deleted a bounded number at a time; TTL 0 and "cache": false turn
 *     the cache off;
 *   - each chunk's key is the key of its whole task message
 *     (shoal_cachekey_task of shoal_taskmsg_build), in jobs with a system
 *     prompt, groups, an output schema, items of their own model or request,
 *     batch mode, and for a part's chunks by their job-wide numbers.
 */
#include "scheduler/cache.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/cachekey.h"
#include "common/log.h"
#include "common/taskmsg.h"
#include "stack/pgcluster.h"
#include "tests/support/check.h"
#include "tests/support/testdb.h"

static const char models_text[] =
    "{\"models\": {\"fast\": {\"provider\": \"openai\","
    " \"endpoint\": \"http://127.0.0.1:9/v1/chat/completions\", \"model\": \"gpt-4o-mini\","
    " \"input_usd_per_mtok\": 1, \"output_usd_per_mtok\": 2},"
    " \"backup\": {\"provider\": \"anthropic\", \"endpoint\": \"http://127.0.0.1:9/v1/messages\","
    " \"model\": \"claude-x\"}}}";

static shoal_models_t *models;

static long sql_long(shoal_pg_t *pg, const char *sql)
{
    char err[512];
    PGresult *r;
    if (shoal_pg_exec(pg, sql, 0, NULL, &r, err, sizeof(err)) != SHOAL_OK)
        test_fail("%s: %s", sql, err);
    long v = PQntuples(r) && !PQgetisnull(r, 0, 0) ? strtol(PQgetvalue(r, 0, 0), NULL, 10) : -1;
    PQclear(r);
    return v;
}

static void sql_str(shoal_pg_t *pg, const char *sql, char *out, size_t len)
{
    char err[512];
    PGresult *r;
    if (shoal_pg_exec(pg, sql, 0, NULL, &r, err, sizeof(err)) != SHOAL_OK)
        test_fail("%s: %s", sql, err);
    snprintf(out, len, "%s", PQntuples(r) ? PQgetvalue(r, 0, 0) : "");
    PQclear(r);
}

static void expect_str(shoal_pg_t *pg, const char *sql, const char *want)
{
    char s[256];
    sql_str(pg, sql, s, sizeof(s));
    if (strcmp(s, want) != 0)
        test_fail("%s: got \"%s\", expected \"%s\"", sql, s, want);
}

static void expect_long(shoal_pg_t *pg, const char *sql, long want)
{
    long got = sql_long(pg, sql);
    if (got != want)
        test_fail("%s: got %ld, expected %ld", sql, got, want);
}

static void sql_run(shoal_pg_t *pg, const char *sql)
{
    char err[512];
    if (shoal_pg_exec(pg, sql, 0, NULL, NULL, err, sizeof(err)) != SHOAL_OK)
        test_fail("%s: %s", sql, err);
}

/* Job id of n one-item chunks "input <i>" (input 0 replaced by first when
 * not NULL), recorded as the scheduler records it; caller destroys. */
static shoal_job_t *record(shoal_pg_t *pg, const char *id, int n, const char *first,
                           const char *extra)
{
    char err[512], text[4096];
    size_t o = 0;
    o += (size_t)snprintf(text + o, sizeof(text) - o,
                          "{\"job_id\":\"%s\",\"tenant\":\"acme\",\"model\":\"fast\",%s"
                          "\"prompt_template\":\"Echo {{input}}\",\"items\":[",
                          id, extra ? extra : "");
    for (int i = 0; i < n; i++)
        o += (size_t)snprintf(text + o, sizeof(text) - o, "%s{\"id\":\"i%d\",\"input\":\"%s%d\"}",
                              i ? "," : "", i, i == 0 && first ? first : "input ", i);
    snprintf(text + o, sizeof(text) - o, "]}");
    shoal_job_t *job = shoal_job_parse(text, strlen(text), 0, models, err, sizeof(err));
    if (!job)
        test_fail("job: %s", err);
    json_t *rows = json_array();
    for (int k = 0; k < n; k++) {
        char tid[SHOAL_TASKMSG_ID_MAX], iid[16];
        shoal_taskmsg_task_id(id, (size_t)k, tid, sizeof(tid));
        snprintf(iid, sizeof(iid), "i%d", k);
        json_array_append_new(rows, json_pack("{s:s, s:i, s:[s], s:i}", "task_id", tid, "chunk", k,
                                              "item_ids", iid, "est_tokens", 5));
    }
    json_t *jobrow = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:i}", "job_id", id, "tenant",
                               "acme", "priority", "normal", "model", "fast", "merge", "concat",
                               "output_format", "text", "items_total", n);
    char *a = json_dumps(jobrow, JSON_COMPACT), *b = json_dumps(rows, JSON_COMPACT);
    const char *params[] = {a, b};
    if (shoal_pg_exec(pg, "SELECT shoal.record_job($1::jsonb, $2::jsonb)", 2, params, NULL, err,
                      sizeof(err)) != SHOAL_OK)
        test_fail("record_job: %s", err);
    free(a);
    free(b);
    json_decref(jobrow);
    json_decref(rows);
    return job;
}

static shoal_cache_lookup_t *lookup(shoal_pg_t *pg, shoal_job_t *job, long ttl_s, int n)
{
    char err[512];
    long chunks[64];
    shoal_cache_lookup_t *l;
    for (int i = 0; i < n; i++)
        chunks[i] = i;
    if (shoal_cache_lookup_new(pg, job, models, ttl_s, chunks, (size_t)n, &l, err, sizeof(err)) !=
        SHOAL_OK)
        test_fail("lookup: %s", err);
    return l;
}

/* Records chunk k of job id as a worker does: done with output by model
 * (requested: the task's own model when it is a fallback; NULL otherwise)
 * after one call costing cost, or failed. */
static void answer(shoal_pg_t *pg, const char *id, int k, const char *output, const char *model,
                   const char *requested, double cost)
{
    char err[512], tid[SHOAL_TASKMSG_ID_MAX], aid[300];
    shoal_taskmsg_task_id(id, (size_t)k, tid, sizeof(tid));
    snprintf(aid, sizeof(aid), "w/%s", tid);
    json_t *res =
        json_pack("{s:s, s:s, s:i, s:s, s:s, s:i, s:i, s:s, s:i}", "task_id", tid, "job_id", id,
                  "chunk", k, "status", output ? "done" : "failed", "model", model, "tokens_in",
                  100 + k, "tokens_out", 10 + k, "worker_id", "w", "attempts", 1);
    if (output)
        json_object_set_new(res, "output", json_string(output));
    else
        json_object_set_new(res, "error", json_string("no"));
    if (requested)
        json_object_set_new(res, "model_requested", json_string(requested));
    json_t *att =
        json_pack("{s:s, s:s, s:s, s:i, s:s, s:s, s:s, s:i, s:i, s:f, s:f, s:f}", "attempt_id", aid,
                  "task_id", tid, "job_id", id, "attempt", 1, "model", model, "worker_id", "w",
                  "outcome", output ? "ok" : "failed", "tokens_in", 100 + k, "tokens_out", 10 + k,
                  "cost_usd", cost, "started_at", 1.7e9, "finished_at", 1.7e9 + 1);
    json_object_set_new(att, "http_status", json_integer(output ? 200 : 500));
    json_object_set_new(att, "latency_ms", json_real(5));
    json_t *ra = json_pack("[o]", res), *aa = json_pack("[o]", att);
    char *a = json_dumps(ra, JSON_COMPACT), *b = json_dumps(aa, JSON_COMPACT);
    const char *params[] = {a, b};
    if (shoal_pg_exec(pg, "SELECT count(*) FROM shoal.record_batch($1::jsonb, $2::jsonb)", 2,
                      params, NULL, err, sizeof(err)) != SHOAL_OK)
        test_fail("record_batch: %s", err);
    free(a);
    free(b);
    json_decref(ra);
    json_decref(aa);
}

static int merge_notes;
static void on_note(const char *channel, const char *payload, void *arg)
{
    if (!strcmp(channel, "shoal_merge") && !strcmp(payload, (const char *)arg))
        merge_notes++;
}

static void test_cache(shoal_pg_t *pg, shoal_pg_t *listener)
{
    char err[512];
    const long ttl = 3600;

    /* first job: four misses, each keyed */
    shoal_job_t *a = record(pg, "c-a", 4, NULL, NULL);
    shoal_cache_lookup_t *l = lookup(pg, a, ttl, 4);
    assert_int_eq((long)shoal_cache_lookup_hits(l), 0);
    assert_int_eq((long)shoal_cache_lookup_unkeyed(l), 0);
    for (size_t i = 0; i < 4; i++) {
        assert_true(!shoal_cache_lookup_hit(l, i));
        assert_true(shoal_cache_lookup_key(l, i) != NULL);
    }
    assert_true(strcmp(shoal_cache_lookup_key(l, 0), shoal_cache_lookup_key(l, 1)) != 0);
    char key0[SHOAL_CACHEKEY_HEX];
    snprintf(key0, sizeof(key0), "%s", shoal_cache_lookup_key(l, 0));
    shoal_cache_lookup_destroy(l);
    expect_str(pg, "SELECT encode(cache_key, 'hex') FROM shoal.tasks WHERE task_id = 'c-a:000000'",
               key0);
    expect_long(pg,
                "SELECT count(*) FROM shoal.tasks WHERE job_id = 'c-a' "
                "AND cache_key IS NOT NULL AND status = 'pending'",
                4);
    expect_long(pg, "SELECT count(*) FROM shoal.cache", 0);

    /* answers: 0 and 1 by the task's model, 2 by a fallback, 3 failed */
    answer(pg, "c-a", 0, "out-0", "fast", NULL, 0.25);
    answer(pg, "c-a", 1, "out-1", "fast", NULL, 0.5);
    answer(pg, "c-a", 2, "out-2", "backup", "fast", 0.75);
    answer(pg, "c-a", 3, NULL, "fast", NULL, 0.1);
    expect_long(pg, "SELECT count(*) FROM shoal.cache", 2);
    expect_str(pg,
               "SELECT output || ' ' || model || ' ' || tokens_in || ' ' || tokens_out || ' ' || "
               "cost_usd || ' ' || hits FROM shoal.cache WHERE key = (SELECT cache_key FROM "
               "shoal.tasks WHERE task_id = 'c-a:000001')",
               "out-1 fast 101 11 0.5 0");
    expect_long(pg,
                "SELECT count(*) FROM shoal.results WHERE job_id = 'c-a' "
                "AND cached",
                0);

    /* the same job again: chunks 0 and 1 answered, 2 and 3 still to call */
    shoal_job_t *b = record(pg, "c-b", 4, NULL, NULL);
    l = lookup(pg, b, ttl, 4);
    assert_int_eq((long)shoal_cache_lookup_hits(l), 2);
    assert_true(shoal_cache_lookup_hit(l, 0) && shoal_cache_lookup_hit(l, 1));
    assert_true(!shoal_cache_lookup_hit(l, 2) && !shoal_cache_lookup_hit(l, 3));
    assert_str_eq(shoal_cache_lookup_key(l, 0), key0);
    shoal_cache_lookup_destroy(l);
    expect_str(pg,
               "SELECT string_agg(chunk || ':' || output || ':' || cached || ':' || tokens_in, ',' "
               "ORDER BY chunk) FROM shoal.results WHERE job_id = 'c-b'",
               "0:out-0:true:0,1:out-1:true:0");
    expect_str(
        pg, "SELECT string_agg(status, ',' ORDER BY chunk) FROM shoal.tasks WHERE job_id = 'c-b'",
        "done,done,pending,pending");
    expect_str(pg,
               "SELECT tasks_done || ' ' || tasks_cached || ' ' || status FROM shoal.jobs "
               "WHERE job_id = 'c-b'",
               "2 2 running");
    expect_long(pg, "SELECT sum(hits) FROM shoal.cache", 2);
    expect_long(pg, "SELECT count(*) FROM shoal.cache WHERE last_hit_at IS NULL", 0);
    /* a lookup of the same chunks again answers nothing more */
    l = lookup(pg, b, ttl, 4);
    assert_int_eq((long)shoal_cache_lookup_hits(l), 0);
    shoal_cache_lookup_destroy(l);
    expect_long(pg, "SELECT tasks_done FROM shoal.jobs WHERE job_id = 'c-b'", 2);
    /* the rest is called; its answers are stored, the cached ones not again */
    answer(pg, "c-b", 2, "out-2b", "fast", NULL, 0.125);
    answer(pg, "c-b", 3, "out-3b", "fast", NULL, 0.0625);
    expect_long(pg, "SELECT count(*) FROM shoal.cache", 4);
    expect_long(pg, "SELECT sum(hits) FROM shoal.cache", 2);
    expect_str(pg, "SELECT status FROM shoal.jobs WHERE job_id = 'c-b'",
               "running"); /* ended: the merger takes it from here */
    expect_long(pg, "SELECT tasks_done FROM shoal.jobs WHERE job_id = 'c-b'", 4);

    /* savings: per job, tenant and model */
    expect_str(pg,
               "SELECT tenant || ' ' || model || ' ' || hits || ' ' || tokens_in_saved || ' ' || "
               "tokens_out_saved || ' ' || usd_saved FROM shoal.cache_savings WHERE job_id = 'c-b'",
               "acme fast 2 201 21 0.75");
    expect_long(pg, "SELECT count(*) FROM shoal.cache_savings WHERE job_id = 'c-a'", 0);

    /* a job every chunk of which hits ends at once and is announced */
    shoal_job_t *c = record(pg, "c-c", 4, NULL, NULL);
    merge_notes = 0;
    assert_true(shoal_pg_notifications(listener, on_note, "c-c", err, sizeof(err)) == SHOAL_OK);
    l = lookup(pg, c, ttl, 4);
    assert_int_eq((long)shoal_cache_lookup_hits(l), 4);
    shoal_cache_lookup_destroy(l);
    expect_str(pg,
               "SELECT tasks_done || ' ' || tasks_cached || ' ' || tasks_total FROM shoal.jobs "
               "WHERE job_id = 'c-c'",
               "4 4 4");
    assert_wait(
        (shoal_pg_notifications(listener, on_note, "c-c", err, sizeof(err)), merge_notes == 1), 10,
        "the all-cached job announced to the mergers");

    /* "cache": false and TTL 0 turn it off */
    shoal_job_t *d = record(pg, "c-d", 1, NULL, "\"cache\":false,");
    assert_true(!shoal_cache_enabled(d, ttl));
    assert_true(shoal_cache_enabled(c, ttl));
    assert_true(!shoal_cache_enabled(c, 0));
    /* nor does batch mode, whose answers are one row per item */
    shoal_job_t *bm = record(pg, "c-bm", 1, NULL, "\"answer_mode\":\"batch\",");
    assert_true(!shoal_cache_enabled(bm, ttl));
    shoal_job_destroy(bm);

    /* a changed input misses; entries past the TTL are ignored, then go */
    shoal_job_t *e = record(pg, "c-e", 2, "changed ", NULL);
    sql_run(pg, "UPDATE shoal.cache SET created_at = now() - interval '2 hours' "
                "WHERE key = (SELECT cache_key FROM shoal.tasks WHERE task_id = 'c-a:000001')");
    l = lookup(pg, e, ttl, 2);
    assert_int_eq((long)shoal_cache_lookup_hits(l), 0);
    shoal_cache_lookup_destroy(l);
    l = lookup(pg, e, 3 * 3600, 2); /* a longer TTL still takes it */
    assert_int_eq((long)shoal_cache_lookup_hits(l), 1);
    assert_true(shoal_cache_lookup_hit(l, 1));
    shoal_cache_lookup_destroy(l);
    sql_run(pg, "UPDATE shoal.cache SET created_at = now() - interval '3 hours' "
                "WHERE key IN (SELECT cache_key FROM shoal.tasks WHERE task_id IN "
                "('c-a:000000', 'c-b:000002'))");
    int deleted = -1;
    assert_int_eq(shoal_cache_expire(pg, 0, 10, &deleted, err, sizeof(err)), SHOAL_OK);
    assert_int_eq(deleted, 0);
    assert_int_eq(shoal_cache_expire(pg, ttl, 2, &deleted, err, sizeof(err)), SHOAL_OK);
    assert_int_eq(deleted, 2);
    assert_int_eq(shoal_cache_expire(pg, ttl, 2, &deleted, err, sizeof(err)), SHOAL_OK);
    assert_int_eq(deleted, 1);
    assert_int_eq(shoal_cache_expire(pg, ttl, 2, &deleted, err, sizeof(err)), SHOAL_OK);
    assert_int_eq(deleted, 0);
    expect_long(pg, "SELECT count(*) FROM shoal.cache", 1);
    /* savings outlive the entries */
    expect_long(pg, "SELECT sum(hits) FROM shoal.cache_savings", 7);

    shoal_job_destroy(a);
    shoal_job_destroy(b);
    shoal_job_destroy(c);
    shoal_job_destroy(d);
    shoal_job_destroy(e);
}

/* Keys made by the look-up equal the keys of the built task messages. */
static void test_keys(shoal_pg_t *pg)
{
    static const char *const jobs[] = {
        "{\"job_id\":\"k-1\",\"tenant\":\"acme\",\"model\":\"fast\",\"system\":\"Be brief.\","
        "\"prompt_template\":\"Sort "
        "{{ids}}:\\n{{input}}\",\"items\":[{\"id\":\"a\",\"input\":\"1\","
        "\"group\":\"g\"},{\"id\":\"b\",\"input\":\"2\",\"group\":\"h\"},{\"id\":\"c\","
        "\"input\":\"3\",\"group\":\"g\"}],\"chunking\":{\"max_items\":2,\"group_by\":\"group\"},"
        "\"output\":{\"format\":\"json\",\"schema\":{\"type\":\"object\"}}}",
        "{\"job_id\":\"k-2\",\"tenant\":\"acme\",\"model\":\"fast\",\"prompt_template\":\"{{input}}"
        "\","
        "\"items\":[{\"id\":\"a\",\"input\":\"1\",\"model\":\"backup\"},{\"id\":\"b\",\"input\":"
        "\"\","
        "\"body\":{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}},{\"id\":\"c\","
        "\"input\":\"3\"}]}",
        "{\"job_id\":\"k-3\",\"tenant\":\"acme\",\"model\":\"fast\",\"prompt_template\":\"{{input}}"
        "\","
        "\"answer_mode\":\"batch\",\"items\":[{\"id\":\"a\",\"input\":\"1\"},{\"id\":\"b\","
        "\"input\":\"2\"},{\"id\":\"c\",\"input\":\"3\"}],\"chunking\":{\"max_items\":2}}",
    };
    char err[512], want[SHOAL_CACHEKEY_HEX];
    for (size_t j = 0; j < sizeof(jobs) / sizeof(jobs[0]); j++) {
        shoal_job_t *job = shoal_job_parse(jobs[j], strlen(jobs[j]), 0, models, err, sizeof(err));
        if (!job)
            test_fail("job %zu: %s", j, err);
        size_t n = shoal_job_n_chunks(job);
        assert_int_ge(n, 2);
        long chunks[8];
        for (long base = 0; base <= 40; base += 40) {
            for (size_t k = 0; k < n; k++)
                chunks[k] = base + (long)k;
            shoal_cache_lookup_t *l;
            if (shoal_cache_lookup_part_new(pg, job, models, 3600, base, chunks, n, &l, err,
                                            sizeof(err)) != SHOAL_OK)
                test_fail("look-up of job %zu: %s", j, err);
            assert_int_eq(shoal_cache_lookup_hits(l), 0);
            for (size_t k = 0; k < n; k++) {
                json_t *task = shoal_taskmsg_build(job, k, err, sizeof(err));
                assert_true(task != NULL);
                assert_int_eq(shoal_cachekey_task(task, models, want, err, sizeof(err)), SHOAL_OK);
                json_decref(task);
                assert_true(shoal_cache_lookup_key(l, k) != NULL);
                assert_str_eq(shoal_cache_lookup_key(l, k), want);
            }
            shoal_cache_lookup_destroy(l);
        }
        shoal_job_destroy(job);
    }
}

int main(void)
{
    char err[512];
    shoal_pgcluster_t *cluster;

    shoal_log_init("cache_test", SHOAL_LOG_WARN, 0);
    models = shoal_models_parse(models_text, strlen(models_text), err, sizeof(err));
    if (!models)
        test_fail("models: %s", err);
    shoal_pg_t *pg = testdb_start("cache_test", &cluster);
    shoal_pg_t *listener = shoal_pg_new(shoal_pgcluster_url(cluster), "cache_test_listen");
    shoal_pg_set_on_connect(listener, "LISTEN shoal_merge");
    if (shoal_pg_connect(listener, err, sizeof(err)) != SHOAL_OK)
        test_fail("listener: %s", err);

    test_cache(pg, listener);
    test_keys(pg);

    shoal_pg_destroy(listener);
    shoal_pg_destroy(pg);
    shoal_pgcluster_destroy(cluster);
    shoal_models_destroy(models);
    printf("cache_test: ok\n");
    return 0;
}
