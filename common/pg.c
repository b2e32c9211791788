/*
 * libpq connection handling and error classification (see pg.h).
 */
#include "common/pg.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/log.h"

/* Statements with parameters are prepared once per connection and executed
 * by name: the server then parses each once and, for most, stops planning
 * it after a few runs (a worker's task check planned for 0.4 ms per call).
 * The cache is small and fixed: the project's statements are string
 * constants, so a full cache means SQL built at run time, which is simply
 * not prepared. */
#define STMT_CACHE 64

struct stmt {
    char *sql; /* NULL: free slot */
    unsigned long hash;
};

struct shoal_pg {
    char *conninfo;
    char *appname;
    char *on_connect;
    PGconn *conn;
    unsigned connects;
    void (*observe)(double seconds, void *arg);
    void *observe_arg;
    struct stmt stmts[STMT_CACHE]; /* prepared on conn as "shoal_<slot>" */
};

shoal_pg_t *shoal_pg_new(const char *conninfo, const char *application_name)
{
    shoal_pg_t *pg = calloc(1, sizeof(*pg));
    if (!pg)
        return NULL;
    pg->conninfo = strdup(conninfo ? conninfo : "");
    pg->appname = strdup(application_name ? application_name : "shoal");
    if (!pg->conninfo || !pg->appname) {
        shoal_pg_destroy(pg);
        return NULL;
    }
    return pg;
}

/* Prepared statements live and die with their connection. */
static void forget_stmts(shoal_pg_t *pg)
{
    for (int i = 0; i < STMT_CACHE; i++) {
        free(pg->stmts[i].sql);
        pg->stmts[i].sql = NULL;
    }
}

void shoal_pg_destroy(shoal_pg_t *pg)
{
    if (!pg)
        return;
    forget_stmts(pg);
    if (pg->conn)
        PQfinish(pg->conn);
    free(pg->conninfo);
    free(pg->appname);
    free(pg->on_connect);
    free(pg);
}

void shoal_pg_set_on_connect(shoal_pg_t *pg, const char *sql)
{
    free(pg->on_connect);
    pg->on_connect = sql ? strdup(sql) : NULL;
}

PGconn *shoal_pg_conn(shoal_pg_t *pg)
{
    return pg->conn;
}

unsigned shoal_pg_connects(const shoal_pg_t *pg)
{
    return pg->connects;
}

/* Copies a libpq message without its trailing newline. */
static void copy_msg(char *errbuf, size_t errlen, const char *prefix, const char *msg)
{
    if (!errbuf || !errlen)
        return;
    snprintf(errbuf, errlen, "%s%s", prefix, msg ? msg : "");
    size_t n = strlen(errbuf);
    while (n > 0 && (errbuf[n - 1] == '\n' || errbuf[n - 1] == ' '))
        errbuf[--n] = '\0';
}

/* libpq prints server notices (NOTICE, WARNING, a FATAL for an idle session)
 * on stderr by default; they go through the log instead. */
static void on_notice(void *arg, const char *message)
{
    char msg[512];

    (void)arg;
    copy_msg(msg, sizeof(msg), "", message);
    if (!strncmp(msg, "NOTICE", 6) || !strncmp(msg, "INFO", 4) || !strncmp(msg, "LOG", 3))
        shoal_log_debug("pg", "server said: %s", msg);
    else
        shoal_log_warn("pg", "server said: %s", msg);
}

static void drop(shoal_pg_t *pg)
{
    forget_stmts(pg);
    if (pg->conn) {
        PQfinish(pg->conn);
        pg->conn = NULL;
    }
}

