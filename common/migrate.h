/*
 * Database migrations. sql/NNN_name.sql files are compiled into every binary
 * (cmake/embed_sql.cmake) and applied in order by shoal_migrate_apply, which
 * every process calls at start. A session advisory lock serializes processes
 * that start at once; each file runs in its own transaction and records its
 * number in shoal.schema_version, so applying twice changes nothing.
 */
#ifndef SHOAL_COMMON_MIGRATE_H
#define SHOAL_COMMON_MIGRATE_H

#include <stddef.h>

#include "common/err.h"

struct shoal_migration {
    const char *name; /* "001_init.sql" */
    const char *sql;
};

/* Terminated by {NULL, NULL}; generated at build time. */
extern const struct shoal_migration shoal_migrations[];

struct shoal_pg;

/* Applies every migration newer than the database's version. *applied (may be
 * NULL) receives how many ran. Retriable errors mean the server was away. */
shoal_err_t shoal_migrate_apply(struct shoal_pg *pg, int *applied, char *errbuf, size_t errlen);

#endif
