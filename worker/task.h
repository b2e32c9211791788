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

/*
 * Where a task is in its life. Every change goes through
 * shoal_task_set_state(), which logs it at debug; the worker's loop
 * (worker/runner.c) decides the transitions:
 *
 *   TAKEN -> CHECKING -> WAITING -> [RESERVING ->] IN_FLIGHT -> DONE
 *                  |         ^          |-> BACKOFF -> WAITING
 *                  |         |          |-> VALIDATING -> REPAIRING -> ...
 *                  v         |          '-> FAILED
 *               (skipped: already finished in the database)
 *
 * DONE and FAILED tasks wait in the result batch until the database has them,
 * then release their Kafka positions. Reaching DONE or FAILED frees prompt,
 * request, saved_request and schema (NULL after); DONE also cuts doc down to
 * task_id, job_id and model (same strings, same addresses) and sets system,
 * output_schema and fallback_models to NULL; FAILED makes doc the whole
 * message again (see message below).
 */
typedef enum {
    SHOAL_TASK_TAKEN = 0,  /* message parsed, held */
    SHOAL_TASK_CHECKING,   /* asking the database whether it already finished */
    SHOAL_TASK_WAITING,    /* in its lane's queue, waiting for capacity */
    SHOAL_TASK_RESERVING,  /* budgeted: its call's worst case is being reserved */
    SHOAL_TASK_IN_FLIGHT,  /* a call is running */
    SHOAL_TASK_BACKOFF,    /* waiting out a backoff before the next try */
    SHOAL_TASK_VALIDATING, /* an answer arrived; checking it */
    SHOAL_TASK_REPAIRING,  /* a repair call for invalid output is running */
    SHOAL_TASK_DONE,       /* result ready */
    SHOAL_TASK_FAILED,     /* out of attempts, time or fallbacks */
} shoal_task_state_t;

const char *shoal_task_state_name(shoal_task_state_t s);

typedef struct shoal_task {
    json_t *doc;         /* fields of the task message (see message); owned */
    const char *task_id; /* borrowed from doc */
    const char *job_id;  /* borrowed from doc */
    long chunk;
    long max_attempts;
    long timeout_ms;
    int want_json;
    const shoal_model_t *model;     /* model of the next call; borrowed from the models file */
    const shoal_model_t *requested; /* the task's own model (model differs after a fallback) */
    char *prompt;                   /* rendered user prompt ("" with body); owned */
    json_t *body;                   /* the item's own request (worker/itemreq.h); owned; or NULL */
    const char *system;             /* borrowed from doc, NULL when none */
    char *request;                  /* request body for model; owned */
    size_t request_len;

    int attempts;         /* calls made, earlier deliveries included */
    int failures;         /* failed tries in a row, for backoff */
    int fallback;         /* position in the fallback chain (0 = the task's model) */
    double received_ms;   /* monotonic, when the message was taken */
    double received_unix; /* wall clock of the same moment, for queue_ms */
    double deadline_ms;   /* monotonic; no try starts after it */
    int job_deadline;     /* deadline_ms is the job's deadline_unix, not --max-wait-ms */
    double due_ms;        /* BACKOFF: when it may wait for capacity again */
    size_t heap_at;       /* BACKOFF: position in the runner's timer heap */
    int prio;             /* 0 high, 1 normal, 2 low */
    long reserved_tokens; /* taken from the lane's token bucket for the call in flight */
    long reserved_in;     /* the input part of reserved_tokens */
    struct shoal_task *qnext, *qprev; /* WAITING: links in the lane's queue */
    shoal_task_state_t state;
    char *output; /* owned, set when done */
    long tokens_in, tokens_out;
    char error[512]; /* why it failed, when failed */

    shoal_offset_ref_t *refs; /* Kafka positions released when durable */
    int nrefs, caprefs;
    int refs_checked; /* nrefs when its database check was sent */

    /* More of the message (common/taskmsg.h), borrowed from doc. */
    const json_t *output_schema;   /* NULL when the task has none */
    const json_t *fallback_models; /* array of aliases, maybe empty */
    const char *priority;
    long est_tokens;
    int version;
    long deadline_s;         /* the job's deadline_s; 0 when it has none */
    long long deadline_unix; /* epoch seconds; 0 when the job has no deadline */
    int fail_truncated;      /* output.on_truncated is "fail" */

    struct shoal_jsonschema *schema; /* output_schema compiled; owned; NULL when none */
    int repairing;                   /* the call in flight is a repair of invalid output */
    int repairs;                     /* repair calls made in this delivery */
    char *saved_request;             /* the request a repair call replaced; owned */
    size_t saved_len;

    /* The message as taken, owned; NULL once DONE or FAILED. While the task
     * runs, doc holds only the fields still read from it (task_id, job_id,
     * model, system, fallback_models, output): parsed in full a small
     * message took ten times its size. Reaching FAILED puts the whole
     * message back into doc for the dead-letter copy. */
    char *message;
    size_t message_len;

    /* Batch mode (common/itembatch.h): the call asks for one answer per
     * item, each recorded on its own (worker/batchtask.h). */
    int batch;        /* the message's mode is "batch" */
    long split_level; /* 0 for a chunk's task, 1.. for a sub-task */
    json_t *items;    /* batch: the task's items; owned; NULL after DONE or FAILED */
    char *item_rows;  /* batch, answered: per-item rows for the sink; owned */
    size_t item_rows_len;

    /* Hard budgets (worker/budget.h). */
    int budgeted;      /* the task's calls are reserved before they start */
    char *reservation; /* attempt_id reserved for the next call; owned; NULL when none */
} shoal_task_t;

