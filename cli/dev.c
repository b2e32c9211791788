/*
 * `shoal dev`: the whole fleet on this machine (stack/devstack.c), with
 * connection settings printed and written for the CLI; `--demo` also runs
 * the sample job end to end and prints its output and a short SQL summary;
 * `--models FILE` runs the stack against the user's own models file (real
 * endpoints, a local llama.cpp or vLLM server) instead of the simulator's.
 *
 * Every stack keeps its state in its work directory, dev.env included, so
 * two stacks with different --workdir share no file. $SHOAL_HOME/dev.env
 * names the most recently started stack; a stack that still owns it at exit
 * gives it back to the stack it replaced if that one still answers, else
 * removes it, so stopping one of two stacks never leaves the other's CLI
 * without settings.
 *
 * The stack's processes are watched: a worker or scheduler that died is
 * started again, since the stack is the only supervisor they have here.
 */
#include <errno.h>
#include <jansson.h>
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli/clienv.h"
#include "cli/commands.h"
#include "stack/devstack.h"
#include "stack/proc.h"
#include "common/kafka.h"
#include "common/models.h"
#include "common/opt.h"
#include "common/pg.h"
#include "common/service.h"

struct dev_conf {
    int demo;
    int unsafe_fast;
    long workers;
    long sim_latency_ms;
    const char *workdir;
    const char *job;
    const char *log_level;
    const char *models;
};

#define OFF(f) offsetof(struct dev_conf, f)
static const struct shoal_opt dev_opts[] = {
    {"demo", SHOAL_OPT_BOOL, OFF(demo), "false", 0, 0,
     "run the sample job, print its output and a summary, then stop everything"},
    {"workers", SHOAL_OPT_INT, OFF(workers), "2", 1, SHOAL_DEVSTACK_MAX_PROCS, "worker processes"},
    {"sim-latency-ms", SHOAL_OPT_INT, OFF(sim_latency_ms), "20", 0, 600000,
     "simulated model latency"},
    {"workdir", SHOAL_OPT_STR, OFF(workdir), NULL, 0, 0,
     "keep data and logs here (default: a temporary directory removed at exit); a later "
     "`shoal dev --workdir` on it carries on with them (see above)"},
    {"unsafe-fast", SHOAL_OPT_BOOL, OFF(unsafe_fast), "false", 0, 0,
     "run PostgreSQL with fsync, synchronous_commit and full_page_writes off, for benchmarks: a "
     "crash of PostgreSQL or of the machine may then lose results already acknowledged"},
    {"job", SHOAL_OPT_STR, OFF(job), NULL, 0, 0,
     "job file for --demo (default: examples/demo-job.json)"},
    {"log-level", SHOAL_OPT_STR, OFF(log_level), "warn", 0, 0,
     "log level of the started processes (their logs go to <workdir>/logs)"},
    {"models", SHOAL_OPT_STR, OFF(models), NULL, 0, 0,
     "your models file instead of the simulator's; the simulator starts only if the file "
     "names ${SHOAL_SIM_URL}"},
    {0},
};

/* The sample job: next to the binary's source tree, or installed. */
static int find_demo_job(const char *bindir, char *out, size_t len)
{
    const char *env = getenv("SHOAL_EXAMPLES");
    const char *cands[] = {"%s/../examples/demo-job.json", "%s/../../examples/demo-job.json",
                           "%s/../share/shoal/examples/demo-job.json"};
    if (env) {
        snprintf(out, len, "%s/demo-job.json", env);
        if (access(out, R_OK) == 0)
            return 1;
    }
    for (size_t i = 0; i < sizeof(cands) / sizeof(cands[0]); i++) {
        snprintf(out, len, cands[i], bindir);
        if (access(out, R_OK) == 0)
            return 1;
    }
    snprintf(out, len, "/usr/share/shoal/examples/demo-job.json");
    return access(out, R_OK) == 0;
}

