/*
 * Job intake: one message from the jobs topic becomes a recorded job with its
 * chunk tasks published, or a rejected job with a reason. The job, its tasks
 * and its first event are written in one transaction; tasks are then produced
 * and, once Kafka acknowledged them all, marked queued. The caller stores the
 * message's offset only after SHOAL_OK, so a crash anywhere in between makes
 * Kafka deliver the message again, and the redelivery publishes whatever is
 * still pending: no task is stranded between PostgreSQL and Kafka.
 */
#ifndef SHOAL_SCHEDULER_INTAKE_H
#define SHOAL_SCHEDULER_INTAKE_H

#include <librdkafka/rdkafka.h>
#include <stddef.h>

#include "common/err.h"
#include "common/kafka.h"
#include "common/models.h"
#include "common/pg.h"

typedef struct {
    shoal_pg_t *pg;               /* borrowed */
    rd_kafka_t *producer;         /* borrowed, from shoal_kafka_producer_new */
    const shoal_topics_t *topics; /* borrowed */
    const shoal_models_t *models; /* borrowed */
    size_t max_job_bytes;
    long fault_kill_after; /* test hook: SIGKILL self after publishing this many tasks */
} shoal_intake_conf_t;

typedef enum {
    SHOAL_INTAKE_NEW = 1,   /* recorded now */
    SHOAL_INTAKE_DUPLICATE, /* job_id seen before; pending tasks published, or none when
                               this message's chunk plan differs (reason says why) */
    SHOAL_INTAKE_REJECTED,  /* invalid; stored as rejected with the reason */
    SHOAL_INTAKE_FAILED,    /* valid, but its tasks cannot be published (too large for
                               Kafka, or a redelivery whose chunk plan no longer matches
                               the recorded tasks): failed with the reason */
} shoal_intake_outcome_t;

typedef struct {
    shoal_intake_outcome_t outcome;
    char job_id[256];
    int tasks;         /* tasks the job has */
    int published;     /* tasks produced by this call */
    char priority[16]; /* the job's priority ("" when it was not read) */
    char reason[512];
} shoal_intake_result_t;

/* Handles one job message (value/len) that came from topic/partition@offset.
 * SHOAL_OK means it is fully handled and its offset may be stored (rejection
 * and failure included: out->outcome says which); SHOAL_ERR_RETRY means
 * PostgreSQL or Kafka failed and the same message must be handled again
 * later; any other code means even a rejection could not be stored. */
shoal_err_t shoal_intake_job(const shoal_intake_conf_t *conf, const char *topic, int partition,
                             long long offset, const void *value, size_t len,
                             shoal_intake_result_t *out, char *errbuf, size_t errlen);

#endif
