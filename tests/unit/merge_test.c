/*
 * scheduler/merge and the SQL it runs (sql/009_dynamic_work.sql) on a
 * throwaway PostgreSQL: a 100,000-chunk json_array job (results written with
 * generate_series, about 42 MB merged) is written as bounded pages, not in
 * jobs.output, and `shoal results` streams it through a pipe as a valid JSON
 * array of 100,000 elements in chunk order while its peak RSS stays within a
 * fixed margin of what it needs for a one-chunk job; a job with per-item
 * results (some from a sub-task, one item never answered, one answer written
 * twice) merges per item in the job's item order for concat, json_array and
 * jsonl; pages hold what sql/009 defined for entries of every size (from
 * none to several pages); a merge that fails for good ends the job failed with the reason and
 * a failed event; record_batch keeps jobs.spent_usd and shoal.tenant_spend
 * from the calls it records, once however often a batch is written.
 */
#include "scheduler/merge.h"

#include <errno.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "stack/pgcluster.h"
#include "common/log.h"
#include "common/migrate.h"
#include "common/pg.h"
#include "tests/support/check.h"
#include "tests/support/sqlcheck.h"

#define BIG_CHUNKS 100000
#define PAD 400

static shoal_pgcluster_t *cluster;

/* Runs `shoal results job_id` with its stdout on a pipe; *doc gets what it
 * printed parsed as JSON (caller decrefs), *rss_kb the child's peak RSS.
 * Returns the exit code. */
static int run_results(const char *job_id, json_t **doc, long *rss_kb)
{
    char bin[1024];
    const char *dir = getenv("SHOAL_BINARY_DIR");
    snprintf(bin, sizeof(bin), "%s/shoal", dir ? dir : SHOAL_BINARY_DIR);
    if (access(bin, X_OK) != 0)
        test_fail("%s: %s (build the shoal target first)", bin, strerror(errno));
    /* Under AddressSanitizer freed pages wait in its quarantine (256 MB
     * by default), which would count as the child's memory: keep it
     * small so the RSS measured is what the program holds. The sanitizer
     * reads it at start only, so setting it here changes only the child. */
    char asan[1024];
    const char *prev = getenv("ASAN_OPTIONS");
    if (!prev || !strstr(prev, "quarantine_size_mb")) {
        snprintf(asan, sizeof(asan), "%s%squarantine_size_mb=1", prev ? prev : "",
                 prev && *prev ? ":" : "");
        setenv("ASAN_OPTIONS", asan, 1);
    }
    int fds[2];
    assert_int_eq(pipe(fds), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        dup2(fds[1], 1);
        close(fds[0]);
        close(fds[1]);
        execl(bin, bin, "results", "--pg", shoal_pgcluster_url(cluster), job_id, (char *)NULL);
        _exit(127);
    }
    close(fds[1]);
    FILE *in = fdopen(fds[0], "r");
    assert_true(in != NULL);
    json_error_t jerr;
    *doc = json_loadf(in, JSON_DISABLE_EOF_CHECK, &jerr);
    if (!*doc)
        test_fail("shoal results %s printed no JSON: %s at line %d", job_id, jerr.text, jerr.line);
    /* only the final newline may follow */
    int c;
    while ((c = fgetc(in)) != EOF)
        assert_int_eq(c, '\n');
    fclose(in);
    int status;
    struct rusage ru;
    assert_int_eq(wait4(pid, &status, 0, &ru), pid);
    assert_true(WIFEXITED(status));
    *rss_kb = ru.ru_maxrss;
    return WEXITSTATUS(status);
}

static void merge_ok(shoal_pg_t *pg, const char *job_id, const char *want_status)
{
    char err[512];
    shoal_merge_result_t res;
    if (shoal_merge_job(pg, job_id, &res, err, sizeof(err)) != SHOAL_OK)
        test_fail("merge %s: %s", job_id, err);
    assert_int_eq(res.outcome, SHOAL_MERGE_CLOSED);
    assert_str_eq(res.status, want_status);
    /* merged once: a second call finds nothing to do */
    if (shoal_merge_job(pg, job_id, &res, err, sizeof(err)) != SHOAL_OK)
        test_fail("merge %s again: %s", job_id, err);
    assert_int_eq(res.outcome, SHOAL_MERGE_NOT_DUE);
    assert_str_eq(res.status, "");
}

/* A running job of n done chunks "<id>:<chunk>" with one result each, output
 * {"i": chunk, "pad": "x..."}, written directly with SQL. */
