/*
 * submit, status, results, estimate and migrate (see commands.h).
 */
#include "cli/commands.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>

#include "cli/batchfile.h"
#include "cli/clienv.h"
#include "cli/partsubmit.h"
#include "cli/usd.h"
#include "common/estimate.h"
#include "common/job.h"
#include "common/jobid.h"
#include "common/kafka.h"
#include "common/log.h"
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
    int verbose;
    long interval_ms;
    long timeout_s;
    long appear_s;
    long kafka_timeout_ms;
    int json;
    long workers;
    long max_inflight;
    double call_s;
    shoal_kprops_t kafka;
    /* OpenAI Batch files (cli/batchfile.h) */
    int openai_batch;
    const char *tenant;
    const char *priority;
    const char *job_id;
    const char *format;
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
    {"kafka-timeout-ms", SHOAL_OPT_INT, OFF(kafka_timeout_ms), "5000", 100, 600000,
     "how long Kafka has to answer before submit gives up"},
    {"verbose", SHOAL_OPT_BOOL, OFF(verbose), "false", 0, 0,
     "print the Kafka client's own log lines (connection attempts, retries)"},
    {"kafka", SHOAL_OPT_KPROPS, OFF(kafka), NULL, 0, 0, "librdkafka property"},
    {"openai-batch", SHOAL_OPT_BOOL, OFF(openai_batch), "false", 0, 0,
     "FILE is an OpenAI Batch input file (JSONL); needs --models and --tenant"},
    {"tenant", SHOAL_OPT_STR, OFF(tenant), "", 0, 0, "with --openai-batch: the job's tenant"},
    {"priority", SHOAL_OPT_STR, OFF(priority), "normal", 0, 0,
     "with --openai-batch: the job's priority (high, normal, low)"},
    {"job-id", SHOAL_OPT_STR, OFF(job_id), "", 0, 0,
     "with --openai-batch: the job's id (default: one is made)"},
    {0},
};

static const struct shoal_opt results_opts[] = {
    OPT_PG,
    {"format", SHOAL_OPT_STR, OFF(format), "text", 0, 0,
     "text: the merged output (by the job's merge strategy); jsonl: one JSON line per item; "
     "openai-batch: OpenAI Batch output lines"},
    {"models", SHOAL_OPT_STR, OFF(models), "", 0, 0,
     "models file naming each alias's provider model (openai-batch's \"model\"; optional)"},
    {0},
};

static const struct shoal_opt status_opts[] = {
    OPT_PG,
    {"follow", SHOAL_OPT_BOOL, OFF(follow), "false", 0, 0,
     "keep printing progress until the job ends"},
    OPT_INTERVAL,
    {"timeout", SHOAL_OPT_INT, OFF(timeout_s), "0", 0, 86400 * 7,
     "with --follow: give up after this many seconds (0 = never; exit 5)"},
    {"appear-timeout", SHOAL_OPT_INT, OFF(appear_s), "5", 1, 86400,
     "with --follow: how many seconds a job not recorded yet is waited for (one just "
     "submitted appears once a scheduler has read it) before it is reported missing"},
    {0},
};

