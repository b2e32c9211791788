/*
 * The local fleet (see devstack.h).
 */
#include "stack/devstack.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "stack/mockkafka.h"
#include "stack/pgcluster.h"
#include "stack/proc.h"
#include "stack/workdir.h"
#include "common/migrate.h"
#include "common/pg.h"

#define START_TIMEOUT_MS 30000

struct shoal_devstack {
    shoal_devstack_conf_t conf;
    char *bindir;
    char workdir[512];
    int own_workdir;
    shoal_mockkafka_t *kafka;
    shoal_pgcluster_t *pg;
    shoal_proc_t *sim;
    shoal_proc_t *schedulers[SHOAL_DEVSTACK_MAX_PROCS];
    shoal_proc_t *workers[SHOAL_DEVSTACK_MAX_PROCS];
    char sim_url[128];
    char models_path[600];
    char env[10][2200];
    char *envp[11];
};

const char *shoal_devstack_bootstrap(const shoal_devstack_t *ds)
{
    return shoal_mockkafka_bootstraps(ds->kafka);
}

const char *shoal_devstack_pg_url(const shoal_devstack_t *ds)
{
    return shoal_pgcluster_url(ds->pg);
}

const char *shoal_devstack_sim_url(const shoal_devstack_t *ds)
{
    return ds->sim_url;
}

const char *shoal_devstack_models_path(const shoal_devstack_t *ds)
{
    return ds->models_path;
}

const char *shoal_devstack_workdir(const shoal_devstack_t *ds)
{
    return ds->workdir;
}

struct shoal_pgcluster *shoal_devstack_pg(shoal_devstack_t *ds)
{
    return ds->pg;
}

static shoal_err_t write_file(const char *path, const char *text, char *errbuf, size_t errlen)
{
    FILE *f = fopen(path, "w");
    if (!f)
        return shoal_err_set(errbuf, errlen, SHOAL_ERR_IO, "could not write %s: %s", path,
                             strerror(errno));
    fputs(text, f);
    if (fclose(f) != 0)
        return shoal_err_set(errbuf, errlen, SHOAL_ERR_IO, "could not write %s: %s", path,
                             strerror(errno));
    return SHOAL_OK;
}

static shoal_proc_t *spawn(shoal_devstack_t *ds, const char *name, const char *bin,
                           const char *const *args, char *const extra_env[], char *errbuf,
                           size_t errlen)
{
    char path[700], log[700];
    char *argv[32];
    char *env[24];
    int n = 0, ne = 0;

    snprintf(path, sizeof(path), "%s/%s", ds->bindir, bin);
    snprintf(log, sizeof(log), "%s/logs/%s.log", ds->workdir, name);
    argv[n++] = path;
    for (int i = 0; args && args[i] && n < 31; i++)
        argv[n++] = (char *)args[i];
    argv[n] = NULL;
    for (int i = 0; ds->envp[i] && ne < 23; i++)
        env[ne++] = ds->envp[i];
    for (int i = 0; extra_env && extra_env[i] && ne < 23; i++)
        env[ne++] = extra_env[i];
    env[ne] = NULL;
    return shoal_proc_spawn(name, argv, env, log, errbuf, errlen);
}

static shoal_err_t start_kind(shoal_devstack_t *ds, const char *kind, int i,
                              char *const extra_env[], char *errbuf, size_t errlen)
{
    char name[64], wid[64];
    const char *args[24];
    int n = 0;

    snprintf(name, sizeof(name), "%s-%d", kind, i);
    if (!strcmp(kind, "worker")) {
        snprintf(wid, sizeof(wid), "dev-worker-%d", i);
        args[n++] = "--worker-id";
        args[n++] = wid;
        for (int k = 0; ds->conf.worker_args && ds->conf.worker_args[k] && n < 22; k++)
            args[n++] = ds->conf.worker_args[k];
        args[n] = NULL;
        shoal_proc_destroy(ds->workers[i]);
        ds->workers[i] = spawn(ds, name, "shoal-worker", args, extra_env, errbuf, errlen);
        return ds->workers[i] ? SHOAL_OK : SHOAL_ERR_IO;
    }
    args[n] = NULL;
    shoal_proc_destroy(ds->schedulers[i]);
    ds->schedulers[i] = spawn(ds, name, "shoal-scheduler", args, extra_env, errbuf, errlen);
    return ds->schedulers[i] ? SHOAL_OK : SHOAL_ERR_IO;
}