static void big_job(shoal_pg_t *pg, const char *id, int n)
{
    char sql[1024];
    snprintf(sql, sizeof(sql),
             "INSERT INTO shoal.jobs (job_id, tenant, status, merge, output_format, items_total, "
             "tasks_total, tasks_done) VALUES ($1, 'acme', 'running', 'json_array', 'json', %d, "
             "%d, %d)",
             n, n, n);
    sqlcheck_exec(pg, sql, id);
    snprintf(sql, sizeof(sql),
             "INSERT INTO shoal.tasks (task_id, job_id, chunk, item_ids, status) "
             "SELECT $1 || ':' || lpad(g::text, 6, '0'), $1, g, ARRAY['it' || g], 'done' "
             "FROM generate_series(0, %d) g",
             n - 1);
    sqlcheck_exec(pg, sql, id);
    snprintf(sql, sizeof(sql),
             "INSERT INTO shoal.results (task_id, job_id, chunk, output, model) "
             "SELECT $1 || ':' || lpad(g::text, 6, '0'), $1, g, "
             "format('{\"i\": %%s, \"pad\": \"%%s\"}', g, repeat('x', %d)), 'fast' "
             "FROM generate_series(0, %d) g",
             PAD, n - 1);
    sqlcheck_exec(pg, sql, id);
}

static void test_big_json_array(shoal_pg_t *pg)
{
    json_t *doc;
    long small_rss, big_rss;
    char v[256];

    big_job(pg, "one", 1);
    merge_ok(pg, "one", "completed");
    assert_int_eq(run_results("one", &doc, &small_rss), 0);
    assert_int_eq(json_array_size(doc), 1);
    json_decref(doc);

    big_job(pg, "big", BIG_CHUNKS);
    merge_ok(pg, "big", "completed");
    long chars = sqlcheck_long(pg, "SELECT output_chars FROM shoal.jobs WHERE job_id = $1", "big");
    assert_true(chars > (long)BIG_CHUNKS * PAD);
    /* too large for one page: not in jobs.output, only in pages */
    sqlcheck_text(pg, "SELECT coalesce(output, 'NULL') FROM shoal.jobs WHERE job_id = $1", "big", v,
                  sizeof(v));
    assert_str_eq(v, "NULL");
    long pages = sqlcheck_long(pg, "SELECT output_pages FROM shoal.jobs WHERE job_id = $1", "big");
    assert_true(pages > 100);
    assert_int_eq(
        sqlcheck_long(pg, "SELECT count(*) FROM shoal.job_output WHERE job_id = $1", "big"), pages);
    assert_int_eq(
        sqlcheck_long(pg, "SELECT max(page) + 1 FROM shoal.job_output WHERE job_id = $1", "big"),
        pages);
    assert_int_eq(sqlcheck_long(pg,
                                "SELECT sum(length(body)) FROM shoal.job_output WHERE job_id = $1",
                                "big"),
                  chars);
    /* pages are compressed as the job's inputs are (lz4 where the server has
     * it): a merge's owner waits for the compression */
    assert_int_eq(sqlcheck_long(pg,
                                "SELECT count(*) FROM pg_attribute a, pg_attribute i "
                                "WHERE i.attrelid = 'shoal.job_inputs'::regclass "
                                "AND i.attname = 'doc' AND a.attcompression = i.attcompression "
                                "AND (a.attrelid, a.attname) IN (('shoal.job_output'::regclass, "
                                "'body'), ('shoal.job_parts'::regclass, 'doc'))",
                                NULL),
                  2);
    assert_true(sqlcheck_long(pg,
                              "SELECT count(*) FROM shoal.job_output WHERE job_id = $1 "
                              "AND pg_column_compression(body) IS NOT NULL",
                              "big") > 0);
    assert_int_eq(sqlcheck_long(pg,
                                "SELECT count(*) FROM shoal.job_output o, pg_attribute a "
                                "WHERE o.job_id = $1 AND a.attrelid = 'shoal.job_output'::regclass "
                                "AND a.attname = 'body' AND pg_column_compression(o.body) <> "
                                "CASE a.attcompression WHEN 'l' THEN 'lz4' ELSE 'pglz' END",
                                "big"),
                  0);
    long longest = sqlcheck_long(
        pg, "SELECT max(length(body)) FROM shoal.job_output WHERE job_id = $1", "big");
    long piece = sqlcheck_long(pg, "SELECT shoal.merge_piece_chars()", NULL);
    assert_true(longest < 2 * piece);

    assert_int_eq(run_results("big", &doc, &big_rss), 0);
    assert_true(json_is_array(doc));
    assert_int_eq(json_array_size(doc), BIG_CHUNKS);
    for (size_t i = 0; i < BIG_CHUNKS; i++) {
        json_t *e = json_array_get(doc, i);
        if (json_integer_value(json_object_get(e, "i")) != (json_int_t)i)
            test_fail("element %zu has i=%lld", i,
                      (long long)json_integer_value(json_object_get(e, "i")));
        if (json_string_length(json_object_get(e, "pad")) != PAD)
            test_fail("element %zu has a pad of %zu", i,
                      json_string_length(json_object_get(e, "pad")));
    }
    json_decref(doc);
    /* The output is about 42 MB; holding it (a PGresult, a buffer) would
     * show. Pages are at most 2 * 128K characters. */
    fprintf(stderr, "merge_test: shoal results peak RSS %ld kB (one chunk: %ld kB), %ld chars\n",
            big_rss, small_rss, chars);
    if (big_rss > small_rss + 16 * 1024)
        test_fail("shoal results peaked at %ld kB for %ld characters, %ld kB for one chunk",
                  big_rss, chars, small_rss);
}

