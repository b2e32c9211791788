/*
 * common/pg and common/migrate on a throwaway PostgreSQL: migrations apply
 * once (also when two handles race), errors are classified (a syntax error
 * is permanent, a restarting server retriable), handles reconnect after a
 * restart and redo their on-connect SQL, and the SQL functions behind the
 * scheduler and workers are idempotent: record_job, record_batch (each task
 * counted once, attempts never duplicated), merge_job (closes a job once,
 * outputs in chunk order) and the analytics views.
 */
#include "common/pg.h"

#include <pthread.h>
#include <stdlib.h>
#include <unistd.h>

#include <jansson.h>

#include "stack/pgcluster.h"
#include "common/log.h"
#include "common/migrate.h"
#include "tests/support/capture.h"
#include "tests/support/check.h"
#include "tests/support/sqlcheck.h"

static shoal_pgcluster_t *cluster;

static int count_migrations(void)
{
    int n = 0;
    while (shoal_migrations[n].name)
        n++;
    return n;
}

/* The URL of database db on the test cluster. */
static void db_url(const char *db, char *out, size_t outlen)
{
    snprintf(out, outlen, "postgresql://postgres@127.0.0.1:%d/%s", shoal_pgcluster_port(cluster),
             db);
}

static void exec_ok(shoal_pg_t *pg, const char *sql)
{
    char err[512];
    if (shoal_pg_exec(pg, sql, 0, NULL, NULL, err, sizeof(err)) != SHOAL_OK)
        test_fail("%s: %s", sql, err);
}

/* Runs sql (with up to two text parameters) and returns its result, which
 * must not be an error. Caller PQclear()s. */
static PGresult *query(shoal_pg_t *pg, const char *sql, const char *p1, const char *p2)
{
    char err[512];
    const char *params[] = {p1, p2};
    int n = p2 ? 2 : p1 ? 1 : 0;
    PGresult *r = NULL;

    if (shoal_pg_exec(pg, sql, n, params, &r, err, sizeof(err)) != SHOAL_OK)
        test_fail("%s: %s", sql, err);
    assert_true(r != NULL);
    return r;
}

struct racer {
    char url[160];
    pthread_barrier_t *go;
    shoal_err_t err;
    int applied;
    char why[512];
};

static void *race_migrate(void *arg)
{
    struct racer *r = arg;
    shoal_pg_t *pg = shoal_pg_new(r->url, "pg_test_racer");

    r->err = SHOAL_ERR_NOMEM;
    if (pg) {
        /* connect first so both really start migrating at the same moment */
        r->err = shoal_pg_connect(pg, r->why, sizeof(r->why));
        pthread_barrier_wait(r->go);
        if (r->err == SHOAL_OK)
            r->err = shoal_migrate_apply(pg, &r->applied, r->why, sizeof(r->why));
    } else {
        pthread_barrier_wait(r->go);
    }
    shoal_pg_destroy(pg);
    return NULL;
}

/* Two processes starting at once on an empty database both succeed, and the
 * migrations run once between them. */
static void test_migrate_race(void)
{
    pthread_barrier_t go;
    struct racer rs[2];
    pthread_t th[2];
    int total = count_migrations();

    assert_true(total > 0);
    assert_int_eq(pthread_barrier_init(&go, NULL, 2), 0);
    for (int i = 0; i < 2; i++) {
        memset(&rs[i], 0, sizeof(rs[i]));
        db_url("postgres", rs[i].url, sizeof(rs[i].url));
        rs[i].go = &go;
        assert_int_eq(pthread_create(&th[i], NULL, race_migrate, &rs[i]), 0);
    }
    for (int i = 0; i < 2; i++)
        assert_int_eq(pthread_join(th[i], NULL), 0);
    pthread_barrier_destroy(&go);
    for (int i = 0; i < 2; i++)
        if (rs[i].err != SHOAL_OK)
            test_fail("racer %d: %s: %s", i, shoal_err_name(rs[i].err), rs[i].why);
    assert_int_eq(rs[0].applied + rs[1].applied, total);
    assert_true(rs[0].applied == 0 || rs[1].applied == 0);
}

