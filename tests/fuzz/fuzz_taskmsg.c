/*
 * Fuzz target: task messages (common/taskmsg.c), as a worker reads them from
 * Kafka. A message that parses has a task_id made of its job_id and chunk,
 * a chunk inside its job and 1 to 1000 items, and shoal_taskmsg_ids() agrees
 * with the parser; a message that does not parse says why.
 */
#include <string.h>

#include "common/taskmsg.h"
#include "tests/fuzz/fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char err[512], task_id[SHOAL_TASKMSG_ID_MAX], job_id[SHOAL_TASKMSG_ID_MAX];
    shoal_taskmsg_t t;

    err[0] = '\0';
    json_t *doc = shoal_taskmsg_parse(data, size, &t, err, sizeof(err));
    int ids = shoal_taskmsg_ids(data, size, task_id, sizeof(task_id), job_id, sizeof(job_id));
    if (!doc) {
        fuzz_check(err[0] != '\0');
        fuzz_check(t.task_id == NULL && t.items == NULL);
        return 0;
    }
    char want[SHOAL_TASKMSG_ID_MAX];
    fuzz_check(shoal_taskmsg_task_id(t.job_id, (size_t)t.chunk, want, sizeof(want)) == SHOAL_OK);
    fuzz_check(strcmp(want, t.task_id) == 0);
    fuzz_check(t.chunk >= 0 && t.chunk < t.n_chunks);
    fuzz_check(t.n_items >= 1 && t.n_items <= 1000);
    fuzz_check(json_array_size(t.items) == t.n_items);
    fuzz_check(t.max_attempts >= 1 && t.max_attempts <= 20);
    fuzz_check(t.prompt_template && strstr(t.prompt_template, "{{input}}"));
    fuzz_check(ids == 1);
    fuzz_check(strcmp(task_id, t.task_id) == 0 && strcmp(job_id, t.job_id) == 0);
    json_decref(doc);
    return 0;
}