/* Pages as sql/009 defined them, one statement over the job's entries: each
 * entry cut into pieces of merge_piece_chars(), a piece's page the characters
 * before it / merge_piece_chars(). merge_job writes them in one ordered pass
 * (sql/024); this is the definition it must keep. */
static const char *const PAGES_BY_DEFINITION =
    "SELECT string_agg(page || ':' || length(body) || ':' || md5(body), ',' ORDER BY page) FROM ("
    " SELECT s.page, string_agg(s.piece, '' ORDER BY s.ord, s.k) AS body FROM ("
    "  SELECT p.ord, p.k, p.piece, ((sum(length(p.piece)) OVER (ORDER BY p.ord, p.k))"
    "   - length(p.piece)) / shoal.merge_piece_chars() AS page FROM ("
    "   SELECT e.ord, k, substr(e.txt, k * shoal.merge_piece_chars() + 1,"
    "    shoal.merge_piece_chars()) AS piece"
    "   FROM shoal.merge_entries($1, 'concat', false, false) e,"
    "    generate_series(0, greatest(length(e.txt) - 1, 0) / shoal.merge_piece_chars()) AS k"
    "   WHERE e.txt IS NOT NULL) p) s GROUP BY s.page) x";

/* Entries of every size merge into the pages of the definition: a piece
 * starting exactly on a page boundary and one character before it (concat
 * puts a newline before every entry but the first), empty
 * entries, entries of several pieces, most far under a piece, written in an
 * order other than the chunks'. */
static void test_pages_match_definition(shoal_pg_t *pg)
{
    char got[8192], want[8192];
    sqlcheck_exec(pg,
                  "INSERT INTO shoal.jobs (job_id, tenant, status, merge, output_format, "
                  "items_total, tasks_total, tasks_done) VALUES ($1, 'acme', 'running', 'concat', "
                  "'text', 60, 60, 60)",
                  "mixed");
    sqlcheck_exec(pg,
                  "INSERT INTO shoal.tasks (task_id, job_id, chunk, item_ids, status) "
                  "SELECT $1 || ':' || lpad(g::text, 6, '0'), $1, g, ARRAY['it' || g], 'done' "
                  "FROM generate_series(0, 59) g",
                  "mixed");
    sqlcheck_exec(pg,
                  "INSERT INTO shoal.results (task_id, job_id, chunk, output, model) "
                  "SELECT $1 || ':' || lpad(g::text, 6, '0'), $1, g, "
                  "CASE g WHEN 0 THEN repeat('a', shoal.merge_piece_chars()) "
                  "       WHEN 1 THEN repeat('b', shoal.merge_piece_chars() - 2) "
                  "       WHEN 2 THEN repeat('c', 1) "
                  "       WHEN 3 THEN '' "
                  "       WHEN 4 THEN repeat('d', 2 * shoal.merge_piece_chars()) "
                  "       WHEN 5 THEN repeat('e', shoal.merge_piece_chars()) "
                  "       ELSE CASE WHEN g % 11 = 0 THEN repeat(chr(97 + g % 26), 300001) "
                  "                 WHEN g % 5 = 0 THEN '' "
                  "                 ELSE repeat(chr(65 + g % 26), 1000 + g * 3701) END END, "
                  "'fast' "
                  "FROM generate_series(59, 0, -1) g",
                  "mixed");
    sqlcheck_text(pg, PAGES_BY_DEFINITION, "mixed", want, sizeof(want));
    merge_ok(pg, "mixed", "completed");
    sqlcheck_text(pg,
                  "SELECT string_agg(page || ':' || length(body) || ':' || md5(body), ',' "
                  "ORDER BY page) FROM shoal.job_output WHERE job_id = $1",
                  "mixed", got, sizeof(got));
    assert_true(strchr(want, ',') != NULL); /* several pages */
    assert_str_eq(got, want);
    assert_int_eq(
        sqlcheck_long(pg, "SELECT output_chars FROM shoal.jobs WHERE job_id = $1", "mixed"),
        sqlcheck_long(pg, "SELECT sum(length(body)) FROM shoal.job_output WHERE job_id = $1",
                      "mixed"));
}