shoal_proc_t *shoal_devstack_proc(shoal_devstack_t *ds, const char *kind, int i)
{
    if (i < 0 || i >= SHOAL_DEVSTACK_MAX_PROCS)
        return NULL;
    return !strcmp(kind, "worker") ? ds->workers[i] : ds->schedulers[i];
}

shoal_err_t shoal_devstack_restart(shoal_devstack_t *ds, const char *kind, int i,
                                   char *const extra_env[], char *errbuf, size_t errlen)
{
    if (i < 0 || i >= SHOAL_DEVSTACK_MAX_PROCS)
        return shoal_err_set(errbuf, errlen, SHOAL_ERR_INVALID, "no %s %d", kind, i);
    shoal_proc_t *p = shoal_devstack_proc(ds, kind, i);
    if (p)
        shoal_proc_stop(p, 10000);
    return start_kind(ds, kind, i, extra_env, errbuf, errlen);
}

/* Reads a whole small file into a new string (caller frees); NULL with the
 * reason. Models files are a few KiB; the cap guards against a wrong path. */
static char *read_small_file(const char *path, char *errbuf, size_t errlen)
{
    enum { CAP = 4 << 20 };
    FILE *f = fopen(path, "rb");
    if (!f) {
        shoal_err_set(errbuf, errlen, SHOAL_ERR_IO, "could not read %s: %s", path, strerror(errno));
        return NULL;
    }
    char *buf = malloc(CAP + 1);
    size_t n = buf ? fread(buf, 1, CAP + 1, f) : 0;
    int bad = !buf || ferror(f) || n > CAP;
    fclose(f);
    if (bad) {
        shoal_err_set(errbuf, errlen, SHOAL_ERR_IO, "could not read %s: %s", path,
                      buf ? "unreadable or larger than 4 MiB" : "out of memory");
        free(buf);
        return NULL;
    }
    buf[n] = '\0';
    return buf;
}

/* Uses the caller's models file: an absolute path (children and dev.env
 * readers may run elsewhere), and whether it needs the simulator. */
static shoal_err_t use_models(shoal_devstack_t *ds, int *needs_sim, char *errbuf, size_t errlen)
{
    char *abs = realpath(ds->conf.models_path, NULL);
    if (!abs)
        return shoal_err_set(errbuf, errlen, SHOAL_ERR_IO, "could not read %s: %s",
                             ds->conf.models_path, strerror(errno));
    int fits = snprintf(ds->models_path, sizeof(ds->models_path), "%s", abs) <
               (int)sizeof(ds->models_path);
    free(abs);
    if (!fits)
        return shoal_err_set(errbuf, errlen, SHOAL_ERR_INVALID, "models file path too long");
    char *text = read_small_file(ds->models_path, errbuf, errlen);
    if (!text)
        return SHOAL_ERR_IO;
    *needs_sim = strstr(text, "${SHOAL_SIM_URL}") != NULL;
    free(text);
    return SHOAL_OK;
}

