/*
 * submit, status, results and migrate (see commands.h).
 */
#include "cli/commands.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <unistd.h>

#include "cli/clienv.h"
#include "common/job.h"
#include "common/kafka.h"
#include "common/migrate.h"
#include "common/models.h"
#include "common/opt.h"
#include "common/pg.h"
#include "common/service.h"

#define MAX_FILE_BYTES (64L * 1024 * 1024)

struct cli_conf {
    const char *bootstrap;
    const char *pg;
    const char *models;
    const char *topic_prefix;
    int follow;
    int wait;
    int no_validate;
    long interval_ms;
    long timeout_s;
    shoal_kprops_t kafka;
};

#define OFF(f) offsetof(struct cli_conf, f)
#define OPT_BOOTSTRAP                                                                              \
    {                                                                                              \
        "bootstrap", SHOAL_OPT_STR, OFF(bootstrap), "127.0.0.1:9092", 0, 0,                        \
            "Kafka bootstrap servers"                                                              \
    }
#define OPT_PG                                                                                     \
    {                                                                                              \
        "pg", SHOAL_OPT_STR | SHOAL_OPT_SECRET, OFF(pg), "", 0, 0,                                 \
            "PostgreSQL conninfo or URI (empty: libpq's PG* environment)"                          \
    }
#define OPT_INTERVAL                                                                               \
    {                                                                                              \
        "interval-ms", SHOAL_OPT_INT, OFF(interval_ms), "500", 50, 60000,                          \
            "how often progress is refreshed"                                                      \
    }

static const struct shoal_opt submit_opts[] = {
    OPT_BOOTSTRAP,
    OPT_PG,
    {"models", SHOAL_OPT_STR, OFF(models), "", 0, 0,
     "models file to check the job's model against (optional)"},
    {"topic-prefix", SHOAL_OPT_STR, OFF(topic_prefix), "shoal", 0, 0, "topic name prefix"},
    {"no-validate", SHOAL_OPT_BOOL, OFF(no_validate), "false", 0, 0,
     "send the file as it is, without checking it first"},
    {"wait", SHOAL_OPT_BOOL, OFF(wait), "false", 0, 0,
     "follow the job's progress until it ends (needs --pg)"},
    OPT_INTERVAL,
    {"kafka", SHOAL_OPT_KPROPS, OFF(kafka), NULL, 0, 0, "librdkafka property"},
    {0},
};

static const struct shoal_opt status_opts[] = {
    OPT_PG,
    {"follow", SHOAL_OPT_BOOL, OFF(follow), "false", 0, 0,
     "keep printing progress until the job ends"},
    OPT_INTERVAL,
    {"timeout", SHOAL_OPT_INT, OFF(timeout_s), "0", 0, 86400 * 7,
     "with --follow: give up after this many seconds (0 = never)"},
    {0},
};

static const struct shoal_opt pg_only_opts[] = {
    OPT_PG,
    {0},
};

/* Parses options for a subcommand; prints help or the error. Returns -1 to
 * continue, else the exit code. */
static int parse(const struct shoal_opt *opts, struct cli_conf *c, int argc, char **argv,
                 const char *usage, const char *summary, int npos, shoal_optres_t *res)
{
    char err[512];
    memset(c, 0, sizeof(*c));
    shoal_clienv_load();
    if (shoal_opt_parse(opts, c, argc, argv, 1, res, err, sizeof(err)) != SHOAL_OK) {
        fprintf(stderr, "shoal: %s\n", err);
        return SHOAL_EXIT_USAGE;
    }
    if (res->help) {
        shoal_opt_help(stdout, usage, summary, opts);
        return SHOAL_EXIT_OK;
    }
    if (res->npos != npos) {
        fprintf(stderr, "shoal: usage: %s (see --help)\n", usage);
        return SHOAL_EXIT_USAGE;
    }
    return -1;
}

