/*
 * Lanes (see lane.h).
 */
#include "worker/lane.h"

#include <stdlib.h>

#include "common/ratelimit.h"

#define NPRIO 3
#define DECREASE_EVERY_MS 500.0 /* the window shrinks at most this often */
#define CLAMP_MS 10000.0        /* a local clamp lasts at most this long */

struct shoal_lane {
    const shoal_model_t *model;
    shoal_lane_conf_t conf;
    shoal_task_t *head[NPRIO], *tail[NPRIO];
    size_t waiting;
    unsigned picks;
    long in_flight;
    double window, window_max;
    int slow_start; /* until the first congestion, the window doubles every round trip */
    double decreased_at;
    double hold_until;
    int fails;                          /* DOWN answers in a row */
    double down_since;                  /* first DOWN after the last OK; 0 = healthy */
    double cool_until;                  /* cooling: nothing starts before, then one probe */
    long cool_ms;                       /* length of the last cooldown */
    int probing;                        /* a probe call is in flight */
    shoal_bucket_t req, tok, tin, tout; /* requests, tokens, input and output tokens */
    long max_cost;                      /* largest token reservation seen, for the token burst */
    double cost_sum, cost_n;
    double ok_since;        /* start of the current one-second count of answers */
    double ok_now, ok_last; /* answers in the current and the last second */
    double fleet_rps;       /* the request rate the fleet set (0: none) */
    double clamp_until;     /* a 429 with no fleet rate holds the lane locally until then */
};

void shoal_lane_conf_init(shoal_lane_conf_t *c)
{
    c->max_concurrency = 64;
    c->start_concurrency = 8;
    c->cooldown_base_ms = 1000;
    c->cooldown_max_ms = 30000;
    c->failures_to_cool = 3;
}

/* A second of rate as burst: enough to keep a window busy, small enough that
 * a lane coming back from idle cannot overshoot its share by much. */
static double burst_for(double per_s, double floor)
{
    return per_s > floor ? per_s : floor;
}

