/*
 * Provider wire formats (see provider.h).
 */
#include "worker/provider.h"

#include <curl/curl.h>
#include <errno.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#define DEFAULT_ANTHROPIC_MAX_TOKENS 4096

char *shoal_provider_request(const shoal_model_t *m, const char *system, const char *prompt,
                             int want_json, size_t *len)
{
    json_t *req = json_object();
    json_t *msgs = json_array();
    char *out;
    /* Every step can fail for memory; a body missing a message must never be
     * sent, so any failure makes the whole request fail. The setters take
     * NULL containers and values and steal (free) what they are given. */
    int bad = !req || !msgs;

    bad |= json_object_set_new(req, "model", json_string(m->model));
    if (m->provider == SHOAL_PROVIDER_ANTHROPIC) {
        if (system && *system)
            bad |= json_object_set_new(req, "system", json_string(system));
        bad |= json_object_set_new(req, "max_tokens",
                                   json_integer(m->max_output_tokens > 0
                                                    ? m->max_output_tokens
                                                    : DEFAULT_ANTHROPIC_MAX_TOKENS));
    } else {
        if (system && *system)
            bad |= json_array_append_new(
                msgs, json_pack("{s:s, s:s}", "role", "system", "content", system));
        if (m->max_output_tokens > 0)
            bad |= json_object_set_new(req, "max_tokens", json_integer(m->max_output_tokens));
        if (want_json)
            bad |= json_object_set_new(req, "response_format",
                                       json_pack("{s:s}", "type", "json_object"));
    }
    bad |= json_array_append_new(msgs, json_pack("{s:s, s:s}", "role", "user", "content", prompt));
    bad |= json_object_set_new(req, "messages", msgs);
    out = bad ? NULL : json_dumps(req, JSON_COMPACT);
    json_decref(req);
    if (out && len)
        *len = strlen(out);
    return out;
}

struct curl_slist *shoal_provider_headers(const shoal_model_t *m)
{
    struct curl_slist *h = NULL, *t;
    char line[4200];
    const char *key = m->api_key_env ? getenv(m->api_key_env) : NULL;

    if (!(h = curl_slist_append(NULL, "Content-Type: application/json")))
        return NULL;
    if (m->provider == SHOAL_PROVIDER_ANTHROPIC) {
        if (!(t = curl_slist_append(h, "anthropic-version: 2023-06-01")))
            goto fail;
        h = t;
        if (key && *key)
            snprintf(line, sizeof(line), "x-api-key: %s", key);
    } else if (key && *key) {
        snprintf(line, sizeof(line), "Authorization: Bearer %s", key);
    }
    if (key && *key) {
        t = curl_slist_append(h, line);
        memset(line, 0, sizeof(line));
        if (!t)
            goto fail;
        h = t;
    }
    /* No "Expect: 100-continue" round trip on large bodies. */
    if (!(t = curl_slist_append(h, "Expect:")))
        goto fail;
    return t;
fail:
    curl_slist_free_all(h);
    return NULL;
}

static long int_field(json_t *o, const char *k)
{
    json_t *v = json_object_get(o, k);
    return json_is_integer(v) ? (long)json_integer_value(v) : 0;
}

shoal_err_t shoal_provider_parse(const shoal_model_t *m, const char *body, size_t len,
                                 shoal_provider_reply_t *out, char *errbuf, size_t errlen)
{
    json_error_t jerr;
    const char *text = NULL;
    shoal_err_t err = SHOAL_OK;

    memset(out, 0, sizeof(*out));
    json_t *doc = json_loadb(body, len, 0, &jerr);
    if (!json_is_object(doc)) {
        json_decref(doc);
        return shoal_err_set(errbuf, errlen, SHOAL_ERR_RETRY,
                             "malformed answer from the provider: %s",
                             doc ? "not an object" : jerr.text);
    }
    json_t *usage = json_object_get(doc, "usage");
    if (m->provider == SHOAL_PROVIDER_ANTHROPIC) {
        json_t *c = json_array_get(json_object_get(doc, "content"), 0);
        text = json_string_value(json_object_get(c, "text"));
        out->tokens_in = int_field(usage, "input_tokens");
        out->tokens_out = int_field(usage, "output_tokens");
        out->tokens_cached = int_field(usage, "cache_read_input_tokens");
    } else {
        json_t *c = json_array_get(json_object_get(doc, "choices"), 0);
        text = json_string_value(json_object_get(json_object_get(c, "message"), "content"));
        out->tokens_in = int_field(usage, "prompt_tokens");
        out->tokens_out = int_field(usage, "completion_tokens");
        out->tokens_cached =
            int_field(json_object_get(usage, "prompt_tokens_details"), "cached_tokens");
    }
    if (!text)
        err = shoal_err_set(errbuf, errlen, SHOAL_ERR_RETRY,
                            "malformed answer from the provider: no message content");
    else if (!(out->content = strdup(text)))
        err = shoal_err_set(errbuf, errlen, SHOAL_ERR_NOMEM, "out of memory");
    json_decref(doc);
    return err;
}

void shoal_provider_error_text(const char *body, size_t len, char *out, size_t outlen)
{
    json_t *doc = json_loadb(body, len, 0, NULL);
    const char *msg = json_string_value(json_object_get(json_object_get(doc, "error"), "message"));
    if (msg)
        snprintf(out, outlen, "%.200s", msg);
    else
        snprintf(out, outlen, "%s", "");
    json_decref(doc);
}

shoal_outcome_t shoal_provider_classify(long s)
{
    if (s >= 200 && s < 300)
        return SHOAL_OUTCOME_OK;
    if (s == 0 || s == 408 || s == 409 || s == 425 || s == 429 || s >= 500)
        return SHOAL_OUTCOME_RETRY;
    return SHOAL_OUTCOME_FATAL;
}

long shoal_provider_retry_after_ms(const char *value)
{
    char *end;
    if (!value)
        return -1;
    while (*value == ' ')
        value++;
    errno = 0;
    double v = strtod(value, &end);
    /* Written so NaN ("nan" parses) fails too: converting it to long is undefined. */
    if (errno || end == value || !(v >= 0 && v <= 86400))
        return -1;
    return (long)(v * 1000.0);
}
