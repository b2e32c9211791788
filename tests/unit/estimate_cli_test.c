/*
 * `shoal estimate` on job files from tests/data/jobs, run in-process with
 * its standard output and error captured: the table and the JSON carry the
 * figures common/estimate computes for the same file and models, the
 * assumption flags reach them, and bad input ends with the documented exit
 * codes and reasons (invalid job 2, unreadable models file 1, bad flag 2).
 */
#include <fcntl.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "cli/commands.h"
#include "common/estimate.h"
#include "tests/support/capture.h"
#include "tests/support/check.h"

static char models_path[1024], jobs_dir[1024];

/* Runs shoal estimate with args (NULL-terminated); its stdout into *out and
 * stderr into *err (caller frees both). Returns the exit code. */
static int run(char **out, char **err, ...)
{
    char *argv[16] = {"estimate"};
    int argc = 1, rc;
    va_list ap;
    char tmpl[] = "/tmp/estimate_cli_test.XXXXXX";
    int fd = mkstemp(tmpl), saved = dup(1);

    va_start(ap, err);
    for (char *a; (a = va_arg(ap, char *)) != NULL && argc < 15;)
        argv[argc++] = a;
    va_end(ap);
    assert_true(fd >= 0 && saved >= 0);
    fflush(stdout);
    dup2(fd, 1);
    capture_stderr_begin();
    rc = shoal_cmd_estimate(argc, argv);
    fflush(stdout);
    fflush(stderr);
    *err = capture_stderr_end();
    dup2(saved, 1);
    close(saved);

    off_t n = lseek(fd, 0, SEEK_END);
    *out = calloc(1, (size_t)n + 1);
    assert_true(*out != NULL);
    assert_int_eq(pread(fd, *out, (size_t)n, 0), n);
    close(fd);
    unlink(tmpl);
    return rc;
}

static shoal_job_t *load_job(const char *path, const shoal_models_t *models)
{
    char err[512], *buf;
    FILE *f = fopen(path, "rb");
    long n;

    assert_true(f != NULL);
    fseek(f, 0, SEEK_END);
    n = ftell(f);
    fseek(f, 0, SEEK_SET);
    buf = malloc((size_t)n + 1);
    assert_true(buf != NULL && fread(buf, 1, (size_t)n, f) == (size_t)n);
    fclose(f);
    shoal_job_t *job = shoal_job_parse(buf, (size_t)n, 0, models, err, sizeof(err));
    if (!job)
        test_fail("%s: %s", path, err);
    free(buf);
    return job;
}

