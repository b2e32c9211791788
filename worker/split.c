/*
 * Gathering batch tasks' leftovers into sub-tasks (see split.h).
 */
#include "worker/split.h"

#include <stdlib.h>
#include <string.h>

#include "common/subtask.h"
#include "common/taskmsg.h"

struct left {
    json_t *msg;                  /* the parent's whole message */
    json_t *missing;              /* its items left out */
    const char *task_id, *job_id; /* borrowed from msg */
    long level, n_items, est;
    int prio;
    int used; /* already in a group of this flush */
};

struct shoal_split {
    struct left *v;
    size_t n, cap;
};

shoal_split_t *shoal_split_new(void)
{
    return calloc(1, sizeof(shoal_split_t));
}

static void clear(shoal_split_t *sp)
{
    for (size_t i = 0; i < sp->n; i++) {
        json_decref(sp->v[i].msg);
        json_decref(sp->v[i].missing);
    }
    sp->n = 0;
}

void shoal_split_destroy(shoal_split_t *sp)
{
    if (!sp)
        return;
    clear(sp);
    free(sp->v);
    free(sp);
}

int shoal_split_can(long split_level)
{
    return split_level >= 0 && split_level < SHOAL_TASKMSG_SPLIT_MAX;
}

/* The split level a task_id carries: 0 for a chunk's, else the number after
 * the chunk's id ("<job_id>:<6 digits>.<level>"). */
static long level_of(const char *task_id)
{
    const char *dot = strrchr(task_id, '.');
    if (!dot || dot - task_id < 8 || dot[-7] != ':' || strspn(dot - 6, "0123456789") != 6)
        return 0;
    return strtol(dot + 1, NULL, 10);
}

shoal_err_t shoal_split_add(shoal_split_t *sp, json_t *msg, json_t *missing, int prio, char *errbuf,
                            size_t errlen)
{
    const char *task_id = json_string_value(json_object_get(msg, "task_id"));
    const char *job_id = json_string_value(json_object_get(msg, "job_id"));
    const char *mode = json_string_value(json_object_get(msg, "mode"));
    size_t n_items = json_array_size(json_object_get(msg, "items"));
    shoal_err_t err = SHOAL_OK;

    if (!task_id || !job_id || !mode || strcmp(mode, "batch") != 0 || n_items == 0 ||
        json_array_size(missing) == 0 || json_array_size(missing) > n_items)
        err = shoal_err_set(errbuf, errlen, SHOAL_ERR_INVALID, "not the leftovers of a batch task");
    else if (!shoal_split_can(level_of(task_id)))
        err = shoal_err_set(errbuf, errlen, SHOAL_ERR_LIMIT,
                            "task %s is split %d times already: it cannot split again", task_id,
                            SHOAL_TASKMSG_SPLIT_MAX);
    if (err == SHOAL_OK && sp->n == sp->cap) {
        size_t ncap = sp->cap ? sp->cap * 2 : 64;
        struct left *nv = realloc(sp->v, ncap * sizeof(*nv));
        if (!nv)
            err = shoal_err_set(errbuf, errlen, SHOAL_ERR_NOMEM, "out of memory");
        else {
            sp->v = nv;
            sp->cap = ncap;
        }
    }
    if (err != SHOAL_OK) {
        json_decref(msg);
        json_decref(missing);
        return err;
    }
    struct left *l = &sp->v[sp->n++];
    l->msg = msg;
    l->missing = missing;
    l->task_id = task_id;
    l->job_id = job_id;
    l->level = level_of(task_id);
    l->n_items = (long)n_items;
    l->est = (long)json_integer_value(json_object_get(msg, "est_tokens"));
    l->prio = prio;
    l->used = 0;
    return SHOAL_OK;
}

size_t shoal_split_pending(const shoal_split_t *sp)
{
    return sp->n;
}

/* The estimated tokens of l's leftovers: its estimate in proportion. */
static long left_est(const struct left *l)
{
    return (long)((double)l->est * (double)json_array_size(l->missing) / (double)l->n_items);
}

/* The members of one group (indexes into sp->v) into a sub-task; 0 when out
 * of memory. */