static char *read_all(const char *path, size_t *len, char *err, size_t errlen)
{
    FILE *f = strcmp(path, "-") ? fopen(path, "rb") : stdin;
    if (!f) {
        snprintf(err, errlen, "cannot open %s: %s", path, strerror(errno));
        return NULL;
    }
    size_t cap = 65536, n = 0;
    char *buf = malloc(cap + 1);
    size_t got;
    while (buf && (got = fread(buf + n, 1, cap - n, f)) > 0) {
        n += got;
        if (n == cap) {
            if (cap >= (size_t)MAX_FILE_BYTES) {
                snprintf(err, errlen, "%s is larger than %ld bytes", path, MAX_FILE_BYTES);
                free(buf);
                buf = NULL;
                break;
            }
            cap *= 2;
            char *nb = realloc(buf, cap + 1);
            if (!nb) {
                free(buf);
                buf = NULL;
            }
            buf = nb;
        }
    }
    if (f != stdin)
        fclose(f);
    if (!buf) {
        if (!*err)
            snprintf(err, errlen, "out of memory reading %s", path);
        return NULL;
    }
    buf[n] = '\0';
    *len = n;
    return buf;
}

static void new_job_id(char *buf, size_t len)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    unsigned r = (unsigned)(tv.tv_usec ^ (getpid() << 16));
    FILE *u = fopen("/dev/urandom", "rb");
    if (u) {
        if (fread(&r, sizeof(r), 1, u) != 1)
            r ^= (unsigned)tv.tv_sec;
        fclose(u);
    }
    snprintf(buf, len, "job-%ld-%08x", (long)tv.tv_sec, r);
}

int shoal_cmd_submit(int argc, char **argv)
{
    static const char usage[] = "shoal submit [options] FILE";
    static const char summary[] =
        "Checks a job file and produces it to the jobs topic. Prints the job_id (one is made\n"
        "when the file has none). FILE may be - for standard input.";
    struct cli_conf c;
    shoal_optres_t res;
    char err[1024] = "", idbuf[64];
    int rc = parse(submit_opts, &c, argc, argv, usage, summary, 1, &res);
    if (rc >= 0)
        return rc;

    size_t len;
    char *text = read_all(res.pos[0], &len, err, sizeof(err));
    if (!text) {
        fprintf(stderr, "shoal: %s\n", err);
        return SHOAL_EXIT_ERROR;
    }
    char *payload = text;
    const char *job_id = NULL;
    json_t *doc = NULL;
    if (!c.no_validate) {
        shoal_models_t *models = NULL;
        if (c.models && *c.models && !(models = shoal_models_load(c.models, err, sizeof(err)))) {
            fprintf(stderr, "shoal: cannot load models file %s: %s\n", c.models, err);
            free(text);
            return SHOAL_EXIT_ERROR;
        }
        shoal_job_t *job =
            shoal_job_parse(text, len, (size_t)MAX_FILE_BYTES, models, err, sizeof(err));
        shoal_models_destroy(models);
        if (!job) {
            fprintf(stderr, "shoal: %s is not a valid job: %s\n", res.pos[0], err);
            free(text);
            return SHOAL_EXIT_USAGE;
        }
        shoal_job_destroy(job);
    }
    doc = json_loadb(text, len, 0, NULL);
    if (json_is_object(doc)) {
        job_id = json_string_value(json_object_get(doc, "job_id"));
        if (!job_id) {
            /* Give it an id so the caller can follow it. */
            new_job_id(idbuf, sizeof(idbuf));
            json_object_set_new(doc, "job_id", json_string(idbuf));
            payload = json_dumps(doc, JSON_COMPACT);
            job_id = idbuf;
            if (payload)
                len = strlen(payload);
            else
                payload = text;
        }
    }

    shoal_topics_t topics;
    if (shoal_topics_init(&topics, c.topic_prefix, err, sizeof(err)) != SHOAL_OK) {
        fprintf(stderr, "shoal: %s\n", err);
        if (payload != text)
            free(payload);
        json_decref(doc);
        free(text);
        return SHOAL_EXIT_USAGE;
    }
    rd_kafka_t *rk = shoal_kafka_producer_new(c.bootstrap, &c.kafka, err, sizeof(err));
    rc = SHOAL_EXIT_OK;
    if (!rk) {
        fprintf(stderr, "shoal: %s\n", err);
        rc = SHOAL_EXIT_USAGE;
    } else if (shoal_kafka_produce_sync(rk, topics.jobs, job_id, payload, len, 30000, err,
                                        sizeof(err)) != SHOAL_OK) {
        fprintf(stderr, "shoal: could not submit the job: %s\n", err);
        rc = SHOAL_EXIT_ERROR;
    } else {
        printf("%s\n", job_id ? job_id : "(no job_id: the scheduler derives one)");
        fflush(stdout);
    }
    if (rk)
        rd_kafka_destroy(rk);

    if (rc == SHOAL_EXIT_OK && c.wait && job_id) {
        char jid[256];
        snprintf(jid, sizeof(jid), "%s", job_id);
        shoal_pg_t *pg = shoal_pg_new(c.pg, "shoal-cli");
        rc = shoal_cmd_follow(pg, jid, c.interval_ms, 120000, 0);
        shoal_pg_destroy(pg);
    }
    if (payload != text)
        free(payload);
    json_decref(doc);
    free(text);
    return rc;
}

