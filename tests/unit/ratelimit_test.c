/*
 * common/ratelimit under a fake clock: a bucket lets its burst through at
 * once, then exactly its rate; refunds never lift it above the burst; a hold
 * blocks everything until it ends; a cost above the burst waits for a full
 * bucket and leaves a debt; an unlimited bucket is free; rate changes keep
 * the level. AIMD stays within its bounds, grows about one step per window
 * of successes and decreases at most once per cooldown.
 */
#include "common/ratelimit.h"

#include <math.h>
#include <stdio.h>

#include "tests/support/check.h"

#define assert_near(a, b)                                                                          \
    do {                                                                                           \
        double a_ = (a), b_ = (b);                                                                 \
        if (fabs(a_ - b_) > 1e-6)                                                                  \
            test_fail("%s ~= %s: %.9f != %.9f", #a, #b, a_, b_);                                   \
    } while (0)

/* Takes cost units as soon as they fit, stepping the fake clock by what
 * wait_ms says; returns how many takes happened by end_ms. */
static int drain(shoal_bucket_t *b, double *now, double end_ms, double cost)
{
    int n = 0;
    for (;;) {
        double w = shoal_bucket_wait_ms(b, *now, cost);
        if (*now + w > end_ms)
            return n;
        *now += w;
        assert_int_eq(shoal_bucket_take(b, *now, cost), 1);
        n++;
    }
}

static void test_burst_then_rate(void)
{
    shoal_bucket_t b;
    double now = 1000;

    shoal_bucket_init(&b, 10, 5, now);
    /* The burst goes at once, without waiting. */
    for (int i = 0; i < 5; i++) {
        assert_near(shoal_bucket_wait_ms(&b, now, 1), 0);
        assert_int_eq(shoal_bucket_take(&b, now, 1), 1);
    }
    /* Then one unit per 100 ms. */
    assert_near(shoal_bucket_wait_ms(&b, now, 1), 100);
    assert_int_eq(shoal_bucket_take(&b, now, 1), 0);
    assert_near(shoal_bucket_level(&b, now), 0);
    assert_near(shoal_bucket_wait_ms(&b, now + 50, 1), 50);
    assert_near(shoal_bucket_wait_ms(&b, now, 3), 300);
    /* Over 10 s of steady demand exactly rate * time more fit. */
    int n = drain(&b, &now, now + 10000, 1);
    assert_int_eq(n, 100);
    /* Idle time refills to the burst and no further. */
    now += 60000;
    assert_near(shoal_bucket_level(&b, now), 5);
    /* Time going backwards adds nothing. */
    assert_int_eq(shoal_bucket_take(&b, now, 5), 1);
    assert_near(shoal_bucket_level(&b, now - 1000), 0);
}

static void test_refund_and_force(void)
{
    shoal_bucket_t b;
    double now = 0;

    shoal_bucket_init(&b, 100, 1000, now);
    /* Reserve 800 tokens, the call used 300: 500 come back. */
    assert_int_eq(shoal_bucket_take(&b, now, 800), 1);
    assert_near(shoal_bucket_level(&b, now), 200);
    shoal_bucket_give(&b, now, 500);
    assert_near(shoal_bucket_level(&b, now), 700);
    /* A refund never lifts the bucket above its burst. */
    shoal_bucket_give(&b, now, 5000);
    assert_near(shoal_bucket_level(&b, now), 1000);
    /* An under-reservation is charged in full and becomes a debt. */
    shoal_bucket_take_force(&b, now, 1500);
    assert_near(shoal_bucket_level(&b, now), -500);
    assert_near(shoal_bucket_wait_ms(&b, now, 1), 5010);
    assert_int_eq(shoal_bucket_take(&b, now, 1), 0);
    /* Non-positive amounts change nothing. */
    shoal_bucket_give(&b, now, -10);
    shoal_bucket_take_force(&b, now, 0);
    assert_near(shoal_bucket_level(&b, now), -500);
}

static void test_hold(void)
{
    shoal_bucket_t b;
    double now = 0;

    shoal_bucket_init(&b, 10, 10, now);
    shoal_bucket_hold(&b, now, 2500);
    assert_near(shoal_bucket_wait_ms(&b, now, 1), 2500);
    assert_int_eq(shoal_bucket_take(&b, 2499, 1), 0);
    /* An earlier hold does not shorten a later one. */
    shoal_bucket_hold(&b, now, 1000);
    assert_near(shoal_bucket_wait_ms(&b, 1000, 1), 1500);
    /* When the hold ends, the bucket is as full as time made it. */
    assert_int_eq(shoal_bucket_take(&b, 2500, 10), 1);
    assert_near(shoal_bucket_wait_ms(&b, 2500, 1), 100);

    /* A hold applies to an unlimited bucket too. */
    shoal_bucket_t u;
    shoal_bucket_init(&u, 0, 1, 0);
    shoal_bucket_hold(&u, 0, 300);
    assert_near(shoal_bucket_wait_ms(&u, 100, 1), 200);
    assert_int_eq(shoal_bucket_take(&u, 100, 1), 0);
    assert_int_eq(shoal_bucket_take(&u, 300, 1), 1);
}

static void test_big_cost(void)
{
    shoal_bucket_t b;
    double now = 0;

    shoal_bucket_init(&b, 100, 1000, now);
    assert_int_eq(shoal_bucket_take(&b, now, 10), 1);
    /* 5000 units never fit in a 1000 burst: they go once the bucket is full. */
    assert_near(shoal_bucket_wait_ms(&b, now, 5000), 100);
    now += 100;
    assert_int_eq(shoal_bucket_take(&b, now, 5000), 1);
    /* ... and leave a debt, so the long-run rate still holds: the next unit
     * waits for 4000 units to flow in. */
    assert_near(shoal_bucket_level(&b, now), -4000);
    assert_near(shoal_bucket_wait_ms(&b, now, 1), 40010);
    /* A stream of big costs is served, at the rate. */
    int n = drain(&b, &now, now + 200000, 5000);
    assert_true(n >= 3 && n <= 4);
}

static void test_unlimited(void)
{
    shoal_bucket_t b;

    shoal_bucket_init(&b, 0, 1, 0);
    for (int i = 0; i < 100000; i++)
        assert_int_eq(shoal_bucket_take(&b, 0, 1e6), 1);
    assert_near(shoal_bucket_wait_ms(&b, 0, 1e12), 0);
    shoal_bucket_take_force(&b, 0, 1e9);
    assert_near(shoal_bucket_wait_ms(&b, 0, 1), 0);
    shoal_bucket_init(&b, -5, 1, 0);
    assert_int_eq(shoal_bucket_take(&b, 0, 1e6), 1);
}

static void test_set_rate(void)
{
    shoal_bucket_t b;
    double now = 0;

    shoal_bucket_init(&b, 10, 10, now);
    assert_int_eq(shoal_bucket_take(&b, now, 8), 1);
    /* 500 ms at the old rate bring 5 units; the new rate applies after. */
    now = 500;
    shoal_bucket_set(&b, 2, 10, now);
    assert_near(shoal_bucket_level(&b, now), 7);
    assert_near(shoal_bucket_wait_ms(&b, now, 8), 500);
    /* A smaller burst caps what is stored; a larger one is not filled at once. */
    shoal_bucket_set(&b, 2, 4, now);
    assert_near(shoal_bucket_level(&b, now), 4);
    shoal_bucket_set(&b, 2, 40, now);
    assert_near(shoal_bucket_level(&b, now), 4);
    /* A debt survives a rate change. */
    shoal_bucket_take_force(&b, now, 10);
    shoal_bucket_set(&b, 3, 40, now);
    assert_near(shoal_bucket_level(&b, now), -6);
    /* Becoming limited after being unlimited starts empty. */
    shoal_bucket_set(&b, 0, 40, now);
    assert_int_eq(shoal_bucket_take(&b, now, 100), 1);
    shoal_bucket_set(&b, 10, 5, now);
    assert_near(shoal_bucket_level(&b, now), 0);
    assert_near(shoal_bucket_wait_ms(&b, now, 1), 100);
}

static void test_aimd(void)
{
    shoal_aimd_t a;

    shoal_aimd_init(&a, 2, 64, 10);
    assert_near(shoal_aimd_value(&a), 10);
    /* About +1 per window's worth of successes. */
    for (int i = 0; i < 10; i++)
        shoal_aimd_on_success(&a, 0);
    assert_true(shoal_aimd_value(&a) > 10.9 && shoal_aimd_value(&a) < 11.0);
    /* Never above max. */
    for (int i = 0; i < 100000; i++)
        shoal_aimd_on_success(&a, 0);
    assert_near(shoal_aimd_value(&a), 64);

    /* Decreases once per cooldown, however many congestion signals come. */
    assert_int_eq(shoal_aimd_on_congestion(&a, 1000), 1);
    assert_near(shoal_aimd_value(&a), 64 * 0.7);
    for (int t = 1000; t < 2000; t += 10)
        assert_int_eq(shoal_aimd_on_congestion(&a, t), 0);
    assert_near(shoal_aimd_value(&a), 64 * 0.7);
    assert_int_eq(shoal_aimd_on_congestion(&a, 2000), 1);
    assert_near(shoal_aimd_value(&a), 64 * 0.49);
    /* Never below min. */
    for (int t = 3000; t < 100000; t += 1000)
        shoal_aimd_on_congestion(&a, t);
    assert_near(shoal_aimd_value(&a), 2);

    /* Tuning: another factor and cooldown; bad values keep the old ones. */
    shoal_aimd_init(&a, 0, 100, 500);
    assert_near(shoal_aimd_value(&a), 100);
    shoal_aimd_tune(&a, 2, 0.5, 5000);
    shoal_aimd_tune(&a, -1, 1.5, -1);
    assert_int_eq(shoal_aimd_on_congestion(&a, 0), 1);
    assert_near(shoal_aimd_value(&a), 50);
    assert_int_eq(shoal_aimd_on_congestion(&a, 4999), 0);
    assert_int_eq(shoal_aimd_on_congestion(&a, 5000), 1);
    assert_near(shoal_aimd_value(&a), 25);
    for (int i = 0; i < 25; i++)
        shoal_aimd_on_success(&a, 6000);
    assert_true(shoal_aimd_value(&a) > 26.9 && shoal_aimd_value(&a) < 27.0);
    /* min is at least 1: a window never closes completely. */
    shoal_aimd_init(&a, 0, 0, 0);
    assert_near(shoal_aimd_value(&a), 1);
}

int main(void)
{
    test_burst_then_rate();
    test_refund_and_force();
    test_hold();
    test_big_cost();
    test_unlimited();
    test_set_rate();
    test_aimd();
    printf("ratelimit_test: ok\n");
    return 0;
}
