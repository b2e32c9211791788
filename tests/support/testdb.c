/*
 * A throwaway PostgreSQL for unit tests (see testdb.h).
 */
#include "tests/support/testdb.h"

#include "common/migrate.h"
#include "tests/support/check.h"

shoal_pg_t *testdb_start(const char *app, shoal_pgcluster_t **cluster)
{
    char err[512];
    shoal_pg_t *pg;

    *cluster = shoal_pgcluster_new(NULL, err, sizeof(err));
    if (!*cluster)
        test_fail("cannot start PostgreSQL: %s", err);
    pg = shoal_pg_new(shoal_pgcluster_url(*cluster), app);
    if (!pg)
        test_fail("cannot create a connection for %s", app);
    if (shoal_migrate_apply(pg, NULL, err, sizeof(err)) != SHOAL_OK)
        test_fail("migrate: %s", err);
    return pg;
}
