/*
 * The models file: aliases mapped to a provider endpoint, the provider's model
 * name, prices and rate limits. Format (JSON):
 *
 *   {"models": {"fast": {"provider": "openai",
 *                        "endpoint": "${SHOAL_SIM_URL}/v1/chat/completions",
 *                        "model": "gpt-4o-mini", "api_key_env": "OPENAI_API_KEY",
 *                        "input_usd_per_mtok": 0.15, "output_usd_per_mtok": 0.6,
 *                        "cached_input_usd_per_mtok": 0.075,
 *                        "rpm": 500, "tpm": 200000, "max_output_tokens": 1024}}}
 *
 * "${VAR}" in an endpoint is replaced from the environment at load time. The
 * API key itself never appears in the file: only the name of the variable
 * that holds it. Loaded once at start; read-only afterwards, so any thread may
 * read it.
 */
#ifndef SHOAL_COMMON_MODELS_H
#define SHOAL_COMMON_MODELS_H

#include <stddef.h>

#include "common/err.h"

typedef enum {
    SHOAL_PROVIDER_OPENAI = 1, /* OpenAI-compatible /v1/chat/completions */
    SHOAL_PROVIDER_ANTHROPIC,  /* Anthropic /v1/messages */
} shoal_provider_t;

/* One model alias. Strings are owned by the shoal_models_t. */
typedef struct {
    const char *alias;
    shoal_provider_t provider;
    const char *endpoint;    /* full URL, variables expanded */
    const char *model;       /* the provider's model name */
    const char *api_key_env; /* NULL: no Authorization header */
    double input_usd_per_mtok;
    double output_usd_per_mtok;
    double cached_input_usd_per_mtok;
    long rpm, tpm;          /* 0 = unlimited */
    long max_output_tokens; /* 0 = provider default */
} shoal_model_t;

typedef struct shoal_models shoal_models_t;

/* Reads and validates a models file. Returns NULL with the reason (naming the
 * alias and field) in errbuf. Caller destroys. */
shoal_models_t *shoal_models_load(const char *path, char *errbuf, size_t errlen);

/* Same, from text in memory. */
shoal_models_t *shoal_models_parse(const char *text, size_t len, char *errbuf, size_t errlen);

void shoal_models_destroy(shoal_models_t *models); /* NULL is ok */

/* Borrowed until destroy; NULL when the alias is unknown. */
const shoal_model_t *shoal_models_find(const shoal_models_t *models, const char *alias);

size_t shoal_models_count(const shoal_models_t *models);
const shoal_model_t *shoal_models_at(const shoal_models_t *models, size_t i);

/* Cost in USD of one call. tokens_in counts every prompt token, the
 * tokens_cached among them included (OpenAI's prompt_tokens); those are billed
 * at cached_input_usd_per_mtok, which defaults to the input price. */
double shoal_model_cost(const shoal_model_t *m, long tokens_in, long tokens_out,
                        long tokens_cached);

#endif
