/*
 * Sub-task messages (see subtask.h).
 */
#include "common/subtask.h"

#include <string.h>

#include "common/err.h"
#include "common/taskmsg.h"

json_t *shoal_subtask_message(const json_t *base, const char *task_id, json_t *items,
                              long est_tokens, char *errbuf, size_t errlen)
{
    json_t *t, *v;
    const char *key;

    if (json_array_size(items) == 0) {
        shoal_err_set(errbuf, errlen, SHOAL_ERR_INVALID, "a sub-task needs at least one item");
        return NULL;
    }
    if (!(t = json_object()))
        goto nomem;
    json_object_foreach((json_t *)base, key, v)
    {
        if (strcmp(key, "items") != 0 && strcmp(key, "cache_key") != 0 &&
            json_object_set(t, key, v))
            goto nomem;
    }
    if (json_object_set(t, "items", items) ||
        json_object_set_new(t, "v", json_integer(SHOAL_TASKMSG_VERSION_MAX)) ||
        json_object_set_new(t, "task_id", json_string(task_id)) ||
        json_object_set_new(t, "est_tokens", json_integer(est_tokens > 0 ? est_tokens : 0)))
        goto nomem;
    return t;
nomem:
    json_decref(t);
    shoal_err_set(errbuf, errlen, SHOAL_ERR_NOMEM, "out of memory");
    return NULL;
}

json_t *shoal_subtask_index(const shoal_job_t *job)
{
    const json_t *all = json_object_get(shoal_job_json(job), "items");
    json_t *by_id = json_object(), *src;
    size_t i;

    json_array_foreach(all, i, src)
    {
        const char *id = json_string_value(json_object_get(src, "id"));
        if (by_id && id && json_object_set_new(by_id, id, json_integer((json_int_t)i))) {
            json_decref(by_id);
            by_id = NULL;
        }
    }
    return by_id;
}

json_t *shoal_subtask_items(const shoal_job_t *job, const json_t *index, const json_t *ids,
                            size_t *missing)
{
    const json_t *all = json_object_get(shoal_job_json(job), "items");
    json_t *own = index ? NULL : shoal_subtask_index(job), *out = json_array(), *idv;
    const json_t *by_id = index ? index : own;
    size_t i, lost = 0;

    if (!by_id || !out)
        goto nomem;
    json_array_foreach(ids, i, idv)
    {
        json_t *at = json_is_string(idv) ? json_object_get(by_id, json_string_value(idv)) : NULL;
        if (!at) {
            lost++;
            continue;
        }
        const json_t *src = json_array_get(all, (size_t)json_integer_value(at));
        json_t *item = json_object(), *model = json_object_get(src, "model"),
               *body = json_object_get(src, "body");
        if (json_array_append_new(out, item) ||
            json_object_set(item, "id", json_object_get(src, "id")) ||
            json_object_set(item, "input", json_object_get(src, "input")) ||
            (model && json_object_set(item, "model", model)) ||
            (body && json_object_set(item, "body", body)))
            goto nomem;
    }
    json_decref(own);
    if (missing)
        *missing = lost;
    return out;
nomem:
    json_decref(own);
    json_decref(out);
    return NULL;
}