/* record_job through SQL: two chunks, items a b c | d e. */
static void per_item_job(shoal_pg_t *pg, const char *id, const char *merge)
{
    char job[512], tasks[512];
    snprintf(job, sizeof(job),
             "{\"job_id\": \"%s\", \"tenant\": \"acme\", \"merge\": \"%s\", \"output_format\": "
             "\"text\", \"items_total\": 5}",
             id, merge);
    snprintf(tasks, sizeof(tasks),
             "[{\"task_id\": \"%s:000000\", \"chunk\": 0, \"item_ids\": [\"a\", \"b\", \"c\"]},"
             " {\"task_id\": \"%s:000001\", \"chunk\": 1, \"item_ids\": [\"d\", \"e\"]}]",
             id, id);
    const char *params[] = {job, tasks};
    PGresult *r;
    char err[512];
    if (shoal_pg_exec(pg, "SELECT shoal.record_job($1::jsonb, $2::jsonb)", 2, params, &r, err,
                      sizeof(err)) != SHOAL_OK)
        test_fail("record_job: %s", err);
    assert_str_eq(PQgetvalue(r, 0, 0), "new");
    PQclear(r);
}

static long exec_long(shoal_pg_t *pg, const char *sql, const char *p1, const char *p2,
                      const char *p3)
{
    const char *params[] = {p1, p2, p3};
    PGresult *r;
    char err[512];
    if (shoal_pg_exec(pg, sql, p3 ? 3 : p2 ? 2 : 1, params, &r, err, sizeof(err)) != SHOAL_OK)
        test_fail("%s: %s", sql, err);
    long v = !strcmp(PQgetvalue(r, 0, 0), "t") ? 1 : strtol(PQgetvalue(r, 0, 0), NULL, 10);
    PQclear(r);
    return v;
}

/* Marks task_id done through record_batch with a chunk-level output the
 * per-item merge must not use. */
static void task_done(shoal_pg_t *pg, const char *job_id, const char *task_id, int chunk)
{
    char res[512];
    snprintf(res, sizeof(res),
             "[{\"task_id\": \"%s\", \"job_id\": \"%s\", \"chunk\": %d, \"status\": \"done\", "
             "\"output\": \"CHUNK LEVEL\", \"model\": \"fast\"}]",
             task_id, job_id, chunk);
    const char *params[] = {res};
    char err[512];
    if (shoal_pg_exec(pg, "SELECT * FROM shoal.record_batch($1::jsonb, '[]')", 1, params, NULL, err,
                      sizeof(err)) != SHOAL_OK)
        test_fail("record_batch: %s", err);
}

static void item_result(shoal_pg_t *pg, const char *job_id, const char *item, const char *task,
                        const char *output, long want_new)
{
    char row[512];
    snprintf(row, sizeof(row),
             "[{\"job_id\": \"%s\", \"item_id\": \"%s\", \"task_id\": \"%s\", \"output\": \"%s\", "
             "\"model\": \"fast\", \"tokens_in\": 3}]",
             job_id, item, task, output);
    assert_int_eq(exec_long(pg, "SELECT shoal.record_item_results($1::jsonb)", row, NULL, NULL),
                  want_new);
}

