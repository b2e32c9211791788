/*
 * Chunk planning: which items of a job share one model call.
 *
 * Pure functions over per-item token estimates and optional groups, so they
 * can be tested without JSON. shoal_chunk_plan() cuts consecutive items into
 * chunks and never reorders them, so concatenating the chunks' outputs in
 * chunk order keeps the order it was given. shoal_chunk_group_order() is the
 * one step that reorders: it brings the items of each group together (groups
 * in the order they first appear, items of a group in their own order), which
 * the job then takes as its item order (common/job.c).
 *
 * Balance: a run of items (a group, or the whole job without by_group) gets
 * the fewest chunks that hold it under the limits (what greedy packing makes),
 * and is then cut into that many chunks of nearly equal tokens, so no chunk is
 * a straggler next to a near-empty last one. A chunk's estimate is base_tokens
 * (system + prompt template) plus the sum of its items' estimates. An item too
 * large for any chunk still gets one of its own: callers reject such items
 * first (shoal_job_parse does). Thread-safe.
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
 * share a group when both have none or their strings are equal. With
 * limits->by_group a chunk never spans a change of group; items of one group
 * that are not adjacent land in different chunks (see
 * shoal_chunk_group_order). Every chunk holds the limits unless it is one
 * item that alone exceeds max_tokens. */
size_t shoal_chunk_plan(const long *item_tokens, const char *const *groups, size_t n_items,
                        long base_tokens, const shoal_chunk_limits_t *limits, size_t *starts,
                        long *est_tokens);

/* Writes to order (n entries) the item indexes 0..n-1 rearranged so that the
 * items of each group are adjacent: groups in the order of their first item,
 * items of one group in index order (a stable sort by group). Items without a
 * group form one group of their own. An order that is already grouped comes
 * back unchanged, so planning a grouped job again gives the same chunks.
 * Returns the number of groups, or (size_t)-1 when out of memory (order is
 * then the identity). groups may be NULL (one group). */
size_t shoal_chunk_group_order(const char *const *groups, size_t n, size_t *order);

#endif
