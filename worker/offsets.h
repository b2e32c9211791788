/*
 * Per-partition offset tracking for out-of-order completion. Tasks from one
 * partition finish in any order, but Kafka keeps one committed position per
 * partition: it may move past a message only when every message before it is
 * finished. The tracker records each message as it is taken and marks it done
 * when its result is durable; shoal_offsets_commit_list() yields, for each
 * partition that advanced, the offset just past the longest finished prefix.
 *
 * A revoked partition is forgotten (its generation changes), so a late "done"
 * for it is ignored rather than storing an offset this consumer no longer
 * owns. Not thread-safe.
 */
#ifndef SHOAL_WORKER_OFFSETS_H
#define SHOAL_WORKER_OFFSETS_H

#include <stdint.h>

#include "common/err.h"

typedef struct shoal_offsets shoal_offsets_t;

/* Where a message sits; returned by track and given back to done. */
typedef struct {
    int slot;     /* partition slot inside the tracker */
    uint32_t gen; /* generation of that slot when tracked */
    int64_t offset;
} shoal_offset_ref_t;

shoal_offsets_t *shoal_offsets_new(void);
void shoal_offsets_destroy(shoal_offsets_t *o); /* NULL is ok */

/* Records a message taken from topic/partition at offset. Offsets of one
 * partition must be tracked in increasing order; a lower one (a re-fetch after
 * a rebalance) restarts that partition's tracking. */
shoal_err_t shoal_offsets_track(shoal_offsets_t *o, const char *topic, int32_t partition,
                                int64_t offset, shoal_offset_ref_t *ref);

/* Marks a tracked message finished. Stale refs are ignored. */
void shoal_offsets_done(shoal_offsets_t *o, const shoal_offset_ref_t *ref);

/* Forgets a partition (after it was revoked). */
void shoal_offsets_forget(shoal_offsets_t *o, const char *topic, int32_t partition);

/* Calls fn(topic, partition, next_offset, arg) for every partition whose
 * committable position moved since the last call. */
void shoal_offsets_commit_list(shoal_offsets_t *o,
                               void (*fn)(const char *topic, int32_t partition, int64_t next,
                                          void *arg),
                               void *arg);

/* Messages tracked and not yet done, over all partitions. */
long shoal_offsets_pending(const shoal_offsets_t *o);

#endif