struct progress {
    char status[32];
    long total, done, failed;
    double percent, cost, est_cost, elapsed, eta;
    long long tokens_in, tokens_out;
    char error[1024];
};

/* Reads a job's progress row: SHOAL_ERR_NOTFOUND when there is none. */
static shoal_err_t read_progress(shoal_pg_t *pg, const char *job_id, struct progress *p, char *err,
                                 size_t errlen)
{
    PGresult *r;
    const char *params[] = {job_id};
    shoal_err_t e = shoal_pg_exec(
        pg,
        "SELECT status, tasks_total, tasks_done, tasks_failed, percent, tokens_in, tokens_out, "
        "cost_usd, coalesce(est_cost_usd, 0), elapsed_s, coalesce(eta_s, -1), coalesce(error, '') "
        "FROM shoal.job_progress WHERE job_id = $1",
        1, params, &r, err, errlen);
    if (e != SHOAL_OK)
        return e;
    if (PQntuples(r) == 0) {
        PQclear(r);
        return SHOAL_ERR_NOTFOUND;
    }
    snprintf(p->status, sizeof(p->status), "%s", PQgetvalue(r, 0, 0));
    p->total = strtol(PQgetvalue(r, 0, 1), NULL, 10);
    p->done = strtol(PQgetvalue(r, 0, 2), NULL, 10);
    p->failed = strtol(PQgetvalue(r, 0, 3), NULL, 10);
    p->percent = strtod(PQgetvalue(r, 0, 4), NULL);
    p->tokens_in = strtoll(PQgetvalue(r, 0, 5), NULL, 10);
    p->tokens_out = strtoll(PQgetvalue(r, 0, 6), NULL, 10);
    p->cost = strtod(PQgetvalue(r, 0, 7), NULL);
    p->est_cost = strtod(PQgetvalue(r, 0, 8), NULL);
    p->elapsed = strtod(PQgetvalue(r, 0, 9), NULL);
    p->eta = strtod(PQgetvalue(r, 0, 10), NULL);
    snprintf(p->error, sizeof(p->error), "%s", PQgetvalue(r, 0, 11));
    PQclear(r);
    return SHOAL_OK;
}

static void print_progress(FILE *out, const char *job_id, const struct progress *p)
{
    fprintf(out,
            "job %s %s: %ld/%ld tasks done (%.1f%%), %ld failed, tokens %lld in / %lld out, "
            "cost $%.4f (estimated $%.4f), elapsed %.1fs",
            job_id, p->status, p->done, p->total, p->percent, p->failed, p->tokens_in,
            p->tokens_out, p->cost, p->est_cost, p->elapsed);
    if (p->eta >= 0)
        fprintf(out, ", eta %.1fs", p->eta);
    if (*p->error)
        fprintf(out, "\n  error: %s", p->error);
    fputc('\n', out);
    fflush(out);
}

static int exit_for(const char *status)
{
    if (!strcmp(status, "completed") || !strcmp(status, "running"))
        return SHOAL_EXIT_OK;
    return SHOAL_EXIT_JOB_FAILED;
}

