/*
 * Chunk planning: which consecutive items of a job share one model call.
 *
 * A pure function over per-item token estimates and optional groups, so it can
 * be tested without JSON. Items are packed greedily in order and never
 * reordered, so concatenating the chunks' outputs in chunk order keeps the
 * job's item order. A chunk closes when it holds limits->max_items items, when
 * adding the next item would take its estimate over limits->max_tokens, or
 * (with limits->by_group) when the next item's group differs from the chunk's.
 * A chunk's estimate is base_tokens (system + prompt template) plus the sum of
 * its items' estimates. An item too large for any chunk still gets one of its
 * own: callers reject such items first (shoal_job_parse does). Thread-safe.
 */
#ifndef SHOAL_COMMON_CHUNK_H
#define SHOAL_COMMON_CHUNK_H

#include <stddef.h>

typedef struct {
    long max_tokens;  /* estimate cap per chunk, base included; <= 0: no cap */
    size_t max_items; /* items per chunk; 0: no cap */
    int by_group;     /* nonzero: only items of one group share a chunk */
} shoal_chunk_limits_t;

/* The estimate of one chunk holding n items: base_tokens plus their
 * estimates, saturating at LONG_MAX. */
long shoal_chunk_estimate(long base_tokens, const long *item_tokens, size_t n);

/* Plans the chunks of n_items items and returns how many there are (0 only
 * when n_items is 0). starts[k] receives the index of chunk k's first item;
 * chunk k ends where chunk k + 1 starts. est_tokens (may be NULL) receives each
 * chunk's estimate. Both arrays need room for n_items entries (the most chunks
 * there can be). groups may be NULL, and so may any entry (no group): two items
 * share a group when both have none or their strings are equal. */
size_t shoal_chunk_plan(const long *item_tokens, const char *const *groups, size_t n_items,
                        long base_tokens, const shoal_chunk_limits_t *limits, size_t *starts,
                        long *est_tokens);

#endif
