/*
 * Gathering batch tasks' leftovers into sub-tasks: leftovers of one job
 * share sub-tasks up to the largest parent's item count and tokens, jobs
 * never mix, a parent is never divided, ids come from the smallest parent
 * one level down and are valid task ids, and the message is the parent's
 * with only the items handed on.
 */
#include "worker/split.h"

#include <stdlib.h>
#include <string.h>

#include "common/subtask.h"
#include "common/taskmsg.h"
#include "tests/support/check.h"

/* A batch task message of job with n items "<tag>0".."<tag>n-1". */
static json_t *msg(const char *job, long chunk, const char *task_id, int n, const char *tag,
                   long est)
{
    json_t *items = json_array();
    for (int i = 0; i < n; i++) {
        char id[32];
        snprintf(id, sizeof(id), "%s%d", tag, i);
        json_array_append_new(items, json_pack("{s:s, s:s}", "id", id, "input", "in"));
    }
    json_t *m =
        json_pack("{s:i, s:s, s:s, s:s, s:I, s:i, s:s, s:s, s:s, s:o, s:I, s:s}", "v", 2, "mode",
                  "batch", "task_id", task_id, "job_id", job, "chunk", (json_int_t)chunk,
                  "n_chunks", 100, "model", "sim-small", "priority", "normal", "prompt_template",
                  "{{input}}", "items", items, "est_tokens", (json_int_t)est, "cache_key", "00");
    json_t *rest = json_pack("{s:s, s:[], s:{s:s}, s:i, s:i}", "tenant", "t", "fallback_models",
                             "output", "format", "text", "max_attempts", 3, "timeout_ms", 1000);
    json_object_update(m, rest);
    json_decref(rest);
    return m;
}

/* The first k items of m, as leftovers. */
static json_t *first_items(const json_t *m, size_t k)
{
    json_t *out = json_array();
    for (size_t i = 0; i < k; i++)
        json_array_append(out, json_array_get(json_object_get(m, "items"), i));
    return out;
}

static json_t *subs; /* what emit saw: [{task_id, row, msg, prio}] */

static void emit(shoal_split_sub_t *sub, void *arg)
{
    (void)arg;
    json_t *row = json_loads(sub->row, 0, NULL), *m = json_loads(sub->msg, 0, NULL);
    assert_true(row != NULL && m != NULL);
    assert_int_eq(sub->row_len, strlen(sub->row));
    assert_int_eq(sub->msg_len, strlen(sub->msg));
    json_array_append_new(subs, json_pack("{s:s, s:o, s:o, s:i, s:I}", "task_id", sub->task_id,
                                          "row", row, "msg", m, "prio", sub->prio, "n",
                                          (json_int_t)sub->n_items));
}

static void add(shoal_split_t *sp, json_t *m, size_t k, int prio)
{
    char err[256];
    assert_int_eq(shoal_split_add(sp, m, first_items(m, k), prio, err, sizeof(err)), SHOAL_OK);
}

static void test_grouping(void)
{
    shoal_split_t *sp = shoal_split_new();
    size_t dropped = 99;
    subs = json_array();

    /* job A: chunks of 10 items (est 1000); leftovers 2, 3, 4, 5 -> 2+3+4
     * fit under 10, 5 does not; job B's leftovers go alone */
    add(sp, msg("A", 7, "A:000007", 10, "g", 1000), 2, 1);
    add(sp, msg("B", 0, "B:000000", 4, "h", 400), 1, 2);
    add(sp, msg("A", 3, "A:000003", 10, "e", 1000), 3, 1);
    add(sp, msg("A", 5, "A:000005.2", 10, "f", 1000), 4, 1);
    add(sp, msg("A", 9, "A:000009", 10, "k", 1000), 5, 1);
    assert_int_eq(shoal_split_pending(sp), 5);
    assert_int_eq(shoal_split_flush(sp, emit, NULL, &dropped), 3);
    assert_int_eq(dropped, 0);
    assert_int_eq(shoal_split_pending(sp), 0);
    assert_int_eq(json_array_size(subs), 3);

    /* first group: A:000007, A:000003, A:000005.2; the smallest id is
     * A:000003 (level 0) -> A:000003.1, chunk 3, its parent first */
    json_t *g = json_array_get(subs, 0), *row = json_object_get(g, "row"),
           *m = json_object_get(g, "msg");
    assert_str_eq(json_string_value(json_object_get(g, "task_id")), "A:000003.1");
    assert_int_eq(json_integer_value(json_object_get(g, "n")), 9);
    assert_int_eq(json_integer_value(json_object_get(g, "prio")), 1);
    assert_int_eq(json_integer_value(json_object_get(row, "chunk")), 3);
    json_t *parents = json_object_get(row, "parents");
    assert_int_eq(json_array_size(parents), 3);
    assert_str_eq(json_string_value(json_object_get(json_array_get(parents, 0), "task_id")),
                  "A:000003");
    assert_int_eq(json_array_size(json_object_get(json_array_get(parents, 0), "item_ids")), 3);
    assert_str_eq(json_string_value(json_object_get(json_array_get(parents, 1), "task_id")),
                  "A:000007");
    /* est: 1000 * (2 + 3 + 4) / 10 */
    assert_int_eq(json_integer_value(json_object_get(row, "est_tokens")), 900);
    /* the message: a valid version-2 task of chunk 3 with the nine items */
    char *text = json_dumps(m, JSON_COMPACT), err[256];
    shoal_taskmsg_t tm;
    json_t *doc = shoal_taskmsg_parse(text, strlen(text), &tm, err, sizeof(err));
    free(text);
    if (!doc)
        test_fail("sub-task message refused: %s", err);
    assert_int_eq(tm.split_level, 1);
    assert_int_eq(tm.n_items, 9);
    assert_str_eq(tm.mode, "batch");
    assert_true(tm.cache_key == NULL); /* a sub-task is not a cache entry */
    assert_str_eq(json_string_value(json_object_get(json_array_get(tm.items, 0), "id")), "e0");
    assert_str_eq(json_string_value(json_object_get(json_array_get(tm.items, 3), "id")), "g0");
    json_decref(doc);

    /* job B alone, then A:000009's 5 (no room left in the first) */
    g = json_array_get(subs, 1);
    assert_str_eq(json_string_value(json_object_get(g, "task_id")), "B:000000.1");
    assert_int_eq(json_integer_value(json_object_get(g, "prio")), 2);
    g = json_array_get(subs, 2);
    assert_str_eq(json_string_value(json_object_get(g, "task_id")), "A:000009.1");
    assert_int_eq(json_integer_value(json_object_get(g, "n")), 5);
    json_decref(subs);
    shoal_split_destroy(sp);
}

