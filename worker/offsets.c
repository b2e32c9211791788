/*
 * Offset tracker (see offsets.h). Each partition keeps its outstanding
 * messages in a ring in offset order with a done flag; the head advances
 * while the oldest entry is done, so each message costs O(1) amortized.
 */
#include "worker/offsets.h"

#include <stdlib.h>
#include <string.h>

struct entry {
    int64_t offset;
    int done;
};

struct part {
    char *topic;
    int32_t partition;
    uint32_t gen;
    struct entry *ring;
    size_t cap, head, len; /* ring of len entries starting at head */
    int64_t next;          /* offset just past the finished prefix, -1 if none */
    int64_t reported;      /* last next handed to commit_list */
};

struct shoal_offsets {
    struct part *parts;
    int nparts, cap;
    long pending;
};

shoal_offsets_t *shoal_offsets_new(void)
{
    return calloc(1, sizeof(shoal_offsets_t));
}

void shoal_offsets_destroy(shoal_offsets_t *o)
{
    if (!o)
        return;
    for (int i = 0; i < o->nparts; i++) {
        free(o->parts[i].topic);
        free(o->parts[i].ring);
    }
    free(o->parts);
    free(o);
}

static int find_slot(shoal_offsets_t *o, const char *topic, int32_t partition)
{
    for (int i = 0; i < o->nparts; i++)
        if (o->parts[i].partition == partition && !strcmp(o->parts[i].topic, topic))
            return i;
    return -1;
}

static void reset(shoal_offsets_t *o, struct part *p)
{
    for (size_t i = 0; i < p->len; i++)
        if (!p->ring[(p->head + i) % p->cap].done)
            o->pending--;
    p->head = p->len = 0;
    p->next = p->reported = -1;
    p->gen++;
}

shoal_err_t shoal_offsets_track(shoal_offsets_t *o, const char *topic, int32_t partition,
                                int64_t offset, shoal_offset_ref_t *ref)
{
    int slot = find_slot(o, topic, partition);
    if (slot < 0) {
        if (o->nparts == o->cap) {
            int ncap = o->cap ? o->cap * 2 : 16;
            struct part *np = realloc(o->parts, (size_t)ncap * sizeof(*np));
            if (!np)
                return SHOAL_ERR_NOMEM;
            o->parts = np;
            o->cap = ncap;
        }
        struct part *p = &o->parts[o->nparts];
        memset(p, 0, sizeof(*p));
        if (!(p->topic = strdup(topic)))
            return SHOAL_ERR_NOMEM;
        p->partition = partition;
        p->next = p->reported = -1;
        slot = o->nparts++;
    }
    struct part *p = &o->parts[slot];
    if (p->len > 0 && offset <= p->ring[(p->head + p->len - 1) % p->cap].offset)
        reset(o, p); /* re-fetched from an earlier position */
    if (p->len == p->cap) {
        size_t ncap = p->cap ? p->cap * 2 : 64;
        struct entry *nr = malloc(ncap * sizeof(*nr));
        if (!nr)
            return SHOAL_ERR_NOMEM;
        for (size_t i = 0; i < p->len; i++)
            nr[i] = p->ring[(p->head + i) % p->cap];
        free(p->ring);
        p->ring = nr;
        p->cap = ncap;
        p->head = 0;
    }
    p->ring[(p->head + p->len) % p->cap] = (struct entry){offset, 0};
    p->len++;
    o->pending++;
    ref->slot = slot;
    ref->gen = p->gen;
    ref->offset = offset;
    return SHOAL_OK;
}

void shoal_offsets_done(shoal_offsets_t *o, const shoal_offset_ref_t *ref)
{
    if (ref->slot < 0 || ref->slot >= o->nparts)
        return;
    struct part *p = &o->parts[ref->slot];
    if (p->gen != ref->gen || p->len == 0)
        return;
    /* Offsets in the ring increase: binary search for ref->offset. */
    size_t lo = 0, hi = p->len;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (p->ring[(p->head + mid) % p->cap].offset < ref->offset)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (lo == p->len)
        return;
    struct entry *e = &p->ring[(p->head + lo) % p->cap];
    if (e->offset != ref->offset || e->done)
        return;
    e->done = 1;
    o->pending--;
    while (p->len > 0 && p->ring[p->head].done) {
        p->next = p->ring[p->head].offset + 1;
        p->head = (p->head + 1) % p->cap;
        p->len--;
    }
}

void shoal_offsets_forget(shoal_offsets_t *o, const char *topic, int32_t partition)
{
    int slot = find_slot(o, topic, partition);
    if (slot >= 0)
        reset(o, &o->parts[slot]);
}

void shoal_offsets_commit_list(shoal_offsets_t *o,
                               void (*fn)(const char *topic, int32_t partition, int64_t next,
                                          void *arg),
                               void *arg)
{
    for (int i = 0; i < o->nparts; i++) {
        struct part *p = &o->parts[i];
        if (p->next >= 0 && p->next != p->reported) {
            fn(p->topic, p->partition, p->next, arg);
            p->reported = p->next;
        }
    }
}

long shoal_offsets_pending(const shoal_offsets_t *o)
{
    return o->pending;
}
