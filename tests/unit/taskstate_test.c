/*
 * A task's changes of state on a throwaway PostgreSQL (sql/021): they are
 * heap-only updates, and the job's counters that replace the status indexes
 * follow every path a task takes. jobs.tasks_queued counts the job's queued
 * tasks (sub-tasks too) through publication, answers, redelivered answers,
 * cancel and deletion; jobs.dispatch_from stays at the first pending chunk,
 * moves back when resume_job puts failed tasks back, and shoal.dispatch_pick
 * fills a tenant's window from there in chunk order. A task's queued_at is
 * the publication time its publisher names. Deleting tasks deletes their
 * results, deleting a job its tasks.
 */
#include <libpq-fe.h>
#include <stdio.h>
#include <string.h>

#include "common/pg.h"
#include "stack/pgcluster.h"
#include "tests/support/check.h"
#include "tests/support/sqlcheck.h"
#include "tests/support/testdb.h"

/* Records job id with n one-item chunk tasks, inputs kept (so dispatched). */
static void record(shoal_pg_t *pg, const char *id, int n)
{
    char job[256], tasks[8192], err[512];
    size_t o = 0;
    snprintf(
        job, sizeof(job),
        "{\"job_id\": \"%s\", \"tenant\": \"acme\", \"priority\": \"normal\", \"items_total\": %d}",
        id, n);
    o += (size_t)snprintf(tasks + o, sizeof(tasks) - o, "[");
    for (int i = 0; i < n; i++)
        o +=
            (size_t)snprintf(tasks + o, sizeof(tasks) - o,
                             "%s{\"task_id\": \"%s:%06d\", \"chunk\": %d, \"item_ids\": [\"i%d\"]}",
                             i ? ", " : "", id, i, i, i);
    snprintf(tasks + o, sizeof(tasks) - o, "]");
    const char *params[] = {job, tasks, "{\"items\": []}"};
    PGresult *r;
    if (shoal_pg_exec(pg, "SELECT shoal.record_job($1::jsonb, $2::jsonb, $3)", 3, params, &r, err,
                      sizeof(err)) != SHOAL_OK)
        test_fail("record_job: %s", err);
    assert_str_eq(PQgetvalue(r, 0, 0), "new");
    PQclear(r);
}

/* The chunks dispatch_pick(window, limit) picks for job id, as "0,1,2". */
static void picked(shoal_pg_t *pg, const char *id, int window, int limit, char *out, size_t len)
{
    char sql[256];
    snprintf(sql, sizeof(sql),
             "SELECT coalesce(string_agg(chunk::text, ',' ORDER BY chunk), '') "
             "FROM shoal.dispatch_pick(%d, %d) WHERE job_id = $1",
             window, limit);
    sqlcheck_text(pg, sql, id, out, len);
}

static long queued_counter(shoal_pg_t *pg, const char *id)
{
    return sqlcheck_long(pg, "SELECT tasks_queued FROM shoal.jobs WHERE job_id = $1", id);
}

static long queued_rows(shoal_pg_t *pg, const char *id)
{
    return sqlcheck_long(
        pg, "SELECT count(*) FROM shoal.tasks WHERE job_id = $1 AND status = 'queued'", id);
}

static long dispatch_from(shoal_pg_t *pg, const char *id)
{
    return sqlcheck_long(pg, "SELECT dispatch_from FROM shoal.jobs WHERE job_id = $1", id);
}

/* Ends task <id>:<chunk> with one call, as a worker's batch does. */
static void finish(shoal_pg_t *pg, const char *id, int chunk, const char *status)
{
    char results[512], attempts[512], err[512];
    snprintf(results, sizeof(results),
             "[{\"task_id\": \"%s:%06d\", \"job_id\": \"%s\", \"chunk\": %d, \"status\": \"%s\", "
             "\"output\": \"out\", \"model\": \"fast\", \"worker_id\": \"w\", \"attempts\": 1%s}]",
             id, chunk, id, chunk, status, strcmp(status, "failed") ? "" : ", \"error\": \"bad\"");
    snprintf(
        attempts, sizeof(attempts),
        "[{\"attempt_id\": \"w/%s/%d\", \"task_id\": \"%s:%06d\", \"job_id\": \"%s\", "
        "\"attempt\": 1, \"model\": \"fast\", \"worker_id\": \"w\", \"http_status\": 200, "
        "\"outcome\": \"ok\", \"outcome_kind\": \"ok\", \"latency_ms\": 1, \"cost_usd\": 0.01, "
        "\"started_at\": 1700000000, \"finished_at\": 1700000001}]",
        id, chunk, id, chunk, id);
    const char *params[] = {results, attempts};
    if (shoal_pg_exec(pg, "SELECT * FROM shoal.record_batch($1::jsonb, $2::jsonb)", 2, params, NULL,
                      err, sizeof(err)) != SHOAL_OK)
        test_fail("record_batch: %s", err);
}