int shoal_cmd_follow(shoal_pg_t *pg, const char *job_id, long interval_ms, long appear_timeout_ms,
                     int quiet)
{
    struct progress p, last;
    char err[512];
    double start = shoal_service_now_ms(), last_print = 0;
    int waiting_said = 0;

    memset(&last, 0, sizeof(last));
    for (;;) {
        shoal_err_t e = read_progress(pg, job_id, &p, err, sizeof(err));
        if (e == SHOAL_ERR_NOTFOUND) {
            if (appear_timeout_ms > 0 && shoal_service_now_ms() - start > appear_timeout_ms) {
                fprintf(stderr, "shoal: job %s did not appear (is a scheduler running?)\n", job_id);
                return SHOAL_EXIT_NOT_FOUND;
            }
            if (!waiting_said && !quiet)
                fprintf(stderr, "waiting for a scheduler to pick up job %s\n", job_id);
            waiting_said = 1;
        } else if (e != SHOAL_OK) {
            if (!shoal_err_retriable(e)) {
                fprintf(stderr, "shoal: %s\n", err);
                return SHOAL_EXIT_ERROR;
            }
            fprintf(stderr, "shoal: database unavailable, retrying: %s\n", err);
        } else {
            int changed = p.done != last.done || p.failed != last.failed ||
                          strcmp(p.status, last.status) != 0;
            double now = shoal_service_now_ms();
            if (strcmp(p.status, "running") != 0) {
                if (!quiet)
                    print_progress(stdout, job_id, &p);
                return exit_for(p.status);
            }
            if (!quiet && (changed || now - last_print > 5000)) {
                print_progress(stdout, job_id, &p);
                last_print = now;
            }
            last = p;
        }
        if (shoal_service_stopping())
            return SHOAL_EXIT_NOT_DONE;
        shoal_service_sleep_ms(interval_ms);
    }
}

int shoal_cmd_status(int argc, char **argv)
{
    static const char usage[] = "shoal status [options] JOB_ID";
    static const char summary[] =
        "Prints a job's progress: tasks done and failed, tokens, cost, elapsed time and ETA.\n"
        "With --follow, keeps printing until the job ends; the exit code then says how it\n"
        "ended (0 completed, 3 partial/failed/rejected).";
    struct cli_conf c;
    shoal_optres_t res;
    char err[512];
    struct progress p;
    int rc = parse(status_opts, &c, argc, argv, usage, summary, 1, &res);
    if (rc >= 0)
        return rc;
    shoal_service_signals();
    shoal_pg_t *pg = shoal_pg_new(c.pg, "shoal-cli");
    if (c.follow) {
        rc = shoal_cmd_follow(pg, res.pos[0], c.interval_ms, c.timeout_s * 1000, 0);
    } else {
        shoal_err_t e = read_progress(pg, res.pos[0], &p, err, sizeof(err));
        if (e == SHOAL_ERR_NOTFOUND) {
            fprintf(stderr, "shoal: no job %s\n", res.pos[0]);
            rc = SHOAL_EXIT_NOT_FOUND;
        } else if (e != SHOAL_OK) {
            fprintf(stderr, "shoal: %s\n", err);
            rc = SHOAL_EXIT_ERROR;
        } else {
            print_progress(stdout, res.pos[0], &p);
            rc = exit_for(p.status);
        }
    }
    shoal_pg_destroy(pg);
    return rc;
}

/* Writes job_id's merged output (npages pages of shoal.job_output) to out,
 * one page in memory at a time, inside a read-only snapshot so the pages are
 * those of one merge. Adds a final newline when the output lacks one. */
static shoal_err_t write_pages(shoal_pg_t *pg, const char *job_id, long npages, FILE *out,
                               char *errbuf, size_t errlen)
{
    char last = '\n', page[24];
    const char *params[] = {job_id, page};
    shoal_err_t err = shoal_pg_exec(pg, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY", 0, NULL,
                                    NULL, errbuf, errlen);
    if (err != SHOAL_OK)
        return err;
    for (long p = 0; p < npages && err == SHOAL_OK; p++) {
        PGresult *r;
        snprintf(page, sizeof(page), "%ld", p);
        err = shoal_pg_exec(pg, "SELECT body FROM shoal.job_output WHERE job_id = $1 AND page = $2",
                            2, params, &r, errbuf, errlen);
        if (err != SHOAL_OK)
            break;
        if (PQntuples(r) != 1) {
            err = shoal_err_set(
                errbuf, errlen, SHOAL_ERR_NOTFOUND,
                "page %ld of %ld of the output is missing (merged again meanwhile?)", p, npages);
        } else {
            size_t n = (size_t)PQgetlength(r, 0, 0);
            if (n && fwrite(PQgetvalue(r, 0, 0), 1, n, out) != n)
                err = shoal_err_set(errbuf, errlen, SHOAL_ERR_IO, "could not write the output: %s",
                                    strerror(errno));
            if (n)
                last = PQgetvalue(r, 0, 0)[n - 1];
        }
        PQclear(r);
    }
    shoal_pg_exec(pg, "COMMIT", 0, NULL, NULL, NULL, 0);
    if (err == SHOAL_OK && last != '\n' && fputc('\n', out) == EOF)
        err = shoal_err_set(errbuf, errlen, SHOAL_ERR_IO, "could not write the output: %s",
                            strerror(errno));
    return err;
}

