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
#include "worker/provider.h"

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
} shoal_task_t;

/* Parses a task message and renders its request. NULL with the reason when
 * the message is not a valid task or names an unknown model (a poison
 * message for the dead-letter topic). Caller destroys. */
shoal_task_t *shoal_task_parse(const void *value, size_t len, const shoal_models_t *models,
                               char *errbuf, size_t errlen);

void shoal_task_destroy(shoal_task_t *t); /* NULL is ok */

/* Adds a Kafka position that this task's completion releases. */
shoal_err_t shoal_task_add_ref(shoal_task_t *t, const shoal_offset_ref_t *ref);

/* What one call of a task was and how it ended, for its attempts row. */
typedef struct {
    const shoal_model_t *model; /* the model called; NULL = t->model (a fallback otherwise) */
    const char *outcome;        /* "ok", "retry" or "failed": what the task does next */
    shoal_outcome_t kind;       /* how the call ended (outcome_kind) */
    const char *error;          /* NULL or "" when none */
    shoal_usage_t usage;        /* billed at model's prices */
} shoal_task_call_t;

/* Row for shoal.attempts describing the call that just ended (caller owns).
 * When call->model is not the task's own, fallback_from names the task's. */
json_t *shoal_task_attempt_row(const shoal_task_t *t, const char *attempt_id, const char *worker_id,
                               const shoal_http_reply_t *reply, const shoal_task_call_t *call);

/* Row for shoal.record_batch's results: the task's final state (caller
 * owns). served is the model whose answer is the output (NULL = t->model);
 * when it is a fallback, model_requested names the task's own. */
json_t *shoal_task_result_row(const shoal_task_t *t, const shoal_model_t *served,
                              const char *worker_id);

#endif
