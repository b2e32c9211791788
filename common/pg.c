/*
 * libpq connection handling and error classification (see pg.h).
 */
#include "common/pg.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/log.h"

struct shoal_pg {
    char *conninfo;
    char *appname;
    char *on_connect;
    PGconn *conn;
    unsigned connects;
    void (*observe)(double seconds, void *arg);
    void *observe_arg;
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

void shoal_pg_destroy(shoal_pg_t *pg)
{
    if (!pg)
        return;
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
        !strcmp(state, "55P03"))     /* lock not available */
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

static shoal_err_t exec(shoal_pg_t *pg, const char *sql, int nparams, const char *const *params,
                        PGresult **res, char *errbuf, size_t errlen)
{
    shoal_err_t err;

    if (res)
        *res = NULL;
    if ((err = shoal_pg_connect(pg, errbuf, errlen)) != SHOAL_OK)
        return err;

    PGresult *r = nparams > 0 ? PQexecParams(pg->conn, sql, nparams, NULL, params, NULL, NULL, 0)
                              : PQexec(pg->conn, sql);
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