static shoal_err_t write_models(shoal_devstack_t *ds, char *errbuf, size_t errlen)
{
    char text[8192];
    snprintf(ds->models_path, sizeof(ds->models_path), "%s/models.json", ds->workdir);
    snprintf(text, sizeof(text),
             "{\"models\": {\n"
             "  \"sim-small\": {\"provider\": \"openai\", \"endpoint\": "
             "\"%s/v1/chat/completions\", \"model\": \"sim-small\", \"input_usd_per_mtok\": "
             "0.15, \"output_usd_per_mtok\": 0.6, \"rpm\": 0, \"tpm\": 0},\n"
             "  \"sim-large\": {\"provider\": \"openai\", \"endpoint\": "
             "\"%s/v1/chat/completions\", \"model\": \"sim-large\", \"input_usd_per_mtok\": "
             "2.5, \"output_usd_per_mtok\": 10.0},\n"
             "  \"sim-claude\": {\"provider\": \"anthropic\", \"endpoint\": \"%s/v1/messages\", "
             "\"model\": \"sim-claude\", \"input_usd_per_mtok\": 3.0, \"output_usd_per_mtok\": "
             "15.0, \"max_output_tokens\": 1024}%s%s\n"
             "}}\n",
             ds->sim_url, ds->sim_url, ds->sim_url, ds->conf.extra_models ? ",\n  " : "",
             ds->conf.extra_models ? ds->conf.extra_models : "");
    return write_file(ds->models_path, text, errbuf, errlen);
}

static shoal_err_t start_sim(shoal_devstack_t *ds, char *errbuf, size_t errlen)
{
    char portfile[700], lat[32], line[128];
    snprintf(portfile, sizeof(portfile), "%s/sim.port", ds->workdir);
    unlink(portfile); /* an earlier stack's, in a kept work directory */
    snprintf(lat, sizeof(lat), "%ld", ds->conf.sim_latency_ms);
    const char *args[64] = {"--port", "0", "--port-file", portfile, "--latency-ms", lat};
    size_t n = 6;
    for (size_t i = 0; ds->conf.sim_args && ds->conf.sim_args[i] && n < 63; i++)
        args[n++] = ds->conf.sim_args[i];
    args[n] = NULL;
    if (!(ds->sim = spawn(ds, "sim", "shoal-sim", args, NULL, errbuf, errlen)))
        return SHOAL_ERR_IO;
    shoal_err_t err = shoal_proc_wait_file_line(portfile, "", START_TIMEOUT_MS, line, sizeof(line));
    if (err != SHOAL_OK)
        return shoal_err_set(errbuf, errlen, err,
                             "the simulator did not start (see %s/logs/sim.log)", ds->workdir);
    snprintf(ds->sim_url, sizeof(ds->sim_url), "http://127.0.0.1:%ld", strtol(line, NULL, 10));
    return SHOAL_OK;
}

