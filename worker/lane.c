/*
 * Lanes (see lane.h).
 */
#include "worker/lane.h"

#include <stdlib.h>

#define NPRIO 3
#define DECREASE_EVERY_MS 500.0 /* the window shrinks at most this often */

/* A token bucket refilled continuously; level may go below zero after a
 * settle that found a call used more than it reserved. */
struct bucket {
    double rate;  /* units per ms; <= 0 = unlimited */
    double burst; /* most units held */
    double level;
    double at_ms; /* when level was computed */
};

struct shoal_lane {
    const shoal_model_t *model;
    shoal_lane_conf_t conf;
    shoal_task_t *head[NPRIO], *tail[NPRIO];
    size_t waiting;
    unsigned picks;
    long in_flight;
    double window, window_max;
    double decreased_at;
    double hold_until;
    int fails;         /* DOWN answers in a row */
    double down_since; /* first DOWN after the last OK; 0 = healthy */
    double cool_until; /* cooling: nothing starts before, then one probe */
    long cool_ms;      /* length of the last cooldown */
    int probing;       /* a probe call is in flight */
    struct bucket req, tok;
};

void shoal_lane_conf_init(shoal_lane_conf_t *c)
{
    c->max_concurrency = 64;
    c->start_concurrency = 64;
    c->cooldown_base_ms = 1000;
    c->cooldown_max_ms = 30000;
    c->failures_to_cool = 3;
}

static void bucket_set(struct bucket *b, double per_s, double now)
{
    double rate = per_s > 0 ? per_s / 1000.0 : 0;
    /* A second of rate as burst: enough to keep a window busy, small enough
     * that a lane coming back from idle cannot overshoot its share by much. */
    double burst = per_s > 0 ? (per_s > 1 ? per_s : 1) : 0;
    if (b->rate > 0 && rate > 0) {
        b->level += (now - b->at_ms) * b->rate;
        if (b->level > burst)
            b->level = burst;
    } else {
        b->level = rate > 0 ? burst : 0;
    }
    b->at_ms = now;
    b->rate = rate;
    b->burst = burst;
}

static void bucket_refill(struct bucket *b, double now)
{
    if (b->rate <= 0)
        return;
    if (now > b->at_ms) {
        b->level += (now - b->at_ms) * b->rate;
        if (b->level > b->burst)
            b->level = b->burst;
    }
    b->at_ms = now;
}

/* ms until cost fits; a cost above the burst fits when the bucket is full. */
static double bucket_wait(const struct bucket *b, double cost)
{
    if (b->rate <= 0)
        return 0;
    double need = cost < b->burst ? cost : b->burst;
    return b->level >= need ? 0 : (need - b->level) / b->rate;
}

shoal_lane_t *shoal_lane_new(const shoal_model_t *m, const shoal_lane_conf_t *c)
{
    shoal_lane_t *l = calloc(1, sizeof(*l));
    if (!l)
        return NULL;
    l->model = m;
    l->conf = *c;
    l->window_max = (double)(c->max_concurrency > 0 ? c->max_concurrency : 64);
    l->window = c->start_concurrency > 0 && (double)c->start_concurrency < l->window_max
                    ? (double)c->start_concurrency
                    : l->window_max;
    return l;
}

void shoal_lane_destroy(shoal_lane_t *l)
{
    free(l);
}

const shoal_model_t *shoal_lane_model(const shoal_lane_t *l)
{
    return l->model;
}

void shoal_lane_push(shoal_lane_t *l, shoal_task_t *t)
{
    int p = t->prio < 0 || t->prio >= NPRIO ? NPRIO - 1 : t->prio;
    t->qnext = NULL;
    t->qprev = l->tail[p];
    if (l->tail[p])
        l->tail[p]->qnext = t;
    else
        l->head[p] = t;
    l->tail[p] = t;
    l->waiting++;
    shoal_task_set_state(t, SHOAL_TASK_WAITING);
}

void shoal_lane_remove(shoal_lane_t *l, shoal_task_t *t)
{
    int p = t->prio < 0 || t->prio >= NPRIO ? NPRIO - 1 : t->prio;
    if (t->qprev)
        t->qprev->qnext = t->qnext;
    else
        l->head[p] = t->qnext;
    if (t->qnext)
        t->qnext->qprev = t->qprev;
    else
        l->tail[p] = t->qprev;
    t->qnext = t->qprev = NULL;
    l->waiting--;
}

static shoal_task_t *pick(shoal_lane_t *l)
{
    int first = -1, last = -1;
    for (int p = 0; p < NPRIO; p++) {
        if (l->head[p]) {
            if (first < 0)
                first = p;
            last = p;
        }
    }
    if (first < 0)
        return NULL;
    return (l->picks % 16 == 15) ? l->head[last] : l->head[first];
}

