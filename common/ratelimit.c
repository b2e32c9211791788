/*
 * Token buckets and AIMD windows (see ratelimit.h). Everything is computed
 * lazily from the time the caller passes: a bucket stores its level at one
 * instant and derives the level at any later instant, so idle buckets cost
 * nothing and no timer is needed.
 */
#include "common/ratelimit.h"

/* Rounding slack: a caller that waits exactly the time wait_ms returned must
 * find the cost fitting, even when the division left the level a hair short. */
#define EPS 1e-9

static int unlimited(const shoal_bucket_t *b)
{
    return !(b->rate > 0);
}

/* The level at now_ms, capped at the burst; time going backwards (a caller
 * mixing clocks) adds nothing instead of draining the bucket. */
static double level_at(const shoal_bucket_t *b, double now_ms)
{
    if (unlimited(b))
        return b->burst;
    double dt = now_ms - b->at_ms;
    double lv = b->level + (dt > 0 ? dt * b->rate / 1000.0 : 0);
    return lv > b->burst ? b->burst : lv;
}

static void advance(shoal_bucket_t *b, double now_ms)
{
    b->level = level_at(b, now_ms);
    if (now_ms > b->at_ms)
        b->at_ms = now_ms;
}

void shoal_bucket_init(shoal_bucket_t *b, double rate, double burst, double now_ms)
{
    b->rate = rate > 0 ? rate : 0;
    b->burst = burst >= 1 ? burst : 1;
    b->level = b->burst;
    b->at_ms = now_ms;
    b->hold_until_ms = 0;
}

void shoal_bucket_set(shoal_bucket_t *b, double rate, double burst, double now_ms)
{
    int was_unlimited = unlimited(b);

    advance(b, now_ms);
    b->rate = rate > 0 ? rate : 0;
    b->burst = burst >= 1 ? burst : 1;
    if (was_unlimited && !unlimited(b))
        b->level = 0;
    else if (b->level > b->burst)
        b->level = b->burst;
    b->at_ms = now_ms;
}

double shoal_bucket_wait_ms(const shoal_bucket_t *b, double now_ms, double cost)
{
    double wait = b->hold_until_ms > now_ms ? b->hold_until_ms - now_ms : 0;
    if (unlimited(b))
        return wait;
    double need = cost < b->burst ? cost : b->burst;
    double lv = level_at(b, now_ms);
    if (lv < need - EPS) {
        double fill = (need - lv) * 1000.0 / b->rate;
        if (fill > wait)
            wait = fill;
    }
    return wait;
}

int shoal_bucket_take(shoal_bucket_t *b, double now_ms, double cost)
{
    if (shoal_bucket_wait_ms(b, now_ms, cost) > 0)
        return 0;
    if (unlimited(b))
        return 1;
    advance(b, now_ms);
    b->level -= cost;
    return 1;
}

void shoal_bucket_give(shoal_bucket_t *b, double now_ms, double amount)
{
    if (unlimited(b) || !(amount > 0))
        return;
    advance(b, now_ms);
    b->level += amount;
    if (b->level > b->burst)
        b->level = b->burst;
}

void shoal_bucket_take_force(shoal_bucket_t *b, double now_ms, double amount)
{
    if (unlimited(b) || !(amount > 0))
        return;
    advance(b, now_ms);
    b->level -= amount;
}

void shoal_bucket_hold(shoal_bucket_t *b, double now_ms, double until_ms)
{
    (void)now_ms;
    if (until_ms > b->hold_until_ms)
        b->hold_until_ms = until_ms;
}

double shoal_bucket_level(const shoal_bucket_t *b, double now_ms)
{
    return level_at(b, now_ms);
}

static double clamp(const shoal_aimd_t *a, double v)
{
    if (v < a->min)
        return a->min;
    if (v > a->max)
        return a->max;
    return v;
}

void shoal_aimd_init(shoal_aimd_t *a, double min, double max, double start)
{
    a->min = min >= 1 ? min : 1;
    a->max = max >= a->min ? max : a->min;
    a->increase = 1;
    a->factor = 0.7;
    a->cooldown_ms = 1000;
    a->last_down_ms = -1;
    a->value = clamp(a, start);
}

void shoal_aimd_tune(shoal_aimd_t *a, double increase, double factor, double cooldown_ms)
{
    if (increase > 0)
        a->increase = increase;
    if (factor > 0 && factor < 1)
        a->factor = factor;
    if (cooldown_ms >= 0)
        a->cooldown_ms = cooldown_ms;
}

void shoal_aimd_on_success(shoal_aimd_t *a, double now_ms)
{
    (void)now_ms;
    a->value = clamp(a, a->value + a->increase / a->value);
}

int shoal_aimd_on_congestion(shoal_aimd_t *a, double now_ms)
{
    if (a->last_down_ms >= 0 && now_ms - a->last_down_ms < a->cooldown_ms)
        return 0;
    a->value = clamp(a, a->value * a->factor);
    a->last_down_ms = now_ms;
    return 1;
}

double shoal_aimd_value(const shoal_aimd_t *a)
{
    return a->value;
}