shoal_lane_t *shoal_lane_new(const shoal_model_t *m, const shoal_lane_conf_t *c)
{
    shoal_lane_t *l = calloc(1, sizeof(*l));
    if (!l)
        return NULL;
    l->model = m;
    l->conf = *c;
    l->decreased_at = -1e18; /* the first congestion always shrinks the window */
    l->window_max = (double)(c->max_concurrency > 0 ? c->max_concurrency : 64);
    shoal_bucket_init(&l->req, 0, 0, 0);
    shoal_bucket_init(&l->tok, 0, 0, 0);
    shoal_bucket_init(&l->tin, 0, 0, 0);
    shoal_bucket_init(&l->tout, 0, 0, 0);
    if (m->max_concurrency > 0 && (double)m->max_concurrency < l->window_max)
        l->window_max = (double)m->max_concurrency;
    l->slow_start = 1;
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

/* A call reserves its estimated input (a quarter of the request's bytes)
 * plus all the output it may produce. */
static long input_tokens(const shoal_task_t *t)
{
    return (long)(t->request_len / 4);
}

static long output_tokens(const shoal_task_t *t)
{
    return t->model->max_output_tokens > 0 ? t->model->max_output_tokens : 1024;
}

/* A local clamp ends at its time even when the fleet's share has not
 * changed since: the lane goes back to the fleet's rate (none), and the
 * next 429 may clamp it again. */
static void lift_clamp(shoal_lane_t *l, double now_ms)
{
    if (l->clamp_until > 0 && now_ms >= l->clamp_until) {
        shoal_bucket_set(&l->req, l->fleet_rps, burst_for(l->fleet_rps, 1), now_ms);
        l->clamp_until = 0;
    }
}

shoal_task_t *shoal_lane_next(shoal_lane_t *l, double now_ms, double *wait_ms)
{
    *wait_ms = -1;
    lift_clamp(l, now_ms);
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
    long in = input_tokens(t), out = output_tokens(t), cost = in + out;
    double w = shoal_bucket_wait_ms(&l->req, now_ms, 1);
    double waits[] = {shoal_bucket_wait_ms(&l->tok, now_ms, (double)cost),
                      shoal_bucket_wait_ms(&l->tin, now_ms, (double)in),
                      shoal_bucket_wait_ms(&l->tout, now_ms, (double)out)};
    for (size_t i = 0; i < 3; i++)
        if (waits[i] > w)
            w = waits[i];
    if (w > 0) {
        *wait_ms = w;
        return NULL;
    }
    shoal_bucket_take(&l->req, now_ms, 1);
    shoal_bucket_take(&l->tok, now_ms, (double)cost);
    shoal_bucket_take(&l->tin, now_ms, (double)in);
    shoal_bucket_take(&l->tout, now_ms, (double)out);
    t->reserved_in = in;
    if (cost > l->max_cost)
        l->max_cost = cost;
    l->cost_sum += (double)cost;
    l->cost_n++;
    t->reserved_tokens = cost;
    shoal_lane_remove(l, t);
    l->picks++;
    l->in_flight++;
    if (l->cool_until > 0)
        l->probing = 1;
    return t;
}

/* Settle one bucket: what the call did not use goes back; what it used
 * beyond its reservation becomes a debt the next calls wait out. */
static void settle(shoal_bucket_t *b, long reserved, long used, double now_ms)
{
    if (used < reserved)
        shoal_bucket_give(b, now_ms, (double)(reserved - used));
    else if (used > reserved)
        shoal_bucket_take_force(b, now_ms, (double)(used - reserved));
}

void shoal_lane_ended(shoal_lane_t *l, shoal_task_t *t, shoal_lane_signal_t sig,
                      const shoal_usage_t *used, long hold_ms, double now_ms)
{
    if (l->in_flight > 0)
        l->in_flight--;
    if (used) {
        long rin = t->reserved_in, rout = t->reserved_tokens - t->reserved_in;
        long out = shoal_lane_charged_output(l, t, used->output);
        settle(&l->tok, t->reserved_tokens, used->input + out, now_ms);
        settle(&l->tin, rin, used->input, now_ms);
        settle(&l->tout, rout, used->output, now_ms);
    }
    t->reserved_tokens = t->reserved_in = 0;
    l->probing = 0;
    if (hold_ms >= 0 && now_ms + (double)hold_ms > l->hold_until)
        l->hold_until = now_ms + (double)hold_ms;
    if (now_ms - l->ok_since >= 1000) {
        l->ok_last = now_ms - l->ok_since < 2000 ? l->ok_now : 0;
        l->ok_now = 0;
        l->ok_since = now_ms;
    }
    switch (sig) {
    case SHOAL_LANE_OK:
        l->ok_now++;
        l->fails = 0;
        l->down_since = 0;
        l->cool_until = 0;
        l->cool_ms = 0;
        if (l->window < l->window_max) {
            /* Slow start (one more per answer: doubling each round trip) finds
             * a provider's capacity in a few round trips without a burst of
             * hundreds of calls into an unknown limit; then one more per
             * window's worth of answers. */
            l->window += l->slow_start ? 1.0 : 1.0 / (l->window > 1 ? l->window : 1);
            if (l->window > l->window_max)
                l->window = l->window_max;
        }
        break;
    case SHOAL_LANE_LIMITED:
    case SHOAL_LANE_DOWN:
        l->slow_start = 0;
        if (now_ms - l->decreased_at >= DECREASE_EVERY_MS) {
            l->window *= 0.7;
            if (l->window < 1)
                l->window = 1;
            l->decreased_at = now_ms;
        }
        if (sig == SHOAL_LANE_LIMITED) {
            /* A 429 from a model with no known limit: until the fleet has
             * learned one (for at most CLAMP_MS), hold this lane near the
             * rate it was answered at over the last second, instead of
             * sending at full speed into the limit for a lease round trip;
             * half of it, as the second may have held the provider's burst
             * allowance. */
            lift_clamp(l, now_ms);
            if (l->fleet_rps <= 0) {
                double ok = l->ok_last > l->ok_now ? l->ok_last : l->ok_now;
                double rps = ok * 0.5 > 1 ? ok * 0.5 : 1;
                if (l->clamp_until == 0 || rps < l->req.rate)
                    shoal_bucket_set(&l->req, rps, burst_for(rps, 1), now_ms);
                if (l->clamp_until == 0)
                    l->clamp_until = now_ms + CLAMP_MS;
            }
            break;
        }
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

long shoal_lane_charged_output(const shoal_lane_t *l, const shoal_task_t *t, long used)
{
    /* OpenAI-style limits count a request's whole max_tokens when they admit
     * it and give nothing back; Anthropic's limits count the output made. */
    long room = t->reserved_tokens - t->reserved_in;
    if (l->model->provider == SHOAL_PROVIDER_ANTHROPIC || used > room)
        return used;
    return room;
}

void shoal_lane_set_rates(shoal_lane_t *l, double rps, double tps, double now_ms)
{
    /* The fleet knowing no limit yet does not undo a local clamp in force;
     * a rate from the fleet replaces it. */
    l->fleet_rps = rps > 0 ? rps : 0;
    if (rps <= 0 && l->clamp_until > now_ms)
        rps = l->req.rate;
    else
        l->clamp_until = 0;
    shoal_bucket_set(&l->req, rps, burst_for(rps, 1), now_ms);
    shoal_bucket_set(&l->tok, tps, burst_for(tps, (double)l->max_cost), now_ms);
}

void shoal_lane_set_io_rates(shoal_lane_t *l, double in_tps, double out_tps, double now_ms)
{
    shoal_bucket_set(&l->tin, in_tps, burst_for(in_tps, (double)l->max_cost), now_ms);
    shoal_bucket_set(&l->tout, out_tps, burst_for(out_tps, (double)l->max_cost), now_ms);
}

size_t shoal_lane_waiting(const shoal_lane_t *l)
{
    return l->waiting;
}

long shoal_lane_in_flight(const shoal_lane_t *l)
{
    return l->in_flight;
}

long shoal_lane_avg_tokens(const shoal_lane_t *l)
{
    return l->cost_n > 0 ? (long)(l->cost_sum / l->cost_n) : 1024;
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

static double bucket_level(const shoal_bucket_t *b, double now_ms)
{
    return b->rate > 0 ? shoal_bucket_level(b, now_ms) : -1;
}

void shoal_lane_levels(const shoal_lane_t *l, double now_ms, shoal_lane_levels_t *out)
{
    out->requests = bucket_level(&l->req, now_ms);
    out->tokens = bucket_level(&l->tok, now_ms);
    out->rps = l->req.rate > 0 ? l->req.rate : 0;
    out->tps = l->tok.rate > 0 ? l->tok.rate : 0;
    out->hold_ms = l->hold_until > now_ms ? l->hold_until - now_ms : 0;
    out->cooldown_ms = l->cool_until > now_ms ? l->cool_until - now_ms : 0;
}