shoal_devstack_t *shoal_devstack_new(const shoal_devstack_conf_t *conf, char *errbuf, size_t errlen)
{
    char path[700];
    shoal_devstack_t *ds = calloc(1, sizeof(*ds));
    if (!ds) {
        shoal_err_set(errbuf, errlen, SHOAL_ERR_NOMEM, "out of memory");
        return NULL;
    }
    ds->conf = *conf;
    if (ds->conf.workers <= 0)
        ds->conf.workers = 2;
    if (ds->conf.schedulers <= 0)
        ds->conf.schedulers = 1;
    if (ds->conf.workers > SHOAL_DEVSTACK_MAX_PROCS)
        ds->conf.workers = SHOAL_DEVSTACK_MAX_PROCS;
    if (ds->conf.schedulers > SHOAL_DEVSTACK_MAX_PROCS)
        ds->conf.schedulers = SHOAL_DEVSTACK_MAX_PROCS;
    ds->bindir = conf->bindir ? strdup(conf->bindir) : shoal_proc_self_dir();
    if (!ds->bindir) {
        shoal_err_set(errbuf, errlen, SHOAL_ERR_IO, "cannot find the shoal binaries");
        goto fail;
    }
    if (conf->workdir) {
        snprintf(ds->workdir, sizeof(ds->workdir), "%s", conf->workdir);
        if (mkdir(ds->workdir, 0755) != 0 && errno != EEXIST) {
            shoal_err_set(errbuf, errlen, SHOAL_ERR_IO, "could not create %s: %s", ds->workdir,
                          strerror(errno));
            goto fail;
        }
    } else {
        const char *tmp = getenv("TMPDIR");
        snprintf(ds->workdir, sizeof(ds->workdir), "%s/shoal-dev-XXXXXX",
                 tmp && *tmp ? tmp : "/tmp");
        if (!mkdtemp(ds->workdir)) {
            shoal_err_set(errbuf, errlen, SHOAL_ERR_IO, "could not create a work directory: %s",
                          strerror(errno));
            goto fail;
        }
        ds->own_workdir = 1;
    }
    /* PostgreSQL runs as an unprivileged user that must reach its data dir. */
    chmod(ds->workdir, 0755);
    snprintf(path, sizeof(path), "%s/logs", ds->workdir);
    mkdir(path, 0755);

    if (!(ds->kafka = shoal_mockkafka_new(1, errbuf, errlen)) ||
        shoal_mockkafka_create_default_topics(ds->kafka, NULL, errbuf, errlen) != SHOAL_OK)
        goto fail;
    snprintf(path, sizeof(path), "%s/pg", ds->workdir);
    /* Made here so the cluster counts it as the caller's and keeps it: a
     * kept work directory keeps its data. 0755: the server's user (when we
     * run as root) must reach it; the password file in it is 0600. */
    if (mkdir(path, 0755) != 0 && errno != EEXIST) {
        shoal_err_set(errbuf, errlen, SHOAL_ERR_IO, "could not create %s: %s", path,
                      strerror(errno));
        goto fail;
    }
    shoal_pgcluster_opts_t pgo = {.unsafe_fast = conf->unsafe_fast};
    if (!(ds->pg = shoal_pgcluster_new_opts(path, &pgo, errbuf, errlen)))
        goto fail;
    shoal_pg_t *pg = shoal_pg_new(shoal_pgcluster_url(ds->pg), "shoal-dev");
    shoal_err_t err = pg ? shoal_migrate_apply(pg, NULL, errbuf, errlen) : SHOAL_ERR_NOMEM;
    shoal_pg_destroy(pg);
    if (err != SHOAL_OK)
        goto fail;
    int needs_sim = 1;
    if (conf->models_path && use_models(ds, &needs_sim, errbuf, errlen) != SHOAL_OK)
        goto fail;
    if (needs_sim && start_sim(ds, errbuf, errlen) != SHOAL_OK)
        goto fail;
    if (!conf->models_path && write_models(ds, errbuf, errlen) != SHOAL_OK)
        goto fail;

    int ne = 0;
    snprintf(ds->env[ne++], sizeof(ds->env[0]), "SHOAL_BOOTSTRAP=%s", shoal_devstack_bootstrap(ds));
    snprintf(ds->env[ne++], sizeof(ds->env[0]), "SHOAL_PG=%s", shoal_pgcluster_url(ds->pg));
    snprintf(ds->env[ne++], sizeof(ds->env[0]), "SHOAL_MODELS=%s", ds->models_path);
    /* The mock cluster's rebalances wait about session.timeout.ms. */
    snprintf(ds->env[ne++], sizeof(ds->env[0]), "SHOAL_KAFKA_SESSION_TIMEOUT_MS=6000");
    /* The mock cluster holds a fetch for the whole fetch.wait.max.ms (500 ms
     * by default) even when messages arrive meanwhile, which a broker does
     * not: every task would wait half a second in the local stack. */
    snprintf(ds->env[ne++], sizeof(ds->env[0]), "SHOAL_KAFKA_FETCH_WAIT_MAX_MS=10");
    snprintf(ds->env[ne++], sizeof(ds->env[0]), "SHOAL_LOG_LEVEL=%s",
             conf->log_level ? conf->log_level : "info");
    if (ds->sim_url[0])
        snprintf(ds->env[ne++], sizeof(ds->env[0]), "SHOAL_SIM_URL=%s", ds->sim_url);
    for (int i = 0; i < ne; i++)
        ds->envp[i] = ds->env[i];
    ds->envp[ne] = NULL;

    for (int i = 0; i < ds->conf.schedulers; i++)
        if (start_kind(ds, "scheduler", i, NULL, errbuf, errlen) != SHOAL_OK)
            goto fail;
    for (int i = 0; i < ds->conf.workers; i++)
        if (start_kind(ds, "worker", i, NULL, errbuf, errlen) != SHOAL_OK)
            goto fail;
    return ds;
fail:
    shoal_devstack_destroy(ds);
    return NULL;
}

