/*
 * Backoff (see backoff.h).
 */
#include "worker/backoff.h"

#include <stdlib.h>

void shoal_backoff_init(shoal_backoff_t *b)
{
    b->base_ms = 500;
    b->cap_ms = 30000;
    b->retry_after_cap_ms = 600000;
}

long shoal_backoff_ms(const shoal_backoff_t *b, int failures, long retry_after_ms, unsigned *seed)
{
    long cap = b->base_ms > 0 ? b->base_ms : 1;
    for (int i = 1; i < failures && cap < b->cap_ms; i++)
        cap *= 2;
    if (cap > b->cap_ms)
        cap = b->cap_ms;
    long wait = (long)((double)rand_r(seed) / ((double)RAND_MAX + 1.0) * (double)(cap + 1));
    if (retry_after_ms >= 0) {
        long floor =
            retry_after_ms < b->retry_after_cap_ms ? retry_after_ms : b->retry_after_cap_ms;
        /* Up to 10% (at most 1 s) on top, so told-to-wait workers spread out. */
        long spread = floor / 10 < 1000 ? floor / 10 : 1000;
        floor += spread > 0 ? (long)((double)rand_r(seed) / ((double)RAND_MAX + 1.0) * spread) : 0;
        if (wait < floor)
            wait = floor;
    }
    return wait;
}
