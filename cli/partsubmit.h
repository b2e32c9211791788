/*
 * Sending a job in parts (scheduler/parts.h, README "Large jobs in parts"):
 * a job file too large for one Kafka message is checked the way the
 * scheduler will check it, then sent as a header and part messages of at most
 * part_bytes each, all keyed by the job_id. The file is scanned in place
 * (common/jobsplit.h) and one part is built at a time, so memory stays small
 * whatever the job's size (plus 16 bytes per item for the repeated-id check).
 */
#ifndef SHOAL_CLI_PARTSUBMIT_H
#define SHOAL_CLI_PARTSUBMIT_H

#include <stddef.h>

#include "common/err.h"
#include "common/models.h"

typedef struct rd_kafka_s rd_kafka_t;
typedef struct shoal_partsubmit shoal_partsubmit_t;

/* Bytes of one part message the CLI aims at: under the scheduler's default
 * --max-job-bytes (1 MiB) with room to spare. */
#define SHOAL_PARTSUBMIT_BYTES 1000000

/* Plans the parts of the job in text[0..len) (borrowed: it must outlive the
 * handle); job_id is used when the job has none. With validate, checks the
 * header and every part as the scheduler will (models may be NULL: models
 * are then not checked), item ids unique across the job, and the job's chunk
 * count. NULL with the reason in errbuf: SHOAL_ERR_INVALID in *err when the
 * scheduler would refuse the job, SHOAL_ERR_NOMEM. */
shoal_partsubmit_t *shoal_partsubmit_new(const char *text, size_t len, const char *job_id,
                                         const shoal_models_t *models, size_t part_bytes,
                                         int validate, shoal_err_t *err, char *errbuf,
                                         size_t errlen);

void shoal_partsubmit_destroy(shoal_partsubmit_t *p); /* NULL is ok */

const char *shoal_partsubmit_job_id(const shoal_partsubmit_t *p); /* borrowed */
size_t shoal_partsubmit_parts(const shoal_partsubmit_t *p);
size_t shoal_partsubmit_items(const shoal_partsubmit_t *p);
/* The chunks the scheduler will make of the job (0 when it was not checked). */
size_t shoal_partsubmit_chunks(const shoal_partsubmit_t *p);

/* Produces the header and the parts to topic, in order, waiting for Kafka's
 * acknowledgement every few parts so that at most a few are held. */
shoal_err_t shoal_partsubmit_send(shoal_partsubmit_t *p, rd_kafka_t *rk, const char *topic,
                                  char *errbuf, size_t errlen);

#endif
