/*
 * Result-cache keys: the SHA-256 of everything that decides a model's answer
 * to one call. Two calls with the same key send the same request to the same
 * model, so the answer of one may stand for the other. The key covers the
 * provider, the provider's model name, the call parameters that change the
 * answer (max_tokens, JSON mode, any extra parameters such as temperature),
 * the system prompt, the rendered user prompt and the output schema. It does
 * not cover the endpoint, the alias, prices, limits, timeouts or ids: the
 * same model reached under another alias or at another address answers the
 * same request the same way.
 *
 * The scheduler computes a chunk's key from the task message it is about to
 * publish (shoal_cachekey_task) and the key travels in the message as
 * "cache_key". Every field is length-prefixed and the encoding is versioned,
 * so no two different inputs share a byte string; changing the encoding means
 * changing the version, which makes every old entry a miss. Stateless and
 * thread-safe.
 */
#ifndef SHOAL_COMMON_CACHEKEY_H
#define SHOAL_COMMON_CACHEKEY_H

#include <stddef.h>

#include <jansson.h>

#include "common/err.h"
#include "common/models.h"
#include "common/sha256.h"

/* Room for a key as text: 64 lower-case hex digits and a NUL. */
#define SHOAL_CACHEKEY_HEX SHOAL_SHA256_HEX

/* What a key is made of. Strings are borrowed for the call. */
typedef struct {
    shoal_provider_t provider;
    const char *model;    /* the provider's model name, not the alias */
    long max_tokens;      /* the request's max_tokens; 0 = the provider's default */
    int want_json;        /* output.format is "json" (JSON mode on OpenAI-style APIs) */
    const json_t *params; /* other call parameters (e.g. temperature); NULL = none */
    const char *system;   /* NULL or "" = none (both send no system prompt) */
    const char *prompt;   /* the rendered user prompt, prompt_len bytes */
    size_t prompt_len;
    const json_t *output_schema; /* NULL = none */
} shoal_cachekey_parts_t;

/* Writes the key of parts into out. Object members are hashed in sorted
 * order, so key order in params or the schema does not matter.
 * SHOAL_ERR_NOMEM when a JSON value cannot be serialized. */
shoal_err_t shoal_cachekey_compute(const shoal_cachekey_parts_t *parts,
                                   char out[SHOAL_CACHEKEY_HEX], char *errbuf, size_t errlen);

/* The key of a task message as common/taskmsg builds it: its model resolved
 * in models, its prompt rendered as the worker renders it (common/render.h).
 * SHOAL_ERR_INVALID when the model is not in models or the message lacks a
 * field the key needs, SHOAL_ERR_NOMEM when out of memory. */
shoal_err_t shoal_cachekey_task(const json_t *task, const shoal_models_t *models,
                                char out[SHOAL_CACHEKEY_HEX], char *errbuf, size_t errlen);

/* 1 when s is a key as text (64 lower-case hex digits), else 0. */
int shoal_cachekey_valid(const char *s);

#endif