static void test_per_item(shoal_pg_t *pg, const char *merge, const char *want)
{
    char id[64], t0[80], t1[80], sub[80], v[2048], want_sub[128];
    snprintf(id, sizeof(id), "pi-%s", merge);
    snprintf(t0, sizeof(t0), "%s:000000", id);
    snprintf(t1, sizeof(t1), "%s:000001", id);
    snprintf(sub, sizeof(sub), "%s:000000/1", id);
    per_item_job(pg, id, merge);

    /* chunk 0 answered a only; b and c go on in a sub-task */
    assert_int_eq(
        exec_long(pg, "SELECT shoal.record_subtask($1, $2, $3::text[])", t0, sub, "{b,c}"), 1);
    assert_int_eq(
        exec_long(pg, "SELECT shoal.record_subtask($1, $2, $3::text[])", t0, sub, "{b,c}"), 0);
    assert_int_eq(sqlcheck_long(pg, "SELECT tasks_total FROM shoal.jobs WHERE job_id = $1", id), 3);
    sqlcheck_text(pg,
                  "SELECT parent_task_id || ' ' || chunk || ' ' || item_ids::text FROM shoal.tasks "
                  "WHERE task_id = $1",
                  sub, v, sizeof(v));
    snprintf(want_sub, sizeof(want_sub), "%s 0 {b,c}", t0);
    assert_str_eq(v, want_sub);

    item_result(pg, id, "a", t0, "A", 1);
    item_result(pg, id, "c", sub, "C", 1); /* answers land out of order */
    item_result(pg, id, "b", sub, "B", 1);
    item_result(pg, id, "d", t1, "D", 1);
    item_result(pg, id, "b", sub, "B again", 0); /* a redelivery changes nothing */
    /* e is never answered */
    assert_int_eq(
        sqlcheck_long(pg, "SELECT count(*) FROM shoal.item_results WHERE job_id = $1", id), 4);

    task_done(pg, id, t0, 0);
    task_done(pg, id, t1, 1);
    sqlcheck_text(pg, "SELECT status FROM shoal.jobs WHERE job_id = $1", id, v, sizeof(v));
    assert_str_eq(v, "running"); /* the sub-task holds it open */
    task_done(pg, id, sub, 0);
    merge_ok(pg, id, "completed");
    sqlcheck_text(pg, "SELECT output FROM shoal.jobs WHERE job_id = $1", id, v, sizeof(v));
    assert_str_eq(v, want);
}

static void test_merge_fails(shoal_pg_t *pg)
{
    char err[512], v[512];
    shoal_merge_result_t res;

    big_job(pg, "bad", 2);
    sqlcheck_exec(pg, "UPDATE shoal.jobs SET merge = 'xml' WHERE job_id = $1", "bad");
    if (shoal_merge_job(pg, "bad", &res, err, sizeof(err)) != SHOAL_OK)
        test_fail("merge: %s", err);
    assert_int_eq(res.outcome, SHOAL_MERGE_FAILED);
    assert_str_eq(res.status, "failed");
    assert_str_contains(res.reason, "unknown merge strategy \"xml\"");
    sqlcheck_text(pg,
                  "SELECT status || '|' || error || '|' || output || '|' || output_pages FROM "
                  "shoal.jobs WHERE job_id = $1",
                  "bad", v, sizeof(v));
    assert_str_contains(v, "failed|the merge failed: ");
    assert_str_contains(v, "unknown merge strategy \"xml\"||0");
    sqlcheck_text(pg,
                  "SELECT payload->>'type' || ' ' || (payload->>'tasks_done') || ' ' || "
                  "(payload->>'error') FROM shoal.event_outbox WHERE job_id = $1",
                  "bad", v, sizeof(v));
    assert_str_contains(v, "failed 2 the merge failed: ");
    /* closed: nothing more to do */
    if (shoal_merge_job(pg, "bad", &res, err, sizeof(err)) != SHOAL_OK)
        test_fail("merge again: %s", err);
    assert_int_eq(res.outcome, SHOAL_MERGE_NOT_DUE);
}

/* One attempt row for record_batch. */
static json_t *attempt(const char *aid, const char *job_id, double cost, double finished_at)
{
    return json_pack("{s:s, s:s, s:s, s:i, s:s, s:s, s:i, s:s, s:f, s:f, s:i, s:i, s:f, s:f}",
                     "attempt_id", aid, "task_id", "t", "job_id", job_id, "attempt", 1, "model",
                     "fast", "worker_id", "w1", "http_status", 200, "outcome", "ok", "latency_ms",
                     5.0, "cost_usd", cost, "tokens_in", 100, "tokens_out", 10, "started_at",
                     finished_at - 1, "finished_at", finished_at);
}

static void record_attempts(shoal_pg_t *pg, json_t *attempts)
{
    char err[512];
    char *a = json_dumps(attempts, JSON_COMPACT);
    const char *params[] = {a};
    if (shoal_pg_exec(pg, "SELECT * FROM shoal.record_batch('[]', $1::jsonb)", 1, params, NULL, err,
                      sizeof(err)) != SHOAL_OK)
        test_fail("record_batch: %s", err);
    free(a);
}

