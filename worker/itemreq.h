/*
 * Requests an item brings with it: an item's own OpenAI chat completions
 * request body (a job's items[].body, e.g. a line of an OpenAI Batch input
 * file) made into the request one model is sent. The body is honoured as
 * given: for an OpenAI-compatible model only model (the provider's name) and
 * stream (false) change; for an Anthropic model the request is translated
 * (see shoal_itemreq_build). Pure functions; any thread.
 */
#ifndef SHOAL_WORKER_ITEMREQ_H
#define SHOAL_WORKER_ITEMREQ_H

#include <stddef.h>

#include <jansson.h>

#include "common/models.h"

/* The request body (JSON text, caller frees) for model m from an item's own
 * body, which is not changed. OpenAI-compatible: body with "model" set to
 * m->model and "stream" false (stream_options dropped). Anthropic: messages
 * of role system and developer joined into "system" (text parts only, in
 * order, separated by a blank line), the others kept in order, max_tokens
 * from max_tokens, else max_completion_tokens, else the model's
 * max_output_tokens, else 4096; temperature, top_p, top_k and metadata kept;
 * stop as stop_sequences; other OpenAI parameters dropped. NULL when out of
 * memory. *len (may be NULL) gets the length. */
char *shoal_itemreq_build(const shoal_model_t *m, const json_t *body, size_t *len);

#endif
