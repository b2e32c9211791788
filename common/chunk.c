/*
 * Greedy, order-preserving chunk planning (see chunk.h).
 */
#include "common/chunk.h"

#include <limits.h>
#include <string.h>

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

size_t shoal_chunk_plan(const long *item_tokens, const char *const *groups, size_t n_items,
                        long base_tokens, const shoal_chunk_limits_t *limits, size_t *starts,
                        long *est_tokens)
{
    size_t n_chunks = 0, in_chunk = 0;
    long cur = 0;
    const char *group = NULL;

    for (size_t i = 0; i < n_items; i++) {
        const char *g = groups ? groups[i] : NULL;
        int close = 0;

        if (in_chunk > 0) {
            if (limits->max_items > 0 && in_chunk >= limits->max_items)
                close = 1;
            else if (limits->max_tokens > 0 && add_sat(cur, item_tokens[i]) > limits->max_tokens)
                close = 1;
            else if (limits->by_group && !same_group(group, g))
                close = 1;
        }
        if (in_chunk == 0 || close) {
            starts[n_chunks++] = i;
            in_chunk = 0;
            cur = base_tokens;
            group = g;
        }
        cur = add_sat(cur, item_tokens[i]);
        in_chunk++;
        if (est_tokens)
            est_tokens[n_chunks - 1] = cur;
    }
    return n_chunks;
}
