/*
 * The one backoff policy of the worker: capped exponential backoff with full
 * jitter (a wait drawn uniformly from zero to base * 2^(n-1), capped), with a
 * provider's Retry-After as a floor. The floor itself is capped, so a provider
 * that asks for a day never parks a task past what the operator allows, and
 * gets a little jitter on top so the workers it told to wait do not all come
 * back in the same millisecond. Pure functions; any thread.
 */
#ifndef SHOAL_WORKER_BACKOFF_H
#define SHOAL_WORKER_BACKOFF_H

typedef struct {
    long base_ms;            /* first retry's cap */
    long cap_ms;             /* no exponential wait is longer than this */
    long retry_after_cap_ms; /* Retry-After is honoured up to this */
} shoal_backoff_t;

/* Fills b with the defaults: 500 ms, 30 s, 10 minutes. */
void shoal_backoff_init(shoal_backoff_t *b);

/* How long to wait before try number failures + 1, after `failures` failed
 * tries (>= 1). retry_after_ms < 0 means the provider gave none. *seed is the
 * caller's random state (rand_r). */
long shoal_backoff_ms(const shoal_backoff_t *b, int failures, long retry_after_ms, unsigned *seed);

#endif