int main(void)
{
    const char *src = getenv("SHOAL_SOURCE_DIR");
    char path[1200], want[512], errbuf[512];
    char *out, *err;

    /* only what this test sets: no dev.env, no SHOAL_MODELS from outside */
    setenv("SHOAL_HOME", "/nonexistent-shoal-home", 1);
    unsetenv("SHOAL_MODELS");
    unsetenv("SHOAL_JSON");
    unsetenv("SHOAL_WORKERS");
    unsetenv("SHOAL_MAX_INFLIGHT");
    unsetenv("SHOAL_CALL_S");
    setenv("SHOAL_SIM_URL", "http://127.0.0.1:9", 1);
    snprintf(models_path, sizeof(models_path), "%s/tests/data/models.json", src ? src : ".");
    snprintf(jobs_dir, sizeof(jobs_dir), "%s/tests/data/jobs", src ? src : ".");
    shoal_models_t *models = shoal_models_load(models_path, errbuf, sizeof(errbuf));
    if (!models)
        test_fail("models: %s", errbuf);

    /* the table: the job's shape, then one row per model */
    snprintf(path, sizeof(path), "%s/valid/multi_item_chunks.json", jobs_dir);
    shoal_job_t *job = load_job(path, models);
    shoal_estimate_t e;
    assert_int_eq(shoal_estimate_job(job, models, NULL, &e, errbuf, sizeof(errbuf)), SHOAL_OK);
    assert_int_eq(run(&out, &err, "--models", models_path, path, NULL), SHOAL_EXIT_OK);
    snprintf(want, sizeof(want), "10 items in 4 chunks, 4 calls, about %ld prompt tokens",
             e.tokens_in);
    assert_str_contains(out, want);
    snprintf(want, sizeof(want), "%-16s %12ld %12ld %12ld %12.4f %12.4f", "sim-small", e.tokens_in,
             e.models[0].tokens_out, e.models[0].tokens_out_max, e.models[0].cost_usd,
             e.models[0].cost_max_usd);
    assert_str_contains(out, want);
    assert_str_contains(out, "1 worker x 256 calls in flight, 10.0s a call");
    assert_str_eq(err, "");
    free(out);
    free(err);
    shoal_job_destroy(job);

    /* JSON, with the fallback model and the assumption flags */
    snprintf(path, sizeof(path), "%s/valid/all_fields.json", jobs_dir);
    job = load_job(path, models);
    shoal_estimate_conf_t conf = {4, 8, 2.5};
    assert_int_eq(shoal_estimate_job(job, models, &conf, &e, errbuf, sizeof(errbuf)), SHOAL_OK);
    assert_int_eq(run(&out, &err, "--models", models_path, "--json", "--workers", "4",
                      "--max-inflight", "8", "--call-s", "2.5", path, NULL),
                  SHOAL_EXIT_OK);
    json_error_t je;
    json_t *doc = json_loads(out, 0, &je);
    if (!doc)
        test_fail("not JSON (%s): %s", je.text, out);
    assert_str_eq(json_string_value(json_object_get(doc, "job_id")), shoal_job_id(job));
    assert_int_eq(json_integer_value(json_object_get(doc, "calls")), shoal_job_n_chunks(job));
    assert_int_eq(json_integer_value(json_object_get(doc, "tokens_in")), shoal_job_est_tokens(job));
    json_t *as = json_object_get(doc, "assumptions");
    assert_int_eq(json_integer_value(json_object_get(as, "workers")), 4);
    assert_int_eq(json_integer_value(json_object_get(as, "inflight_per_worker")), 8);
    assert_true(json_number_value(json_object_get(as, "call_s")) == 2.5);
    json_t *ms = json_object_get(doc, "models");
    assert_int_eq(json_array_size(ms), e.n_models);
    assert_int_eq(e.n_models, 2);
    for (size_t i = 0; i < e.n_models; i++) {
        json_t *m = json_array_get(ms, i);
        assert_str_eq(json_string_value(json_object_get(m, "alias")), e.models[i].model->alias);
        assert_int_eq(json_integer_value(json_object_get(m, "tokens_out")), e.models[i].tokens_out);
        double cost = json_number_value(json_object_get(m, "cost_usd"));
        double dur = json_number_value(json_object_get(m, "duration_s"));
        if (cost < e.models[i].cost_usd * (1 - 1e-9) || cost > e.models[i].cost_usd * (1 + 1e-9))
            test_fail("model %zu: cost %.12g, want %.12g", i, cost, e.models[i].cost_usd);
        if (dur < e.models[i].duration_s - 1e-9 || dur > e.models[i].duration_s + 1e-9)
            test_fail("model %zu: duration %.12g, want %.12g", i, dur, e.models[i].duration_s);
    }
    assert_str_eq(json_string_value(json_object_get(json_array_get(ms, 1), "alias")), "sim-large");
    json_decref(doc);
    free(out);
    free(err);
    shoal_job_destroy(job);

    /* an invalid job: exit 2 with the reason */
    snprintf(path, sizeof(path), "%s/invalid/oversized_item.json", jobs_dir);
    assert_int_eq(run(&out, &err, "--models", models_path, path, NULL), SHOAL_EXIT_USAGE);
    assert_str_contains(err, "is not a valid job: items[3].input is about");
    assert_str_eq(out, "");
    free(out);
    free(err);

    /* no models file: exit 1, naming the file and where the path comes from */
    snprintf(path, sizeof(path), "%s/valid/minimal.json", jobs_dir);
    assert_int_eq(run(&out, &err, "--models", "/nonexistent/models.json", path, NULL),
                  SHOAL_EXIT_ERROR);
    assert_str_contains(err, "cannot load models file /nonexistent/models.json");
    free(out);
    free(err);

    /* the models file from the environment, as the scheduler reads it */
    setenv("SHOAL_MODELS", models_path, 1);
    assert_int_eq(run(&out, &err, path, NULL), SHOAL_EXIT_OK);
    assert_str_contains(out, "sim-small");
    unsetenv("SHOAL_MODELS");
    free(out);
    free(err);

    /* bad flags and --help */
    assert_int_eq(run(&out, &err, "--models", models_path, "--call-s", "0", path, NULL),
                  SHOAL_EXIT_USAGE);
    assert_str_contains(err, "--call-s");
    free(out);
    free(err);
    assert_int_eq(run(&out, &err, "--help", NULL), SHOAL_EXIT_OK);
    assert_str_contains(out, "usage: shoal estimate [options] FILE");
    assert_str_contains(out, "SHOAL_MODELS");
    free(out);
    free(err);

    shoal_models_destroy(models);
    printf("estimate_cli_test: ok\n");
    return 0;
}
