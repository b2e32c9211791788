/*
 * The CLI's part planner: a job too large for one message is cut into parts,
 * and since a chunk never spans parts, a part ends after a whole number of
 * chunking.max_items items wherever it can, so the parts add no short chunks
 * (a 1,000,000-item job at max_items 10 stays within the 100,000 chunks a
 * job may have). With group_by, parts are cut by size alone.
 */
#include "cli/partsubmit.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tests/support/check.h"

/* A job of n items of about 40 bytes each. */
static char *job_text(size_t n, int max_items, int group_by)
{
    size_t cap = 512 + n * 64, o = 0;
    char *t = malloc(cap);
    assert_true(t != NULL);
    o += (size_t)snprintf(t + o, cap - o,
                          "{\"tenant\":\"t\",\"model\":\"sim-small\",\"prompt_template\":"
                          "\"{{input}}\",\"chunking\":{\"max_items\":%d%s},\"items\":[",
                          max_items, group_by ? ",\"group_by\":\"group\"" : "");
    for (size_t i = 0; i < n; i++)
        o += (size_t)snprintf(t + o, cap - o, "%s{\"id\":\"item-%05zu\",\"input\":\"text %05zu\"}",
                              i ? "," : "", i, i);
    snprintf(t + o, cap - o, "]}");
    return t;
}

static shoal_partsubmit_t *plan(const char *text, const shoal_models_t *models, size_t bytes)
{
    char err[512];
    shoal_err_t e;
    shoal_partsubmit_t *p =
        shoal_partsubmit_new(text, strlen(text), "j-parts", models, bytes, 1, &e, err, sizeof(err));
    if (!p)
        test_fail("partsubmit: %s", err);
    return p;
}

int main(void)
{
    char err[512], path[1024];
    snprintf(path, sizeof(path), "%s/tests/data/models.json", SHOAL_SOURCE_DIR);
    setenv("SHOAL_SIM_URL", "http://127.0.0.1:1", 1);
    shoal_models_t *models = shoal_models_load(path, err, sizeof(err));
    if (!models)
        test_fail("models: %s", err);

    /* 995 items of about 45 bytes, parts of about 1,000 bytes: about 22
     * items fit a part, so a cut by size alone would end most parts
     * mid-chunk. */
    char *text = job_text(995, 10, 0);
    shoal_partsubmit_t *p = plan(text, models, 1000);
    assert_int_eq((long)shoal_partsubmit_items(p), 995);
    assert_true(shoal_partsubmit_parts(p) >= 40);
    assert_int_eq((long)shoal_partsubmit_chunks(p), 100); /* ceil(995 / 10): no short chunks */
    shoal_partsubmit_destroy(p);
    free(text);

    /* max_items 1: every cut is whole */
    text = job_text(300, 1, 0);
    p = plan(text, models, 1000);
    assert_int_eq((long)shoal_partsubmit_chunks(p), 300);
    shoal_partsubmit_destroy(p);
    free(text);

    /* with group_by (every item its own group here: none set), cut by size */
    text = job_text(995, 10, 1);
    p = plan(text, models, 1000);
    assert_int_eq((long)shoal_partsubmit_items(p), 995);
    assert_true(shoal_partsubmit_chunks(p) > 100);
    shoal_partsubmit_destroy(p);
    free(text);

    shoal_models_destroy(models);
    printf("partsubmit_test: ok\n");
    return 0;
}
