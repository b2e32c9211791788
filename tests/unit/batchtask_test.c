/*
 * A batch task's answer as the worker records it: answered items become
 * item rows and members of the task's output, missing, null and
 * schema-invalid ones are handed on whole, and an answer with nothing
 * usable is an invalid answer.
 */
#include "worker/batchtask.h"

#include <stdlib.h>
#include <string.h>

#include "common/jsonschema.h"
#include "tests/support/check.h"

static shoal_task_t *task3(int want_json, const json_t *schema)
{
    char err[256];
    shoal_task_t *t = calloc(1, sizeof(*t));
    assert_true(t != NULL);
    t->task_id = "j1:000002";
    t->job_id = "j1";
    t->batch = 1;
    t->want_json = want_json;
    t->items = json_pack("[{s:s, s:s}, {s:s, s:s}, {s:s, s:s}]", "id", "a", "input", "x", "id", "b",
                         "input", "y", "id", "c", "input", "z");
    if (schema) {
        t->schema = shoal_jsonschema_new(schema, err, sizeof(err));
        assert_true(t->schema != NULL);
    }
    return t;
}

static void task_free(shoal_task_t *t)
{
    json_decref(t->items);
    shoal_jsonschema_destroy(t->schema);
    free(t);
}

static void test_some_missing(void)
{
    shoal_task_t *t = task3(0, NULL);
    shoal_batchtask_answer_t a;
    char why[256] = "";

    assert_int_eq(shoal_batchtask_read(t, "{\"a\": \"one\", \"c\": null}", "sim-small", "w1", &a,
                                       why, sizeof(why)),
                  SHOAL_OK);
    assert_int_eq(a.n, 3);
    assert_int_eq(a.answered, 1);
    assert_str_eq(a.output, "{\"a\":\"one\"}");
    /* the item rows splice into one array */
    size_t len = a.item_rows_len + 3;
    char *arr = malloc(len);
    snprintf(arr, len, "[%s]", a.item_rows);
    json_t *rows = json_loads(arr, 0, NULL);
    free(arr);
    assert_int_eq(json_array_size(rows), 1);
    json_t *r0 = json_array_get(rows, 0);
    assert_str_eq(json_string_value(json_object_get(r0, "item_id")), "a");
    assert_str_eq(json_string_value(json_object_get(r0, "task_id")), "j1:000002");
    assert_str_eq(json_string_value(json_object_get(r0, "job_id")), "j1");
    assert_str_eq(json_string_value(json_object_get(r0, "output")), "one");
    assert_str_eq(json_string_value(json_object_get(r0, "model")), "sim-small");
    assert_str_eq(json_string_value(json_object_get(r0, "worker_id")), "w1");
    json_decref(rows);
    /* b (absent) and c (null) go on, whole and in order */
    assert_int_eq(json_array_size(a.missing), 2);
    assert_str_eq(json_string_value(json_object_get(json_array_get(a.missing, 0), "id")), "b");
    assert_str_eq(json_string_value(json_object_get(json_array_get(a.missing, 1), "input")), "z");
    shoal_batchtask_answer_clear(&a);
    assert_true(a.output == NULL && a.missing == NULL && a.item_rows == NULL);
    task_free(t);
}

static void test_all_answered_json(void)
{
    json_t *sch = json_pack("{s:s, s:[s]}", "type", "object", "required", "n");
    shoal_task_t *t = task3(1, sch);
    shoal_batchtask_answer_t a;
    char why[256] = "";

    assert_int_eq(shoal_batchtask_read(t,
                                       "{\"a\": {\"n\": 1}, \"b\": {\"n\": 2}, \"c\": {\"n\": 3}}",
                                       "m", "w", &a, why, sizeof(why)),
                  SHOAL_OK);
    assert_int_eq(a.answered, 3);
    assert_true(a.missing == NULL);
    /* JSON answers stay JSON in the task's output */
    json_t *out = json_loads(a.output, 0, NULL);
    assert_int_eq(json_integer_value(json_object_get(json_object_get(out, "b"), "n")), 2);
    json_decref(out);
    shoal_batchtask_answer_clear(&a);

    /* one breaks the schema: it is missing, with the reason */
    assert_int_eq(shoal_batchtask_read(t,
                                       "{\"a\": {\"n\": 1}, \"b\": {\"m\": 2}, \"c\": {\"n\": 3}}",
                                       "m", "w", &a, why, sizeof(why)),
                  SHOAL_OK);
    assert_int_eq(a.answered, 2);
    assert_int_eq(json_array_size(a.missing), 1);
    assert_str_contains(why, "does not match the schema");
    shoal_batchtask_answer_clear(&a);
    json_decref(sch);
    task_free(t);
}

static void test_nothing_usable(void)
{
    shoal_task_t *t = task3(0, NULL);
    shoal_batchtask_answer_t a;
    char why[256] = "";

    assert_int_eq(shoal_batchtask_read(t, "I cannot do that", "m", "w", &a, why, sizeof(why)),
                  SHOAL_ERR_INVALID);
    assert_str_contains(why, "not a JSON object");
    assert_true(a.output == NULL && a.missing == NULL && a.item_rows == NULL);
    assert_int_eq(a.n, 3);
    assert_int_eq(shoal_batchtask_read(t, "{\"zz\": \"other\"}", "m", "w", &a, why, sizeof(why)),
                  SHOAL_ERR_INVALID);
    assert_str_contains(why, "no answer for item a");
    task_free(t);
}

int main(void)
{
    test_some_missing();
    test_all_answered_json();
    test_nothing_usable();
    printf("batchtask_test: ok\n");
    return 0;
}