/* Checks an answer against what the task asked for: JSON when it wants
 * JSON, and its output schema when it has one. SHOAL_OK, or
 * SHOAL_ERR_INVALID with the first problem in errbuf. */
shoal_err_t shoal_task_check_output(const shoal_task_t *t, const char *content, char *errbuf,
                                    size_t errlen);

/* Turns t's next call into a repair: the original prompt, the invalid
 * answer and what is wrong with it, asking for a corrected answer. The
 * original request is kept and comes back with shoal_task_end_repair().
 * SHOAL_ERR_NOMEM; SHOAL_ERR_INVALID for a task with its own request (body)
 * or a batch task, which are never rewritten. */
shoal_err_t shoal_task_begin_repair(shoal_task_t *t, const char *bad_output, const char *problem);
void shoal_task_end_repair(shoal_task_t *t);

/* Moves t to state s, logging the change at debug. */
void shoal_task_set_state(shoal_task_t *t, shoal_task_state_t s);

/* (Re)builds t->request for t->model from the prompt. SHOAL_ERR_NOMEM. */
shoal_err_t shoal_task_build_request(shoal_task_t *t);

/* Parses a task message (shoal_taskmsg_parse) and renders its request. NULL
 * with the reason when the message is not a valid task or names an unknown
 * model (a poison message for the dead-letter topic; shoal_taskmsg_ids()
 * tells whether it still names its task and job). Caller destroys. */
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

/* Rows never exceed this (an output is at most the 16 MiB of an answer). */
#define SHOAL_TASK_ROW_MAX ((size_t)64 << 20)

/* The columns of shoal.attempt_row and shoal.result_row (sql/023), in
 * order: the members of the rows above, by position. */
#define SHOAL_TASK_ATTEMPT_FIELDS 21
#define SHOAL_TASK_RESULT_FIELDS 12
extern const char *const shoal_task_attempt_fields[SHOAL_TASK_ATTEMPT_FIELDS];
extern const char *const shoal_task_result_fields[SHOAL_TASK_RESULT_FIELDS];

/* The same rows as elements of a PostgreSQL array of those types
 * (common/pgrow.h), built without a jansson tree (the worker's hot path):
 * the caller frees; *len gets the length. A member the json_t version
 * leaves out is NULL. NULL when memory ran out. Times and durations are
 * written to six decimals (epoch seconds to the microsecond, ms to the
 * nanosecond) rather than 17 digits. */
char *shoal_task_attempt_text(const shoal_task_t *t, const char *attempt_id, const char *worker_id,
                              const shoal_http_reply_t *reply, const shoal_task_call_t *call,
                              size_t *len);
char *shoal_task_result_text(const shoal_task_t *t, const shoal_model_t *served,
                             const char *worker_id, size_t *len);

#endif
