/*
 * OpenAI Batch files: an OpenAI Batch API input file (JSONL, one request per
 * line: custom_id, method, url, body) turned into a shoal job, and the OpenAI
 * Batch output line written for one answered or failed item.
 *
 * A converted job has one item per line (item id = custom_id) carrying its
 * own request: items[].body is the line's body as given and items[].model the
 * models-file alias its model maps to. The worker sends that body (see
 * worker/itemreq.h) instead of rendering prompt_template, so each line is one
 * task and one call. Stateless; any thread.
 */
#ifndef SHOAL_COMMON_OAIBATCH_H
#define SHOAL_COMMON_OAIBATCH_H

#include <stddef.h>

#include <jansson.h>

#include "common/err.h"
#include "common/models.h"

/* The one endpoint a Batch line may name. */
#define SHOAL_OAIBATCH_URL "/v1/chat/completions"

/* What the file itself does not say. Strings are borrowed for the call. */
typedef struct {
    const char *tenant;   /* required */
    const char *priority; /* NULL: the job's default */
    const char *job_id;   /* NULL: the job has none (the caller or the scheduler makes one) */
} shoal_oaibatch_opts_t;

/* The model a Batch line's body names: the alias itself, else the first
 * alias (in file order) whose provider model name it is. NULL when neither;
 * borrowed from models. */
const shoal_model_t *shoal_oaibatch_model(const shoal_models_t *models, const char *name);

/* Converts a Batch input file of len bytes into a job document (caller
 * decrefs). Blank lines are skipped; every other line must be a JSON object
 * with a custom_id obeying the item id rule, method "POST", url
 * SHOAL_OAIBATCH_URL and a body whose model is in models and whose messages
 * are a non-empty array of {role, content}. NULL with the reason naming the
 * line ("line 7: custom_id \"a\" repeats line 2") in errbuf; "out of memory"
 * when that is the reason. */
json_t *shoal_oaibatch_to_job(const char *buf, size_t len, const shoal_models_t *models,
                              const shoal_oaibatch_opts_t *opts, char *errbuf, size_t errlen);

/* Estimated prompt tokens of a request body: its messages' text (string
 * contents and the text of content parts) plus a few tokens a message for the
 * roles and framing. 0 for a body without messages. */
long shoal_oaibatch_body_tokens(const json_t *body);

/* One item as its output line says it. Strings are borrowed. */
typedef struct {
    const char *job_id;
    const char *custom_id;
    const char *output; /* the answer; NULL when the item has none */
    const char *model;  /* the provider's model name that answered */
    long tokens_in, tokens_out;
    long long created_unix;    /* when the answer was recorded */
    const char *error_code;    /* when output is NULL, e.g. "invalid_request_error" */
    const char *error_message; /* when output is NULL */
} shoal_oaibatch_item_t;

/* The OpenAI Batch output line of one item, without a newline (caller frees
 * with free()): {"id", "custom_id", "response": {"status_code": 200,
 * "request_id", "body": <a chat.completion>}, "error": null}, or for an item
 * without an answer "response": null and "error": {"code", "message"}. The
 * ids are derived from job_id and custom_id, so reading the results again
 * gives the same lines. *len (may be NULL) gets the length; NULL when out of
 * memory. */
char *shoal_oaibatch_output_line(const shoal_oaibatch_item_t *it, size_t *len);

#endif