int shoal_cmd_results(int argc, char **argv)
{
    static const char usage[] = "shoal results [options] JOB_ID";
    static const char summary[] =
        "Prints a finished job's merged output (by its merge strategy: concat, json_array or\n"
        "jsonl) to standard output, streamed page by page however large it is.";
    struct cli_conf c;
    shoal_optres_t res;
    char err[512] = "";
    PGresult *r;
    int rc = parse(pg_only_opts, &c, argc, argv, usage, summary, 1, &res);
    if (rc >= 0)
        return rc;
    shoal_pg_t *pg = shoal_pg_new(c.pg, "shoal-cli");
    const char *params[] = {res.pos[0]};
    if (shoal_pg_exec(pg,
                      "SELECT status, output_pages, tasks_done, tasks_total, coalesce(error, '') "
                      "FROM shoal.jobs WHERE job_id = $1",
                      1, params, &r, err, sizeof(err)) != SHOAL_OK) {
        fprintf(stderr, "shoal: %s\n", err);
        shoal_pg_destroy(pg);
        return SHOAL_EXIT_ERROR;
    }
    if (PQntuples(r) == 0) {
        fprintf(stderr, "shoal: no job %s\n", res.pos[0]);
        rc = SHOAL_EXIT_NOT_FOUND;
    } else if (!strcmp(PQgetvalue(r, 0, 0), "rejected")) {
        fprintf(stderr, "shoal: job %s was rejected: %s\n", res.pos[0], PQgetvalue(r, 0, 4));
        rc = SHOAL_EXIT_JOB_FAILED;
    } else if (PQgetisnull(r, 0, 1)) {
        fprintf(stderr,
                "shoal: job %s is %s (%s of %s tasks done); try again later or use "
                "shoal status --follow\n",
                res.pos[0], PQgetvalue(r, 0, 0), PQgetvalue(r, 0, 2), PQgetvalue(r, 0, 3));
        rc = SHOAL_EXIT_NOT_DONE;
    } else {
        long npages = strtol(PQgetvalue(r, 0, 1), NULL, 10);
        if (write_pages(pg, res.pos[0], npages, stdout, err, sizeof(err)) != SHOAL_OK ||
            fflush(stdout) != 0) {
            fprintf(stderr, "shoal: %s\n", err[0] ? err : "could not write the output");
            rc = SHOAL_EXIT_ERROR;
        } else {
            if (*PQgetvalue(r, 0, 4))
                fprintf(stderr, "shoal: job %s ended %s: %s\n", res.pos[0], PQgetvalue(r, 0, 0),
                        PQgetvalue(r, 0, 4));
            rc = exit_for(PQgetvalue(r, 0, 0));
        }
    }
    PQclear(r);
    shoal_pg_destroy(pg);
    return rc;
}

int shoal_cmd_migrate(int argc, char **argv)
{
    static const char usage[] = "shoal migrate [options]";
    static const char summary[] =
        "Creates or updates the shoal schema in PostgreSQL. Safe to run at any time and from\n"
        "several places at once; every shoal process also does it at start.";
    struct cli_conf c;
    shoal_optres_t res;
    char err[512];
    int applied = 0;
    int rc = parse(pg_only_opts, &c, argc, argv, usage, summary, 0, &res);
    if (rc >= 0)
        return rc;
    shoal_pg_t *pg = shoal_pg_new(c.pg, "shoal-cli");
    if (shoal_migrate_apply(pg, &applied, err, sizeof(err)) != SHOAL_OK) {
        fprintf(stderr, "shoal: could not migrate: %s\n", err);
        shoal_pg_destroy(pg);
        return SHOAL_EXIT_ERROR;
    }
    int total = 0;
    while (shoal_migrations[total].name)
        total++;
    printf("schema shoal is up to date (%d migrations, %d applied now)\n", total, applied);
    shoal_pg_destroy(pg);
    return SHOAL_EXIT_OK;
}
