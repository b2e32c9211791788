/*
 * Reading a batch-mode task's answer (see batchtask.h).
 */
#include "worker/batchtask.h"

#include <stdlib.h>
#include <string.h>

#include "common/itembatch.h"
#include "common/jsonschema.h"
#include "common/jsontext.h"

/* An item row is its output plus a few short fields; outputs are at most
 * the 16 MiB of an answer. */
#define ROWS_TEXT_MAX ((size_t)64 << 20)

void shoal_batchtask_answer_clear(shoal_batchtask_answer_t *a)
{
    free(a->output);
    free(a->item_rows);
    json_decref(a->missing);
    memset(a, 0, sizeof(*a));
}

/* One item's answer as a member of the task's output object: the JSON it is
 * for JSON output, else the text. */
static json_t *answer_value(const char *output, int want_json)
{
    json_t *v = want_json ? json_loads(output, JSON_DECODE_ANY, NULL) : NULL;
    return v ? v : json_string(output);
}

shoal_err_t shoal_batchtask_read(const shoal_task_t *t, const char *content, const char *model,
                                 const char *worker_id, shoal_batchtask_answer_t *out, char *why,
                                 size_t whylen)
{
    size_t n = json_array_size(t->items);
    char **outputs = calloc(n ? n : 1, sizeof(*outputs));
    json_t *obj = json_object();
    shoal_jsontext_t rows;
    shoal_err_t err = SHOAL_OK;

    memset(out, 0, sizeof(*out));
    out->n = n;
    shoal_jsontext_init(&rows, ROWS_TEXT_MAX);
    if (!outputs || !obj) {
        err = shoal_err_set(why, whylen, SHOAL_ERR_NOMEM, "out of memory");
        goto done;
    }
    out->answered =
        shoal_itembatch_parse(content, t->items, t->want_json, t->schema, outputs, why, whylen);
    if (out->answered == 0) {
        if (!why[0])
            shoal_err_set(why, whylen, SHOAL_ERR_INVALID, "no item answered");
        err = SHOAL_ERR_INVALID;
        goto done;
    }
    for (size_t i = 0; i < n && err == SHOAL_OK; i++) {
        json_t *item = json_array_get(t->items, i);
        const char *id = json_string_value(json_object_get(item, "id"));
        if (!outputs[i]) {
            if ((!out->missing && !(out->missing = json_array())) ||
                json_array_append(out->missing, item))
                err = SHOAL_ERR_NOMEM;
            continue;
        }
        if (json_object_set_new(obj, id, answer_value(outputs[i], t->want_json))) {
            err = SHOAL_ERR_NOMEM;
            break;
        }
        if (rows.len > 0)
            shoal_jsontext_raw(&rows, ",", 1);
        shoal_jsontext_open(&rows);
        /* an output that is not valid UTF-8 would be refused by jansson
         * too: the item counts as missing then (below) */
        int bad = shoal_jsontext_key_str(&rows, "job_id", t->job_id) |
                  shoal_jsontext_key_str(&rows, "item_id", id) |
                  shoal_jsontext_key_str(&rows, "task_id", t->task_id) |
                  shoal_jsontext_key_str(&rows, "output", outputs[i]) |
                  shoal_jsontext_key_str(&rows, "model", model) |
                  shoal_jsontext_key_str(&rows, "worker_id", worker_id);
        shoal_jsontext_close(&rows);
        if (bad)
            err = SHOAL_ERR_INVALID;
    }
    if (err == SHOAL_ERR_INVALID) {
        err = shoal_err_set(why, whylen, SHOAL_ERR_INVALID, "an item's answer is not valid text");
        goto done;
    }
    if (err != SHOAL_OK) {
        err = shoal_err_set(why, whylen, SHOAL_ERR_NOMEM, "out of memory");
        goto done;
    }
    out->output = json_dumps(obj, JSON_COMPACT);
    out->item_rows = shoal_jsontext_detach(&rows, &out->item_rows_len);
    if (!out->output || !out->item_rows)
        err = shoal_err_set(why, whylen, SHOAL_ERR_NOMEM, "out of memory");
done:
    for (size_t i = 0; outputs && i < n; i++)
        free(outputs[i]);
    free(outputs);
    json_decref(obj);
    shoal_jsontext_free(&rows);
    if (err != SHOAL_OK) {
        size_t asked = out->n, answered = out->answered;
        shoal_batchtask_answer_clear(out);
        out->n = asked;
        out->answered = err == SHOAL_ERR_INVALID ? 0 : answered;
    }
    return err;
}