shoal_err_t shoal_pg_connect(shoal_pg_t *pg, char *errbuf, size_t errlen)
{
    if (pg->conn && PQstatus(pg->conn) == CONNECTION_OK)
        return SHOAL_OK;
    drop(pg);

    int has_timeout = strstr(pg->conninfo, "connect_timeout") != NULL;
    const char *keys[] = {"dbname", "application_name", has_timeout ? NULL : "connect_timeout",
                          NULL};
    const char *vals[] = {pg->conninfo, pg->appname, "10", NULL};
    pg->conn = PQconnectdbParams(keys, vals, 1);
    if (!pg->conn)
        return shoal_err_set(errbuf, errlen, SHOAL_ERR_NOMEM, "could not allocate a connection");
    if (PQstatus(pg->conn) != CONNECTION_OK) {
        copy_msg(errbuf, errlen, "could not connect to PostgreSQL: ", PQerrorMessage(pg->conn));
        drop(pg);
        return SHOAL_ERR_RETRY;
    }
    pg->connects++;
    PQsetNoticeProcessor(pg->conn, on_notice, NULL);
    if (pg->on_connect) {
        PGresult *r = PQexec(pg->conn, pg->on_connect);
        ExecStatusType st = PQresultStatus(r);
        if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
            copy_msg(errbuf, errlen,
                     "could not prepare the connection: ", PQerrorMessage(pg->conn));
            PQclear(r);
            drop(pg);
            return SHOAL_ERR_RETRY;
        }
        PQclear(r);
    }
    return SHOAL_OK;
}

/* A statement prepared before a migration changed what it returns ("cached
 * plan must not change result type"): forgotten, and run unprepared. */
static int stale_plan(const PGresult *r)
{
    const char *state = PQresultErrorField(r, PG_DIAG_SQLSTATE);
    const char *msg = PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY);
    return state && !strcmp(state, "0A000") && msg && strstr(msg, "cached plan");
}

/* The one place that decides whether a failed statement may succeed later. */
static shoal_err_t classify(const PGresult *r, PGconn *conn)
{
    if (PQstatus(conn) != CONNECTION_OK)
        return SHOAL_ERR_RETRY;
    const char *state = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;
    if (!state)
        return SHOAL_ERR_RETRY;      /* no answer from the server at all */
    if (!strncmp(state, "08", 2) ||  /* connection exception */
        !strncmp(state, "57P", 3) || /* admin/crash shutdown, cannot connect now */
        !strncmp(state, "53", 2) ||  /* insufficient resources */
        !strcmp(state, "40001") ||   /* serialization failure */
        !strcmp(state, "40P01") ||   /* deadlock detected */
        !strcmp(state, "55P03") ||   /* lock not available */
        stale_plan(r))               /* prepared before a migration */
        return SHOAL_ERR_RETRY;
    return SHOAL_ERR_INVALID;
}

void shoal_pg_set_observer(shoal_pg_t *pg, void (*fn)(double seconds, void *arg), void *arg)
{
    pg->observe = fn;
    pg->observe_arg = arg;
}

static double mono_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static shoal_err_t exec(shoal_pg_t *pg, const char *sql, int nparams, const char *const *params,
                        PGresult **res, char *errbuf, size_t errlen);

shoal_err_t shoal_pg_exec(shoal_pg_t *pg, const char *sql, int nparams, const char *const *params,
                          PGresult **res, char *errbuf, size_t errlen)
{
    if (!pg->observe)
        return exec(pg, sql, nparams, params, res, errbuf, errlen);
    double start = mono_s();
    shoal_err_t err = exec(pg, sql, nparams, params, res, errbuf, errlen);
    pg->observe(mono_s() - start, pg->observe_arg);
    return err;
}

static unsigned long hash_sql(const char *sql)
{
    unsigned long h = 5381;
    for (const unsigned char *p = (const unsigned char *)sql; *p; p++)
        h = h * 33 + *p;
    return h;
}

/* The slot of sql, prepared on this connection now if need be; -1 when it
 * cannot be (cache full, out of memory, or the server refused it: then
 * PQexecParams runs it and reports the error the usual way). */
