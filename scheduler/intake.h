/*
 * Job intake: one message from the jobs topic becomes a recorded job with its
 * chunk tasks published, or a rejected job with a reason. The job, its first
 * tasks (all of a job of up to a thousand) and its first event are written in
 * one transaction, the job's further tasks in slices of their own; tasks are
 * then produced and, once Kafka acknowledged them all, marked queued. The
 * caller stores the message's offset only after SHOAL_OK, so a crash anywhere
 * in between makes Kafka deliver the message again, and the redelivery
 * records the slices still missing and publishes whatever is still pending:
 * no task is stranded between PostgreSQL and Kafka.
 */
#ifndef SHOAL_SCHEDULER_INTAKE_H
#define SHOAL_SCHEDULER_INTAKE_H

#include <librdkafka/rdkafka.h>
#include <stddef.h>

#include "common/err.h"
#include "common/job.h"
#include "common/jobid.h"
#include "common/kafka.h"
#include "common/models.h"
#include "common/pg.h"
#include "common/tenants.h"

typedef struct {
    shoal_pg_t *pg;               /* borrowed */
    rd_kafka_t *producer;         /* borrowed, from shoal_kafka_producer_new */
    const shoal_topics_t *topics; /* borrowed */
    const shoal_models_t *models; /* borrowed */
    size_t max_job_bytes;
    long fault_kill_after; /* test hook: SIGKILL self after publishing this many tasks */
    long cache_ttl_s;      /* result cache entries live this long; 0: cache off (cache.h) */
    int paced; /* tasks of jobs that keep their inputs are left pending for the dispatcher
                  (scheduler/dispatch.h) instead of published here */
    const shoal_tenants_t *tenants; /* borrowed; NULL: no tenants file, no limits */
    const char *cluster_id;         /* the Kafka cluster's id, for derived job ids; may be NULL */
    /* Told of every task message Kafka acknowledged, whoever published it
     * (intake, the dispatcher, the reconciler): for metrics. May be NULL. */
    void (*on_published)(const char *priority, int n, void *arg);
    void *on_published_arg;
    /* Called between the slices of a large job's tasks, each recorded in a
     * transaction of its own (the first with the job): the dispatcher
     * publishes what is recorded while the rest is written. May be NULL. */
    void (*on_slice)(void *arg);
    void *on_slice_arg;
} shoal_intake_conf_t;

typedef enum {
    SHOAL_INTAKE_NEW = 1,   /* recorded now */
    SHOAL_INTAKE_DUPLICATE, /* job_id seen before; pending tasks published, or none when
                               this message's chunk plan differs or its content does (a
                               conflict, announced by an event: reason says why) */
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
    char reason[4096]; /* every problem of a rejected message, one per line */
} shoal_intake_result_t;

/* Handles one job message (value/len) that came from topic/partition@offset.
 * SHOAL_OK means it is fully handled and its offset may be stored (rejection
 * and failure included: out->outcome says which); SHOAL_ERR_RETRY means
 * PostgreSQL or Kafka failed and the same message must be handled again
 * later; any other code means even a rejection could not be stored. */
shoal_err_t shoal_intake_job(const shoal_intake_conf_t *conf, const char *topic, int partition,
                             long long offset, const void *value, size_t len,
                             shoal_intake_result_t *out, char *errbuf, size_t errlen);

/* shoal_intake_job() for a message Kafka stamped with timestamp_ms (-1:
 * none). A message without job_id gets one derived from the cluster id
 * (conf->cluster_id), topic, partition, offset, timestamp and its bytes
 * (common/jobid.h), so a redelivery maps to the same job and nothing else
 * does. With conf->tenants, the tenant's plan applies: its default priority
 * to a job that sets none, and its limits, a job over one being rejected
 * with the limit, the numbers and when it resets. */
shoal_err_t shoal_intake_job_ts(const shoal_intake_conf_t *conf, const char *topic, int partition,
                                long long offset, long long timestamp_ms, const void *value,
                                size_t len, shoal_intake_result_t *out, char *errbuf,
                                size_t errlen);

/* Produces the task messages of chunks[0..n) of job (parsed, with its id and
 * its submission time set: see shoal_job_set_submitted), waits until Kafka
 * acknowledged them all, then marks them queued (shoal.mark_queued). When
 * the job uses the result cache (scheduler/cache.h), chunks answered from it
 * are done without a message and the others carry their cache key.
 * *published counts the messages produced. SHOAL_ERR_INVALID when a chunk
 * is out of the job's range, SHOAL_ERR_LIMIT when Kafka refuses a message
 * for its size, SHOAL_ERR_RETRY when Kafka or PostgreSQL failed. Used by
 * intake and by the reconciler (scheduler/reconcile.h). */
shoal_err_t shoal_intake_publish(const shoal_intake_conf_t *conf, shoal_job_t *job,
                                 const long *chunks, size_t n, int *published, char *errbuf,
                                 size_t errlen);

/* As shoal_intake_publish, for a job that holds chunks [chunk_base, chunk_base +
 * shoal_job_n_chunks(job)) of a job of n_chunks chunks (one part of a job sent in
 * parts, see scheduler/parts.h): chunks are the job-wide numbers. */
shoal_err_t shoal_intake_publish_range(const shoal_intake_conf_t *conf, shoal_job_t *job,
                                       long chunk_base, long n_chunks, const long *chunks, size_t n,
                                       int *published, char *errbuf, size_t errlen);

/* Where a job message came from, for the id a message without a usable
 * job_id is stored under (common/jobid.h). That id hashes the whole message,
 * so it is made on first use (shoal_intake_derived): a part of 800 kB with
 * its own job_id never needs it. Fields are borrowed for the message's
 * handling. */
typedef struct {
    const char *cluster_id; /* may be NULL */
    const char *topic;
    int partition;
    long long offset, timestamp_ms;
    const void *value;
    size_t len;
    char id[SHOAL_JOBID_LEN]; /* "" until made */
} shoal_intake_origin_t;

/* The id derived from o (see shoal_jobid_derive), made on the first call;
 * borrowed from o. */
const char *shoal_intake_derived(shoal_intake_origin_t *o);

/* The job's shoal.tasks rows as a JSON array text, one per chunk: chunk,
 * item_ids, est_tokens and, with with_task_ids, task_id; written straight
 * (common/jsontext.h), not built and dumped. Caller frees; NULL when out of
 * memory. */
char *shoal_intake_task_rows(const shoal_job_t *job, int with_task_ids);

/* As shoal_intake_task_rows, for chunks [from, to) only (to is clamped to
 * the job's chunk count). */
char *shoal_intake_task_rows_range(const shoal_job_t *job, int with_task_ids, size_t from,
                                   size_t to);

/* Records a message that cannot become a job as rejected with reason, under
 * its own job_id when it has a well-formed one, else under derived; source is
 * topic/partition@offset. Fills out (outcome SHOAL_INTAKE_REJECTED). */
shoal_err_t shoal_intake_reject(const shoal_intake_conf_t *conf, const char *source,
                                const char *derived, const void *value, size_t len,
                                const char *reason, shoal_intake_result_t *out, char *errbuf,
                                size_t errlen);

#endif