static void mark(shoal_pg_t *pg, const char *id, const char *chunks)
{
    char sql[256];
    snprintf(sql, sizeof(sql), "SELECT shoal.mark_queued($1, '{%s}'::int[])", chunks);
    sqlcheck_exec(pg, sql, id);
}

static void test_window(shoal_pg_t *pg)
{
    char got[256];
    record(pg, "ts-a", 6);
    assert_int_eq(queued_counter(pg, "ts-a"), 0);
    assert_int_eq(dispatch_from(pg, "ts-a"), 0);

    picked(pg, "ts-a", 3, 10, got, sizeof(got));
    assert_str_eq(got, "0,1,2");
    mark(pg, "ts-a", "0,1,2");
    assert_int_eq(queued_counter(pg, "ts-a"), 3);
    assert_int_eq(dispatch_from(pg, "ts-a"), 3);
    /* the window is full */
    picked(pg, "ts-a", 3, 10, got, sizeof(got));
    assert_str_eq(got, "");

    /* one answer frees one place, a redelivered answer frees nothing more */
    finish(pg, "ts-a", 1, "done");
    finish(pg, "ts-a", 1, "done");
    assert_int_eq(queued_counter(pg, "ts-a"), 2);
    assert_int_eq(queued_rows(pg, "ts-a"), 2);
    picked(pg, "ts-a", 3, 10, got, sizeof(got));
    assert_str_eq(got, "3");

    /* a publication Kafka refused leaves its task pending: the next pass
     * starts from it */
    mark(pg, "ts-a", "4");
    assert_int_eq(dispatch_from(pg, "ts-a"), 3);
    picked(pg, "ts-a", 10, 10, got, sizeof(got));
    assert_str_eq(got, "3,5");
    /* a task published again (the reconciler) is counted once */
    mark(pg, "ts-a", "3,5,4");
    assert_int_eq(queued_counter(pg, "ts-a"), 5);
    assert_int_eq(queued_rows(pg, "ts-a"), 5);
    assert_int_eq(dispatch_from(pg, "ts-a"), 6);
    picked(pg, "ts-a", 10, 10, got, sizeof(got));
    assert_str_eq(got, "");

    /* failures end tasks too; resume puts them back and dispatch_from with
     * them */
    finish(pg, "ts-a", 0, "done");
    finish(pg, "ts-a", 2, "failed");
    finish(pg, "ts-a", 3, "done");
    finish(pg, "ts-a", 4, "failed");
    finish(pg, "ts-a", 5, "done");
    assert_int_eq(queued_counter(pg, "ts-a"), 0);
    sqlcheck_exec(pg, "UPDATE shoal.jobs SET status = 'partial' WHERE job_id = $1", "ts-a");
    sqlcheck_text(pg, "SELECT shoal.resume_job($1)", "ts-a", got, sizeof(got));
    assert_str_eq(got, "resumed:2");
    assert_int_eq(dispatch_from(pg, "ts-a"), 2);
    picked(pg, "ts-a", 10, 10, got, sizeof(got));
    assert_str_eq(got, "2,4");
}

static void test_cancel_and_delete(shoal_pg_t *pg)
{
    record(pg, "ts-b", 4);
    mark(pg, "ts-b", "0,1,2");
    assert_int_eq(queued_counter(pg, "ts-b"), 3);
    /* sub-tasks recorded queued count as well */
    sqlcheck_exec(pg,
                  "INSERT INTO shoal.tasks (task_id, job_id, chunk, item_ids, status, "
                  "parent_task_id, queued_at) VALUES ($1 || ':000000/a', $1, 0, '{i0}', 'queued', "
                  "$1 || ':000000', now())",
                  "ts-b");
    assert_int_eq(queued_counter(pg, "ts-b"), 4);
    char got[64];
    sqlcheck_text(pg, "SELECT shoal.cancel_job($1)", "ts-b", got, sizeof(got));
    assert_int_eq(queued_counter(pg, "ts-b"), 0);
    assert_int_eq(queued_rows(pg, "ts-b"), 0);

    record(pg, "ts-c", 3);
    mark(pg, "ts-c", "0,1,2");
    finish(pg, "ts-c", 2, "done");
    sqlcheck_exec(pg, "DELETE FROM shoal.tasks WHERE job_id = $1 AND chunk IN (1, 2)", "ts-c");
    assert_int_eq(queued_counter(pg, "ts-c"), 1);
    /* deleting tasks deletes their results, deleting a job its tasks (what
     * the foreign keys' ON DELETE CASCADE did) */
    assert_int_eq(sqlcheck_long(pg, "SELECT count(*) FROM shoal.results WHERE job_id = $1", "ts-c"),
                  0);
    finish(pg, "ts-c", 0, "done");
    assert_int_eq(sqlcheck_long(pg, "SELECT count(*) FROM shoal.results WHERE job_id = $1", "ts-c"),
                  1);
    sqlcheck_exec(pg, "DELETE FROM shoal.jobs WHERE job_id = $1", "ts-c");
    assert_int_eq(sqlcheck_long(pg, "SELECT count(*) FROM shoal.tasks WHERE job_id = $1", "ts-c"),
                  0);
    assert_int_eq(sqlcheck_long(pg, "SELECT count(*) FROM shoal.results WHERE job_id = $1", "ts-c"),
                  0);
}

