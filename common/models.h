/*
 * The models file: aliases mapped to a provider endpoint, the provider's model
 * name, prices, rate limits and fallbacks. Format (JSON):
 *
 *   {"models": {"fast": {"provider": "openai",
 *                        "endpoint": "${SHOAL_SIM_URL}/v1/chat/completions",
 *                        "model": "gpt-4o-mini", "api_key_env": "OPENAI_API_KEY",
 *                        "input_usd_per_mtok": 0.15, "output_usd_per_mtok": 0.6,
 *                        "cached_input_usd_per_mtok": 0.075,
 *                        "rpm": 500, "tpm": 200000, "max_output_tokens": 1024,
 *                        "max_concurrency": 64, "timeout_ms": 30000,
 *                        "fallbacks": ["slow"]}}}
 *
 * provider is openai (any OpenAI-compatible chat completions server), azure
 * (Azure OpenAI: the OpenAI body, an api-key header, optional api_version
 * added to the endpoint's query) or anthropic (messages API, which also takes
 * input_tpm and output_tpm, its separate input and output token limits).
 * ca_file names a PEM file of certificate authorities to trust for an https
 * endpoint in place of curl's bundle (a private gateway's own CA). headers
 * adds request headers ({"OpenAI-Organization": "org-1", "Helicone-Auth":
 * "Bearer ${HELICONE_KEY}"}): names shoal sets itself are refused, and a
 * value's ${VAR} is read by the worker, not at load time.
 * "${VAR}" in an endpoint or a ca_file is replaced from the environment at
 * load time. The
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
    SHOAL_PROVIDER_AZURE,      /* Azure OpenAI: OpenAI body, api-key header */
} shoal_provider_t;

/* The request header that carries a provider's API key: Authorization
 * (its value "Bearer <key>") for openai, api-key for azure, x-api-key for
 * anthropic. */
const char *shoal_provider_key_header(shoal_provider_t p);

/* One model alias. Strings and arrays are owned by the shoal_models_t. */
typedef struct {
    const char *alias;
    shoal_provider_t provider;
    const char *endpoint;    /* full URL, variables expanded, api-version added */
    const char *model;       /* the provider's model name */
    const char *api_key_env; /* NULL: no credential header */
    const char *api_version; /* azure only; NULL when not given */
    /* PEM file of certificate authorities trusted for this https endpoint,
     * besides the system's (a private gateway's CA); NULL: the system's */
    const char *ca_file;
    double input_usd_per_mtok;
    double output_usd_per_mtok;
    double cached_input_usd_per_mtok; /* default: the input price */
    double cache_write_usd_per_mtok;  /* default: 1.25x input (anthropic), else input */
    long rpm, tpm;                    /* 0 = unlimited */
    long input_tpm, output_tpm;       /* anthropic only; 0 = unlimited */
    long max_output_tokens;           /* 0 = provider default */
    long max_concurrency;             /* calls in flight per worker; 0 = no cap */
    long timeout_ms;                  /* per call; 0 = the job's */
    const char *const *fallbacks;     /* aliases tried in order when this one keeps failing */
    size_t nfallbacks;
    /* Extra request headers, in the file's order; values as written, ${VAR}
     * read by shoal_model_header_line */
    const char *const *header_names;
    const char *const *header_values;
    size_t nheaders;
    size_t index; /* position in the file: shoal_models_at(models, index) is this */
} shoal_model_t;

/* Tokens of one call, normalized across providers. input counts EVERY prompt
 * token: cache reads (cached) and cache writes (cache_write) are parts of it,
 * not additions to it. */
typedef struct {
    long input;
    long cached;
    long cache_write;
    long output;
} shoal_usage_t;

typedef struct shoal_models shoal_models_t;

/* Reads and validates a models file. Returns NULL with the reason (naming the
 * alias and field) in errbuf. Caller destroys. */
shoal_models_t *shoal_models_load(const char *path, char *errbuf, size_t errlen);

/* Same, from text in memory. */
shoal_models_t *shoal_models_parse(const char *text, size_t len, char *errbuf, size_t errlen);

void shoal_models_destroy(shoal_models_t *models); /* NULL is ok */

/* Borrowed until destroy; NULL when the alias is unknown. */
const shoal_model_t *shoal_models_find(const shoal_models_t *models, const char *alias);

/* Position of alias in the file (0-based, the order of shoal_models_at), or
 * -1 when unknown. Per-model state (rate-limit lanes) is kept by index. */
int shoal_models_index(const shoal_models_t *models, const char *alias);

/* Checks that every alias with api_key_env finds a non-empty variable in the
 * environment, and that every ${VAR} of a header value is set and no value
 * reads empty (the worker's start-up check; the scheduler needs no keys).
 * SHOAL_ERR_INVALID naming the first alias and variable otherwise; no value
 * ever appears in the text. */
shoal_err_t shoal_models_check_keys(const shoal_models_t *models, char *errbuf, size_t errlen);

/* Checks that every ca_file is a regular file this process can read (the
 * worker's start-up check, with shoal_models_check_keys): a missing one
 * would otherwise fail every call of its model. SHOAL_ERR_INVALID naming
 * the alias and path otherwise. */
shoal_err_t shoal_models_check_files(const shoal_models_t *models, char *errbuf, size_t errlen);

/* Room for any header line: a name of up to 128 bytes and a value of up to
 * 4096 whose variables may read up to as much again. */
#define SHOAL_MODEL_HEADER_LINE_MAX (128 + 2 + 2 * 4096 + 1)

/* Header i of m (i < m->nheaders) as "Name: value" into out (cap bytes),
 * each ${VAR} of the value read from the environment now. SHOAL_ERR_INVALID
 * naming the alias, header and variable when one is unset or the value
 * reads empty; the value never appears in the text. Callers clear out once
 * used: it may hold a secret. */
shoal_err_t shoal_model_header_line(const shoal_model_t *m, size_t i, char *out, size_t cap,
                                    char *errbuf, size_t errlen);

size_t shoal_models_count(const shoal_models_t *models);
const shoal_model_t *shoal_models_at(const shoal_models_t *models, size_t i);

/* Cost in USD of one call: (input - cached - cache_write) at the input price,
 * cached at the cached price, cache_write at the cache-write price, output at
 * the output price. Nonsense counts are clamped: negatives count as 0, and
 * cached and cache_write never exceed the input they are part of. */
double shoal_model_cost(const shoal_model_t *m, const shoal_usage_t *u);

#endif
