/*
 * Balanced, order-preserving chunk planning and grouping (see chunk.h).
 *
 * Each run of one group is planned on its own in two passes. The first is
 * greedy (fill a chunk until the next item breaks a limit) and only counts:
 * greedy packing gives the fewest chunks for a run whose order is fixed. The
 * second cuts the run into that many chunks again, each aiming at the run's
 * remaining tokens divided by the chunks left, and takes an item when that
 * brings the chunk closer to its aim (or when the items left would not fit in
 * the chunks left). It can end with one chunk more than counted (the aims are
 * a heuristic); then it tries again with one more chunk, and after a few tries
 * falls back to the greedy cut.
 */
#include "common/chunk.h"

#include <limits.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define BALANCE_TRIES 3

static long add_sat(long a, long b)
{
    if (b > 0 && a > LONG_MAX - b)
        return LONG_MAX;
    return a + b;
}

static int same_group(const char *a, const char *b)
{
    if (!a || !b)
        return a == b;
    return strcmp(a, b) == 0;
}

long shoal_chunk_estimate(long base_tokens, const long *item_tokens, size_t n)
{
    long sum = base_tokens;

    for (size_t i = 0; i < n; i++)
        sum = add_sat(sum, item_tokens[i]);
    return sum;
}

/* One run of items [s, e) and the limits it is cut under. cap is the room for
 * items in a chunk (max_tokens less base); LONG_MAX when there is no cap. */
struct run {
    const long *tok;
    size_t s, e;
    long cap;
    size_t max_items; /* SIZE_MAX when there is no cap */
};

static int breaks_limits(const struct run *r, size_t count, long cur, long t)
{
    return count >= r->max_items || add_sat(cur, t) > r->cap;
}

/* Greedy packing: the fewest chunks for the run. Writes starts and sums
 * (either may be NULL) like balanced_cut. */
static size_t greedy_cut(const struct run *r, size_t *starts, long *sums)
{
    size_t chunks = 0, count = 0;
    long cur = 0;

    for (size_t i = r->s; i < r->e; i++) {
        if (count == 0 || breaks_limits(r, count, cur, r->tok[i])) {
            if (starts)
                starts[chunks] = i;
            chunks++;
            count = 0;
            cur = 0;
        }
        cur = add_sat(cur, r->tok[i]);
        if (sums)
            sums[chunks - 1] = cur;
        count++;
    }
    return chunks;
}

/* Cuts the run aiming at `aim` chunks; writes chunk starts and, when sums is
 * not NULL, the chunks' item tokens (base not added) from [0]; returns how
 * many chunks it made (never more than the run's items). */
static size_t balanced_cut(const struct run *r, size_t aim, size_t *starts, long *sums)
{
    double left = 0;
    size_t n_left = r->e - r->s, made = 0, i = r->s;

    for (size_t k = r->s; k < r->e; k++)
        left += (double)r->tok[k];
    while (i < r->e) {
        size_t chunks_left = aim > made + 1 ? aim - made : 1, count = 0;
        double target = left / (double)chunks_left;
        long cur = 0;

        starts[made] = i;
        while (i < r->e) {
            long t = r->tok[i];

            if (count > 0) {
                if (breaks_limits(r, count, cur, t))
                    break;
                /* must take: what is left would not fit the chunks after this one */
                int forced = chunks_left > 1 && r->max_items != SIZE_MAX &&
                             n_left - count > (chunks_left - 1) * r->max_items;
                if (!forced && chunks_left > 1 && r->cap != LONG_MAX &&
                    left - (double)cur > (double)(chunks_left - 1) * (double)r->cap)
                    forced = 1;
                if (!forced && (double)cur + (double)t / 2 > target)
                    break;
            }
            cur = add_sat(cur, t);
            count++;
            i++;
        }
        if (sums)
            sums[made] = cur;
        made++;
        left -= (double)cur;
        n_left -= count;
    }
    return made;
}

/* Plans one run into starts and est (may be NULL); returns the chunks made. */
static size_t plan_run(const struct run *r, long base, size_t *starts, long *est)
{
    size_t need = greedy_cut(r, NULL, NULL), made = 0, attempt;

    /* est doubles as scratch for the items' sums; the base is added last */
    for (attempt = 0; attempt < BALANCE_TRIES; attempt++) {
        made = balanced_cut(r, need + attempt, starts, est);
        if (made <= need + attempt)
            break;
    }
    /* the aims kept missing (items near the cap, say): greedy it is */
    if (attempt == BALANCE_TRIES)
        made = greedy_cut(r, starts, est);
    for (size_t k = 0; est && k < made; k++)
        est[k] = add_sat(base, est[k]);
    return made;
}

size_t shoal_chunk_plan(const long *item_tokens, const char *const *groups, size_t n_items,
                        long base_tokens, const shoal_chunk_limits_t *limits, size_t *starts,
                        long *est_tokens)
{
    size_t n_chunks = 0;
    struct run r = {.tok = item_tokens, .s = 0, .e = 0, .cap = LONG_MAX, .max_items = SIZE_MAX};

    if (limits->max_tokens > 0)
        r.cap = limits->max_tokens - base_tokens > 0 ? limits->max_tokens - base_tokens : 0;
    if (limits->max_items > 0)
        r.max_items = limits->max_items;
    while (r.s < n_items) {
        const char *g = groups ? groups[r.s] : NULL;

        r.e = limits->by_group ? r.s + 1 : n_items;
        while (r.e < n_items && same_group(g, groups ? groups[r.e] : NULL))
            r.e++;
        n_chunks +=
            plan_run(&r, base_tokens, starts + n_chunks, est_tokens ? est_tokens + n_chunks : NULL);
        r.s = r.e;
    }
    return n_chunks;
}

/* ---- grouping ---- */

struct keyed {
    const char *g;
    size_t idx;
    size_t first; /* index of the group's first item */
};

static int by_group_then_index(const void *pa, const void *pb)
{
    const struct keyed *a = pa, *b = pb;
    int c;

    if (a->g != b->g) {
        if (!a->g || !b->g)
            return a->g ? 1 : -1;
        if ((c = strcmp(a->g, b->g)) != 0)
            return c;
    }
    return a->idx < b->idx ? -1 : a->idx > b->idx;
}

static int by_first_then_index(const void *pa, const void *pb)
{
    const struct keyed *a = pa, *b = pb;

    if (a->first != b->first)
        return a->first < b->first ? -1 : 1;
    return a->idx < b->idx ? -1 : a->idx > b->idx;
}

size_t shoal_chunk_group_order(const char *const *groups, size_t n, size_t *order)
{
    struct keyed *k;
    size_t n_groups = 0;

    for (size_t i = 0; i < n; i++)
        order[i] = i;
    if (n == 0)
        return 0;
    if (!groups)
        return 1;
    if (n > SIZE_MAX / sizeof(*k) || !(k = malloc(n * sizeof(*k))))
        return (size_t)-1;
    for (size_t i = 0; i < n; i++)
        k[i] = (struct keyed){groups[i], i, 0};
    /* equal groups become adjacent, each run starting at its first item */
    qsort(k, n, sizeof(*k), by_group_then_index);
    for (size_t i = 0; i < n; i++) {
        if (i == 0 || !same_group(k[i - 1].g, k[i].g)) {
            n_groups++;
            k[i].first = k[i].idx;
        } else {
            k[i].first = k[i - 1].first;
        }
    }
    qsort(k, n, sizeof(*k), by_first_then_index);
    for (size_t i = 0; i < n; i++)
        order[i] = k[i].idx;
    free(k);
    return n_groups;
}