static void print_summary(shoal_pg_t *pg, const char *job_id)
{
    PGresult *r;
    char err[256];
    const char *params[] = {job_id};
    printf("\n-- SELECT * FROM shoal.job_cost WHERE job_id = '%s'\n", job_id);
    if (shoal_pg_exec(pg,
                      "SELECT calls, tokens_in, tokens_out, round(cost_usd::numeric, 6), "
                      "round(est_cost_usd::numeric, 6) FROM shoal.job_cost WHERE job_id = $1",
                      1, params, &r, err, sizeof(err)) == SHOAL_OK) {
        if (PQntuples(r))
            printf("calls=%s tokens_in=%s tokens_out=%s cost_usd=%s est_cost_usd=%s\n",
                   PQgetvalue(r, 0, 0), PQgetvalue(r, 0, 1), PQgetvalue(r, 0, 2),
                   PQgetvalue(r, 0, 3), PQgetvalue(r, 0, 4));
        PQclear(r);
    }
    printf("-- SELECT * FROM shoal.model_latency\n");
    if (shoal_pg_exec(pg,
                      "SELECT model, calls, error_pct, round(p50_ms::numeric, 2), "
                      "round(p90_ms::numeric, 2), round(p99_ms::numeric, 2) FROM "
                      "shoal.model_latency ORDER BY model",
                      0, NULL, &r, err, sizeof(err)) == SHOAL_OK) {
        for (int i = 0; i < PQntuples(r); i++)
            printf("model=%s calls=%s error_pct=%s p50_ms=%s p90_ms=%s p99_ms=%s\n",
                   PQgetvalue(r, i, 0), PQgetvalue(r, i, 1), PQgetvalue(r, i, 2),
                   PQgetvalue(r, i, 3), PQgetvalue(r, i, 4), PQgetvalue(r, i, 5));
        PQclear(r);
    }
}

/* Loads the user's models file as the workers will and checks their API
 * keys and CA files, so a mistake is reported before anything starts. ${SHOAL_SIM_URL}
 * is only known once the simulator runs: a placeholder stands in for it. */
static int check_models(const char *path)
{
    char err[1024];
    int placeholder = !getenv("SHOAL_SIM_URL");

    if (placeholder)
        setenv("SHOAL_SIM_URL", "http://127.0.0.1:1", 1);
    shoal_models_t *m = shoal_models_load(path, err, sizeof(err));
    if (placeholder)
        unsetenv("SHOAL_SIM_URL");
    if (!m) {
        fprintf(stderr, "shoal: cannot use models file %s: %s\n", path, err);
        return 0;
    }
    shoal_err_t e = shoal_models_check_keys(m, err, sizeof(err));
    if (e == SHOAL_OK)
        e = shoal_models_check_files(m, err, sizeof(err));
    shoal_models_destroy(m);
    if (e != SHOAL_OK) {
        fprintf(stderr, "shoal: cannot use models file %s: %s\n", path, err);
        return 0;
    }
    return 1;
}

/* Reads a small text file into buf (NUL-terminated); 0 if it cannot or it
 * does not fit. */
static int read_text(const char *path, char *buf, size_t len)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    size_t n = fread(buf, 1, len - 1, f);
    int ok = !ferror(f) && feof(f);
    fclose(f);
    buf[ok ? n : 0] = '\0';
    return ok && n > 0;
}

/* True when the dev.env text names a PostgreSQL that still answers: the
 * stack that wrote it runs. */
static int env_text_alive(const char *text)
{
    static const char key[] = "export SHOAL_PG='";
    const char *p = strstr(text, key);
    char url[1024];
    if (!p)
        return 0;
    p += strlen(key);
    size_t n = strcspn(p, "'\n");
    if (n == 0 || n >= sizeof(url) - 32)
        return 0;
    snprintf(url, sizeof(url), "%.*s%sconnect_timeout=2", (int)n, p, memchr(p, '?', n) ? "&" : "?");
    return PQping(url) == PQPING_OK;
}