shoal_err_t shoal_devstack_write_env(const shoal_devstack_t *ds, const char *path, char *errbuf,
                                     size_t errlen)
{
    char text[4096];
    int n =
        snprintf(text, sizeof(text),
                 "# written by shoal dev; read by the shoal CLI, or: . %s\n"
                 "export SHOAL_BOOTSTRAP='%s'\n"
                 "export SHOAL_PG='%s'\n"
                 "export SHOAL_MODELS='%s'\n",
                 path, shoal_devstack_bootstrap(ds), shoal_pgcluster_url(ds->pg), ds->models_path);
    if (ds->sim_url[0] && n > 0 && (size_t)n < sizeof(text))
        snprintf(text + n, sizeof(text) - (size_t)n, "export SHOAL_SIM_URL='%s'\n", ds->sim_url);
    return write_file(path, text, errbuf, errlen);
}

/* True when a child's log holds a sanitizer report. */
static int log_has_sanitizer_report(const shoal_devstack_t *ds, const char *name)
{
    char path[700], line[1024];
    int found = 0;
    snprintf(path, sizeof(path), "%s/logs/%s.log", ds->workdir, name);
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    while (!found && fgets(line, sizeof(line), f))
        found = strstr(line, "ERROR: AddressSanitizer") || strstr(line, "ERROR: LeakSanitizer") ||
                strstr(line, "runtime error:");
    fclose(f);
    return found;
}

static int check_stop(shoal_devstack_t *ds, shoal_proc_t *p, char *report, size_t len)
{
    int status = -1;
    if (!p)
        return 0;
    shoal_proc_stop(p, 15000);
    shoal_proc_wait(p, 0, &status);
    int bad = status != 0 || log_has_sanitizer_report(ds, shoal_proc_name(p));
    if (bad) {
        size_t n = strlen(report);
        snprintf(report + n, len - n, "%s%s exited %d%s", n ? "; " : "", shoal_proc_name(p), status,
                 log_has_sanitizer_report(ds, shoal_proc_name(p))
                     ? " with a sanitizer report in its log"
                     : "");
    }
    return bad;
}

int shoal_devstack_stop_procs(shoal_devstack_t *ds, char *report, size_t len)
{
    int bad = 0;
    if (len)
        report[0] = '\0';
    /* Signal all workers first so they drain in parallel. */
    for (int i = 0; i < SHOAL_DEVSTACK_MAX_PROCS; i++)
        if (ds->workers[i] && shoal_proc_alive(ds->workers[i]))
            shoal_proc_kill(ds->workers[i], 15);
    for (int i = 0; i < SHOAL_DEVSTACK_MAX_PROCS; i++)
        bad += check_stop(ds, ds->workers[i], report, len);
    for (int i = 0; i < SHOAL_DEVSTACK_MAX_PROCS; i++)
        bad += check_stop(ds, ds->schedulers[i], report, len);
    bad += check_stop(ds, ds->sim, report, len);
    return bad;
}

void shoal_devstack_destroy(shoal_devstack_t *ds)
{
    if (!ds)
        return;
    /* Workers first (they flush), then schedulers, then what they use. */
    for (int i = 0; i < SHOAL_DEVSTACK_MAX_PROCS; i++)
        if (ds->workers[i])
            shoal_proc_kill(ds->workers[i], 15);
    for (int i = 0; i < SHOAL_DEVSTACK_MAX_PROCS; i++)
        shoal_proc_destroy(ds->workers[i]);
    for (int i = 0; i < SHOAL_DEVSTACK_MAX_PROCS; i++)
        shoal_proc_destroy(ds->schedulers[i]);
    shoal_proc_destroy(ds->sim);
    shoal_pgcluster_destroy(ds->pg);
    shoal_mockkafka_destroy(ds->kafka);
    if (ds->own_workdir)
        shoal_workdir_remove(ds->workdir);
    free(ds->bindir);
    free(ds);
}
