/*
 * worker/lane and worker/backoff with a fake clock: priorities with the
 * low-priority share, the concurrency window (AIMD), holds, cooldowns with a
 * single probe, rate buckets with reserve-then-settle, and the one backoff
 * policy (full jitter, Retry-After floor, caps).
 */
#include "worker/lane.h"

#include <stdlib.h>
#include <string.h>

#include "worker/backoff.h"
#include "tests/support/check.h"

static shoal_model_t model = {.alias = "m",
                              .provider = SHOAL_PROVIDER_OPENAI,
                              .endpoint = "http://127.0.0.1:9/",
                              .model = "x",
                              .max_output_tokens = 100};

static shoal_task_t *task(int prio, const char *id)
{
    shoal_task_t *t = calloc(1, sizeof(*t));
    t->prio = prio;
    t->task_id = id;
    t->job_id = "j";
    t->model = &model;
    t->request_len = 400; /* 100 tokens in + 100 out reserved */
    return t;
}

static shoal_lane_t *lane(long window)
{
    shoal_lane_conf_t c;
    shoal_lane_conf_init(&c);
    c.max_concurrency = window;
    c.start_concurrency = window;
    shoal_lane_t *l = shoal_lane_new(&model, &c);
    assert_true(l != NULL);
    return l;
}

static void test_priorities(void)
{
    shoal_lane_t *l = lane(1000);
    shoal_task_t *lo[20], *hi[20];
    char ids[40][8];
    for (int i = 0; i < 20; i++) {
        snprintf(ids[i], 8, "l%d", i);
        snprintf(ids[20 + i], 8, "h%d", i);
        lo[i] = task(2, ids[i]);
        shoal_lane_push(l, lo[i]);
    }
    for (int i = 0; i < 20; i++) {
        hi[i] = task(0, ids[20 + i]);
        shoal_lane_push(l, hi[i]);
    }
    assert_int_eq(shoal_lane_waiting(l), 40);
    /* High goes first, in order, except every 16th start, which serves low. */
    double wait;
    int highs = 0, lows = 0;
    for (int i = 0; i < 20; i++) {
        shoal_task_t *t = shoal_lane_next(l, 0, &wait);
        assert_true(t != NULL);
        assert_int_eq(t->state, SHOAL_TASK_WAITING);
        if (t->prio == 0) {
            assert_true(t == hi[highs]);
            highs++;
        } else {
            assert_true(t == lo[lows]);
            lows++;
        }
    }
    assert_int_eq(lows, 1); /* the 16th */
    assert_int_eq(highs, 19);
    assert_int_eq(shoal_lane_in_flight(l), 20);
    for (int i = 0; i < 20; i++) {
        free(hi[i]);
        free(lo[i]);
    }
    shoal_lane_destroy(l);
}

static void test_window_and_cooldown(void)
{
    shoal_lane_t *l = lane(4);
    shoal_task_t *t[8];
    char ids[8][4];
    double wait;
    for (int i = 0; i < 8; i++) {
        snprintf(ids[i], 4, "t%d", i);
        t[i] = task(1, ids[i]);
        shoal_lane_push(l, t[i]);
    }
    for (int i = 0; i < 4; i++)
        assert_true(shoal_lane_next(l, 0, &wait) == t[i]);
    assert_true(shoal_lane_next(l, 0, &wait) == NULL); /* window full */
    assert_true(wait < 0);
    /* A 429 shrinks the window (x0.7 -> 2.8) and holds the lane 1 s. */
    shoal_lane_ended(l, t[0], SHOAL_LANE_LIMITED, NULL, 1000, 10);
    assert_true(shoal_lane_window(l) > 2.7 && shoal_lane_window(l) < 2.9);
    assert_true(shoal_lane_next(l, 20, &wait) == NULL);
    assert_true(wait > 900 && wait <= 990);
    /* Three failures in a row open a cooldown; then one probe at a time. */
    shoal_lane_ended(l, t[1], SHOAL_LANE_DOWN, NULL, -1, 2000);
    shoal_lane_ended(l, t[2], SHOAL_LANE_DOWN, NULL, -1, 2000);
    assert_int_eq(shoal_lane_cooling(l, 2000), 0);
    shoal_lane_ended(l, t[3], SHOAL_LANE_DOWN, NULL, -1, 2000);
    assert_int_eq(shoal_lane_cooling(l, 2000), 1);
    assert_true(shoal_lane_down_ms(l, 2500) == 500);
    assert_true(shoal_lane_next(l, 2500, &wait) == NULL);
    assert_true(wait > 0 && wait <= 500);
    shoal_task_t *probe = shoal_lane_next(l, 3001, &wait);
    assert_true(probe == t[4]);
    assert_true(shoal_lane_next(l, 3001, &wait) == NULL); /* only the probe */
    /* The probe fails: the next cooldown is twice as long. */
    shoal_lane_ended(l, probe, SHOAL_LANE_DOWN, NULL, -1, 3100);
    assert_true(shoal_lane_next(l, 4000, &wait) == NULL);
    assert_true(wait > 1000 && wait <= 1100);
    probe = shoal_lane_next(l, 5200, &wait);
    assert_true(probe == t[5]);
    /* It succeeds: healthy again, the window grows back. */
    shoal_usage_t u150 = {.input = 100, .output = 50};
    shoal_lane_ended(l, probe, SHOAL_LANE_OK, &u150, -1, 5300);
    assert_int_eq(shoal_lane_cooling(l, 5300), 0);
    assert_true(shoal_lane_down_ms(l, 5300) == 0);
    /* The 429 at the start clamped this lane (no limit known, nothing
     * answered in the second before) to one call a second. */
    assert_true(shoal_lane_next(l, 5300, &wait) == NULL);
    assert_true(wait > 800 && wait <= 900);
    assert_true(shoal_lane_next(l, 6200, &wait) == t[6]);
    assert_true(shoal_lane_next(l, 6200, &wait) == NULL);
    /* The fleet's share replaces the clamp once it knows a limit. */
    shoal_lane_set_rates(l, 0, 0, 6200);
    assert_true(shoal_lane_next(l, 6300, &wait) == NULL); /* unknown yet: clamp stays */
    shoal_lane_set_rates(l, 100, 0, 6300);
    assert_true(shoal_lane_next(l, 6400, &wait) == t[7]);
    /* Emptying a lane ignores capacity. */
    shoal_task_t *extra = task(1, "x");
    shoal_lane_push(l, extra);
    shoal_lane_hold(l, 1e9);
    assert_true(shoal_lane_pop(l) == extra);
    assert_true(shoal_lane_pop(l) == NULL);
    for (int i = 0; i < 8; i++)
        free(t[i]);
    free(extra);
    shoal_lane_destroy(l);
}

