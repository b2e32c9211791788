/*
 * `shoal dev --models FILE` runs the local stack against the user's own
 * models file: an alias "local" pointing at a simulator this test runs
 * in-process (standing in for a llama.cpp or vLLM server). The stack starts
 * no simulator of its own (the file does not name ${SHOAL_SIM_URL}), a job
 * submitted with the CLI completes, and every call reached our server.
 *
 * A second `shoal dev` with another --workdir runs alongside: each stack
 * keeps its dev.env, models file and database in its own work directory,
 * SHOAL_HOME=<workdir> reaches each one alone (the job is unknown to the
 * other), and stopping the later one gives the shared $SHOAL_HOME/dev.env
 * back to the earlier one, which still runs. A bad models file is refused before anything starts.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "stack/proc.h"
#include "stack/workdir.h"
#include "sim/sim.h"
#include "tests/support/check.h"
#include "tests/support/devcli.h"
#include "tests/support/harness.h"

static void write_text(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    assert_true(f != NULL);
    fputs(text, f);
    assert_true(fclose(f) == 0);
}

/* The whole file at path into out ("" when it does not exist). */
static void read_text(const char *path, char *out, size_t outlen)
{
    FILE *f = fopen(path, "r");
    out[0] = '\0';
    if (!f)
        return;
    size_t n = fread(out, 1, outlen - 1, f);
    out[n] = '\0';
    fclose(f);
}

/* Starts a stack in workdir, on the models file when it is not NULL. */
static shoal_proc_t *start_dev(const char *home, const char *workdir, const char *models)
{
    const char *const extra[] = {"--models", models, NULL};
    return devcli_start(home, workdir, models ? extra : NULL, NULL);
}

int main(void)
{
    char home[] = "/tmp/shoal-devmodels-XXXXXX", path[700], text[8192], out[1 << 14];
    char cmd[2048], err[512], dir_a[600], dir_b[600], env_a[700], env_b[700], shared[700];
    char models[700], pg_a[600], pg_b[600];
    assert_true(mkdtemp(home) != NULL);
    /* PostgreSQL runs as another user when we are root: it must reach here. */
    assert_true(chmod(home, 0755) == 0);
    snprintf(dir_a, sizeof(dir_a), "%s/a", home);
    snprintf(dir_b, sizeof(dir_b), "%s/b", home);
    snprintf(env_a, sizeof(env_a), "%s/dev.env", dir_a);
    snprintf(env_b, sizeof(env_b), "%s/dev.env", dir_b);
    snprintf(shared, sizeof(shared), "%s/dev.env", home);

    shoal_sim_conf_t sc;
    shoal_sim_conf_init(&sc);
    sc.latency_ms = 5;
    shoal_sim_t *sim = shoal_sim_new(&sc, err, sizeof(err));
    if (!sim)
        test_fail("could not start the simulator: %s", err);

    /* A models file naming one alias on our server, and a broken one. */
    snprintf(models, sizeof(models), "%s/models.json", home);
    snprintf(text, sizeof(text),
             "{\"models\": {\"local\": {\"provider\": \"openai\", \"endpoint\": "
             "\"http://127.0.0.1:%d/v1/chat/completions\", \"model\": \"local-model\"}}}\n",
             shoal_sim_port(sim));
    write_text(models, text);
    snprintf(path, sizeof(path), "%s/bad-models.json", home);
    write_text(path, "{\"models\": {\"local\": {\"provider\": \"openai\"}}}\n");
    snprintf(cmd, sizeof(cmd), "%s dev --workdir %s/never --models %s", harness_bin("shoal"), home,
             path);
    assert_int_eq(devcli_run(out, sizeof(out), home, cmd), 2);
    assert_str_contains(out, "cannot use models file");
    assert_str_contains(out, "models.local: missing required field \"endpoint\"");
    snprintf(path, sizeof(path), "%s/never", home);
    assert_true(access(path, F_OK) != 0);

    /* Stack A on our models file: no simulator of its own. */
    shoal_proc_t *a = start_dev(home, dir_a, models);
    read_text(env_a, text, sizeof(text));
    assert_str_contains(text, "export SHOAL_PG=");
    snprintf(path, sizeof(path), "export SHOAL_MODELS='%s'", models);
    assert_str_contains(text, path);
    assert_true(strstr(text, "SHOAL_SIM_URL") == NULL);
    snprintf(path, sizeof(path), "%s/logs/sim.log", dir_a);
    assert_true(access(path, F_OK) != 0);
    snprintf(pg_a, sizeof(pg_a), "%.*s", (int)strcspn(strstr(text, "export SHOAL_PG="), "\n"),
             strstr(text, "export SHOAL_PG="));

    /* Stack B alongside, on the simulator's models, in its own directory. */
    shoal_proc_t *b = start_dev(home, dir_b, NULL);
    read_text(env_b, text, sizeof(text));
    snprintf(path, sizeof(path), "export SHOAL_MODELS='%s/models.json'", dir_b);
    assert_str_contains(text, path);
    assert_str_contains(text, "export SHOAL_SIM_URL=");
    snprintf(pg_b, sizeof(pg_b), "%.*s", (int)strcspn(strstr(text, "export SHOAL_PG="), "\n"),
             strstr(text, "export SHOAL_PG="));
    assert_true(strcmp(pg_a, pg_b) != 0);
    snprintf(path, sizeof(path), "%s/pg", dir_a);
    assert_true(access(path, F_OK) == 0);
    snprintf(path, sizeof(path), "%s/pg", dir_b);
    assert_true(access(path, F_OK) == 0);
    /* The shared file names the stack started last. */
    read_text(shared, text, sizeof(text));
    assert_str_contains(text, pg_b);

    /* A job on "local", through stack A's own dev.env. */
    char *job = harness_job("via-models", 8, 2, "{\"model\": \"local\"}");
    snprintf(path, sizeof(path), "%s/job.json", home);
    write_text(path, job);
    free(job);
    snprintf(cmd, sizeof(cmd), "%s submit --wait %s", harness_bin("shoal"), path);
    int rc = devcli_run(out, sizeof(out), dir_a, cmd);
    if (rc != 0)
        test_fail("submit --wait exited %d:\n%s", rc, out);
    assert_str_contains(out, "job via-models completed: 4/4 tasks done");
    snprintf(cmd, sizeof(cmd), "%s results via-models", harness_bin("shoal"));
    assert_int_eq(devcli_run(out, sizeof(out), dir_a, cmd), 0);
    assert_str_contains(out, "item-00000");
    assert_str_contains(out, "item-00007");
    shoal_sim_stats_t st;
    shoal_sim_stats(sim, &st);
    assert_int_eq(st.requests, 4);
    assert_int_eq(st.by_status[200], 4);
    /* Stack B has its own database: the job is not there. */
    snprintf(cmd, sizeof(cmd), "%s status via-models", harness_bin("shoal"));
    assert_int_eq(devcli_run(out, sizeof(out), dir_b, cmd), 4);

    /* B stops: the shared file named B and names A again; A's own file stays. */
    devcli_stop(b);
    read_text(shared, text, sizeof(text));
    assert_str_contains(text, pg_a);
    assert_true(access(env_b, F_OK) != 0);
    assert_true(access(env_a, F_OK) == 0);
    /* A stops: its own file goes, and the shared one with nobody left. */
    devcli_stop(a);
    assert_true(access(env_a, F_OK) != 0);
    assert_true(access(shared, F_OK) != 0);

    shoal_sim_destroy(sim);
    assert_int_eq(shoal_workdir_remove(home), 0);
    fprintf(stderr, "ok\n");
    return 0;
}