static const struct shoal_opt estimate_opts[] = {
    {"models", SHOAL_OPT_STR, OFF(models), "models.json", 0, 0,
     "models file with the prices and rate limits (the scheduler's)"},
    {"json", SHOAL_OPT_BOOL, OFF(json), "false", 0, 0, "print the estimate as JSON"},
    {"workers", SHOAL_OPT_INT, OFF(workers), "1", 1, 100000, "worker processes assumed"},
    {"max-inflight", SHOAL_OPT_INT, OFF(max_inflight), "256", 1, 4096,
     "calls in flight per worker assumed (the worker's --max-inflight)"},
    {"call-s", SHOAL_OPT_DOUBLE, OFF(call_s), "10", 0, 0,
     "seconds one model call is assumed to take"},
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

/* Prints a job's problems one per line (they come joined by newlines). */
static void print_problems(const char *file, const char *problems)
{
    if (!strchr(problems, '\n')) {
        fprintf(stderr, "shoal: %s is not a valid job: %s\n", file, problems);
        return;
    }
    fprintf(stderr, "shoal: %s is not a valid job:\n", file);
    for (const char *p = problems; *p;) {
        const char *nl = strchr(p, '\n');
        int n = nl ? (int)(nl - p) : (int)strlen(p);
        fprintf(stderr, "  %.*s\n", n, p);
        p += n + (nl ? 1 : 0);
    }
}

/* Waits until a scheduler has read the message with content hash (the job
 * row carries it, or shoal.job_conflicts names it). Returns -1 to go on and
 * follow the job, else the exit code: the submission was ignored because
 * another job holds its id (said on stderr), or it never showed up. */
static int await_own(shoal_pg_t *pg, const char *job_id, const char *hash, long timeout_ms)
{
    const char *params[] = {job_id, hash};
    double start = shoal_service_now_ms();
    char err[512];

    while (!shoal_service_stopping() && shoal_service_now_ms() - start < timeout_ms) {
        PGresult *r;
        if (shoal_pg_exec(pg,
                          "SELECT (SELECT content_hash = $2 OR content_hash IS NULL FROM "
                          "shoal.jobs WHERE job_id = $1), (SELECT status FROM shoal.jobs WHERE "
                          "job_id = $1), EXISTS (SELECT 1 FROM shoal.job_conflicts WHERE job_id "
                          "= $1 AND content_hash = $2)",
                          2, params, &r, err, sizeof(err)) == SHOAL_OK) {
            int conflict = !strcmp(PQgetvalue(r, 0, 2), "t");
            int mine = !strcmp(PQgetvalue(r, 0, 0), "t");
            char status[32];
            snprintf(status, sizeof(status), "%s", PQgetvalue(r, 0, 1));
            PQclear(r);
            if (conflict) {
                fprintf(stderr,
                        "shoal: warning: job %s already exists (%s) with other content; this "
                        "submission was ignored. Submit it under another job_id (or leave job_id "
                        "out)\n",
                        job_id, status);
                return SHOAL_EXIT_USAGE;
            }
            if (mine)
                return -1;
        }
        shoal_service_sleep_ms(200);
    }
    return -1; /* follow() says what it finds */
}

/* Asks the cluster for its broker list, so an unreachable Kafka is found in
 * timeout_ms instead of by a produce that retries for message.timeout.ms. */
static shoal_err_t kafka_reachable(rd_kafka_t *rk, int timeout_ms, char *err, size_t errlen)
{
    const struct rd_kafka_metadata *md = NULL;
    rd_kafka_resp_err_t e = rd_kafka_metadata(rk, 0, NULL, &md, timeout_ms);
    if (e != RD_KAFKA_RESP_ERR_NO_ERROR) {
        snprintf(err, errlen, "%s",
                 e == RD_KAFKA_RESP_ERR__TRANSPORT || e == RD_KAFKA_RESP_ERR__TIMED_OUT
                     ? "no broker answered"
                     : rd_kafka_err2str(e));
        return SHOAL_ERR_RETRY;
    }
    int brokers = md->broker_cnt;
    rd_kafka_metadata_destroy(md);
    if (brokers == 0) {
        snprintf(err, errlen, "the cluster lists no brokers");
        return SHOAL_ERR_RETRY;
    }
    return SHOAL_OK;
}

/* A job too large for one Kafka message goes in parts (cli/partsubmit.h).
 * text is borrowed. */
static int submit_in_parts(const struct cli_conf *c, const char *path, const char *text,
                           size_t size)
{
    char err[1024] = "", idbuf[64];
    shoal_models_t *models = NULL;
    shoal_topics_t topics;
    shoal_err_t e;
    int rc = SHOAL_EXIT_OK;

    if (!c->no_validate && c->models && *c->models &&
        !(models = shoal_models_load(c->models, err, sizeof(err)))) {
        fprintf(stderr, "shoal: cannot load models file %s: %s\n", c->models, err);
        return SHOAL_EXIT_ERROR;
    }
    if (shoal_jobid_random(idbuf, sizeof(idbuf)) != SHOAL_OK) {
        shoal_models_destroy(models);
        fprintf(stderr, "shoal: cannot make a job_id: no random bytes (set job_id)\n");
        return SHOAL_EXIT_ERROR;
    }
    shoal_partsubmit_t *ps = shoal_partsubmit_new(text, size, idbuf, models, SHOAL_PARTSUBMIT_BYTES,
                                                  !c->no_validate, &e, err, sizeof(err));
    shoal_models_destroy(models);
    if (!ps) {
        fprintf(stderr, "shoal: %s is not a valid job: %s\n", path, err);
        return e == SHOAL_ERR_INVALID ? SHOAL_EXIT_USAGE : SHOAL_EXIT_ERROR;
    }
    if (!c->verbose)
        shoal_log_init("shoal", SHOAL_LOG_OFF, 0);
    rd_kafka_t *rk = NULL;
    if (shoal_topics_init(&topics, c->topic_prefix, err, sizeof(err)) != SHOAL_OK ||
        !(rk = shoal_kafka_producer_new(c->bootstrap, &c->kafka, err, sizeof(err)))) {
        fprintf(stderr, "shoal: %s\n", err);
        rc = SHOAL_EXIT_USAGE;
    } else if (kafka_reachable(rk, (int)c->kafka_timeout_ms, err, sizeof(err)) != SHOAL_OK) {
        fprintf(stderr, "shoal: could not reach Kafka at %s within %ldms: %s\n", c->bootstrap,
                c->kafka_timeout_ms, err);
        rc = SHOAL_EXIT_ERROR;
    } else if (shoal_partsubmit_send(ps, rk, topics.jobs, err, sizeof(err)) != SHOAL_OK) {
        fprintf(stderr, "shoal: could not submit the job: %s\n", err);
        rc = SHOAL_EXIT_ERROR;
    } else {
        printf("%s\n", shoal_partsubmit_job_id(ps));
        fflush(stdout);
    }
    if (rk)
        rd_kafka_destroy(rk);
    if (rc == SHOAL_EXIT_OK && c->wait) {
        shoal_pg_t *pg = shoal_pg_new(c->pg, "shoal-cli");
        rc = shoal_cmd_follow(pg, shoal_partsubmit_job_id(ps), c->interval_ms, 120000, 0);
        shoal_pg_destroy(pg);
    }
    shoal_partsubmit_destroy(ps);
    return rc;
}

/* A job file mapped, not read, so memory stays small whatever its size. */
static int submit_file_in_parts(const struct cli_conf *c, const char *path, int fd, size_t size)
{
    char *text = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (text == MAP_FAILED) {
        fprintf(stderr, "shoal: cannot read %s: %s\n", path, strerror(errno));
        return SHOAL_EXIT_ERROR;
    }
    madvise(text, size, MADV_SEQUENTIAL);
    int rc = submit_in_parts(c, path, text, size);
    munmap(text, size);
    return rc;
}

/* --openai-batch: replaces *text (the file) with the job made from it.
 * Returns -1 to carry on, else the exit code (*text freed). */
static int openai_batch_job(const struct cli_conf *c, const char *path, char **text, size_t *len)
{
    char err[1024] = "";
    shoal_oaibatch_opts_t o = {c->tenant, c->priority, *c->job_id ? c->job_id : NULL};
    shoal_models_t *models = NULL;
    char *job = NULL;

    if (!c->models || !*c->models)
        snprintf(err, sizeof(err),
                 "--openai-batch needs a models file (--models or SHOAL_MODELS) "
                 "to map each line's model");
    else if (!(models = shoal_models_load(c->models, err, sizeof(err))))
        fprintf(stderr, "shoal: cannot load models file %s: %s\n", c->models, err);
    else if (!(job = shoal_batchfile_job_text(*text, *len, models, &o, len, err, sizeof(err))))
        fprintf(stderr, "shoal: %s is not a valid OpenAI Batch file: %s\n", path, err);
    if (!c->models || !*c->models)
        fprintf(stderr, "shoal: %s\n", err);
    shoal_models_destroy(models);
    free(*text);
    *text = job;
    return job ? -1 : SHOAL_EXIT_USAGE;
}

int shoal_cmd_submit(int argc, char **argv)
{
    static const char usage[] = "shoal submit [options] FILE";
    static const char summary[] =
        "Checks a job file and produces it to the jobs topic. Prints the job_id (one is made\n"
        "when the file has none). FILE may be - for standard input. With --openai-batch, FILE\n"
        "is an OpenAI Batch input file: one item (and one call) per line, its body sent as given.\n"
        "A job larger than one message (1,000,000 bytes) is sent in parts (README: Large jobs\n"
        "in parts).";
    struct cli_conf c;
    shoal_optres_t res;
    char err[4096] = "", idbuf[64];
    int rc = parse(submit_opts, &c, argc, argv, usage, summary, 1, &res);
    if (rc >= 0)
        return rc;

    if (strcmp(res.pos[0], "-") && !c.openai_batch) {
        struct stat st;
        int fd = open(res.pos[0], O_RDONLY | O_CLOEXEC);
        if (fd >= 0 && fstat(fd, &st) == 0 && st.st_size > SHOAL_PARTSUBMIT_BYTES)
            return submit_file_in_parts(&c, res.pos[0], fd, (size_t)st.st_size);
        if (fd >= 0)
            close(fd);
    }
    size_t len;
    char *text = read_all(res.pos[0], &len, err, sizeof(err));
    if (!text) {
        fprintf(stderr, "shoal: %s\n", err);
        return SHOAL_EXIT_ERROR;
    }
    if (c.openai_batch && (rc = openai_batch_job(&c, res.pos[0], &text, &len)) >= 0)
        return rc;
    if (c.openai_batch && len > SHOAL_PARTSUBMIT_BYTES) {
        rc = submit_in_parts(&c, res.pos[0], text, len);
        free(text);
        return rc;
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
            print_problems(res.pos[0], err);
            free(text);
            return SHOAL_EXIT_USAGE;
        }
        shoal_job_destroy(job);
    }
    doc = json_loadb(text, len, 0, NULL);
    if (json_is_object(doc)) {
        job_id = json_string_value(json_object_get(doc, "job_id"));
        if (!job_id) {
            /* Give it an id so the caller can follow it: 128 random bits,
             * unique whatever Kafka cluster or topic it goes to. */
            if (shoal_jobid_random(idbuf, sizeof(idbuf)) != SHOAL_OK) {
                fprintf(stderr, "shoal: cannot make a job_id: no random bytes (set job_id)\n");
                json_decref(doc);
                free(text);
                return SHOAL_EXIT_ERROR;
            }
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
    /* librdkafka logs every failed connection attempt; a user needs the one
     * line below instead, so its lines show only with --verbose. */
    if (!c.verbose)
        shoal_log_init("shoal", SHOAL_LOG_OFF, 0);
    rd_kafka_t *rk = shoal_kafka_producer_new(c.bootstrap, &c.kafka, err, sizeof(err));
    rc = SHOAL_EXIT_OK;
    if (!rk) {
        fprintf(stderr, "shoal: %s\n", err);
        rc = SHOAL_EXIT_USAGE;
    } else if (kafka_reachable(rk, (int)c.kafka_timeout_ms, err, sizeof(err)) != SHOAL_OK) {
        fprintf(stderr,
                "shoal: could not reach Kafka at %s within %ldms: %s (set --bootstrap or "
                "SHOAL_BOOTSTRAP to a running broker, or start one with shoal dev)\n",
                c.bootstrap, c.kafka_timeout_ms, err);
        rc = SHOAL_EXIT_ERROR;
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
        char hash[SHOAL_JOBID_HASH_LEN];
        shoal_jobid_content_hash(payload, len, hash);
        shoal_pg_t *pg = shoal_pg_new(c.pg, "shoal-cli");
        rc = await_own(pg, jid, hash, 120000);
        if (rc < 0)
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
    long cached; /* tasks answered from the result cache */
    double percent, cost, est_cost, elapsed, eta;
    long long tokens_in, tokens_out;
    char error[4096];
    double budget;  /* the job's budget_usd, 0 when none */
    long conflicts; /* submissions under this id that were ignored */
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
        "cost_usd, coalesce(est_cost_usd, 0), elapsed_s, coalesce(eta_s, -1), coalesce(error, ''), "
        "coalesce((SELECT (settings->>'budget_usd')::float8 FROM shoal.jobs j "
        "          WHERE j.job_id = p.job_id), 0), "
        "(SELECT count(*) FROM shoal.job_conflicts c WHERE c.job_id = p.job_id) "
        "FROM shoal.job_progress p WHERE job_id = $1",
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
    p->budget = strtod(PQgetvalue(r, 0, 12), NULL);
    p->conflicts = strtol(PQgetvalue(r, 0, 13), NULL, 10);
    PQclear(r);
    /* the result cache's count, kept on the job (sql/014_cache.sql) */
    p->cached = 0;
    if (shoal_pg_exec(pg, "SELECT tasks_cached FROM shoal.jobs WHERE job_id = $1", 1, params, &r,
                      err, errlen) == SHOAL_OK) {
        if (PQntuples(r) > 0)
            p->cached = strtol(PQgetvalue(r, 0, 0), NULL, 10);
        PQclear(r);
    }
    return SHOAL_OK;
}

static void print_progress(FILE *out, const char *job_id, const struct progress *p)
{
    char cost[32], est[32], budget[48] = "", b[32];
    if (p->budget > 0)
        snprintf(budget, sizeof(budget), ", budget %s", shoal_usd_format(p->budget, b, sizeof(b)));
    fprintf(out,
            "job %s %s: %ld/%ld tasks done (%.1f%%), %ld failed, tokens %lld in / %lld out, "
            "cost %s (estimated %s%s), elapsed %.1fs",
            job_id, p->status, p->done, p->total, p->percent, p->failed, p->tokens_in,
            p->tokens_out, shoal_usd_format(p->cost, cost, sizeof(cost)),
            shoal_usd_format(p->est_cost, est, sizeof(est)), budget, p->elapsed);
    if (p->cached > 0)
        fprintf(out, ", %ld cached", p->cached);
    if (p->eta >= 0)
        fprintf(out, ", eta %.1fs", p->eta);
    if (*p->error)
        fprintf(out, "\n  error: %s", p->error);
    if (p->conflicts > 0)
        fprintf(out,
                "\n  warning: %ld submission%s with other content under this job_id %s ignored",
                p->conflicts, p->conflicts == 1 ? "" : "s", p->conflicts == 1 ? "was" : "were");
    fputc('\n', out);
    fflush(out);
}

static int exit_for(const char *status)
{
    if (!strcmp(status, "completed") || !strcmp(status, "running"))
        return SHOAL_EXIT_OK;
    return SHOAL_EXIT_JOB_FAILED;
}

/* shoal_cmd_follow with a limit on the whole wait too (timeout_ms, 0 =
 * none): past it a running job returns SHOAL_EXIT_NOT_DONE. */
static int follow(shoal_pg_t *pg, const char *job_id, long interval_ms, long appear_timeout_ms,
                  long timeout_ms, int quiet)
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
                fprintf(stderr,
                        "shoal: no job %s (not recorded after %.0fs: check the id; a job just "
                        "submitted appears once a scheduler has read it, is one running?)\n",
                        job_id, appear_timeout_ms / 1000.0);
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
        if (timeout_ms > 0 && shoal_service_now_ms() - start > timeout_ms) {
            fprintf(stderr, "shoal: job %s has not ended after %lds\n", job_id, timeout_ms / 1000);
            return SHOAL_EXIT_NOT_DONE;
        }
        shoal_service_sleep_ms(interval_ms);
    }
}

int shoal_cmd_follow(shoal_pg_t *pg, const char *job_id, long interval_ms, long appear_timeout_ms,
                     int quiet)
{
    return follow(pg, job_id, interval_ms, appear_timeout_ms, 0, quiet);
}

int shoal_cmd_status(int argc, char **argv)
{
    static const char usage[] = "shoal status [options] JOB_ID";
    static const char summary[] =
        "Prints a job's progress: tasks done and failed, tokens, cost, elapsed time and ETA.\n"
        "With --follow, keeps printing until the job ends; the exit code then says how it\n"
        "ended (0 completed, 3 partial/failed/rejected). A job not recorded within\n"
        "--appear-timeout seconds is reported missing (exit 4).";
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
        rc = follow(pg, res.pos[0], c.interval_ms, c.appear_s * 1000, c.timeout_s * 1000, 0);
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
        "jsonl) to standard output, streamed page by page however large it is; --format jsonl\n"
        "or openai-batch prints one line per item instead, in item order.";
    struct cli_conf c;
    shoal_optres_t res;
    char err[512] = "";
    PGresult *r;
    int rc = parse(results_opts, &c, argc, argv, usage, summary, 1, &res);
    if (rc >= 0)
        return rc;
    int per_item = strcmp(c.format, "text") != 0;
    if (per_item && strcmp(c.format, "jsonl") != 0 && strcmp(c.format, "openai-batch") != 0) {
        fprintf(stderr, "shoal: --format %s: expected text, jsonl or openai-batch\n", c.format);
        return SHOAL_EXIT_USAGE;
    }
    shoal_models_t *models = NULL;
    if (per_item && *c.models && !(models = shoal_models_load(c.models, err, sizeof(err)))) {
        fprintf(stderr, "shoal: cannot load models file %s: %s\n", c.models, err);
        return SHOAL_EXIT_ERROR;
    }
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
        shoal_err_t werr = per_item ? shoal_batchfile_write(pg, res.pos[0], c.format, models,
                                                            stdout, err, sizeof(err))
                                    : write_pages(pg, res.pos[0], npages, stdout, err, sizeof(err));
        if (werr != SHOAL_OK || fflush(stdout) != 0) {
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
    shoal_models_destroy(models);
    return rc;
}

/* "95.0s", "12m30s" or "3h05m": enough to plan by. */
static void fmt_duration(double s, char *buf, size_t len)
{
    if (s < 60)
        snprintf(buf, len, "%.1fs", s);
    else if (s < 3600)
        snprintf(buf, len, "%ldm%02lds", (long)s / 60, (long)s % 60);
    else
        snprintf(buf, len, "%ldh%02ldm", (long)(s / 3600), ((long)s % 3600) / 60);
}

static void print_estimate(const char *file, const shoal_job_t *job, const shoal_estimate_t *e)
{
    char dur[32];

    printf("%s: %zu items in %zu chunks, %zu calls, about %ld prompt tokens\n", file,
           shoal_job_n_items(job), e->chunks, e->calls, e->tokens_in);
    printf("assumed: each call answers with as many tokens as its prompt, up to the model's "
           "output cap\n(max: the whole cap); no retries; %ld worker%s x %ld calls in flight, "
           "%.1fs a call\n\n",
           e->workers, e->workers == 1 ? "" : "s", e->inflight_per_worker, e->call_s);
    printf("%-16s %12s %12s %12s %12s %12s %10s  %s\n", "model", "tokens in", "tokens out",
           "out max", "cost usd", "max usd", "duration", "bound by");
    for (size_t i = 0; i < e->n_models; i++) {
        const shoal_estimate_model_t *m = &e->models[i];
        fmt_duration(m->duration_s, dur, sizeof(dur));
        printf("%-16s %12ld %12ld %12ld %12.4f %12.4f %10s  %s%s\n", m->model->alias, e->tokens_in,
               m->tokens_out, m->tokens_out_max, m->cost_usd, m->cost_max_usd, dur, m->bound,
               i ? " (fallback)" : "");
    }
}

int shoal_cmd_estimate(int argc, char **argv)
{
    static const char usage[] = "shoal estimate [options] FILE";
    static const char summary[] =
        "Estimates a job file without calling any model: chunks, calls, prompt tokens, output\n"
        "tokens, cost in USD and expected duration under the models' rate limits (rpm, tpm,\n"
        "max_concurrency), for the job's model and each fallback as if it ran the whole job.\n"
        "Prompt tokens are counted locally (close to o200k_base); output tokens assume each\n"
        "answer is as long as its prompt, capped by the model's max_output_tokens (1024 when\n"
        "unset), and the max columns assume every call uses its whole cap. Rate limits hold\n"
        "for the whole fleet; calls in flight grow with --workers. FILE may be - for\n"
        "standard input.";
    struct cli_conf c;
    shoal_optres_t res;
    char err[1024] = "";
    int rc = parse(estimate_opts, &c, argc, argv, usage, summary, 1, &res);
    if (rc >= 0)
        return rc;
    if (!(c.call_s > 0 && c.call_s <= 86400)) {
        fprintf(stderr, "shoal: --call-s must be above 0 and at most 86400\n");
        return SHOAL_EXIT_USAGE;
    }
    shoal_models_t *models = shoal_models_load(c.models, err, sizeof(err));
    if (!models) {
        fprintf(stderr, "shoal: cannot load models file %s: %s (--models or SHOAL_MODELS)\n",
                c.models, err);
        return SHOAL_EXIT_ERROR;
    }
    size_t len;
    char *text = read_all(res.pos[0], &len, err, sizeof(err));
    if (!text) {
        fprintf(stderr, "shoal: %s\n", err);
        shoal_models_destroy(models);
        return SHOAL_EXIT_ERROR;
    }
    shoal_job_t *job = shoal_job_parse(text, len, (size_t)MAX_FILE_BYTES, models, err, sizeof(err));
    free(text);
    shoal_estimate_t e;
    shoal_estimate_conf_t conf = {c.workers, c.max_inflight, c.call_s};
    if (!job) {
        fprintf(stderr, "shoal: %s is not a valid job: %s\n", res.pos[0], err);
        rc = SHOAL_EXIT_USAGE;
    } else if (shoal_estimate_job(job, models, &conf, &e, err, sizeof(err)) != SHOAL_OK) {
        fprintf(stderr, "shoal: %s\n", err);
        rc = SHOAL_EXIT_USAGE;
    } else if (c.json) {
        json_t *doc = shoal_estimate_json(&e);
        char *out = NULL;
        if (doc && shoal_job_id(job))
            json_object_set_new(doc, "job_id", json_string(shoal_job_id(job)));
        if (doc)
            out = json_dumps(doc, JSON_INDENT(2) | JSON_REAL_PRECISION(10));
        if (!out) {
            fprintf(stderr, "shoal: out of memory\n");
            rc = SHOAL_EXIT_ERROR;
        } else {
            printf("%s\n", out);
            rc = SHOAL_EXIT_OK;
        }
        free(out);
        json_decref(doc);
    } else {
        print_estimate(res.pos[0], job, &e);
        rc = SHOAL_EXIT_OK;
    }
    shoal_job_destroy(job);
    shoal_models_destroy(models);
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

/* Runs one of the job control functions (shoal.cancel_job, shoal.resume_job)
 * on the job named on the command line; its answer into out. Returns -1 to
 * go on with the answer, else the exit code (a missing job included). */
static int control(int argc, char **argv, const char *usage, const char *summary, const char *sql,
                   char *job_id, size_t idlen, char *out, size_t outlen)
{
    struct cli_conf c;
    shoal_optres_t res;
    char err[512];
    PGresult *r;
    int rc = parse(pg_only_opts, &c, argc, argv, usage, summary, 1, &res);
    if (rc >= 0)
        return rc;
    snprintf(job_id, idlen, "%s", res.pos[0]);
    shoal_pg_t *pg = shoal_pg_new(c.pg, "shoal-cli");
    const char *params[] = {res.pos[0]};
    if (shoal_pg_exec(pg, sql, 1, params, &r, err, sizeof(err)) != SHOAL_OK) {
        fprintf(stderr, "shoal: %s\n", err);
        shoal_pg_destroy(pg);
        return SHOAL_EXIT_ERROR;
    }
    snprintf(out, outlen, "%s", PQgetvalue(r, 0, 0));
    PQclear(r);
    shoal_pg_destroy(pg);
    if (!strcmp(out, "not_found")) {
        fprintf(stderr, "shoal: no job %s\n", job_id);
        return SHOAL_EXIT_NOT_FOUND;
    }
    return -1;
}

int shoal_cmd_cancel(int argc, char **argv)
{
    static const char usage[] = "shoal cancel [options] JOB_ID";
    static const char summary[] =
        "Cancels a running job: no model call of it starts after the workers see the cancel\n"
        "(within about a second); its tasks not yet ended are marked cancelled, calls already\n"
        "running may finish (their results are kept but change nothing), and the job ends\n"
        "`cancelled` with a `cancelled` event. Exit 0 when cancelled (or already was), 4 when\n"
        "there is no such job, 2 when the job had already ended otherwise.";
    char job_id[256], ans[128];
    int rc = control(argc, argv, usage, summary, "SELECT shoal.cancel_job($1)", job_id,
                     sizeof(job_id), ans, sizeof(ans));
    if (rc >= 0)
        return rc;
    if (!strncmp(ans, "cancelled:", 10)) {
        printf("job %s cancelled: %s task%s not yet ended marked cancelled; calls already running "
               "may finish\n",
               job_id, ans + 10, strcmp(ans + 10, "1") ? "s" : "");
        return SHOAL_EXIT_OK;
    }
    if (!strcmp(ans, "ended:cancelled")) {
        printf("job %s was already cancelled\n", job_id);
        return SHOAL_EXIT_OK;
    }
    fprintf(stderr, "shoal: cannot cancel job %s: it has already ended %s\n", job_id,
            !strncmp(ans, "ended:", 6) ? ans + 6 : ans);
    return SHOAL_EXIT_USAGE;
}

int shoal_cmd_resume(int argc, char **argv)
{
    static const char usage[] = "shoal resume [options] JOB_ID";
    static const char summary[] =
        "Runs a partial or failed job's failed (dead-lettered) tasks again, e.g. once the\n"
        "provider outage that failed them is over: they start over with max_attempts fresh\n"
        "calls, a scheduler publishes them again from the job's stored inputs, and the job\n"
        "is running until they end. A job submitted with \"store_inputs\": false cannot be\n"
        "resumed. Exit 0 when resumed, 4 when there is no such job, 2 when the job cannot be\n"
        "resumed (the reason is printed).";
    char job_id[256], ans[128];
    int rc = control(argc, argv, usage, summary, "SELECT shoal.resume_job($1)", job_id,
                     sizeof(job_id), ans, sizeof(ans));
    if (rc >= 0)
        return rc;
    if (!strncmp(ans, "resumed:", 8)) {
        printf("job %s resumed: %s failed task%s will run again\n", job_id, ans + 8,
               strcmp(ans + 8, "1") ? "s" : "");
        return SHOAL_EXIT_OK;
    }
    if (!strcmp(ans, "no_inputs"))
        fprintf(stderr,
                "shoal: cannot resume job %s: it was submitted with \"store_inputs\": false, so "
                "its tasks cannot be built again; submit it again under a new job_id\n",
                job_id);
    else if (!strcmp(ans, "nothing_failed"))
        fprintf(stderr, "shoal: cannot resume job %s: it has no failed tasks\n", job_id);
    else if (!strcmp(ans, "not_ended:running"))
        fprintf(stderr, "shoal: cannot resume job %s: it is still running\n", job_id);
    else
        fprintf(stderr,
                "shoal: cannot resume job %s: it ended %s (only partial or failed jobs "
                "can be resumed)\n",
                job_id, !strncmp(ans, "cannot:", 7) ? ans + 7 : ans);
    return SHOAL_EXIT_USAGE;
}
