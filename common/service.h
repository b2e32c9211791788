/*
 * What every long-running shoal process does the same way: log setup from
 * options, SIGINT/SIGTERM turning into a stop flag, interruptible sleeps, and
 * bringing the database schema up to date at start while the server may
 * still be coming up.
 */
#ifndef SHOAL_COMMON_SERVICE_H
#define SHOAL_COMMON_SERVICE_H

#include <stddef.h>

#include "common/err.h"
#include "common/pg.h"

#include "common/opt.h"

/* Settings every daemon has; each binary embeds one as member `svc` of its
 * configuration struct and lists SHOAL_SERVICE_OPTS in its option table. */
typedef struct {
    const char *bootstrap;
    const char *pg;
    const char *models;
    const char *group;
    const char *topic_prefix;
    long migrate_wait_s;
    const char *log_level;
    const char *log_format;
    shoal_kprops_t kafka;
} shoal_service_conf_t;

#define SHOAL_SERVICE_OPT_(type, f) offsetof(type, svc.f)
/* Option table rows for the shared settings of `type`; group_default names
 * the binary's consumer group. */
/* clang-format off */
#define SHOAL_SERVICE_OPTS(type, group_default)                                                    \
    {"bootstrap", SHOAL_OPT_STR, SHOAL_SERVICE_OPT_(type, bootstrap), "127.0.0.1:9092", 0, 0,      \
     "Kafka bootstrap servers"},                                                                   \
    {"pg", SHOAL_OPT_STR | SHOAL_OPT_SECRET, SHOAL_SERVICE_OPT_(type, pg), "", 0, 0,               \
     "PostgreSQL conninfo or URI (empty: libpq's PG* environment)"},                               \
    {"models", SHOAL_OPT_STR, SHOAL_SERVICE_OPT_(type, models), "models.json", 0, 0,               \
     "models file"},                                                                               \
    {"group", SHOAL_OPT_STR, SHOAL_SERVICE_OPT_(type, group), group_default, 0, 0,                 \
     "Kafka consumer group"},                                                                      \
    {"topic-prefix", SHOAL_OPT_STR, SHOAL_SERVICE_OPT_(type, topic_prefix), "shoal", 0, 0,         \
     "topic names start with this (shoal.jobs, shoal.tasks.high, ...)"},                           \
    {"migrate-wait", SHOAL_OPT_INT, SHOAL_SERVICE_OPT_(type, migrate_wait_s), "60", 0, 3600,       \
     "seconds to wait for PostgreSQL at start"},                                                   \
    {"log-level", SHOAL_OPT_STR, SHOAL_SERVICE_OPT_(type, log_level), "info", 0, 0,                \
     "debug, info, warn or error"},                                                                \
    {"log-format", SHOAL_OPT_STR, SHOAL_SERVICE_OPT_(type, log_format), "text", 0, 0,              \
     "text or json"},                                                                              \
    {"kafka", SHOAL_OPT_KPROPS, SHOAL_SERVICE_OPT_(type, kafka), NULL, 0, 0,                       \
     "librdkafka property"}
/* clang-format on */

/* A daemon's standard start: parses argv with its option table into conf,
 * answers --help (and -X list when the table has -X), refuses positional
 * arguments, and sets up logging from the conf's log-level/log-format fields
 * (log_level/log_format point into conf; kafka may be NULL). Errors go to
 * stderr as "<proc>: reason". Returns -1 to go on, else the exit code. */
int shoal_service_cmdline(const char *proc, const char *usage, const char *summary,
                          const struct shoal_opt *opts, void *conf, int argc, char **argv,
                          const char *const *log_level, const char *const *log_format,
                          const void *kafka);

/* Sets up logging from "--log-level" and "--log-format" (text|json) values. */
shoal_err_t shoal_service_log_setup(const char *proc, const char *level, const char *format,
                                    char *errbuf, size_t errlen);

/* SIGINT and SIGTERM set the stop flag; SIGPIPE is ignored. */
void shoal_service_signals(void);

int shoal_service_stopping(void);
void shoal_service_request_stop(void);

/* Bounds shutdown: after `seconds`, the process logs and exits with status 1
 * whatever it is blocked on (a consumer close against a Kafka that is gone
 * can wait forever). Nothing is lost by it: uncommitted work is redelivered. */
void shoal_service_shutdown_deadline(unsigned seconds);

/* Sleeps ms milliseconds, returning early when a stop was requested. */
void shoal_service_sleep_ms(long ms);

/* Applies migrations, retrying retriable failures with backoff for up to
 * wait_s seconds (or until a stop). */
shoal_err_t shoal_service_migrate(shoal_pg_t *pg, int wait_s, char *errbuf, size_t errlen);

/* Monotonic milliseconds. */
double shoal_service_now_ms(void);

/* Wall-clock seconds since the epoch, for times that cross processes (lease
 * rows, provider reset headers); may jump when the clock is set. */
double shoal_service_unix_s(void);

#endif
