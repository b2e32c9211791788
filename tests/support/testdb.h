/*
 * A throwaway PostgreSQL for unit tests, with shoal's schema applied. Fails
 * the test (tests/support/check.h) instead of returning an error.
 */
#ifndef SHOAL_TESTS_SUPPORT_TESTDB_H
#define SHOAL_TESTS_SUPPORT_TESTDB_H

#include "stack/pgcluster.h"
#include "common/pg.h"

/* Starts a server (stack/pgcluster.h) into *cluster, connects to it as
 * application app and applies the migrations. The caller destroys the
 * connection, then the cluster. */
shoal_pg_t *testdb_start(const char *app, shoal_pgcluster_t **cluster);

#endif