/* A 429 from a model with no known limit holds the lane to half the rate it
 * was answered at over the last second until the fleet knows more. */
static void test_clamp(void)
{
    shoal_lane_t *l = lane(1000);
    shoal_task_t *t[70];
    char ids[70][4];
    double wait;
    for (int i = 0; i < 70; i++) {
        snprintf(ids[i], 4, "c%d", i);
        t[i] = task(1, ids[i]);
        shoal_lane_push(l, t[i]);
    }
    /* 21 answers within a second, then a 429. */
    for (int i = 0; i < 22; i++)
        assert_true(shoal_lane_next(l, 0, &wait) == t[i]);
    for (int i = 0; i < 21; i++)
        shoal_lane_ended(l, t[i], SHOAL_LANE_OK, NULL, -1, 500 + i);
    shoal_lane_ended(l, t[21], SHOAL_LANE_LIMITED, NULL, -1, 600);
    /* Now about 10 a second: the bucket starts empty and fills at that rate. */
    int started = 0;
    for (double now = 600; now < 1600; now += 5)
        while (shoal_lane_next(l, now, &wait) != NULL)
            started++;
    assert_true(started >= 9 && started <= 11);
    /* The fleet saying nothing new (its share unchanged, so no call here)
     * does not keep the clamp past its ten seconds: at 10.5 s a second's
     * worth starts, then a wait; from 10.6 s the lane sends freely again,
     * and a new 429 clamps it anew. */
    int burst = 0;
    while (shoal_lane_next(l, 10500, &wait) != NULL)
        burst++;
    assert_true(burst >= 9 && burst <= 11 && wait > 0);
    shoal_task_t *last = NULL;
    for (int i = 0; i < 15; i++)
        assert_true((last = shoal_lane_next(l, 10601, &wait)) != NULL);
    shoal_lane_ended(l, last, SHOAL_LANE_LIMITED, NULL, -1, 10700);
    assert_true(shoal_lane_next(l, 10700, &wait) == NULL && wait > 0);
    for (int i = 0; i < 70; i++)
        free(t[i]);
    shoal_lane_destroy(l);
}

