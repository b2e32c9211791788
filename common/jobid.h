/*
 * Job identity: the id a job without job_id gets, the content hash that
 * tells a resubmission under a known id apart from a redelivery, and the
 * random ids the CLI gives the jobs it submits.
 *
 * A derived id hashes where the message was stored (the Kafka cluster's id,
 * topic, partition, offset), the message's timestamp and its bytes. A
 * redelivery of the same message (at-least-once) hashes to the same id, so it
 * finds the job it made and creates no second one; a topic recreated (offsets
 * start again at 0, but timestamps and content differ) or another Kafka
 * cluster (another cluster id) never yields an id seen before. The hash is
 * SHA-256 (common/sha256.h), cut to 128 bits.
 */
#ifndef SHOAL_COMMON_JOBID_H
#define SHOAL_COMMON_JOBID_H

#include <stddef.h>
#include <stdint.h>

#include "common/err.h"

/* "j-" and 32 hex digits, and the final NUL. */
#define SHOAL_JOBID_LEN 35
/* 64 hex digits of SHA-256 and the final NUL. */
#define SHOAL_JOBID_HASH_LEN 65

/* The id of a job message that has none, into out (SHOAL_JOBID_LEN bytes).
 * cluster_id may be NULL or "" (unknown: the id then rests on the rest);
 * timestamp_ms is -1 when Kafka gave none. */
void shoal_jobid_derive(const char *cluster_id, const char *topic, int partition, long long offset,
                        long long timestamp_ms, const void *value, size_t len,
                        char out[SHOAL_JOBID_LEN]);

/* Lower-case hex SHA-256 of a job message's bytes (shoal.jobs.content_hash). */
void shoal_jobid_content_hash(const void *value, size_t len, char out[SHOAL_JOBID_HASH_LEN]);

/* A random id, "job-" and 32 hex digits (128 bits from the kernel), into out.
 * SHOAL_ERR_IO when no random bytes could be read, SHOAL_ERR_LIMIT when len is
 * below 37. */
shoal_err_t shoal_jobid_random(char *out, size_t len);

#endif