shoal_task_t *shoal_lane_pop(shoal_lane_t *l)
{
    shoal_task_t *t = pick(l);
    if (t)
        shoal_lane_remove(l, t);
    return t;
}

static long task_tokens(const shoal_task_t *t)
{
    long out = t->model->max_output_tokens > 0 ? t->model->max_output_tokens : 1024;
    return (long)(t->request_len / 4) + out;
}

shoal_task_t *shoal_lane_next(shoal_lane_t *l, double now_ms, double *wait_ms)
{
    *wait_ms = -1;
    shoal_task_t *t = pick(l);
    if (!t)
        return NULL;
    double until = l->hold_until > l->cool_until ? l->hold_until : l->cool_until;
    if (now_ms < until) {
        *wait_ms = until - now_ms;
        return NULL;
    }
    long window = l->cool_until > 0 ? 1 : (long)l->window; /* cooled: one probe at a time */
    if (window < 1)
        window = 1;
    if (l->in_flight >= window)
        return NULL;
    long cost = task_tokens(t);
    bucket_refill(&l->req, now_ms);
    bucket_refill(&l->tok, now_ms);
    double w = bucket_wait(&l->req, 1), wt = bucket_wait(&l->tok, (double)cost);
    if (wt > w)
        w = wt;
    if (w > 0) {
        *wait_ms = w;
        return NULL;
    }
    if (l->req.rate > 0)
        l->req.level -= 1;
    if (l->tok.rate > 0)
        l->tok.level -= (double)cost;
    t->reserved_tokens = cost;
    shoal_lane_remove(l, t);
    l->picks++;
    l->in_flight++;
    if (l->cool_until > 0)
        l->probing = 1;
    return t;
}

void shoal_lane_ended(shoal_lane_t *l, shoal_task_t *t, shoal_lane_signal_t sig, long tokens_used,
                      long hold_ms, double now_ms)
{
    if (l->in_flight > 0)
        l->in_flight--;
    if (tokens_used >= 0 && l->tok.rate > 0) {
        bucket_refill(&l->tok, now_ms);
        l->tok.level += (double)(t->reserved_tokens - tokens_used);
        if (l->tok.level > l->tok.burst)
            l->tok.level = l->tok.burst;
    }
    t->reserved_tokens = 0;
    l->probing = 0;
    if (hold_ms >= 0 && now_ms + (double)hold_ms > l->hold_until)
        l->hold_until = now_ms + (double)hold_ms;
    switch (sig) {
    case SHOAL_LANE_OK:
        l->fails = 0;
        l->down_since = 0;
        l->cool_until = 0;
        l->cool_ms = 0;
        if (l->window < l->window_max) {
            l->window += 1.0 / (l->window > 1 ? l->window : 1);
            if (l->window > l->window_max)
                l->window = l->window_max;
        }
        break;
    case SHOAL_LANE_LIMITED:
    case SHOAL_LANE_DOWN:
        if (now_ms - l->decreased_at >= DECREASE_EVERY_MS) {
            l->window *= 0.7;
            if (l->window < 1)
                l->window = 1;
            l->decreased_at = now_ms;
        }
        if (sig == SHOAL_LANE_LIMITED)
            break;
        if (l->down_since == 0)
            l->down_since = now_ms;
        if (++l->fails >= l->conf.failures_to_cool) {
            l->cool_ms = l->cool_ms ? l->cool_ms * 2 : l->conf.cooldown_base_ms;
            if (l->cool_ms > l->conf.cooldown_max_ms)
                l->cool_ms = l->conf.cooldown_max_ms;
            l->cool_until = now_ms + (double)l->cool_ms;
        }
        break;
    case SHOAL_LANE_NEUTRAL:
        break;
    }
}

void shoal_lane_hold(shoal_lane_t *l, double until_ms)
{
    if (until_ms > l->hold_until)
        l->hold_until = until_ms;
}

void shoal_lane_set_rates(shoal_lane_t *l, double rps, double tps, double now_ms)
{
    bucket_set(&l->req, rps, now_ms);
    bucket_set(&l->tok, tps, now_ms);
}

size_t shoal_lane_waiting(const shoal_lane_t *l)
{
    return l->waiting;
}

long shoal_lane_in_flight(const shoal_lane_t *l)
{
    return l->in_flight;
}

double shoal_lane_window(const shoal_lane_t *l)
{
    return l->window;
}

double shoal_lane_down_ms(const shoal_lane_t *l, double now_ms)
{
    return l->down_since > 0 ? now_ms - l->down_since : 0;
}

int shoal_lane_cooling(const shoal_lane_t *l, double now_ms)
{
    return l->cool_until > 0 && (now_ms < l->cool_until || l->probing);
}
