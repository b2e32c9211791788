/*
 * Chunk planning over plain token counts and groups: item order is kept and
 * each of the three closing rules (max_items, max_tokens, group change) starts
 * a new chunk exactly where it should.
 */
#include "common/chunk.h"

#include <limits.h>

#include "tests/support/check.h"

#define N 16

static size_t starts[N];
static long est[N];

static size_t plan(const long *tokens, const char *const *groups, size_t n, long base,
                   long max_tokens, size_t max_items, int by_group)
{
    shoal_chunk_limits_t lim = {max_tokens, max_items, by_group};

    memset(starts, 0xff, sizeof(starts));
    memset(est, 0xff, sizeof(est));
    return shoal_chunk_plan(tokens, groups, n, base, &lim, starts, est);
}

static void test_max_items(void)
{
    long t[10] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1};

    assert_int_eq(plan(t, NULL, 10, 5, 1000, 3, 0), 4);
    assert_int_eq(starts[0], 0);
    assert_int_eq(starts[1], 3);
    assert_int_eq(starts[2], 6);
    assert_int_eq(starts[3], 9);
    assert_int_eq(est[0], 8);
    assert_int_eq(est[3], 6);

    assert_int_eq(plan(t, NULL, 10, 0, 1000, 1, 0), 10);
    for (size_t i = 0; i < 10; i++)
        assert_int_eq(starts[i], i);

    /* no caps at all: one chunk */
    assert_int_eq(plan(t, NULL, 10, 0, 0, 0, 0), 1);
    assert_int_eq(est[0], 10);
}

static void test_max_tokens(void)
{
    long t[6] = {10, 10, 10, 5, 30, 1};

    /* base 3, cap 25: 3+10+10=23 fits, +10 would be 33 */
    assert_int_eq(plan(t, NULL, 6, 3, 25, 100, 0), 4);
    assert_int_eq(starts[0], 0);
    assert_int_eq(est[0], 23);
    assert_int_eq(starts[1], 2); /* 3+10+5 = 18 */
    assert_int_eq(est[1], 18);
    /* item 4 (30) is too big for any chunk: it gets one of its own */
    assert_int_eq(starts[2], 4);
    assert_int_eq(est[2], 33);
    assert_int_eq(starts[3], 5);
    assert_int_eq(est[3], 4);

    /* exactly at the cap still fits */
    {
        long u[3] = {11, 11, 11};
        assert_int_eq(plan(u, NULL, 3, 3, 25, 100, 0), 2);
        assert_int_eq(est[0], 25);
        assert_int_eq(starts[1], 2);
    }
    /* both caps: whichever closes first */
    {
        long u[5] = {1, 1, 1, 20, 1};
        assert_int_eq(plan(u, NULL, 5, 0, 21, 2, 0), 3);
        assert_int_eq(starts[1], 2);
        assert_int_eq(est[1], 21);
        assert_int_eq(starts[2], 4);
        assert_int_eq(est[2], 1);
    }
}

static void test_groups(void)
{
    long t[6] = {1, 1, 1, 1, 1, 1};
    const char *g[6] = {"users", "users", "billing", NULL, NULL, "users"};

    assert_int_eq(plan(t, g, 6, 0, 1000, 100, 1), 4);
    assert_int_eq(starts[0], 0);
    assert_int_eq(starts[1], 2);
    assert_int_eq(starts[2], 3); /* the two items without a group share one */
    assert_int_eq(starts[3], 5); /* "users" again later: a new chunk, order kept */

    /* groups are ignored unless by_group is set */
    assert_int_eq(plan(t, g, 6, 0, 1000, 100, 0), 1);
    /* by_group with no groups at all: everything is one group */
    assert_int_eq(plan(t, NULL, 6, 0, 1000, 100, 1), 1);
    /* group and item caps together */
    assert_int_eq(plan(t, g, 6, 0, 1000, 1, 1), 6);
    /* equal strings at different addresses are the same group */
    {
        char a[] = "same", b[] = "same";
        const char *h[2] = {a, b};
        assert_int_eq(plan(t, h, 2, 0, 1000, 100, 1), 1);
    }
}

static void test_edges(void)
{
    long t[2] = {LONG_MAX - 1, LONG_MAX - 1};

    assert_int_eq(plan(t, NULL, 0, 0, 10, 10, 0), 0);
    /* estimates saturate instead of overflowing */
    assert_int_eq(plan(t, NULL, 2, 5, 0, 0, 0), 1);
    assert_int_eq(est[0], LONG_MAX);
    assert_int_eq(shoal_chunk_estimate(7, t, 0), 7);
    assert_int_eq(shoal_chunk_estimate(LONG_MAX - 1, t, 2), LONG_MAX);
    /* est_tokens may be NULL */
    {
        long u[3] = {1, 2, 3};
        shoal_chunk_limits_t lim = {3, 0, 0};
        assert_int_eq(shoal_chunk_plan(u, NULL, 3, 0, &lim, starts, NULL), 2);
        assert_int_eq(starts[1], 2);
    }
}

int main(void)
{
    test_max_items();
    test_max_tokens();
    test_groups();
    test_edges();
    printf("chunk_test: ok\n");
    return 0;
}
