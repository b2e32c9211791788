/*
 * Requests an item brings with it (see itemreq.h).
 *
 * Anthropic's messages API differs from chat completions in ways a Batch
 * file written for OpenAI runs into at once: the system prompt is a field,
 * not a message, and max_tokens is required. Those are translated; content
 * parts pass unchanged (a text part has the same shape in both).
 */
#include "worker/itemreq.h"

#include <stdlib.h>
#include <string.h>

#define DEFAULT_ANTHROPIC_MAX_TOKENS 4096

static char *dump(json_t *req, size_t *len)
{
    char *out = req ? json_dumps(req, JSON_COMPACT) : NULL;

    json_decref(req);
    if (out && len)
        *len = strlen(out);
    return out;
}

static char *openai(const shoal_model_t *m, const json_t *body, size_t *len)
{
    json_t *req = json_deep_copy(body);

    if (!req || json_object_set_new(req, "model", json_string(m->model)) ||
        json_object_set_new(req, "stream", json_false())) {
        json_decref(req);
        return NULL;
    }
    json_object_del(req, "stream_options");
    return dump(req, len);
}

/* Appends a system message's text to the system prompt being built. */
static int add_system(json_t **sys, const json_t *content)
{
    const char *parts[1024];
    size_t n = 0, lens[1024];

    if (json_is_string(content)) {
        parts[n] = json_string_value(content);
        lens[n++] = json_string_length(content);
    }
    for (size_t i = 0; json_is_array(content) && i < json_array_size(content) && n < 1024; i++) {
        const json_t *t = json_object_get(json_array_get(content, i), "text");

        if (json_is_string(t)) {
            parts[n] = json_string_value(t);
            lens[n++] = json_string_length(t);
        }
    }
    for (size_t i = 0; i < n; i++) {
        size_t old = *sys ? json_string_length(*sys) : 0, add = lens[i] + (old ? 2 : 0);
        char *text = malloc(old + add + 1);
        json_t *s;

        if (!text)
            return -1;
        if (old)
            memcpy(text, json_string_value(*sys), old);
        if (old)
            memcpy(text + old, "\n\n", 2);
        memcpy(text + old + (old ? 2 : 0), parts[i], lens[i]);
        s = json_stringn_nocheck(text, old + add);
        free(text);
        if (!s)
            return -1;
        json_decref(*sys);
        *sys = s;
    }
    return 0;
}

static char *anthropic(const shoal_model_t *m, const json_t *body, size_t *len)
{
    static const char *const kept[] = {"temperature", "top_p", "top_k", "metadata", NULL};
    const json_t *msgs = json_object_get(body, "messages"), *mt, *stop;
    json_t *req = json_object(), *out = json_array(), *sys = NULL;
    long max_tokens =
        m->max_output_tokens > 0 ? m->max_output_tokens : DEFAULT_ANTHROPIC_MAX_TOKENS;
    int bad = !req || !out;

    for (size_t i = 0; !bad && i < json_array_size(msgs); i++) {
        const json_t *msg = json_array_get(msgs, i);
        const char *role = json_string_value(json_object_get(msg, "role"));

        if (role && (strcmp(role, "system") == 0 || strcmp(role, "developer") == 0))
            bad |= add_system(&sys, json_object_get(msg, "content"));
        else
            bad |= json_array_append_new(out, json_pack("{s:s?, s:O?}", "role", role, "content",
                                                        json_object_get(msg, "content")));
    }
    if ((mt = json_object_get(body, "max_tokens")) ||
        (mt = json_object_get(body, "max_completion_tokens"))) {
        if (json_is_integer(mt) && json_integer_value(mt) > 0)
            max_tokens = (long)json_integer_value(mt);
    }
    bad |= json_object_set_new(req, "model", json_string(m->model));
    if (sys)
        bad |= json_object_set_new(req, "system", sys);
    bad |= json_object_set_new(req, "max_tokens", json_integer(max_tokens));
    bad |= json_object_set_new(req, "messages", out);
    for (size_t k = 0; kept[k]; k++) {
        json_t *v = json_object_get(body, kept[k]);

        if (v)
            bad |= json_object_set(req, kept[k], v);
    }
    if ((stop = json_object_get(body, "stop")) && !json_is_null(stop))
        bad |= json_object_set_new(req, "stop_sequences",
                                   json_is_string(stop) ? json_pack("[O]", stop)
                                                        : json_deep_copy(stop));
    if (bad) {
        json_decref(req);
        return NULL;
    }
    return dump(req, len);
}

char *shoal_itemreq_build(const shoal_model_t *m, const json_t *body, size_t *len)
{
    if (m->provider == SHOAL_PROVIDER_ANTHROPIC)
        return anthropic(m, body, len);
    return openai(m, body, len);
}