static void test_migrate(shoal_pg_t *admin)
{
    char url[160], err[512], v[64];
    int applied = -1, total = count_migrations();

    /* a fresh database: everything applies, then nothing */
    exec_ok(admin, "CREATE DATABASE fresh");
    db_url("fresh", url, sizeof(url));
    shoal_pg_t *pg = shoal_pg_new(url, "pg_test");
    assert_true(pg != NULL);
    if (shoal_migrate_apply(pg, &applied, err, sizeof(err)) != SHOAL_OK)
        test_fail("migrate: %s", err);
    assert_true(applied > 0);
    assert_int_eq(applied, total);
    /* applying again: the server's notices ("already exists, skipping") go
     * through the log as lines of its format, never raw onto stderr */
    applied = -1;
    shoal_log_init("pg_test", SHOAL_LOG_DEBUG, 0);
    capture_stderr_begin();
    shoal_err_t e = shoal_migrate_apply(pg, &applied, err, sizeof(err));
    char *text = capture_stderr_end();
    shoal_log_init("pg_test", SHOAL_LOG_WARN, 0);
    assert_int_eq(e, SHOAL_OK);
    assert_int_eq(applied, 0);
    assert_str_contains(text, "already exists");
    for (const char *line = text; *line; line = strchr(line, '\n') + 1) {
        if (strncmp(line, "ts=", 3) != 0)
            test_fail("stderr line not written by the log: %.*s", (int)strcspn(line, "\n"), line);
        assert_true(strchr(line, '\n') != NULL);
    }
    free(text);
    assert_int_eq(shoal_migrate_apply(pg, NULL, err, sizeof(err)), SHOAL_OK);
    sqlcheck_text(pg, "SELECT count(*) FROM shoal.schema_version", NULL, v, sizeof(v));
    assert_int_eq(strtol(v, NULL, 10), total);
    /* the advisory lock was given back */
    sqlcheck_text(pg, "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'", NULL, v,
                  sizeof(v));
    assert_str_eq(v, "0");
    shoal_pg_destroy(pg);

    /* the raced database is complete too */
    applied = -1;
    assert_int_eq(shoal_migrate_apply(admin, &applied, err, sizeof(err)), SHOAL_OK);
    assert_int_eq(applied, 0);
}

static void test_errors(shoal_pg_t *pg)
{
    char err[512], v[64];
    PGresult *r = (PGresult *)&r; /* must be reset to NULL on failure */

    /* a syntax error is permanent, with the server's reason */
    assert_int_eq(shoal_pg_exec(pg, "SELEC 1", 0, NULL, &r, err, sizeof(err)), SHOAL_ERR_INVALID);
    assert_true(r == NULL);
    assert_str_contains(err, "syntax error");
    assert_true(err[strlen(err) - 1] != '\n');
    /* so is a bad value or a missing table */
    assert_int_eq(shoal_pg_exec(pg, "SELECT 1/0", 0, NULL, NULL, err, sizeof(err)),
                  SHOAL_ERR_INVALID);
    assert_str_contains(err, "division by zero");
    assert_int_eq(shoal_pg_exec(pg, "SELECT * FROM shoal.nope", 0, NULL, NULL, err, sizeof(err)),
                  SHOAL_ERR_INVALID);

    /* a failed statement inside a transaction leaves the session usable */
    exec_ok(pg, "BEGIN");
    assert_int_eq(shoal_pg_exec(pg, "SELEC 2", 0, NULL, NULL, err, sizeof(err)), SHOAL_ERR_INVALID);
    assert_int_eq(PQtransactionStatus(shoal_pg_conn(pg)), PQTRANS_IDLE);
    sqlcheck_text(pg, "SELECT 40 + 2", NULL, v, sizeof(v));
    assert_str_eq(v, "42");

    /* parameters are text, NULL is SQL NULL */
    sqlcheck_text(pg, "SELECT $1::int * 2", "21", v, sizeof(v));
    assert_str_eq(v, "42");
    const char *nul[] = {NULL};
    assert_int_eq(shoal_pg_exec(pg, "SELECT $1::text IS NULL", 1, nul, &r, err, sizeof(err)),
                  SHOAL_OK);
    assert_str_eq(PQgetvalue(r, 0, 0), "t");
    PQclear(r);

    /* a server that is not there: retriable, and the message keeps the URL out */
    char url[160];
    snprintf(url, sizeof(url), "postgresql://postgres:hunter2@127.0.0.1:1/postgres");
    shoal_pg_t *gone = shoal_pg_new(url, "pg_test");
    assert_int_eq(shoal_pg_exec(gone, "SELECT 1", 0, NULL, NULL, err, sizeof(err)),
                  SHOAL_ERR_RETRY);
    assert_str_contains(err, "could not connect");
    assert_true(!strstr(err, "hunter2"));
    assert_true(shoal_pg_conn(gone) == NULL);
    assert_int_eq(shoal_pg_connects(gone), 0);
    shoal_pg_destroy(gone);
    shoal_pg_destroy(NULL);
}

