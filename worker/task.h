/*
 * One task as the worker holds it from the moment its message is taken until
 * its result is durable: the parsed message, the rendered request, the call
 * count and the Kafka positions to release when it is done. This is a plain
 * record owned by the runner (worker/runner.c); fields are read directly.
 */
#ifndef SHOAL_WORKER_TASK_H
#define SHOAL_WORKER_TASK_H

#include <jansson.h>
#include <stddef.h>

#include "common/err.h"
#include "common/models.h"
#include "worker/http.h"
#include "worker/offsets.h"

typedef enum { SHOAL_TASK_RUNNING = 0, SHOAL_TASK_DONE, SHOAL_TASK_FAILED } shoal_task_state_t;

typedef struct shoal_task {
    json_t *doc;         /* the task message; owned */
    const char *task_id; /* borrowed from doc */
    const char *job_id;  /* borrowed from doc */
    long chunk;
    long max_attempts;
    long timeout_ms;
    int want_json;
    const shoal_model_t *model; /* borrowed from the models file */
    char *request;              /* request body; owned */
    size_t request_len;

    int attempts;         /* calls made in this delivery */
    double received_ms;   /* monotonic, when the message was taken */
    double received_unix; /* wall clock of the same moment, for queue_ms */
    shoal_task_state_t state;
    char *output; /* owned, set when done */
    long tokens_in, tokens_out;
    char error[512]; /* why it failed, when failed */

    shoal_offset_ref_t *refs; /* Kafka positions released when durable */
    int nrefs, caprefs;

    /* More of the message (common/taskmsg.h), borrowed from doc. */
    const json_t *output_schema;   /* NULL when the task has none */
    const json_t *fallback_models; /* array of aliases, maybe empty */
    const char *priority;
    long est_tokens;
    int version;
} shoal_task_t;

/* Parses a task message (shoal_taskmsg_parse) and renders its request. NULL
 * with the reason when the message is not a valid task or names an unknown
 * model (a poison message for the dead-letter topic; shoal_taskmsg_ids()
 * tells whether it still names its task and job). Caller destroys. */
shoal_task_t *shoal_task_parse(const void *value, size_t len, const shoal_models_t *models,
                               char *errbuf, size_t errlen);

void shoal_task_destroy(shoal_task_t *t); /* NULL is ok */

/* Adds a Kafka position that this task's completion releases. */
shoal_err_t shoal_task_add_ref(shoal_task_t *t, const shoal_offset_ref_t *ref);

/* Row for shoal.attempts describing the call that just ended. */
json_t *shoal_task_attempt_row(const shoal_task_t *t, const char *attempt_id, const char *worker_id,
                               const shoal_http_reply_t *reply, const char *outcome,
                               const char *error, long tokens_in, long tokens_out,
                               long tokens_cached);

/* Row for shoal.record_batch's results: the task's final state. */
json_t *shoal_task_result_row(const shoal_task_t *t, const char *worker_id);

#endif
