/*
 * A lane: everything the worker knows about sending to one model. Its queue
 * of tasks waiting for capacity (one FIFO per priority), its concurrency
 * window (calls in flight allowed at once; grows on success, shrinks on
 * overload), its hold (no call starts before it: after a 429, while the
 * provider is down), and its health (failures in a row open a cooldown that
 * grows while the model keeps failing; one probe call at a time tests it).
 *
 * Rate limits are the lane's buckets (requests and tokens), set from the
 * fleet's share (worker/fleet.h) by the runner. A lane never looks at the
 * clock: callers pass a monotonic now in milliseconds. Not thread-safe.
 */
#ifndef SHOAL_WORKER_LANE_H
#define SHOAL_WORKER_LANE_H

#include <stddef.h>

#include "common/models.h"
#include "worker/task.h"

typedef struct shoal_lane shoal_lane_t;

typedef struct {
    long max_concurrency;   /* window ceiling; 0 = max_inflight of the worker */
    long start_concurrency; /* window at start, grown by slow start */
    long cooldown_base_ms;  /* first cooldown after the model failed repeatedly */
    long cooldown_max_ms;
    int failures_to_cool; /* failures in a row that start a cooldown */
} shoal_lane_conf_t;

/* Outcome of one call, as the lane sees it. */
typedef enum {
    SHOAL_LANE_OK = 0,  /* an answer: the model works */
    SHOAL_LANE_LIMITED, /* 429: rate limited */
    SHOAL_LANE_DOWN,    /* overloaded, 5xx, timeout, connection error */
    SHOAL_LANE_NEUTRAL, /* says nothing about the model (e.g. a 400 for this prompt) */
} shoal_lane_signal_t;

void shoal_lane_conf_init(shoal_lane_conf_t *c);

/* m borrowed for the lane's life. NULL when out of memory. */
shoal_lane_t *shoal_lane_new(const shoal_model_t *m, const shoal_lane_conf_t *c);
void shoal_lane_destroy(shoal_lane_t *l); /* NULL ok; does not free queued tasks */

const shoal_model_t *shoal_lane_model(const shoal_lane_t *l);

/* Queues t (state WAITING) behind tasks of its priority. */
void shoal_lane_push(shoal_lane_t *l, shoal_task_t *t);

/* The next waiting task whatever the capacity (the lane is being emptied),
 * NULL when none waits. No capacity is taken. */
shoal_task_t *shoal_lane_pop(shoal_lane_t *l);

/* Takes t out of the queue (a task leaving early, e.g. on stop). */
void shoal_lane_remove(shoal_lane_t *l, shoal_task_t *t);

/* The next task that may start now, its capacity taken (one slot of the
 * window, its tokens from the buckets); NULL when none may. Then *wait_ms
 * says when to ask again (-1: only after a call ends or a task arrives).
 * Higher priorities go first, but every 16th start goes to the lowest
 * waiting priority so a backlog never starves. */
shoal_task_t *shoal_lane_next(shoal_lane_t *l, double now_ms, double *wait_ms);

/* A call of this lane ended: frees its slot, settles its tokens with what it
 * used (used NULL: unknown, the reservation stands) and learns from sig.
 * hold_ms >= 0 holds the lane that long (a Retry-After). */
void shoal_lane_ended(shoal_lane_t *l, shoal_task_t *t, shoal_lane_signal_t sig,
                      const shoal_usage_t *used, long hold_ms, double now_ms);

/* Holds the lane: no call starts before until_ms. */
void shoal_lane_hold(shoal_lane_t *l, double until_ms);

/* Sets the lane's rates: requests and tokens per second, <= 0 unlimited.
 * A clamp a 429 set on a lane with no request rate stays until its time
 * (10 s) unless the fleet now gives one. */
void shoal_lane_set_rates(shoal_lane_t *l, double rps, double tps, double now_ms);

/* The output tokens a call's limit counted, given what it produced: an
 * OpenAI-style limit counts the reserved output room in full, Anthropic's the
 * output made. Call before shoal_lane_ended(). */
long shoal_lane_charged_output(const shoal_lane_t *l, const shoal_task_t *t, long used);

/* Sets the separate input and output token rates (Anthropic's input and
 * output limits), per second, <= 0 unlimited. */
void shoal_lane_set_io_rates(shoal_lane_t *l, double in_tps, double out_tps, double now_ms);

/* State for stats, metrics and demand reports. */
size_t shoal_lane_waiting(const shoal_lane_t *l);
long shoal_lane_in_flight(const shoal_lane_t *l);
double shoal_lane_window(const shoal_lane_t *l);
/* Tokens a call of this lane reserves, on average so far (a guess before). */
long shoal_lane_avg_tokens(const shoal_lane_t *l);
/* How long the model has been failing without a success (0 when healthy). */
double shoal_lane_down_ms(const shoal_lane_t *l, double now_ms);
/* Nonzero while the lane is cooling down after repeated failures. */
int shoal_lane_cooling(const shoal_lane_t *l, double now_ms);
/* For metrics: what the request and token buckets hold now (negative while
 * in debt), -1 for one without a limit; the rates they refill at (per
 * second, 0 = none); how long the lane's hold and its cooldown still last
 * (0 when none). */
typedef struct {
    double requests, tokens;
    double rps, tps;
    double hold_ms, cooldown_ms;
} shoal_lane_levels_t;
void shoal_lane_levels(const shoal_lane_t *l, double now_ms, shoal_lane_levels_t *out);

#endif
