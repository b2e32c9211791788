/*
 * Chunk planning over plain token counts and groups: item order is kept and
 * each of the three closing rules (max_items, max_tokens, group change) starts
 * a new chunk exactly where it should; chunks are balanced. Property tests on
 * random jobs: no item lost or duplicated, limits held, no more chunks than
 * greedy packing needs (plus the balancer's retries), sizes within one item
 * of the run's mean; grouping is a stable permutation.
 */
#include "common/chunk.h"

#include <limits.h>
#include <stdint.h>

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

static int same(const char *a, const char *b)
{
    return (!a || !b) ? a == b : strcmp(a, b) == 0;
}

static void test_max_items(void)
{
    long t[10] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1};

    /* greedy needs 4 chunks; balanced they hold 3, 2, 3, 2 instead of 3, 3, 3, 1 */
    assert_int_eq(plan(t, NULL, 10, 5, 1000, 3, 0), 4);
    assert_int_eq(starts[0], 0);
    assert_int_eq(starts[1], 3);
    assert_int_eq(starts[2], 5);
    assert_int_eq(starts[3], 8);
    assert_int_eq(est[0], 8);
    assert_int_eq(est[3], 7);

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

static uint64_t rng = 0x9e3779b97f4a7c15ULL;

static unsigned long rnd(unsigned long n)
{
    rng = rng * 6364136223846793005ULL + 1442695040888963407ULL;
    return (unsigned long)(rng >> 33) % n;
}

#define PN 400

static void test_properties(void)
{
    static long tok[PN], est2[PN];
    static size_t st[PN], order[PN];
    static const char *grp[PN], *sorted[PN];
    static const char *names[] = {"a", "b", "c", "d", "e", NULL};

    for (int round = 0; round < 3000; round++) {
        size_t n = 1 + rnd(PN);
        long base = (long)rnd(50);
        shoal_chunk_limits_t lim = {rnd(4) ? base + 20 + (long)rnd(3000) : 0,
                                    rnd(4) ? 1 + rnd(30) : 0, (int)rnd(2)};
        long biggest = 1;

        for (size_t i = 0; i < n; i++) {
            /* mostly items that fit, some tiny, now and then one too big */
            tok[i] = rnd(10) ? 1 + (long)rnd(400) : (long)rnd(5000);
            grp[i] = names[rnd(6)];
            if (tok[i] > biggest)
                biggest = tok[i];
        }
        /* grouping: a stable permutation that leaves every group in one run */
        size_t ng = shoal_chunk_group_order(lim.by_group ? grp : NULL, n, order);
        assert_true(ng != (size_t)-1 && ng >= 1 && ng <= 6);
        {
            unsigned char seen[PN] = {0};
            for (size_t i = 0; i < n; i++) {
                assert_true(order[i] < n && !seen[order[i]]);
                seen[order[i]] = 1;
                sorted[i] = grp[order[i]];
                if (i > 0 && lim.by_group && same(sorted[i - 1], sorted[i]))
                    assert_true(order[i - 1] < order[i]); /* stable within a group */
                for (size_t j = 0; lim.by_group && i > 1 && j + 1 < i; j++)
                    if (same(sorted[j], sorted[i]))
                        assert_true(same(sorted[i - 1], sorted[i])); /* one run per group */
            }
        }
        size_t nc = shoal_chunk_plan(tok, sorted, n, base, &lim, st, est2);
        assert_true(nc >= 1 && nc <= n);
        assert_int_eq(st[0], 0);
        /* greedy count, the fewest chunks */
        size_t greedy = 0;
        {
            size_t in = 0;
            long cur = 0;
            for (size_t i = 0; i < n; i++) {
                int close = in == 0 || (lim.max_items && in >= lim.max_items) ||
                            (lim.max_tokens > 0 && cur + tok[i] > lim.max_tokens) ||
                            (lim.by_group && !same(sorted[i - 1], sorted[i]));
                if (close) {
                    greedy++;
                    in = 0;
                    cur = base;
                }
                cur += tok[i];
                in++;
            }
        }
        /* each run (group) may take up to two more */
        if (nc < greedy || nc > greedy + 2 * (lim.by_group ? ng : 1))
            test_fail("round %d: %zu chunks, greedy %zu", round, nc, greedy);
        for (size_t k = 0; k < nc; k++) {
            size_t end = k + 1 < nc ? st[k + 1] : n, items = end - st[k];
            assert_true(end > st[k]); /* no empty chunk, none overlapping: each item once */
            assert_int_eq(est2[k], shoal_chunk_estimate(base, tok + st[k], items));
            if (lim.max_items)
                assert_true(items <= lim.max_items);
            if (lim.max_tokens > 0 && items > 1)
                assert_true(est2[k] <= lim.max_tokens);
            for (size_t i = st[k] + 1; lim.by_group && i < end; i++)
                assert_true(same(sorted[i - 1], sorted[i]));
        }
        /* balance within a run of one group when tokens bind (max_items
         * forces its own cuts): no chunk above the run's mean by more than
         * one item, unless it is a lone item */
        for (size_t k = 0, r0 = 0; lim.max_items == 0 && k < nc; k++) {
            size_t end = k + 1 < nc ? st[k + 1] : n;
            int run_ends = end == n || (lim.by_group && !same(sorted[end - 1], sorted[end]));
            if (!run_ends)
                continue;
            double sum = 0;
            for (size_t j = r0; j <= k; j++)
                sum += (double)(est2[j] - base);
            double mean = sum / (double)(k - r0 + 1);
            for (size_t j = r0; j <= k; j++) {
                size_t e = j + 1 < nc ? st[j + 1] : n;
                if (e - st[j] > 1 && (double)(est2[j] - base) > mean + (double)biggest)
                    test_fail("round %d chunk %zu: %ld tokens, run mean %.1f, item max %ld", round,
                              j, est2[j] - base, mean, biggest);
            }
            r0 = k + 1;
        }
    }
    /* an already grouped order comes back unchanged (replanning is stable) */
    {
        const char *g[5] = {"x", "x", NULL, "y", "y"};
        size_t o[5];
        assert_int_eq(shoal_chunk_group_order(g, 5, o), 3);
        for (size_t i = 0; i < 5; i++)
            assert_int_eq(o[i], i);
    }
}

int main(void)
{
    test_max_items();
    test_max_tokens();
    test_groups();
    test_edges();
    test_properties();
    printf("chunk_test: ok\n");
    return 0;
}