/* True when the file at path has a line equal to line (without its end). */
static int file_has_line(const char *path, const char *line)
{
    char buf[2048];
    int found = 0;
    FILE *f = fopen(path, "r");

    if (!f)
        return 0;
    while (!found && fgets(buf, sizeof(buf), f)) {
        buf[strcspn(buf, "\r\n")] = '\0';
        found = strcmp(buf, line) == 0;
    }
    fclose(f);
    return found;
}

static int run_demo(shoal_devstack_t *ds, const char *job_path)
{
    char err[1024];
    FILE *f = fopen(job_path, "rb");
    json_error_t jerr;
    json_t *doc = f ? json_loadf(f, 0, &jerr) : NULL;
    if (f)
        fclose(f);
    if (!json_is_object(doc)) {
        fprintf(stderr, "shoal: cannot read the demo job %s\n", job_path);
        json_decref(doc);
        return SHOAL_EXIT_ERROR;
    }
    const char *jid = json_string_value(json_object_get(doc, "job_id"));
    char job_id[256];
    snprintf(job_id, sizeof(job_id), "%s", jid ? jid : "demo");
    json_object_set_new(doc, "job_id", json_string(job_id));
    char *text = json_dumps(doc, JSON_COMPACT);
    json_decref(doc);

    shoal_topics_t topics;
    shoal_topics_init(&topics, NULL, NULL, 0);
    rd_kafka_t *rk = shoal_kafka_producer_new(shoal_devstack_bootstrap(ds), NULL, err, sizeof(err));
    int rc = SHOAL_EXIT_OK;
    if (!rk || !text ||
        shoal_kafka_produce_sync(rk, topics.jobs, job_id, text, strlen(text), 30000, err,
                                 sizeof(err)) != SHOAL_OK) {
        fprintf(stderr, "shoal: could not submit the demo job: %s\n", err);
        rc = SHOAL_EXIT_ERROR;
    }
    if (rk)
        rd_kafka_destroy(rk);
    free(text);
    if (rc != SHOAL_EXIT_OK)
        return rc;
    printf("submitted job %s from %s\n", job_id, job_path);
    fflush(stdout);

    shoal_pg_t *pg = shoal_pg_new(shoal_devstack_pg_url(ds), "shoal-dev");
    rc = shoal_cmd_follow(pg, job_id, 300, 120000, 0);

    PGresult *r;
    const char *params[] = {job_id};
    char status[32] = "unknown";
    long tasks = 0, results = 0;
    if (shoal_pg_exec(pg,
                      "SELECT status, tasks_total, (SELECT count(*) FROM shoal.results r WHERE "
                      "r.job_id = j.job_id), coalesce(output, '') FROM shoal.jobs j WHERE job_id "
                      "= $1",
                      1, params, &r, err, sizeof(err)) == SHOAL_OK &&
        PQntuples(r) == 1) {
        snprintf(status, sizeof(status), "%s", PQgetvalue(r, 0, 0));
        tasks = strtol(PQgetvalue(r, 0, 1), NULL, 10);
        results = strtol(PQgetvalue(r, 0, 2), NULL, 10);
        const char *out = PQgetvalue(r, 0, 3);
        size_t n = strlen(out);
        printf("\n-- merged output (shoal results %s), %zu bytes:\n", job_id, n);
        fwrite(out, 1, n > 2000 ? 2000 : n, stdout);
        if (n > 2000)
            printf("\n... (%zu more bytes)", n - 2000);
        printf("\n");
        PQclear(r);
    }
    print_summary(pg, job_id);
    shoal_pg_destroy(pg);
    printf("RESULT bench=demo job=%s status=%s tasks=%ld results=%ld\n", job_id, status, tasks,
           results);
    fflush(stdout);
    return rc;
}

