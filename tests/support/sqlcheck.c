/*
 * Checked SQL for unit tests (see sqlcheck.h).
 */
#include "tests/support/sqlcheck.h"

#include <stdio.h>
#include <stdlib.h>

#include "tests/support/check.h"

static PGresult *run(shoal_pg_t *pg, const char *sql, const char *p1)
{
    char err[512];
    PGresult *r = NULL;
    const char *params[] = {p1};
    if (shoal_pg_exec(pg, sql, p1 ? 1 : 0, params, &r, err, sizeof(err)) != SHOAL_OK)
        test_fail("%s: %s", sql, err);
    return r;
}

long sqlcheck_long(shoal_pg_t *pg, const char *sql, const char *p1)
{
    PGresult *r = run(pg, sql, p1);
    if (PQntuples(r) != 1 || PQgetisnull(r, 0, 0))
        test_fail("%s: %d rows, expected one value", sql, PQntuples(r));
    long v = strtol(PQgetvalue(r, 0, 0), NULL, 10);
    PQclear(r);
    return v;
}

void sqlcheck_text(shoal_pg_t *pg, const char *sql, const char *p1, char *out, size_t outlen)
{
    PGresult *r = run(pg, sql, p1);
    if (PQntuples(r) != 1)
        test_fail("%s: %d rows, expected 1", sql, PQntuples(r));
    snprintf(out, outlen, "%s", PQgetisnull(r, 0, 0) ? "NULL" : PQgetvalue(r, 0, 0));
    PQclear(r);
}

void sqlcheck_exec(shoal_pg_t *pg, const char *sql, const char *p1)
{
    PQclear(run(pg, sql, p1));
}
