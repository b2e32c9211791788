/*
 * shoal stats: per tenant and model over a time range, what the fleet did
 * (jobs, model calls, tokens, cost, 429 answers, result cache hits and the
 * dollars they saved), read from shoal.stats() (sql/015_quota.sql).
 */
#include "cli/stats.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/clienv.h"
#include "cli/commands.h"
#include "cli/usd.h"
#include "common/opt.h"
#include "common/pg.h"

struct stats_conf {
    const char *pg;
    const char *since;
    const char *until;
    const char *tenant;
    int json;
};

static const struct shoal_opt stats_opts[] = {
    {"pg", SHOAL_OPT_STR | SHOAL_OPT_SECRET, offsetof(struct stats_conf, pg), "", 0, 0,
     "PostgreSQL conninfo or URI (empty: libpq's PG* environment)"},
    {"since", SHOAL_OPT_STR, offsetof(struct stats_conf, since), "24h", 0, 0,
     "start of the range: a timestamp (2024-05-01T12:00:00Z) or a time back from now (90s, 30m, "
     "24h, 7d)"},
    {"until", SHOAL_OPT_STR, offsetof(struct stats_conf, until), "", 0, 0,
     "end of the range, as --since (empty: now)"},
    {"tenant", SHOAL_OPT_STR, offsetof(struct stats_conf, tenant), "", 0, 0,
     "only this tenant (empty: all)"},
    {"json", SHOAL_OPT_BOOL, offsetof(struct stats_conf, json), "false", 0, 0,
     "print an array of objects, one per tenant and model"},
    {0},
};

static const char stats_sql[] =
    "WITH r AS (SELECT shoal.time_arg($1, now() - interval '24 hours') AS since, "
    "                  shoal.time_arg($2, now()) AS until) "
    "SELECT s.tenant, s.model, s.jobs, s.jobs_rejected, s.calls, s.calls_429, s.tokens_in, "
    "       s.tokens_out, s.cost_usd, s.cache_hits, s.usd_saved, "
    "       to_char(r.since AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), "
    "       to_char(r.until AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"') "
    "FROM r LEFT JOIN LATERAL shoal.stats(r.since, r.until) s ON true "
    "WHERE $3 = '' OR s.tenant = $3";

/* Columns 2..7 of a row are counts. */
static json_t *row_json(PGresult *r, int i)
{
    static const char *const keys[] = {"tenant", "model",     "jobs",      "jobs_rejected",
                                       "calls",  "calls_429", "tokens_in", "tokens_out"};
    json_t *o = json_object();

    for (int c = 0; o && c < 8; c++) {
        const char *v = PQgetvalue(r, i, c);
        if (json_object_set_new(o, keys[c],
                                c < 2 ? json_string(v) : json_integer(strtoll(v, NULL, 10)))) {
            json_decref(o);
            return NULL;
        }
    }
    if (o && (json_object_set_new(o, "cost_usd", json_real(strtod(PQgetvalue(r, i, 8), NULL))) ||
              json_object_set_new(o, "cache_hits",
                                  json_integer(strtoll(PQgetvalue(r, i, 9), NULL, 10))) ||
              json_object_set_new(o, "usd_saved", json_real(strtod(PQgetvalue(r, i, 10), NULL))))) {
        json_decref(o);
        return NULL;
    }
    return o;
}

static int print_json(PGresult *r, int rows)
{
    json_t *arr = json_array();
    for (int i = 0; arr && i < rows; i++) {
        if (PQgetisnull(r, i, 0))
            continue; /* the range had nothing */
        if (json_array_append_new(arr, row_json(r, i))) {
            json_decref(arr);
            arr = NULL;
        }
    }
    char *out = arr ? json_dumps(arr, JSON_INDENT(2) | JSON_REAL_PRECISION(10)) : NULL;
    json_decref(arr);
    if (!out) {
        fprintf(stderr, "shoal: out of memory\n");
        return SHOAL_EXIT_ERROR;
    }
    printf("%s\n", out);
    free(out);
    return SHOAL_EXIT_OK;
}

static void print_table(PGresult *r, int rows)
{
    char usd[32], saved[32];

    printf("from %s to %s\n", PQgetvalue(r, 0, 11), PQgetvalue(r, 0, 12));
    printf("%-20s %-16s %8s %8s %10s %8s %14s %14s %12s %10s %12s\n", "tenant", "model", "jobs",
           "rejected", "calls", "429s", "tokens in", "tokens out", "cost", "cache hits", "saved");
    for (int i = 0; i < rows; i++) {
        if (PQgetisnull(r, i, 0))
            continue;
        printf("%-20s %-16s %8s %8s %10s %8s %14s %14s %12s %10s %12s\n", PQgetvalue(r, i, 0),
               PQgetvalue(r, i, 1), PQgetvalue(r, i, 2), PQgetvalue(r, i, 3), PQgetvalue(r, i, 4),
               PQgetvalue(r, i, 5), PQgetvalue(r, i, 6), PQgetvalue(r, i, 7),
               shoal_usd_format(strtod(PQgetvalue(r, i, 8), NULL), usd, sizeof(usd)),
               PQgetvalue(r, i, 9),
               shoal_usd_format(strtod(PQgetvalue(r, i, 10), NULL), saved, sizeof(saved)));
    }
}

int shoal_cmd_stats(int argc, char **argv)
{
    static const char usage[] = "shoal stats [options]";
    static const char summary[] =
        "Per tenant and model over a time range (default: the last 24 hours): jobs submitted\n"
        "(accepted, and rejected apart), model calls that finished in the range, 429 answers,\n"
        "tokens in and out, cost in USD, chunks answered from the result cache and the USD\n"
        "their calls took when made. Jobs count under their model, calls and cache hits under\n"
        "the model that answered (fallbacks show as their own rows).";
    struct stats_conf c;
    shoal_optres_t res;
    char err[512];
    PGresult *r;

    memset(&c, 0, sizeof(c));
    shoal_clienv_load();
    if (shoal_opt_parse(stats_opts, &c, argc, argv, 1, &res, err, sizeof(err)) != SHOAL_OK ||
        (!res.help && res.npos)) {
        fprintf(stderr, "shoal: %s\n", res.npos ? "stats takes no arguments (see --help)" : err);
        return SHOAL_EXIT_USAGE;
    }
    if (res.help) {
        shoal_opt_help(stdout, usage, summary, stats_opts);
        return SHOAL_EXIT_OK;
    }
    shoal_pg_t *pg = shoal_pg_new(c.pg, "shoal-cli");
    const char *params[] = {c.since, c.until, c.tenant};
    shoal_err_t e = shoal_pg_exec(pg, stats_sql, 3, params, &r, err, sizeof(err));
    shoal_pg_destroy(pg);
    if (e != SHOAL_OK) {
        /* a malformed --since or --until is the usual reason */
        fprintf(stderr, "shoal: cannot read the stats: %s\n", err);
        return e == SHOAL_ERR_INVALID ? SHOAL_EXIT_USAGE : SHOAL_EXIT_ERROR;
    }
    int rows = PQntuples(r), rc = SHOAL_EXIT_OK;
    if (c.json)
        rc = print_json(r, rows);
    else if (rows > 0)
        print_table(r, rows);
    PQclear(r);
    return rc;
}
