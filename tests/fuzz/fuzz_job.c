/*
 * Fuzz target: job messages (common/job.c, common/jobcheck.c) against the
 * models of tests/data/models.json. A job that parses must also cut into task
 * messages that common/taskmsg.c parses back with the job's id, chunk and
 * chunk count; a job that does not parse must say why.
 */
#include <stdlib.h>
#include <string.h>

#include "common/job.h"
#include "common/models.h"
#include "common/taskmsg.h"
#include "tests/fuzz/fuzz.h"

#define MAX_JOB_BYTES (1u << 20)

static const shoal_models_t *models(void)
{
    static shoal_models_t *m;
    if (!m) {
        char err[512];
        /* The models file points at the simulator; any URL will do here. */
        setenv("SHOAL_SIM_URL", "http://127.0.0.1:9", 0);
        m = shoal_models_load(SHOAL_SOURCE_DIR "/tests/data/models.json", err, sizeof(err));
        if (!m) {
            fprintf(stderr, "fuzz_job: cannot load the models file: %s\n", err);
            abort();
        }
    }
    return m;
}

static void check_tasks(shoal_job_t *job)
{
    char err[512];
    if (!shoal_job_id(job))
        fuzz_check(shoal_job_set_id(job, "fuzz-job") == SHOAL_OK);
    json_t *all = shoal_taskmsg_build_all(job, err, sizeof(err));
    fuzz_check(all != NULL);
    fuzz_check(json_array_size(all) == shoal_job_n_chunks(job));
    for (size_t i = 0; i < json_array_size(all); i++) {
        char *text = json_dumps(json_array_get(all, i), JSON_COMPACT);
        fuzz_check(text != NULL);
        shoal_taskmsg_t t;
        json_t *doc = shoal_taskmsg_parse(text, strlen(text), &t, err, sizeof(err));
        if (!doc)
            fprintf(stderr, "task message %zu does not parse back: %s\n", i, err);
        fuzz_check(doc != NULL);
        fuzz_check(strcmp(t.job_id, shoal_job_id(job)) == 0);
        fuzz_check(t.chunk == (long)i);
        fuzz_check(t.n_chunks == (long)shoal_job_n_chunks(job));
        json_decref(doc);
        free(text);
    }
    json_decref(all);
    json_t *settings = shoal_job_settings(job);
    fuzz_check(settings != NULL);
    fuzz_check(json_object_get(settings, "items") == NULL);
    json_decref(settings);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char err[512];
    err[0] = '\0';
    shoal_job_t *job =
        shoal_job_parse((const char *)data, size, MAX_JOB_BYTES, models(), err, sizeof(err));
    if (!job) {
        fuzz_check(err[0] != '\0');
        return 0;
    }
    check_tasks(job);
    shoal_job_destroy(job);
    return 0;
}