struct notes {
    int n;
    char payload[8][64];
};

static void on_note(const char *channel, const char *payload, void *arg)
{
    struct notes *ns = arg;
    assert_str_eq(channel, "shoal_merge");
    if (ns->n < 8)
        snprintf(ns->payload[ns->n++], sizeof(ns->payload[0]), "%s", payload);
}

/* Reads notifications until one with payload arrives (fails after 10 s). */
static void wait_note(shoal_pg_t *lis, const char *payload)
{
    struct notes ns;
    char err[512];
    double deadline = check_now_s() + 10;

    memset(&ns, 0, sizeof(ns));
    for (;;) {
        shoal_err_t e = shoal_pg_notifications(lis, on_note, &ns, err, sizeof(err));
        if (e != SHOAL_OK && e != SHOAL_ERR_RETRY)
            test_fail("notifications: %s", err);
        for (int i = 0; i < ns.n; i++)
            if (!strcmp(ns.payload[i], payload))
                return;
        if (check_now_s() > deadline)
            test_fail("no notification \"%s\" within 10 s", payload);
        struct timespec ts = {0, 20 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
}

/* After stop + start, the next exec on an old handle fails as retriable (or
 * succeeds, having reconnected), and the one after that succeeds. */
/* Statements with parameters are prepared once per connection; one whose
 * result changed under it (a migration added a column) runs again afresh,
 * at once alone and as a retriable error inside a transaction block. */
static void test_prepared(shoal_pg_t *pg)
{
    char err[512], v[64];
    PGresult *r;
    const char *one[] = {"1"};

    for (int i = 0; i < 3; i++) {
        sqlcheck_text(pg, "SELECT $1::int + 1", "41", v, sizeof(v));
        assert_str_eq(v, "42");
    }
    assert_int_eq(sqlcheck_long(pg,
                                "SELECT count(*) FROM pg_prepared_statements WHERE statement = $1",
                                "SELECT $1::int + 1"),
                  1);
    /* errors are what they were unprepared */
    assert_int_eq(shoal_pg_exec(pg, "SELEC $1", 1, one, NULL, err, sizeof(err)), SHOAL_ERR_INVALID);
    assert_str_contains(err, "syntax error");
    assert_int_eq(shoal_pg_exec(pg, "SELECT $1::int / 0", 1, one, NULL, err, sizeof(err)),
                  SHOAL_ERR_INVALID);
    assert_str_contains(err, "division by zero");

    exec_ok(pg, "CREATE TABLE public.stmt_t (a int); INSERT INTO public.stmt_t VALUES (1)");
    const char *sel = "SELECT * FROM public.stmt_t WHERE a = $1::int";
    for (int round = 0; round < 2; round++) {
        assert_int_eq(shoal_pg_exec(pg, sel, 1, one, &r, err, sizeof(err)), SHOAL_OK);
        assert_int_eq(PQnfields(r), 1 + round);
        PQclear(r);
        exec_ok(pg, round == 0 ? "ALTER TABLE public.stmt_t ADD COLUMN b int DEFAULT 7"
                               : "ALTER TABLE public.stmt_t ADD COLUMN c int DEFAULT 8");
        if (round == 0) {
            assert_int_eq(shoal_pg_exec(pg, sel, 1, one, &r, err, sizeof(err)), SHOAL_OK);
            assert_int_eq(PQnfields(r), 2);
            assert_str_eq(PQgetvalue(r, 0, 1), "7");
            PQclear(r);
        } else {
            exec_ok(pg, "BEGIN");
            assert_int_eq(shoal_pg_exec(pg, sel, 1, one, NULL, err, sizeof(err)), SHOAL_ERR_RETRY);
            assert_str_contains(err, "cached plan");
            exec_ok(pg, "ROLLBACK");
            assert_int_eq(shoal_pg_exec(pg, sel, 1, one, &r, err, sizeof(err)), SHOAL_OK);
            assert_int_eq(PQnfields(r), 3);
            assert_str_eq(PQgetvalue(r, 0, 2), "8");
            PQclear(r);
        }
    }
    exec_ok(pg, "DROP TABLE public.stmt_t");
    /* more statements than the cache holds all run */
    for (int i = 0; i < 80; i++) {
        char sql[64], want[16];
        snprintf(sql, sizeof(sql), "SELECT $1::int + %d", i);
        snprintf(want, sizeof(want), "%d", i + 1);
        sqlcheck_text(pg, sql, "1", v, sizeof(v));
        assert_str_eq(v, want);
    }
}

static void test_reconnect(shoal_pg_t *pg, shoal_pg_t *lis)
{
    char err[512], v[64];

    exec_ok(pg, "SELECT 1");
    unsigned before = shoal_pg_connects(pg);
    assert_true(before >= 1);
    exec_ok(pg, "SELECT 1");
    assert_int_eq(shoal_pg_connects(pg), before); /* the connection is reused */

    /* a second handle, used while the server is down */
    char url[160];
    db_url("postgres", url, sizeof(url));
    shoal_pg_t *other = shoal_pg_new(url, "pg_test_other");
    exec_ok(other, "SELECT 1");
    assert_int_eq(shoal_pg_connects(other), 1);
    exec_ok(lis, "SELECT 1");
    unsigned lis_before = shoal_pg_connects(lis);

    assert_int_eq(shoal_pgcluster_stop(cluster, SHOAL_PGCLUSTER_FAST), SHOAL_OK);
    assert_int_eq(shoal_pg_exec(other, "SELECT 1", 0, NULL, NULL, err, sizeof(err)),
                  SHOAL_ERR_RETRY);
    assert_true(err[0] != '\0');
    assert_int_eq(shoal_pg_exec(other, "SELECT 1", 0, NULL, NULL, err, sizeof(err)),
                  SHOAL_ERR_RETRY);
    assert_str_contains(err, "could not connect");
    if (shoal_pgcluster_start(cluster, err, sizeof(err)) != SHOAL_OK)
        test_fail("restart: %s", err);

    err[0] = '\0';
    shoal_err_t first = shoal_pg_exec(pg, "SELECT 1", 0, NULL, NULL, err, sizeof(err));
    if (first != SHOAL_OK && first != SHOAL_ERR_RETRY)
        test_fail("first exec after restart: %s: %s", shoal_err_name(first), err);
    if (first == SHOAL_ERR_RETRY)
        assert_true(err[0] != '\0');
    sqlcheck_text(pg, "SELECT 7", NULL, v, sizeof(v));
    assert_str_eq(v, "7");
    assert_int_eq(shoal_pg_connects(pg), before + 1);
    /* prepared on the lost connection: prepared again on the new one */
    sqlcheck_text(pg, "SELECT $1::int + 1", "6", v, sizeof(v));
    assert_str_eq(v, "7");

    exec_ok(other, "SELECT 1");
    assert_int_eq(shoal_pg_connects(other), 2);
    shoal_pg_destroy(other);

    /* the listener notices the lost connection, reconnects and LISTENs again */
    double deadline = check_now_s() + 10;
    struct notes ignored;
    for (;;) {
        memset(&ignored, 0, sizeof(ignored));
        shoal_err_t e = shoal_pg_notifications(lis, on_note, &ignored, err, sizeof(err));
        if (e == SHOAL_OK && shoal_pg_connects(lis) > lis_before)
            break;
        if (check_now_s() > deadline)
            test_fail("the listener did not reconnect within 10 s: %s", err);
        struct timespec ts = {0, 20 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    exec_ok(pg, "SELECT pg_notify('shoal_merge', 'after-restart')");
    wait_note(lis, "after-restart");
    assert_int_eq(shoal_pg_connects(lis), lis_before + 1);
}

static const char job_j1[] =
    "{\"job_id\":\"j1\",\"tenant\":\"acme\",\"priority\":\"normal\",\"model\":\"sim-small\","
    "\"merge\":\"concat\",\"output_format\":\"text\",\"source\":\"shoal.jobs/0@5\","
    "\"settings\":{\"max_attempts\":3},\"items_total\":2,\"est_tokens\":100,"
    "\"est_cost_usd\":0.01}";
static const char tasks_j1[] = "[{\"task_id\":\"j1/0\",\"chunk\":0,\"item_ids\":[\"a\"],"
                               "\"est_tokens\":50},"
                               "{\"task_id\":\"j1/1\",\"chunk\":1,\"item_ids\":[\"b\"],"
                               "\"est_tokens\":50}]";

/* A result row for task chunk of job, and the attempt behind it. */
static void rows(const char *job, int chunk, const char *status, const char *output,
                 const char *attempt_id, char *res, size_t reslen, char *att, size_t attlen)
{
    snprintf(res, reslen,
             "[{\"task_id\":\"%s/%d\",\"job_id\":\"%s\",\"chunk\":%d,\"status\":\"%s\","
             "\"output\":\"%s\",\"model\":\"sim-small\",\"tokens_in\":5,\"tokens_out\":3,"
             "\"worker_id\":\"w1\",\"error\":%s,\"attempts\":1}]",
             job, chunk, job, chunk, status, output, strcmp(status, "done") ? "\"boom\"" : "null");
    snprintf(att, attlen,
             "[{\"attempt_id\":\"%s\",\"task_id\":\"%s/%d\",\"job_id\":\"%s\",\"attempt\":1,"
             "\"model\":\"sim-small\",\"worker_id\":\"w1\",\"http_status\":%d,"
             "\"outcome\":\"%s\",\"latency_ms\":%d.5,\"queue_ms\":1.0,\"tokens_in\":5,"
             "\"tokens_out\":3,\"tokens_cached\":1,\"cost_usd\":0.001,"
             "\"started_at\":1700000000.0,\"finished_at\":1700000000.25}]",
             attempt_id, job, chunk, job, strcmp(status, "done") ? 500 : 200,
             strcmp(status, "done") ? "failed" : "ok", 10 + chunk);
}

/* Runs record_batch and returns how many jobs it reported finished; the
 * first one's id goes into ended. */
static int record_batch(shoal_pg_t *pg, const char *res, const char *att, char *ended,
                        size_t endedlen)
{
    PGresult *r = query(pg, "SELECT * FROM shoal.record_batch($1::jsonb, $2::jsonb)", res, att);
    int n = PQntuples(r);
    ended[0] = '\0';
    if (n > 0)
        snprintf(ended, endedlen, "%s", PQgetvalue(r, 0, 0));
    PQclear(r);
    return n;
}

static void test_functions(shoal_pg_t *pg, shoal_pg_t *lis)
{
    char v[256], res[1024], att[1024], res0[1024], att0[1024], ended[64];

    /* record_job: new, then recognized */
    exec_ok(lis, "SELECT 1"); /* connected, so LISTENing, before anything is announced */
    PGresult *r = query(pg, "SELECT shoal.record_job($1::jsonb, $2::jsonb)", job_j1, tasks_j1);
    assert_str_eq(PQgetvalue(r, 0, 0), "new");
    PQclear(r);
    r = query(pg, "SELECT shoal.record_job($1::jsonb, $2::jsonb)", job_j1, tasks_j1);
    assert_str_eq(PQgetvalue(r, 0, 0), "exists:running");
    PQclear(r);
    sqlcheck_text(pg, "SELECT count(*) FROM shoal.tasks WHERE job_id = $1", "j1", v, sizeof(v));
    assert_str_eq(v, "2");
    sqlcheck_text(pg,
                  "SELECT tasks_total || ' ' || items_total || ' ' || status FROM shoal.jobs "
                  "WHERE job_id = $1",
                  "j1", v, sizeof(v));
    assert_str_eq(v, "2 2 running");
    sqlcheck_text(
        pg, "SELECT string_agg(payload->>'type', ',') FROM shoal.event_outbox WHERE job_id = $1",
        "j1", v, sizeof(v));
    assert_str_eq(v, "accepted"); /* the duplicate added no event */

    /* the later chunk finishes first: the job is not done yet */
    rows("j1", 1, "done", "second", "w1/1", res, sizeof(res), att, sizeof(att));
    assert_int_eq(record_batch(pg, res, att, ended, sizeof(ended)), 0);
    sqlcheck_text(pg, "SELECT status FROM shoal.tasks WHERE task_id = $1", "j1/1", v, sizeof(v));
    assert_str_eq(v, "done");
    sqlcheck_text(pg, "SELECT shoal.merge_job($1)", "j1", v, sizeof(v));
    assert_str_eq(v, "NULL"); /* not ready */

    /* the last task: the job is reported (and announced) once */
    rows("j1", 0, "done", "first", "w1/2", res0, sizeof(res0), att0, sizeof(att0));
    assert_int_eq(record_batch(pg, res0, att0, ended, sizeof(ended)), 1);
    assert_str_eq(ended, "j1");
    wait_note(lis, "j1");

    /* redelivered batches change nothing */
    assert_int_eq(record_batch(pg, res0, att0, ended, sizeof(ended)), 0);
    assert_int_eq(record_batch(pg, res, att, ended, sizeof(ended)), 0);
    sqlcheck_text(pg, "SELECT tasks_done || ' ' || tasks_failed FROM shoal.jobs WHERE job_id = $1",
                  "j1", v, sizeof(v));
    assert_str_eq(v, "2 0");
    sqlcheck_text(pg, "SELECT count(*) FROM shoal.results WHERE job_id = $1", "j1", v, sizeof(v));
    assert_str_eq(v, "2");
    sqlcheck_text(pg, "SELECT count(*) FROM shoal.attempts WHERE job_id = $1", "j1", v, sizeof(v));
    assert_str_eq(v, "2");
    sqlcheck_text(pg, "SELECT sum(attempts) FROM shoal.tasks WHERE job_id = $1", "j1", v,
                  sizeof(v));
    assert_str_eq(v, "2");

    /* merge: once, outputs in chunk order */
    sqlcheck_text(pg, "SELECT shoal.merge_job($1)", "j1", v, sizeof(v));
    assert_str_eq(v, "completed");
    sqlcheck_text(pg, "SELECT shoal.merge_job($1)", "j1", v, sizeof(v));
    assert_str_eq(v, "NULL");
    sqlcheck_text(pg, "SELECT output FROM shoal.jobs WHERE job_id = $1", "j1", v, sizeof(v));
    assert_str_eq(v, "first\nsecond");
    sqlcheck_text(
        pg,
        "SELECT status || ' ' || (finished_at IS NOT NULL) || ' ' || coalesce(error, '-') "
        "FROM shoal.jobs WHERE job_id = $1",
        "j1", v, sizeof(v));
    assert_str_eq(v, "completed true -");
    sqlcheck_text(pg,
                  "SELECT string_agg(payload->>'type', ',' ORDER BY id) FROM shoal.event_outbox "
                  "WHERE job_id = $1",
                  "j1", v, sizeof(v));
    assert_str_eq(v, "accepted,completed");
    /* a finished job can still be recognized */
    r = query(pg, "SELECT shoal.record_job($1::jsonb, $2::jsonb)", job_j1, tasks_j1);
    assert_str_eq(PQgetvalue(r, 0, 0), "exists:completed");
    PQclear(r);
    /* a result arriving after the merge is not counted */
    assert_int_eq(record_batch(pg, res, att, ended, sizeof(ended)), 0);
    sqlcheck_text(pg, "SELECT tasks_done FROM shoal.jobs WHERE job_id = $1", "j1", v, sizeof(v));
    assert_str_eq(v, "2");

    /* a job with one failed task ends partial */
    char job2[1024], tasks2[512];
    snprintf(job2, sizeof(job2), "%s", job_j1);
    memcpy(strstr(job2, "\"j1\""), "\"j2\"", 4);
    snprintf(tasks2, sizeof(tasks2), "%s", tasks_j1);
    for (char *p = tasks2; (p = strstr(p, "j1/")) != NULL; p++)
        p[1] = '2';
    r = query(pg, "SELECT shoal.record_job($1::jsonb, $2::jsonb)", job2, tasks2);
    assert_str_eq(PQgetvalue(r, 0, 0), "new");
    PQclear(r);
    rows("j2", 0, "done", "only", "w1/3", res, sizeof(res), att, sizeof(att));
    assert_int_eq(record_batch(pg, res, att, ended, sizeof(ended)), 0);
    rows("j2", 1, "failed", "", "w1/4", res, sizeof(res), att, sizeof(att));
    assert_int_eq(record_batch(pg, res, att, ended, sizeof(ended)), 1);
    assert_str_eq(ended, "j2");
    sqlcheck_text(pg, "SELECT shoal.merge_job($1)", "j2", v, sizeof(v));
    assert_str_eq(v, "partial");
    sqlcheck_text(pg, "SELECT output || '|' || error FROM shoal.jobs WHERE job_id = $1", "j2", v,
                  sizeof(v));
    assert_str_eq(v, "only|1 of 2 tasks failed");
    sqlcheck_text(pg, "SELECT count(*) FROM shoal.results WHERE job_id = $1", "j2", v, sizeof(v));
    assert_str_eq(v, "1"); /* a failed task has no result row */

    /* json_array and jsonl keep a failed chunk's place */
    static const char *const merges[][3] = {
        {"j3", "json_array", "[\"only\", null]"},
        {"j4", "jsonl",
         "{\"chunk\": 0, \"items\": [\"a\"], \"output\": \"only\", "
         "\"task_id\": \"j4/0\"}\n{\"chunk\": 1, \"error\": \"boom\", "
         "\"items\": [\"b\"], \"task_id\": \"j4/1\"}\n"}};
    for (int m = 0; m < 2; m++) {
        const char *id = merges[m][0];
        char tasksm[512];
        json_t *jd = json_loads(job_j1, 0, NULL);
        assert_true(jd != NULL);
        json_object_set_new(jd, "job_id", json_string(id));
        json_object_set_new(jd, "merge", json_string(merges[m][1]));
        char *jobm = json_dumps(jd, JSON_COMPACT);
        json_decref(jd);
        snprintf(tasksm, sizeof(tasksm), "%s", tasks_j1);
        for (char *p = tasksm; (p = strstr(p, "j1/")) != NULL; p++)
            p[1] = id[1];
        r = query(pg, "SELECT shoal.record_job($1::jsonb, $2::jsonb)", jobm, tasksm);
        free(jobm);
        assert_str_eq(PQgetvalue(r, 0, 0), "new");
        PQclear(r);
        rows(id, 0, "done", "only", m ? "w1/6" : "w1/5", res, sizeof(res), att, sizeof(att));
        assert_int_eq(record_batch(pg, res, att, ended, sizeof(ended)), 0);
        rows(id, 1, "failed", "", m ? "w1/8" : "w1/7", res, sizeof(res), att, sizeof(att));
        assert_int_eq(record_batch(pg, res, att, ended, sizeof(ended)), 1);
        sqlcheck_text(pg, "SELECT shoal.merge_job($1)", id, v, sizeof(v));
        assert_str_eq(v, "partial");
        sqlcheck_text(pg, "SELECT output FROM shoal.jobs WHERE job_id = $1", id, v, sizeof(v));
        assert_str_eq(v, merges[m][2]);
    }

    /* the views */
    r = query(pg,
              "SELECT status, tasks_total, tasks_done, tasks_left, percent, calls, tokens_in, "
              "cost_usd > 0 FROM shoal.job_progress WHERE job_id = $1",
              "j1", NULL);
    assert_int_eq(PQntuples(r), 1);
    assert_str_eq(PQgetvalue(r, 0, 0), "completed");
    assert_str_eq(PQgetvalue(r, 0, 1), "2");
    assert_str_eq(PQgetvalue(r, 0, 2), "2");
    assert_str_eq(PQgetvalue(r, 0, 3), "0");
    assert_str_eq(PQgetvalue(r, 0, 4), "100.0");
    assert_str_eq(PQgetvalue(r, 0, 5), "2");
    assert_str_eq(PQgetvalue(r, 0, 6), "10");
    assert_str_eq(PQgetvalue(r, 0, 7), "t");
    PQclear(r);
    r = query(pg,
              "SELECT calls, ok, error_pct, server_error_pct, p50_ms IS NOT NULL "
              "FROM shoal.model_latency WHERE model = $1",
              "sim-small", NULL);
    assert_int_eq(PQntuples(r), 1);
    /* j1: 2 ok; j2, j3, j4: 1 ok and 1 failed (HTTP 500) each */
    assert_str_eq(PQgetvalue(r, 0, 0), "8");
    assert_str_eq(PQgetvalue(r, 0, 1), "5");
    assert_str_eq(PQgetvalue(r, 0, 2), "37.50");
    assert_str_eq(PQgetvalue(r, 0, 3), "37.50");
    assert_str_eq(PQgetvalue(r, 0, 4), "t");
    PQclear(r);
    sqlcheck_text(pg, "SELECT count(*) FROM shoal.tenant_cost WHERE tenant = $1", "acme", v,
                  sizeof(v));
    assert_str_eq(v, "1");
}

int main(void)
{
    char err[512], url[160];

    shoal_log_init("pg_test", SHOAL_LOG_WARN, 0);
    cluster = shoal_pgcluster_new(NULL, err, sizeof(err));
    if (!cluster)
        test_fail("cannot start PostgreSQL: %s", err);

    test_migrate_race();
    db_url("postgres", url, sizeof(url));
    shoal_pg_t *pg = shoal_pg_new(url, "pg_test");
    shoal_pg_t *lis = shoal_pg_new(url, "pg_test_listener");
    assert_true(pg != NULL && lis != NULL);
    shoal_pg_set_on_connect(lis, "LISTEN shoal_merge");
    test_migrate(pg);
    test_errors(pg);
    test_prepared(pg);
    test_functions(pg, lis);
    test_reconnect(pg, lis);

    shoal_pg_destroy(lis);
    shoal_pg_destroy(pg);
    shoal_pgcluster_destroy(cluster);
    printf("pg_test: ok\n");
    return 0;
}
