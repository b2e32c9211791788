/*
 * Provider wire formats: the request body and headers for one model call and
 * the parsing of its answer, for OpenAI-compatible chat completions and
 * Anthropic messages, plus the one classification of an outcome as success,
 * retriable or permanent. Pure functions; any thread.
 */
#ifndef SHOAL_WORKER_PROVIDER_H
#define SHOAL_WORKER_PROVIDER_H

#include <stddef.h>

#include "common/err.h"
#include "common/models.h"

struct curl_slist;

typedef struct {
    char *content; /* model output, caller frees */
    long tokens_in, tokens_out, tokens_cached;
} shoal_provider_reply_t;

/* Request body (JSON text, caller frees) for one call. system may be NULL.
 * want_json asks the provider for a JSON object when it supports that. */
char *shoal_provider_request(const shoal_model_t *m, const char *system, const char *prompt,
                             int want_json, size_t *len);

/* Headers for one call (caller frees with curl_slist_free_all). The API key
 * is read from the model's api_key_env variable; NULL on allocation failure. */
struct curl_slist *shoal_provider_headers(const shoal_model_t *m);

/* Parses a 2xx answer. SHOAL_ERR_RETRY when the body is malformed (a
 * transient provider fault), with the reason in errbuf. */
shoal_err_t shoal_provider_parse(const shoal_model_t *m, const char *body, size_t len,
                                 shoal_provider_reply_t *out, char *errbuf, size_t errlen);

/* Short reason from an error answer's body, e.g. OpenAI's error.message. */
void shoal_provider_error_text(const char *body, size_t len, char *out, size_t outlen);

typedef enum {
    SHOAL_OUTCOME_OK = 0,
    SHOAL_OUTCOME_RETRY, /* 408, 409, 425, 429, 5xx, transport errors, timeouts */
    SHOAL_OUTCOME_FATAL, /* other 4xx: the request itself is wrong */
} shoal_outcome_t;

/* http_status 0 means no HTTP answer arrived (transport error or timeout). */
shoal_outcome_t shoal_provider_classify(long http_status);

/* Milliseconds from a Retry-After (seconds) or retry-after-ms header value;
 * -1 when absent or unreadable. */
long shoal_provider_retry_after_ms(const char *value);

#endif