static void test_spend(shoal_pg_t *pg)
{
    char v[512];
    sqlcheck_exec(pg,
                  "INSERT INTO shoal.jobs (job_id, tenant, status) VALUES ('s1', 'acme', "
                  "'running'), ('s2', 'beta', 'running'), ('s3', 'acme', 'running')",
                  NULL);
    /* 1700000000 is 2023-11-14 22:13:20 UTC, 1700100000 2023-11-16 */
    json_t *batch = json_pack("[o, o, o, o]", attempt("w1/1", "s1", 0.25, 1700000000.0),
                              attempt("w1/2", "s1", 0.5, 1700000100.0),
                              attempt("w1/3", "s2", 1.0, 1700000000.0),
                              attempt("w1/4", "s3", 0.125, 1700100000.0));
    record_attempts(pg, batch);
    record_attempts(pg, batch); /* written again: counted once */
    json_decref(batch);

    sqlcheck_text(pg,
                  "SELECT string_agg(job_id || '=' || spent_usd, ' ' ORDER BY job_id) FROM "
                  "shoal.jobs WHERE job_id LIKE $1",
                  "s_", v, sizeof(v));
    assert_str_eq(v, "s1=0.75 s2=1 s3=0.125");
    const char *per_day = "SELECT string_agg(tenant || ' ' || day || ' ' || spent_usd || ' ' || "
                          "calls || ' ' || tokens_in || ' ' || tokens_out, '; ' ORDER BY tenant, "
                          "day) FROM shoal.tenant_spend WHERE tenant <> $1";
    sqlcheck_text(pg, per_day, "-", v, sizeof(v));
    assert_str_eq(v, "acme 2023-11-14 0.75 2 200 20; acme 2023-11-16 0.125 1 100 10; "
                     "beta 2023-11-14 1 1 100 10");

    /* a new call adds to the same day's row */
    batch = json_pack("[o]", attempt("w2/1", "s3", 0.25, 1700000200.0));
    record_attempts(pg, batch);
    json_decref(batch);
    sqlcheck_text(pg, per_day, "-", v, sizeof(v));
    assert_str_eq(v, "acme 2023-11-14 1 3 300 30; acme 2023-11-16 0.125 1 100 10; "
                     "beta 2023-11-14 1 1 100 10");
    sqlcheck_text(pg, "SELECT spent_usd FROM shoal.jobs WHERE job_id = $1", "s3", v, sizeof(v));
    assert_str_eq(v, "0.375");
}

int main(void)
{
    char err[512];

    shoal_log_init("merge_test", SHOAL_LOG_ERROR, 0);
    cluster = shoal_pgcluster_new(NULL, err, sizeof(err));
    if (!cluster)
        test_fail("cannot start PostgreSQL: %s", err);
    shoal_pg_t *pg = shoal_pg_new(shoal_pgcluster_url(cluster), "merge_test");
    assert_true(pg != NULL);
    if (shoal_migrate_apply(pg, NULL, err, sizeof(err)) != SHOAL_OK)
        test_fail("migrate: %s", err);

    test_spend(pg);
    test_merge_fails(pg);
    test_per_item(pg, "json_array", "[\"A\", \"B\", \"C\", \"D\", null]");
    test_per_item(pg, "concat", "A\nB\nC\nD");
    test_per_item(
        pg, "jsonl",
        "{\"chunk\": 0, \"output\": \"A\", \"item_id\": \"a\", \"task_id\": \"pi-jsonl:000000\"}\n"
        "{\"chunk\": 0, \"output\": \"B\", \"item_id\": \"b\", \"task_id\": "
        "\"pi-jsonl:000000/1\"}\n"
        "{\"chunk\": 0, \"output\": \"C\", \"item_id\": \"c\", \"task_id\": "
        "\"pi-jsonl:000000/1\"}\n"
        "{\"chunk\": 1, \"output\": \"D\", \"item_id\": \"d\", \"task_id\": \"pi-jsonl:000001\"}\n"
        "{\"chunk\": 1, \"error\": \"no result for the item\", \"item_id\": \"e\", \"task_id\": "
        "\"pi-jsonl:000001\"}\n");
    test_pages_match_definition(pg);
    test_big_json_array(pg);

    shoal_pg_destroy(pg);
    shoal_pgcluster_destroy(cluster);
    printf("merge_test: ok\n");
    return 0;
}