static void test_rates(void)
{
    shoal_lane_t *l = lane(1000);
    /* 2 requests/s and 600 tokens/s; each call reserves 200 tokens. */
    shoal_lane_set_rates(l, 2, 600, 0);
    shoal_task_t *t[10];
    char ids[10][4];
    for (int i = 0; i < 10; i++) {
        snprintf(ids[i], 4, "r%d", i);
        t[i] = task(1, ids[i]);
        shoal_lane_push(l, t[i]);
    }
    double wait;
    /* A lane that gets a rate starts empty (its share may be new to the
     * fleet), then fills at the rate, up to a second's worth. */
    assert_true(shoal_lane_next(l, 0, &wait) == NULL);
    assert_true(wait > 490 && wait <= 500);
    int started = 0, by_1s = 0;
    for (double now = 0; now <= 5000; now += 10) {
        while (started < 10 && shoal_lane_next(l, now, &wait) != NULL)
            started++;
        if (now == 1000)
            by_1s = started;
    }
    assert_int_eq(by_1s, 2);
    assert_int_eq(started, 10);
    /* Settling gives back what a call did not use: tokens bind now. */
    shoal_lane_t *l2 = lane(1000);
    shoal_lane_set_rates(l2, 0, 400, 0); /* burst 400 = two reservations */
    shoal_task_t *a = task(1, "a"), *b = task(1, "b"), *c = task(1, "c");
    shoal_lane_push(l2, a);
    shoal_lane_push(l2, b);
    shoal_lane_push(l2, c);
    assert_true(shoal_lane_next(l2, 1000, &wait) == a);
    assert_true(shoal_lane_next(l2, 1000, &wait) == b);
    assert_true(shoal_lane_next(l2, 1000, &wait) == NULL);
    shoal_usage_t none = {0};
    shoal_lane_ended(l2, a, SHOAL_LANE_OK, &none, -1, 1000); /* used none of its 200 */
    /* An OpenAI-style limit counted a's whole output room (100) when it
     * admitted it: only the unused input comes back. */
    assert_true(shoal_lane_next(l2, 1000, &wait) == NULL);
    assert_true(wait > 240 && wait <= 250);
    assert_true(shoal_lane_next(l2, 1250, &wait) == c);
    /* A call that used more than it reserved leaves a debt to wait out. */
    shoal_usage_t big = {.input = 100, .output = 500};
    shoal_lane_ended(l2, b, SHOAL_LANE_OK, &big, -1, 1250);
    shoal_task_t *d = task(1, "d");
    shoal_lane_push(l2, d);
    assert_true(shoal_lane_next(l2, 1250, &wait) == NULL);
    assert_true(wait > 1000); /* 400 over plus 200 for d, at 400/s */
    free(d);
    for (int i = 0; i < 10; i++)
        free(t[i]);
    free(a);
    free(b);
    free(c);
    shoal_lane_destroy(l);
    shoal_lane_destroy(l2);
}

/* Separate input and output limits: each call reserves 100 input and 100
 * output tokens; with 1000 input and 100 output tokens a second, output
 * binds: one call a second. Settling with a small answer frees room. */
static void test_io_rates(void)
{
    shoal_lane_t *l = lane(1000);
    shoal_lane_set_io_rates(l, 1000, 100, 0);
    shoal_task_t *t[6];
    char ids[6][4];
    for (int i = 0; i < 6; i++) {
        snprintf(ids[i], 4, "o%d", i);
        t[i] = task(1, ids[i]);
        shoal_lane_push(l, t[i]);
    }
    double wait;
    int started = 0;
    for (double now = 0; now <= 3000; now += 10)
        while (shoal_lane_next(l, now, &wait) != NULL)
            started++;
    assert_int_eq(started, 3); /* at 1 s, 2 s and 3 s */
    assert_true(wait > 0);
    /* The first call wrote 10 output tokens: 90 come back, the next fits
     * 100 ms later instead of a second. */
    shoal_usage_t small = {.input = 100, .output = 10};
    shoal_lane_ended(l, t[0], SHOAL_LANE_OK, &small, -1, 3000);
    assert_true(shoal_lane_next(l, 3000, &wait) == NULL);
    assert_true(wait > 0 && wait <= 110);
    assert_true(shoal_lane_next(l, 3110, &wait) == t[3]);
    for (int i = 0; i < 6; i++)
        free(t[i]);
    shoal_lane_destroy(l);
}

static void test_backoff(void)
{
    shoal_backoff_t b;
    shoal_backoff_init(&b);
    unsigned seed = 7;
    long max1 = 0, max5 = 0, max20 = 0;
    for (int i = 0; i < 2000; i++) {
        long w1 = shoal_backoff_ms(&b, 1, -1, &seed);
        long w5 = shoal_backoff_ms(&b, 5, -1, &seed);
        long w20 = shoal_backoff_ms(&b, 20, -1, &seed);
        assert_true(w1 >= 0 && w1 <= 500);
        assert_true(w5 >= 0 && w5 <= 8000);
        assert_true(w20 >= 0 && w20 <= 30000);
        max1 = w1 > max1 ? w1 : max1;
        max5 = w5 > max5 ? w5 : max5;
        max20 = w20 > max20 ? w20 : max20;
    }
    /* Full jitter reaches close to each cap. */
    assert_true(max1 > 450);
    assert_true(max5 > 7000);
    assert_true(max20 > 27000);
    /* Retry-After is a floor, with at most 10% (1 s) on top, capped. */
    for (int i = 0; i < 200; i++) {
        long w = shoal_backoff_ms(&b, 1, 5000, &seed);
        assert_true(w >= 5000 && w <= 5500);
        w = shoal_backoff_ms(&b, 1, 86400000, &seed);
        assert_true(w >= 600000 && w <= 601000);
    }
    b.retry_after_cap_ms = 2000;
    long w = shoal_backoff_ms(&b, 1, 60000, &seed);
    assert_true(w >= 2000 && w <= 2200);
}

int main(void)
{
    test_priorities();
    test_window_and_cooldown();
    test_rates();
    test_clamp();
    test_io_rates();
    test_backoff();
    return 0;
}
