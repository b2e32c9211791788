/*
 * Provider wire formats: the request body and headers for one model call, the
 * one classification of a finished call into an outcome (with its content,
 * usage and the provider's own words on failure), and the rate-limit signals
 * in its response headers, for OpenAI-compatible chat completions (OpenAI,
 * Azure OpenAI, vLLM, ...) and Anthropic messages. Pure functions; any thread.
 */
#ifndef SHOAL_WORKER_PROVIDER_H
#define SHOAL_WORKER_PROVIDER_H

#include <stddef.h>

#include "common/err.h"
#include "common/models.h"
#include "worker/http.h"

struct curl_slist;

typedef struct {
    char *content;       /* model output, caller frees; set for OK and TRUNCATED only */
    shoal_usage_t usage; /* normalized: usage.input counts cache reads and writes */
} shoal_provider_reply_t;

/* Request body (JSON text, caller frees) for one call. system may be NULL.
 * want_json asks the provider for a JSON object when it supports that. */
char *shoal_provider_request(const shoal_model_t *m, const char *system, const char *prompt,
                             int want_json, size_t *len);

/* Headers for one call (caller frees with curl_slist_free_all). The API key
 * is read from the model's api_key_env variable (Authorization: Bearer for
 * OpenAI, api-key for Azure, x-api-key for Anthropic), then the models
 * file's headers follow with their variables read; NULL on allocation
 * failure or when one of those variables is unset (shoal_models_check_keys
 * says which). */
struct curl_slist *shoal_provider_headers(const shoal_model_t *m);

/* How one call ended. */
typedef enum {
    SHOAL_OUTCOME_OK = 0,
    SHOAL_OUTCOME_TRUNCATED,    /* 2xx, but cut at max tokens; content still returned */
    SHOAL_OUTCOME_RATE_LIMITED, /* 429: our quota */
    SHOAL_OUTCOME_OVERLOADED,   /* 503, 529, overloaded_error: the provider's capacity */
    SHOAL_OUTCOME_SERVER_ERROR, /* other 5xx, 408, 409, 425 */
    SHOAL_OUTCOME_TIMEOUT,      /* the call hit its timeout */
    SHOAL_OUTCOME_CONNECTION,   /* any other transport failure: no HTTP answer */
    SHOAL_OUTCOME_PERMANENT,    /* other statuses (400, 401, 403, 404, 422, ...) */
    SHOAL_OUTCOME_MALFORMED,    /* 2xx that does not parse or lacks content */
} shoal_outcome_t;

/* "ok", "truncated", "rate_limited", "overloaded", "server_error", "timeout",
 * "connection", "permanent", "malformed" (what shoal.attempts.outcome_kind
 * stores); "unknown" for anything else. Never NULL. */
const char *shoal_outcome_name(shoal_outcome_t o);

/* The one rule for whether the same request may succeed if sent again: true
 * for rate_limited, overloaded, server_error, timeout, connection and
 * malformed; false for ok, truncated (it would be cut again) and permanent. */
int shoal_outcome_retriable(shoal_outcome_t o);

/* Classifies a finished call. For a 2xx answer, parses it into *out (content
 * and usage; usage is also filled when a 2xx is malformed but counts tokens).
 * why (may be NULL) gets a one-line reason for anything but OK: the
 * provider's own error text when the body has one, in any common shape, cut
 * to 200 bytes. out->content is NULL unless OK or TRUNCATED. */
shoal_outcome_t shoal_provider_outcome(const shoal_model_t *m, const shoal_http_reply_t *r,
                                       shoal_provider_reply_t *out, char *why, size_t whylen);

/* Rate-limit signals of one answer; every field is -1 when absent. Reset
 * times are milliseconds from the answer, never negative. */
typedef struct {
    long retry_after_ms; /* retry-after-ms, else Retry-After (seconds or an HTTP date) */
    long limit_requests, remaining_requests, reset_requests_ms;
    long limit_tokens, remaining_tokens, reset_tokens_ms;
    long limit_input_tokens, remaining_input_tokens, reset_input_tokens_ms;    /* anthropic */
    long limit_output_tokens, remaining_output_tokens, reset_output_tokens_ms; /* anthropic */
} shoal_provider_signals_t;

/* Reads the signals from a raw header block ("Name: value\r\n" lines; exactly
 * len bytes are read, no terminator needed). OpenAI's x-ratelimit-* (resets as
 * durations like 6m0s), Anthropic's anthropic-ratelimit-* (resets as RFC 3339
 * times, made relative to now_unix), retry-after-ms and Retry-After. Names are
 * case-insensitive; negative, zero limits and unreadable values count as
 * absent, and so does any time more than a day away. */
void shoal_provider_signals(const char *headers, size_t len, double now_unix,
                            shoal_provider_signals_t *out);

#endif