int shoal_cmd_dev(int argc, char **argv)
{
    static const char usage[] = "shoal dev [--demo] [options]";
    static const char summary[] =
        "Starts shoal on this machine: a local Kafka (librdkafka's mock cluster, a real Kafka\n"
        "protocol endpoint on 127.0.0.1), a throwaway PostgreSQL cluster, the provider\n"
        "simulator, a scheduler and workers. Prints the connection settings as export lines\n"
        "and writes them to $SHOAL_HOME/dev.env (default ~/.shoal/dev.env), where the other\n"
        "shoal commands find them, and to <workdir>/dev.env (SHOAL_HOME=<workdir> reaches\n"
        "this stack even after another one started). With --models FILE the workers and the\n"
        "scheduler use your models file (checked first, API keys included); the simulator\n"
        "then starts only if the file names ${SHOAL_SIM_URL}. A worker or scheduler that\n"
        "dies is started again. Runs until Ctrl-C and then stops everything it started.\n"
        "\n"
        "PostgreSQL runs durably (fsync, synchronous_commit and full_page_writes on): a\n"
        "crash of any process of the stack, PostgreSQL included, loses no acknowledged\n"
        "result. --unsafe-fast trades that for speed. It does not trust local users: the\n"
        "superuser has a random password made when the cluster is created, kept only in\n"
        "<workdir>/pg/pgpass (mode 0600); SHOAL_PG names that file (passfile=...), never\n"
        "the password.\n"
        "\n"
        "With --workdir DIR the cluster, its password and the logs stay in DIR, and a later\n"
        "`shoal dev --workdir DIR` carries on with them: jobs, tasks, results and their\n"
        "status are still there. Kafka (the mock cluster) lives in memory and starts\n"
        "empty: jobs and tasks queued or in flight when the first run stopped are not\n"
        "redelivered, so their jobs stay running until submitted again (`shoal submit` of\n"
        "the same job, same job_id, publishes its unfinished tasks again; finished items\n"
        "are not called again). A job whose submission had not reached the scheduler yet\n"
        "is not known to PostgreSQL either: submit it again.";
    struct dev_conf c;
    shoal_optres_t res;
    char err[1024], envpath[1024], job[1024], prev_env[4096];

    memset(&c, 0, sizeof(c));
    if (shoal_opt_parse(dev_opts, &c, argc, argv, 1, &res, err, sizeof(err)) != SHOAL_OK) {
        fprintf(stderr, "shoal: %s\n", err);
        return SHOAL_EXIT_USAGE;
    }
    if (res.help) {
        shoal_opt_help(stdout, usage, summary, dev_opts);
        return SHOAL_EXIT_OK;
    }
    if (res.npos) {
        fprintf(stderr, "shoal: usage: %s (see --help)\n", usage);
        return SHOAL_EXIT_USAGE;
    }
    char *bindir = shoal_proc_self_dir();
    if (!bindir) {
        fprintf(stderr, "shoal: cannot find the directory of the shoal binary\n");
        return SHOAL_EXIT_ERROR;
    }
    if (c.demo && !c.job && !find_demo_job(bindir, job, sizeof(job))) {
        fprintf(stderr, "shoal: cannot find examples/demo-job.json; pass --job FILE\n");
        free(bindir);
        return SHOAL_EXIT_USAGE;
    }
    if (c.job)
        snprintf(job, sizeof(job), "%s", c.job);
    if (c.models && !check_models(c.models)) {
        free(bindir);
        return SHOAL_EXIT_USAGE;
    }
    /* SHOAL_MODELS is also what a sourced dev.env sets: say which file won. */
    if (c.models)
        fprintf(stderr, "using models file %s (--models or SHOAL_MODELS)\n", c.models);
    shoal_service_signals();

    shoal_devstack_conf_t dc = {.workdir = c.workdir,
                                .bindir = bindir,
                                .workers = (int)c.workers,
                                .schedulers = 1,
                                .sim_latency_ms = c.sim_latency_ms,
                                .log_level = c.log_level,
                                .models_path = c.models};
    dc.unsafe_fast = c.unsafe_fast;
    fprintf(stderr, "starting Kafka (mock cluster), PostgreSQL, %sscheduler and %ld workers...\n",
            c.models ? "" : "simulator, ", c.workers);
    if (c.unsafe_fast)
        fprintf(stderr, "warning: --unsafe-fast: PostgreSQL runs with fsync, synchronous_commit "
                        "and full_page_writes off; a crash may lose results already "
                        "acknowledged\n");
    else
        fprintf(stderr, "PostgreSQL runs durably (fsync, synchronous_commit and full_page_writes "
                        "on)\n");
    shoal_devstack_t *ds = shoal_devstack_new(&dc, err, sizeof(err));
    free(bindir);
    if (!ds) {
        fprintf(stderr, "shoal: could not start the local stack: %s\n", err);
        return SHOAL_EXIT_ERROR;
    }
    shoal_clienv_path(envpath, sizeof(envpath));
    /* The stack this one replaces in the shared file, to give it back. */
    int have_prev = read_text(envpath, prev_env, sizeof(prev_env));
    char dir[1024];
    snprintf(dir, sizeof(dir), "%s", envpath);
    char *slash = strrchr(dir, '/');
    if (slash) {
        *slash = '\0';
        mkdir(dir, 0755);
    }
    char ownenv[1100], pgline[2200];
    snprintf(ownenv, sizeof(ownenv), "%s/dev.env", shoal_devstack_workdir(ds));
    snprintf(pgline, sizeof(pgline), "export SHOAL_PG='%s'", shoal_devstack_pg_url(ds));
    if (shoal_devstack_write_env(ds, ownenv, err, sizeof(err)) != SHOAL_OK ||
        shoal_devstack_write_env(ds, envpath, err, sizeof(err)) != SHOAL_OK)
        fprintf(stderr, "shoal: %s\n", err);
    printf("export SHOAL_BOOTSTRAP='%s'\n%s\nexport SHOAL_MODELS='%s'\n",
           shoal_devstack_bootstrap(ds), pgline, shoal_devstack_models_path(ds));
    if (*shoal_devstack_sim_url(ds))
        printf("export SHOAL_SIM_URL='%s'\n", shoal_devstack_sim_url(ds));
    printf("# this stack alone, even once another starts: SHOAL_HOME=%s (its %s)\n",
           shoal_devstack_workdir(ds), ownenv);
    printf("# also written to %s; logs in %s/logs\n", envpath, shoal_devstack_workdir(ds));
    fflush(stdout);

    int rc = SHOAL_EXIT_OK;
    if (c.demo) {
        rc = run_demo(ds, job);
    } else {
        fprintf(stderr, "shoal dev is running; submit jobs with `shoal submit FILE`; Ctrl-C "
                        "stops everything\n");
        static const char *const kinds[] = {"scheduler", "worker"};
        while (!shoal_service_stopping()) {
            shoal_service_sleep_ms(500);
            for (int k = 0; k < 2; k++) {
                int n = k == 0 ? dc.schedulers : (int)c.workers;
                for (int i = 0; i < n && !shoal_service_stopping(); i++) {
                    struct shoal_proc *p = shoal_devstack_proc(ds, kinds[k], i);
                    if (!p || shoal_proc_alive(p))
                        continue;
                    fprintf(stderr, "%s %d exited with status %d; restarting it\n", kinds[k], i,
                            shoal_proc_exit_status(p));
                    if (shoal_devstack_restart(ds, kinds[k], i, NULL, err, sizeof(err)) != SHOAL_OK)
                        fprintf(stderr, "shoal: could not restart %s %d: %s\n", kinds[k], i, err);
                }
            }
        }
        fprintf(stderr, "stopping...\n");
    }
    unlink(ownenv);
    shoal_devstack_destroy(ds);
    /* Another stack may have started since and own the shared file now.
     * Checked once this stack's PostgreSQL is down, so it cannot pass for
     * the earlier stack's. */
    if (file_has_line(envpath, pgline)) {
        int restored = 0;
        if (have_prev && env_text_alive(prev_env)) {
            FILE *f = fopen(envpath, "w");
            if (f) {
                int ok = fputs(prev_env, f) >= 0;
                restored = fclose(f) == 0 && ok;
            }
        }
        if (!restored)
            unlink(envpath);
    }
    return rc;
}