static void test_levels(void)
{
    shoal_split_t *sp = shoal_split_new();
    char err[256];
    subs = json_array();

    /* a sub-task's leftovers: one level down from its own */
    add(sp, msg("A", 3, "A:000003.41", 6, "e", 60), 2, 0);
    assert_int_eq(shoal_split_flush(sp, emit, NULL, NULL), 1);
    assert_str_eq(json_string_value(json_object_get(json_array_get(subs, 0), "task_id")),
                  "A:000003.42");
    assert_true(shoal_split_can(SHOAL_TASKMSG_SPLIT_MAX - 1));
    assert_true(!shoal_split_can(SHOAL_TASKMSG_SPLIT_MAX));

    /* at the deepest level it cannot split; a context task is refused */
    char deep[64];
    snprintf(deep, sizeof(deep), "A:000003.%d", SHOAL_TASKMSG_SPLIT_MAX);
    json_t *m = msg("A", 3, deep, 6, "e", 60);
    assert_int_eq(shoal_split_add(sp, m, first_items(m, 1), 0, err, sizeof(err)), SHOAL_ERR_LIMIT);
    m = msg("A", 3, "A:000003", 6, "e", 60);
    json_object_set_new(m, "mode", json_string("context"));
    assert_int_eq(shoal_split_add(sp, m, first_items(m, 1), 0, err, sizeof(err)),
                  SHOAL_ERR_INVALID);
    assert_int_eq(shoal_split_pending(sp), 0);
    json_decref(subs);
    shoal_split_destroy(sp);
}

/* The reconciler's rebuild: items found by id across the job, in order. */
static void test_subtask_items(void)
{
    char err[256];
    const char *text = "{\"job_id\": \"J\", \"tenant\": \"t\", \"model\": \"sim-small\", "
                       "\"answer_mode\": \"batch\", "
                       "\"prompt_template\": \"{{input}}\", \"items\": [{\"id\": \"a\", "
                       "\"input\": \"1\"}, {\"id\": \"b\", \"input\": \"2\"}, {\"id\": \"c\", "
                       "\"input\": \"3\"}]}";
    shoal_job_t *job = shoal_job_parse(text, strlen(text), 0, NULL, err, sizeof(err));
    if (!job)
        test_fail("job refused: %s", err);
    json_t *ids = json_pack("[s, s, s]", "c", "zz", "a");
    size_t missing = 0;
    json_t *items = shoal_subtask_items(job, NULL, ids, &missing);
    assert_int_eq(json_array_size(items), 2);
    assert_int_eq(missing, 1);
    assert_str_eq(json_string_value(json_object_get(json_array_get(items, 0), "input")), "3");
    json_t *base = shoal_taskmsg_build(job, 0, err, sizeof(err));
    assert_true(base != NULL);
    json_t *m = shoal_subtask_message(base, "J:000000.1", items, 5, err, sizeof(err));
    assert_true(m != NULL);
    assert_int_eq(json_array_size(json_object_get(m, "items")), 2);
    assert_str_eq(json_string_value(json_object_get(m, "task_id")), "J:000000.1");
    json_t *none = json_array();
    assert_true(shoal_subtask_message(base, "J:000000.1", none, 5, err, sizeof(err)) == NULL);
    json_decref(none);
    json_decref(m);
    json_decref(base);
    json_decref(items);
    json_decref(ids);
    shoal_job_destroy(job);
}

int main(void)
{
    test_grouping();
    test_levels();
    test_subtask_items();
    printf("split_test: ok\n");
    return 0;
}
