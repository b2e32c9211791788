/*
 * Local rate limiting, pure arithmetic with no clock of its own: callers pass
 * now_ms from one monotonic clock (shoal_service_now_ms), so the same code
 * runs in the worker's loop and under a fake clock in tests. Single-threaded:
 * a bucket or window belongs to one loop.
 *
 * shoal_bucket_t is a token bucket (the GCRA of REFERENCES.md in its
 * level-and-timestamp form): `rate` units per second flow in, at most `burst`
 * are stored, and a call costs any number of units (1 per request, or its
 * token estimate). Reserve before the call with take, settle after it with
 * give (refund what was not used) or take_force (charge what was used beyond
 * the reservation). A cost above the burst fits once the bucket is full and
 * leaves a debt, so a big call is never starved and the long-run rate still
 * holds. A rate <= 0 means no limit: every operation is then free (only a
 * hold still applies).
 *
 * shoal_aimd_t is an additive-increase, multiplicative-decrease value for a
 * local concurrency window: +increase per window's worth of successes (the
 * value grows by about `increase` each time `value` calls succeed, as TCP's
 * congestion window does), times `factor` on congestion at most once per
 * cooldown, because the congestion signals of calls already in flight say
 * nothing new about the smaller window.
 */
#ifndef SHOAL_COMMON_RATELIMIT_H
#define SHOAL_COMMON_RATELIMIT_H

/* Plain struct so a lane can embed it; read and change it only through the
 * functions below. */
typedef struct {
    double rate;          /* units per second; <= 0: no limit */
    double burst;         /* most units stored */
    double level;         /* units stored at at_ms; negative while in debt */
    double at_ms;         /* time level was computed for */
    double hold_until_ms; /* nothing fits before this */
} shoal_bucket_t;

/* A full bucket at now_ms. A burst below 1 unit is raised to 1 (one request
 * must always be possible). */
void shoal_bucket_init(shoal_bucket_t *b, double rate, double burst, double now_ms);

/* Changes rate and burst keeping what is stored: the level is brought up to
 * now_ms at the old rate, then capped at the new burst (a larger burst is not
 * filled at once). A bucket that was unlimited starts empty, since it becomes
 * limited mostly because the provider just said it is out of capacity. */
void shoal_bucket_set(shoal_bucket_t *b, double rate, double burst, double now_ms);

/* Milliseconds until cost fits: 0 when it fits now. A cost above the burst
 * fits when the bucket is full. */
double shoal_bucket_wait_ms(const shoal_bucket_t *b, double now_ms, double cost);

/* Reserves cost when it fits now (returns 1); otherwise changes nothing and
 * returns 0. Only a cost above the burst leaves the level negative. */
int shoal_bucket_take(shoal_bucket_t *b, double now_ms, double cost);

/* Settles a reservation that was too large: gives amount back, never above
 * the burst. */
void shoal_bucket_give(shoal_bucket_t *b, double now_ms, double amount);

/* Settles a reservation that was too small: takes amount unconditionally,
 * so the level may go negative and later calls wait for the debt. */
void shoal_bucket_take_force(shoal_bucket_t *b, double now_ms, double amount);

/* Nothing fits before until_ms (a later hold wins over an earlier one). The
 * bucket keeps filling meanwhile. */
void shoal_bucket_hold(shoal_bucket_t *b, double now_ms, double until_ms);

/* Units stored at now_ms (the burst when unlimited). */
double shoal_bucket_level(const shoal_bucket_t *b, double now_ms);

typedef struct {
    double min, max;     /* bounds of the value */
    double value;        /* current value */
    double increase;     /* added per window's worth of successes; default 1 */
    double factor;       /* multiplier on congestion, in (0, 1); default 0.7 */
    double cooldown_ms;  /* shortest gap between two decreases; default 1000 */
    double last_down_ms; /* time of the last decrease; < 0 none yet */
} shoal_aimd_t;

/* Starts at start, clamped to [min, max] (min is raised to at least 1). */
void shoal_aimd_init(shoal_aimd_t *a, double min, double max, double start);

/* Sets the step, the decrease factor (outside (0, 1) keeps the default) and
 * the cooldown between decreases. */
void shoal_aimd_tune(shoal_aimd_t *a, double increase, double factor, double cooldown_ms);

void shoal_aimd_on_success(shoal_aimd_t *a, double now_ms);

/* Multiplies the value down unless the last decrease was less than
 * cooldown_ms ago. Returns 1 when it decreased. */
int shoal_aimd_on_congestion(shoal_aimd_t *a, double now_ms);

/* The current value, within [min, max]. */
double shoal_aimd_value(const shoal_aimd_t *a);

#endif