static int build(shoal_split_t *sp, const size_t *mem, size_t nmem, shoal_split_sub_t *sub,
                 char *id, size_t idlen)
{
    char errbuf[128];
    const struct left *first = &sp->v[mem[0]];
    json_t *items = json_array(), *parents = json_array(), *row = NULL, *msg = NULL;
    long est = 0;
    int ok = 0;

    for (size_t k = 1; k < nmem; k++)
        if (strcmp(sp->v[mem[k]].task_id, first->task_id) < 0)
            first = &sp->v[mem[k]];
    if (!items || !parents ||
        shoal_taskmsg_subtask_id(first->task_id, first->level + 1, id, idlen) != SHOAL_OK)
        goto out;
    /* the first parent first: the database makes it the parent_task_id */
    for (size_t k = 0; k <= nmem; k++) {
        const struct left *l = k == 0 ? first : &sp->v[mem[k - 1]];
        if (k > 0 && l == first)
            continue;
        json_t *ids = json_array(), *item;
        size_t i;
        json_array_foreach(l->missing, i, item)
        {
            if (json_array_append(items, item) ||
                json_array_append(ids, json_object_get(item, "id")))
                break;
        }
        if (json_array_size(ids) != json_array_size(l->missing)) {
            json_decref(ids);
            goto out;
        }
        if (json_array_append_new(parents,
                                  json_pack("{s:s, s:o}", "task_id", l->task_id, "item_ids", ids)))
            goto out;
        est += left_est(l);
    }
    if (!(msg = shoal_subtask_message(first->msg, id, items, est, errbuf, sizeof(errbuf))) ||
        !(row = json_pack("{s:s, s:s, s:O, s:I, s:O}", "task_id", id, "job_id", first->job_id,
                          "chunk", json_object_get(first->msg, "chunk"), "est_tokens",
                          (json_int_t)est, "parents", parents)))
        goto out;
    sub->msg = json_dumps(msg, JSON_COMPACT);
    sub->row = json_dumps(row, JSON_COMPACT);
    if (!sub->msg || !sub->row)
        goto out;
    sub->msg_len = strlen(sub->msg);
    sub->row_len = strlen(sub->row);
    sub->n_items = json_array_size(items);
    sub->prio = first->prio;
    ok = 1;
out:
    json_decref(items);
    json_decref(parents);
    json_decref(row);
    json_decref(msg);
    if (!ok) {
        free(sub->msg);
        free(sub->row);
        sub->msg = sub->row = NULL;
    }
    return ok;
}

size_t shoal_split_flush(shoal_split_t *sp, void (*emit)(shoal_split_sub_t *sub, void *arg),
                         void *arg, size_t *dropped)
{
    size_t emitted = 0, lost = 0, nmem;
    size_t *mem = malloc((sp->n ? sp->n : 1) * sizeof(*mem));

    for (size_t i = 0; mem && i < sp->n; i++) {
        struct left *a = &sp->v[i];
        if (a->used)
            continue;
        /* First fit in order: the group grows while the items and tokens fit
         * under the largest parent's. */
        long items = (long)json_array_size(a->missing), est = left_est(a);
        long cap_items = a->n_items, cap_est = a->est;
        a->used = 1;
        mem[0] = i;
        nmem = 1;
        for (size_t j = i + 1; j < sp->n; j++) {
            struct left *b = &sp->v[j];
            if (b->used || strcmp(b->job_id, a->job_id) != 0)
                continue;
            long ci = b->n_items > cap_items ? b->n_items : cap_items;
            long ce = b->est > cap_est ? b->est : cap_est;
            long bi = (long)json_array_size(b->missing), be = left_est(b);
            if (items + bi > ci || est + be > ce)
                continue;
            items += bi;
            est += be;
            cap_items = ci;
            cap_est = ce;
            b->used = 1;
            mem[nmem++] = j;
        }
        shoal_split_sub_t sub;
        memset(&sub, 0, sizeof(sub));
        char id[SHOAL_TASKMSG_ID_MAX];
        if (!build(sp, mem, nmem, &sub, id, sizeof(id))) {
            lost++;
            continue;
        }
        sub.task_id = id;
        sub.job_id = a->job_id;
        emit(&sub, arg);
        free(sub.row);
        free(sub.msg);
        emitted++;
    }
    if (!mem)
        lost = sp->n;
    free(mem);
    clear(sp);
    if (dropped)
        *dropped = lost;
    return emitted;
}
