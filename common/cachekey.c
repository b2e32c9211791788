/*
 * Result-cache keys (see cachekey.h). The hashed text is
 *   "shoal-cache-v1" NUL, then per field: name NUL, length in decimal NUL,
 *   the field's bytes
 * in a fixed order, so a field can hold any bytes (NUL included) without
 * running into the next one.
 */
#include "common/cachekey.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/render.h"

#define KEY_VERSION "shoal-cache-v1"

static void field(shoal_sha256_t *c, const char *name, const char *data, size_t len)
{
    char n[32];
    int w = snprintf(n, sizeof(n), "%zu", len);

    shoal_sha256_update(c, name, strlen(name) + 1);
    shoal_sha256_update(c, n, (size_t)w + 1);
    shoal_sha256_update(c, data, len);
}

/* A JSON value as one field, members sorted; "" when v is NULL. */
static shoal_err_t json_field(shoal_sha256_t *c, const char *name, const json_t *v, char *errbuf,
                              size_t errlen)
{
    if (!v) {
        field(c, name, "", 0);
        return SHOAL_OK;
    }
    char *text = json_dumps(v, JSON_COMPACT | JSON_SORT_KEYS | JSON_ENCODE_ANY);
    if (!text)
        return shoal_err_set(errbuf, errlen, SHOAL_ERR_NOMEM, "out of memory");
    field(c, name, text, strlen(text));
    free(text);
    return SHOAL_OK;
}

static const char *provider_name(shoal_provider_t p)
{
    switch (p) {
    case SHOAL_PROVIDER_OPENAI:
        return "openai";
    case SHOAL_PROVIDER_ANTHROPIC:
        return "anthropic";
    case SHOAL_PROVIDER_AZURE:
        return "azure";
    }
    return "unknown";
}

shoal_err_t shoal_cachekey_compute(const shoal_cachekey_parts_t *p, char out[SHOAL_CACHEKEY_HEX],
                                   char *errbuf, size_t errlen)
{
    shoal_sha256_t c;
    unsigned char d[SHOAL_SHA256_LEN];
    char num[32];
    const char *prov = provider_name(p->provider);
    const char *system = p->system ? p->system : "";
    shoal_err_t err;

    shoal_sha256_init(&c);
    shoal_sha256_update(&c, KEY_VERSION, sizeof(KEY_VERSION));
    field(&c, "provider", prov, strlen(prov));
    field(&c, "model", p->model ? p->model : "", p->model ? strlen(p->model) : 0);
    snprintf(num, sizeof(num), "%ld", p->max_tokens > 0 ? p->max_tokens : 0);
    field(&c, "max_tokens", num, strlen(num));
    field(&c, "json", p->want_json ? "1" : "0", 1);
    if ((err = json_field(&c, "params", p->params, errbuf, errlen)) != SHOAL_OK)
        return err;
    field(&c, "system", system, strlen(system));
    field(&c, "prompt", p->prompt ? p->prompt : "", p->prompt ? p->prompt_len : 0);
    if ((err = json_field(&c, "schema", p->output_schema, errbuf, errlen)) != SHOAL_OK)
        return err;
    shoal_sha256_final(&c, d);
    shoal_sha256_hex(d, out);
    return SHOAL_OK;
}

shoal_err_t shoal_cachekey_task(const json_t *task, const shoal_models_t *models,
                                char out[SHOAL_CACHEKEY_HEX], char *errbuf, size_t errlen)
{
    const char *alias = json_string_value(json_object_get(task, "model"));
    const char *tmpl = json_string_value(json_object_get(task, "prompt_template"));
    const json_t *items = json_object_get(task, "items");
    const json_t *output = json_object_get(task, "output");
    const char *format = json_string_value(json_object_get(output, "format"));
    const shoal_model_t *m = alias && models ? shoal_models_find(models, alias) : NULL;

    if (!m)
        return shoal_err_set(errbuf, errlen, SHOAL_ERR_INVALID,
                             "cannot make a cache key: model \"%.100s\" is not in the models file",
                             alias ? alias : "");
    if (!tmpl || !json_is_array(items) || !format)
        return shoal_err_set(errbuf, errlen, SHOAL_ERR_INVALID,
                             "cannot make a cache key: the task has no prompt_template, items or "
                             "output.format");
    size_t len;
    char *prompt = shoal_render_prompt(tmpl, items, &len);
    if (!prompt)
        return shoal_err_set(errbuf, errlen, SHOAL_ERR_NOMEM,
                             "could not render the prompt for a cache key: out of memory or over "
                             "%zu bytes",
                             (size_t)SHOAL_RENDER_MAX);
    /* What else decides the answer: an item's own request (its messages and
     * parameters; its prompt renders empty) and batch mode, whose prompt asks
     * for one answer per item. */
    const json_t *body = json_object_get(json_array_get(items, 0), "body");
    const char *mode = json_string_value(json_object_get(task, "mode"));
    json_t *params = NULL;
    if (body || (mode && strcmp(mode, "context") != 0)) {
        params = json_object();
        if (!params || (body && json_object_set(params, "body", (json_t *)body)) ||
            (mode && json_object_set_new(params, "mode", json_string(mode)))) {
            json_decref(params);
            free(prompt);
            return shoal_err_set(errbuf, errlen, SHOAL_ERR_NOMEM, "out of memory");
        }
    }
    shoal_cachekey_parts_t parts = {
        .provider = m->provider,
        .model = m->model,
        .max_tokens = m->max_output_tokens,
        .want_json = strcmp(format, "json") == 0,
        .params = params,
        .system = json_string_value(json_object_get(task, "system")),
        .prompt = prompt,
        .prompt_len = len,
        .output_schema = json_object_get(output, "schema"),
    };
    shoal_err_t err = shoal_cachekey_compute(&parts, out, errbuf, errlen);
    json_decref(params);
    free(prompt);
    return err;
}

int shoal_cachekey_valid(const char *s)
{
    if (!s || strlen(s) != SHOAL_CACHEKEY_HEX - 1)
        return 0;
    return strspn(s, "0123456789abcdef") == SHOAL_CACHEKEY_HEX - 1;
}
