/*
 * Checked SQL for unit tests: each helper runs one statement with at most one
 * text parameter and fails the test (tests/support/check.h) on an error or an
 * unexpected shape, so a test reads as a list of facts about the database.
 */
#ifndef SHOAL_TESTS_SUPPORT_SQLCHECK_H
#define SHOAL_TESTS_SUPPORT_SQLCHECK_H

#include <stddef.h>

#include "common/pg.h"

/* The single non-NULL value of a one-row query, as a long. p1 may be NULL. */
long sqlcheck_long(shoal_pg_t *pg, const char *sql, const char *p1);

/* The single value of a one-row query into out ("NULL" for SQL NULL). */
void sqlcheck_text(shoal_pg_t *pg, const char *sql, const char *p1, char *out, size_t outlen);

/* Runs a statement that must succeed; its result is discarded. */
void sqlcheck_exec(shoal_pg_t *pg, const char *sql, const char *p1);

#endif