static int prepared(shoal_pg_t *pg, const char *sql, int nparams)
{
    unsigned long h = hash_sql(sql);
    int free_slot = -1;
    for (int i = 0; i < STMT_CACHE; i++) {
        if (!pg->stmts[i].sql) {
            if (free_slot < 0)
                free_slot = i;
        } else if (pg->stmts[i].hash == h && !strcmp(pg->stmts[i].sql, sql)) {
            return i;
        }
    }
    if (free_slot < 0 || PQtransactionStatus(pg->conn) == PQTRANS_INERROR)
        return -1;
    char *copy = strdup(sql);
    if (!copy)
        return -1;
    char name[32];
    snprintf(name, sizeof(name), "shoal_%d", free_slot);
    PGresult *r = PQprepare(pg->conn, name, sql, nparams, NULL);
    int ok = PQresultStatus(r) == PGRES_COMMAND_OK;
    PQclear(r);
    if (!ok) {
        free(copy);
        return -1;
    }
    pg->stmts[free_slot].sql = copy;
    pg->stmts[free_slot].hash = h;
    return free_slot;
}

static PGresult *run(shoal_pg_t *pg, const char *sql, int nparams, const char *const *params)
{
    if (nparams == 0)
        return PQexec(pg->conn, sql);
    int slot = prepared(pg, sql, nparams);
    if (slot >= 0) {
        char name[32];
        snprintf(name, sizeof(name), "shoal_%d", slot);
        int in_block = PQtransactionStatus(pg->conn) != PQTRANS_IDLE;
        PGresult *r = PQexecPrepared(pg->conn, name, nparams, params, NULL, NULL, 0);
        if (!stale_plan(r))
            return r;
        /* Forgotten either way. Inside the caller's transaction block the
         * error stands (classified as worth retrying: the retry runs the
         * statement afresh); alone, it runs again at once. */
        free(pg->stmts[slot].sql);
        pg->stmts[slot].sql = NULL;
        if (in_block)
            return r;
        PQclear(r);
        char dealloc[48];
        snprintf(dealloc, sizeof(dealloc), "DEALLOCATE %s", name);
        PQclear(PQexec(pg->conn, dealloc));
    }
    return PQexecParams(pg->conn, sql, nparams, NULL, params, NULL, NULL, 0);
}

static shoal_err_t exec(shoal_pg_t *pg, const char *sql, int nparams, const char *const *params,
                        PGresult **res, char *errbuf, size_t errlen)
{
    shoal_err_t err;

    if (res)
        *res = NULL;
    if ((err = shoal_pg_connect(pg, errbuf, errlen)) != SHOAL_OK)
        return err;

    PGresult *r = run(pg, sql, nparams, params);
    ExecStatusType st = PQresultStatus(r);
    if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK) {
        if (res)
            *res = r;
        else
            PQclear(r);
        return SHOAL_OK;
    }
    err = classify(r, pg->conn);
    copy_msg(errbuf, errlen, "", r ? PQresultErrorMessage(r) : PQerrorMessage(pg->conn));
    if (errbuf && errlen && !*errbuf)
        copy_msg(errbuf, errlen, "", PQerrorMessage(pg->conn));
    PQclear(r);
    if (err == SHOAL_ERR_RETRY && PQstatus(pg->conn) != CONNECTION_OK)
        drop(pg);
    else if (PQtransactionStatus(pg->conn) == PQTRANS_INERROR)
        PQclear(PQexec(pg->conn, "ROLLBACK"));
    return err;
}

shoal_err_t shoal_pg_notifications(shoal_pg_t *pg,
                                   void (*fn)(const char *channel, const char *payload, void *arg),
                                   void *arg, char *errbuf, size_t errlen)
{
    shoal_err_t err;
    PGnotify *n;

    if ((err = shoal_pg_connect(pg, errbuf, errlen)) != SHOAL_OK)
        return err;
    if (!PQconsumeInput(pg->conn)) {
        copy_msg(errbuf, errlen, "lost the PostgreSQL connection: ", PQerrorMessage(pg->conn));
        drop(pg);
        return SHOAL_ERR_RETRY;
    }
    while ((n = PQnotifies(pg->conn)) != NULL) {
        fn(n->relname, n->extra, arg);
        PQfreemem(n);
    }
    return SHOAL_OK;
}