/* Heap-only updates of shoal.tasks so far in this transaction (pending
 * counts of earlier ones of the session may be in it too: read a delta). */
static long hot_updates(shoal_pg_t *pg)
{
    return sqlcheck_long(pg,
                         "SELECT n_tup_hot_upd FROM pg_stat_xact_user_tables "
                         "WHERE relid = 'shoal.tasks'::regclass",
                         NULL);
}

/* Neither change of state writes an index entry: both are heap-only. */
static void test_heap_only(shoal_pg_t *pg)
{
    record(pg, "ts-d", 50);
    sqlcheck_exec(pg, "BEGIN", NULL);
    long hot0 = hot_updates(pg);
    mark(pg, "ts-d", "0,1,2,3,4,5,6,7,8,9");
    assert_int_eq(hot_updates(pg) - hot0, 10);
    finish(pg, "ts-d", 3, "done");
    finish(pg, "ts-d", 4, "failed");
    assert_int_eq(hot_updates(pg) - hot0, 12);
    sqlcheck_exec(pg, "COMMIT", NULL);
    assert_int_eq(queued_counter(pg, "ts-d"), 8);
}

/* queued_at is the publication the caller names (its clock, never ahead
 * of the database's), or now; a task finished before it was marked gets it
 * too. */
static void test_queued_at(shoal_pg_t *pg)
{
    record(pg, "ts-e", 3);
    sqlcheck_exec(pg,
                  "SELECT shoal.mark_queued($1, '{0}'::int[], "
                  "to_timestamp(1700000000.25::double precision))",
                  "ts-e");
    assert_int_eq(sqlcheck_long(pg,
                                "SELECT (extract(epoch FROM queued_at) * 100)::bigint "
                                "FROM shoal.tasks WHERE task_id = $1 || ':000000'",
                                "ts-e"),
                  170000000025);
    sqlcheck_exec(pg, "SELECT shoal.mark_queued($1, '{1}'::int[], now() + interval '1 hour')",
                  "ts-e");
    sqlcheck_exec(pg, "SELECT shoal.mark_queued($1, '{2}'::int[])", "ts-e");
    assert_int_eq(sqlcheck_long(pg,
                                "SELECT count(*) FROM shoal.tasks WHERE job_id = $1 "
                                "AND chunk > 0 AND queued_at <= now()",
                                "ts-e"),
                  2);

    /* A worker may finish a task before its publication is recorded: it
     * stays done, takes the publication time once, and counts as nothing
     * queued. */
    record(pg, "ts-f", 2);
    finish(pg, "ts-f", 0, "done");
    long queued0 = queued_counter(pg, "ts-f");
    sqlcheck_exec(pg,
                  "SELECT shoal.mark_queued($1, '{0,1}'::int[], "
                  "to_timestamp(1700000000.5::double precision))",
                  "ts-f");
    sqlcheck_exec(pg,
                  "SELECT shoal.mark_queued($1, '{0}'::int[], "
                  "to_timestamp(1700000009::double precision))",
                  "ts-f");
    assert_int_eq(
        sqlcheck_long(pg,
                      "SELECT count(*) FROM shoal.tasks WHERE task_id = $1 || ':000000' "
                      "AND status = 'done' AND extract(epoch FROM queued_at) = 1700000000.5",
                      "ts-f"),
        1);
    assert_int_eq(queued_counter(pg, "ts-f"), queued0 + 1);
    assert_int_eq(queued_rows(pg, "ts-f"), 1);
}

int main(void)
{
    shoal_pgcluster_t *cluster;
    shoal_pg_t *pg = testdb_start("taskstate_test", &cluster);
    test_window(pg);
    test_cancel_and_delete(pg);
    test_heap_only(pg);
    test_queued_at(pg);
    shoal_pg_destroy(pg);
    shoal_pgcluster_destroy(cluster);
    return 0;
}
