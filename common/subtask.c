/*
 * Sub-task messages (see subtask.h).
 */
#include "common/subtask.h"

#include <stdlib.h>
#include <string.h>

#include "common/err.h"
#include "common/taskmsg.h"

json_t *shoal_subtask_message(const json_t *base, const char *task_id, json_t *items,
                              long est_tokens, char *errbuf, size_t errlen)
{
    size_t n = json_array_size(json_object_get(base, "items"));
    unsigned char *keep = NULL;
    json_t *t = NULL;

    if (json_array_size(items) == 0 || n == 0) {
        shoal_err_set(errbuf, errlen, SHOAL_ERR_INVALID, "a sub-task needs at least one item");
        return NULL;
    }
    /* base's fields as a sub-task of it, then this sub-task's own items */
    if ((keep = malloc(n)) != NULL) {
        memset(keep, 1, n);
        t = shoal_taskmsg_build_subtask(base, task_id, keep, errbuf, errlen);
        free(keep);
    }
    if (t && (json_object_set(t, "items", items) ||
              json_object_set_new(t, "est_tokens", json_integer(est_tokens > 0 ? est_tokens : 0)) ||
              (json_object_get(t, "cache_key") && json_object_del(t, "cache_key")))) {
        json_decref(t);
        t = NULL;
    }
    if (!t)
        shoal_err_set(errbuf, errlen, SHOAL_ERR_NOMEM, "out of memory");
    return t;
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
        if (json_array_append_new(
                out, shoal_taskmsg_item(json_array_get(all, (size_t)json_integer_value(at)))))
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
