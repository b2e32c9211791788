/*
 * Applies the embedded sql/ migrations (see migrate.h).
 */
#include "common/migrate.h"

#include <stdio.h>
#include <stdlib.h>

#include "common/pg.h"

/* Arbitrary constant: the advisory lock every shoal process takes to migrate. */
#define MIGRATE_LOCK_KEY "7432001"

static const char bootstrap_sql[] = "CREATE SCHEMA IF NOT EXISTS shoal;"
                                    "CREATE TABLE IF NOT EXISTS shoal.schema_version ("
                                    " version integer PRIMARY KEY, name text NOT NULL,"
                                    " applied_at timestamptz NOT NULL DEFAULT now())";

static long migration_number(const char *name)
{
    char *end;
    long n = strtol(name, &end, 10);
    return end == name ? -1 : n;
}

static shoal_err_t apply_all(shoal_pg_t *pg, int *applied, char *errbuf, size_t errlen)
{
    PGresult *r;
    shoal_err_t err;
    char stmt[256];

    if ((err = shoal_pg_exec(pg, bootstrap_sql, 0, NULL, NULL, errbuf, errlen)) != SHOAL_OK)
        return err;
    if ((err = shoal_pg_exec(pg, "SELECT coalesce(max(version), 0) FROM shoal.schema_version", 0,
                             NULL, &r, errbuf, errlen)) != SHOAL_OK)
        return err;
    long current = strtol(PQgetvalue(r, 0, 0), NULL, 10);
    PQclear(r);

    for (const struct shoal_migration *m = shoal_migrations; m->name; m++) {
        long n = migration_number(m->name);
        if (n < 0)
            return shoal_err_set(errbuf, errlen, SHOAL_ERR_INVALID,
                                 "migration %s does not start with a number", m->name);
        if (n <= current)
            continue;
        if ((err = shoal_pg_exec(pg, "BEGIN", 0, NULL, NULL, errbuf, errlen)) != SHOAL_OK)
            return err;
        if ((err = shoal_pg_exec(pg, m->sql, 0, NULL, NULL, errbuf, errlen)) != SHOAL_OK) {
            char why[512];
            snprintf(why, sizeof(why), "%s", errbuf ? errbuf : "");
            shoal_pg_exec(pg, "ROLLBACK", 0, NULL, NULL, NULL, 0);
            return shoal_err_set(errbuf, errlen, err, "migration %s failed: %s", m->name, why);
        }
        snprintf(stmt, sizeof(stmt),
                 "INSERT INTO shoal.schema_version (version, name) VALUES (%ld, '%s'); COMMIT", n,
                 m->name);
        if ((err = shoal_pg_exec(pg, stmt, 0, NULL, NULL, errbuf, errlen)) != SHOAL_OK) {
            shoal_pg_exec(pg, "ROLLBACK", 0, NULL, NULL, NULL, 0);
            return err;
        }
        if (applied)
            (*applied)++;
    }
    return SHOAL_OK;
}

shoal_err_t shoal_migrate_apply(struct shoal_pg *pg, int *applied, char *errbuf, size_t errlen)
{
    shoal_err_t err;

    if (applied)
        *applied = 0;
    if ((err = shoal_pg_exec(pg, "SELECT pg_advisory_lock(" MIGRATE_LOCK_KEY ")", 0, NULL, NULL,
                             errbuf, errlen)) != SHOAL_OK)
        return err;
    err = apply_all(pg, applied, errbuf, errlen);
    /* On a lost connection the lock went with the session. */
    shoal_pg_exec(pg, "SELECT pg_advisory_unlock(" MIGRATE_LOCK_KEY ")", 0, NULL, NULL, NULL, 0);
    return err;
}
