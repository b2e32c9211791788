/*
 * The models file (format in models.h): loading, validation, ${VAR}
 * expansion in endpoints, look-ups and call cost.
 *
 * Validation is strict because a typo here otherwise shows up much later as a
 * wrong bill or an ignored rate limit: unknown fields are errors, numbers must
 * be non-negative, and every message names the alias and the field. Aliases
 * keep the file's order (jansson keeps object keys in insertion order).
 */
#include "common/models.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#define MODELS_FILE_MAX ((size_t)1 << 20) /* bytes */
#define ALIAS_MAX 100                     /* as a job's "model" */
#define ENDPOINT_MAX 2048                 /* bytes, after expansion */

struct shoal_models {
    shoal_model_t *v; /* n entries; strings malloc'd, freed by destroy */
    size_t n;
};

static const char *const model_keys[] = {"provider",
                                         "endpoint",
                                         "model",
                                         "api_key_env",
                                         "input_usd_per_mtok",
                                         "output_usd_per_mtok",
                                         "cached_input_usd_per_mtok",
                                         "rpm",
                                         "tpm",
                                         "max_output_tokens",
                                         NULL};

static char *dup_str(const char *s)
{
    size_t n = strlen(s) + 1;
    char *d = malloc(n);

    if (d)
        memcpy(d, s, n);
    return d;
}

static int is_var_char(char c, int first)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || c == '_' ||
           (!first && c >= '0' && c <= '9');
}

static int is_var_name(const char *s)
{
    if (!*s || !is_var_char(*s, 1))
        return 0;
    for (s++; *s; s++) {
        if (!is_var_char(*s, 0))
            return 0;
    }
    return 1;
}

/* Replaces each ${NAME} in in by getenv("NAME") into out (cap bytes). */
static shoal_err_t expand(const char *alias, const char *in, char *out, size_t cap, char *errbuf,
                          size_t errlen)
{
    size_t o = 0;

    for (const char *p = in; *p;) {
        const char *add = p;
        size_t n = 1;

        if (p[0] == '$' && p[1] == '{') {
            const char *end = strchr(p + 2, '}');
            char name[128];

            if (!end || (size_t)(end - p - 2) >= sizeof(name))
                return shoal_err_set(errbuf, errlen, SHOAL_ERR_INVALID,
                                     "models.%s.endpoint: unterminated or overlong ${...} "
                                     "at offset %zu",
                                     alias, (size_t)(p - in));
            memcpy(name, p + 2, (size_t)(end - p - 2));
            name[end - p - 2] = '\0';
            if (!is_var_name(name))
                return shoal_err_set(errbuf, errlen, SHOAL_ERR_INVALID,
                                     "models.%s.endpoint: \"${%s}\" is not a variable name "
                                     "(letters, digits and _)",
                                     alias, name);
            if (!(add = getenv(name)))
                return shoal_err_set(errbuf, errlen, SHOAL_ERR_INVALID,
                                     "models.%s.endpoint: environment variable %s is not set",
                                     alias, name);
            n = strlen(add);
            p = end + 1;
        } else {
            p++;
        }
        if (n >= cap - o)
            return shoal_err_set(errbuf, errlen, SHOAL_ERR_INVALID,
                                 "models.%s.endpoint: longer than %zu bytes", alias, cap - 1);
        memcpy(out + o, add, n);
        o += n;
    }
    out[o] = '\0';
    return SHOAL_OK;
}

static shoal_err_t get_price(const char *alias, const json_t *m, const char *key, double *out,
                             char *errbuf, size_t errlen)
{
    const json_t *v = json_object_get(m, key);

    if (!v)
        return SHOAL_OK;
    if (!json_is_number(v) || !(json_number_value(v) >= 0) || !isfinite(json_number_value(v)))
        return shoal_err_set(errbuf, errlen, SHOAL_ERR_INVALID,
                             "models.%s.%s: expected a number >= 0", alias, key);
    *out = json_number_value(v);
    return SHOAL_OK;
}

static shoal_err_t get_count(const char *alias, const json_t *m, const char *key, long *out,
                             char *errbuf, size_t errlen)
{
    const json_t *v = json_object_get(m, key);

    if (!v)
        return SHOAL_OK;
    if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > 1000000000000)
        return shoal_err_set(errbuf, errlen, SHOAL_ERR_INVALID,
                             "models.%s.%s: expected a whole number from 0 to 1000000000000", alias,
                             key);
    *out = (long)json_integer_value(v);
    return SHOAL_OK;
}

static shoal_err_t get_string(const char *alias, const json_t *m, const char *key, int required,
                              const char **out, char *errbuf, size_t errlen)
{
    const json_t *v = json_object_get(m, key);

    *out = NULL;
    if (!v) {
        if (required)
            return shoal_err_set(errbuf, errlen, SHOAL_ERR_INVALID,
                                 "models.%s: missing required field \"%s\"", alias, key);
        return SHOAL_OK;
    }
    if (!json_is_string(v) || json_string_length(v) == 0)
        return shoal_err_set(errbuf, errlen, SHOAL_ERR_INVALID,
                             "models.%s.%s: expected a non-empty string", alias, key);
    *out = json_string_value(v);
    return SHOAL_OK;
}

/* Validates one alias and fills *m, its strings newly allocated. */
static shoal_err_t load_model(const char *alias, const json_t *def, shoal_model_t *m, char *errbuf,
                              size_t errlen)
{
    const char *provider, *endpoint, *model, *key_env, *key;
    char url[ENDPOINT_MAX];
    json_t *val;
    shoal_err_t err;

    if (!json_is_object(def))
        return shoal_err_set(errbuf, errlen, SHOAL_ERR_INVALID, "models.%s: expected an object",
                             alias);
    json_object_foreach((json_t *)def, key, val)
    {
        size_t i;

        for (i = 0; model_keys[i] && strcmp(model_keys[i], key) != 0; i++)
            ;
        if (!model_keys[i])
            return shoal_err_set(errbuf, errlen, SHOAL_ERR_INVALID,
                                 "models.%s: unknown field \"%s\"", alias, key);
    }
    if ((err = get_string(alias, def, "provider", 1, &provider, errbuf, errlen)) ||
        (err = get_string(alias, def, "endpoint", 1, &endpoint, errbuf, errlen)) ||
        (err = get_string(alias, def, "model", 1, &model, errbuf, errlen)) ||
        (err = get_string(alias, def, "api_key_env", 0, &key_env, errbuf, errlen)))
        return err;
    if (strcmp(provider, "openai") == 0)
        m->provider = SHOAL_PROVIDER_OPENAI;
    else if (strcmp(provider, "anthropic") == 0)
        m->provider = SHOAL_PROVIDER_ANTHROPIC;
    else
        return shoal_err_set(errbuf, errlen, SHOAL_ERR_INVALID,
                             "models.%s.provider: \"%s\" is not one of openai, anthropic", alias,
                             provider);
    if (key_env && !is_var_name(key_env))
        return shoal_err_set(errbuf, errlen, SHOAL_ERR_INVALID,
                             "models.%s.api_key_env: \"%s\" is not a variable name "
                             "(letters, digits and _)",
                             alias, key_env);
    if ((err = expand(alias, endpoint, url, sizeof(url), errbuf, errlen)))
        return err;
    if (strncmp(url, "http://", 7) != 0 && strncmp(url, "https://", 8) != 0)
        return shoal_err_set(errbuf, errlen, SHOAL_ERR_INVALID,
                             "models.%s.endpoint: \"%s\" is not an http:// or https:// URL", alias,
                             url);
    if ((err = get_price(alias, def, "input_usd_per_mtok", &m->input_usd_per_mtok, errbuf, errlen)))
        return err;
    m->cached_input_usd_per_mtok = m->input_usd_per_mtok; /* no discount unless stated */
    if ((err = get_price(alias, def, "output_usd_per_mtok", &m->output_usd_per_mtok, errbuf,
                         errlen)) ||
        (err = get_price(alias, def, "cached_input_usd_per_mtok", &m->cached_input_usd_per_mtok,
                         errbuf, errlen)) ||
        (err = get_count(alias, def, "rpm", &m->rpm, errbuf, errlen)) ||
        (err = get_count(alias, def, "tpm", &m->tpm, errbuf, errlen)) ||
        (err = get_count(alias, def, "max_output_tokens", &m->max_output_tokens, errbuf, errlen)))
        return err;
    m->alias = dup_str(alias);
    m->endpoint = dup_str(url);
    m->model = dup_str(model);
    m->api_key_env = key_env ? dup_str(key_env) : NULL;
    if (!m->alias || !m->endpoint || !m->model || (key_env && !m->api_key_env))
        return shoal_err_set(errbuf, errlen, SHOAL_ERR_NOMEM, "out of memory");
    return SHOAL_OK;
}

void shoal_models_destroy(shoal_models_t *models)
{
    if (!models)
        return;
    for (size_t i = 0; i < models->n; i++) {
        free((char *)models->v[i].alias);
        free((char *)models->v[i].endpoint);
        free((char *)models->v[i].model);
        free((char *)models->v[i].api_key_env);
    }
    free(models->v);
    free(models);
}

shoal_models_t *shoal_models_parse(const char *text, size_t len, char *errbuf, size_t errlen)
{
    json_error_t e;
    json_t *doc, *list, *def;
    shoal_models_t *models = NULL;
    const char *key, *alias;

    doc = json_loadb(text, len, JSON_REJECT_DUPLICATES, &e);
    if (!doc) {
        shoal_err_set(errbuf, errlen, SHOAL_ERR_INVALID, "invalid JSON at line %d, column %d: %s",
                      e.line, e.column, e.text);
        return NULL;
    }
    if (!json_is_object(doc)) {
        shoal_err_set(errbuf, errlen, SHOAL_ERR_INVALID, "expected an object with \"models\"");
        goto fail;
    }
    json_object_foreach(doc, key, list)
    {
        if (strcmp(key, "models") != 0) {
            shoal_err_set(errbuf, errlen, SHOAL_ERR_INVALID,
                          "unknown field \"%s\" (the file holds one \"models\" object)", key);
            goto fail;
        }
    }
    list = json_object_get(doc, "models");
    if (!json_is_object(list)) {
        shoal_err_set(errbuf, errlen, SHOAL_ERR_INVALID, "%s",
                      list ? "models: expected an object of aliases"
                           : "missing required field \"models\"");
        goto fail;
    }
    if (json_object_size(list) == 0) {
        shoal_err_set(errbuf, errlen, SHOAL_ERR_INVALID, "models: must not be empty");
        goto fail;
    }
    if (!(models = calloc(1, sizeof(*models))) ||
        !(models->v = calloc(json_object_size(list), sizeof(*models->v)))) {
        shoal_err_set(errbuf, errlen, SHOAL_ERR_NOMEM, "out of memory");
        goto fail;
    }
    json_object_foreach(list, alias, def)
    {
        size_t n = strlen(alias);

        if (n == 0 || n > ALIAS_MAX) {
            shoal_err_set(errbuf, errlen, SHOAL_ERR_INVALID,
                          "models: alias \"%.40s\" must be 1 to %d bytes", alias, ALIAS_MAX);
            goto fail;
        }
        /* count it first so destroy frees whatever load_model allocated */
        models->n++;
        if (load_model(alias, def, &models->v[models->n - 1], errbuf, errlen))
            goto fail;
    }
    json_decref(doc);
    return models;
fail:
    shoal_models_destroy(models);
    json_decref(doc);
    return NULL;
}

shoal_models_t *shoal_models_load(const char *path, char *errbuf, size_t errlen)
{
    FILE *f = fopen(path, "rb");
    char *buf;
    size_t n;
    shoal_models_t *models;

    if (!f) {
        shoal_err_set(errbuf, errlen, SHOAL_ERR_IO, "could not open the file: %s", strerror(errno));
        return NULL;
    }
    if (!(buf = malloc(MODELS_FILE_MAX + 1))) {
        fclose(f);
        shoal_err_set(errbuf, errlen, SHOAL_ERR_NOMEM, "out of memory");
        return NULL;
    }
    n = fread(buf, 1, MODELS_FILE_MAX + 1, f);
    if (ferror(f)) {
        shoal_err_set(errbuf, errlen, SHOAL_ERR_IO, "could not read the file: %s", strerror(errno));
        models = NULL;
    } else if (n > MODELS_FILE_MAX) {
        shoal_err_set(errbuf, errlen, SHOAL_ERR_LIMIT, "the file is larger than %zu bytes",
                      MODELS_FILE_MAX);
        models = NULL;
    } else {
        models = shoal_models_parse(buf, n, errbuf, errlen);
    }
    free(buf);
    fclose(f);
    return models;
}

const shoal_model_t *shoal_models_find(const shoal_models_t *models, const char *alias)
{
    if (!models || !alias)
        return NULL;
    for (size_t i = 0; i < models->n; i++) {
        if (strcmp(models->v[i].alias, alias) == 0)
            return &models->v[i];
    }
    return NULL;
}

size_t shoal_models_count(const shoal_models_t *models)
{
    return models ? models->n : 0;
}

const shoal_model_t *shoal_models_at(const shoal_models_t *models, size_t i)
{
    return models && i < models->n ? &models->v[i] : NULL;
}

/* tokens_in counts every prompt token, cached ones included (OpenAI's
 * prompt_tokens); the cached part is billed at the cached price. */
double shoal_model_cost(const shoal_model_t *m, long tokens_in, long tokens_out, long tokens_cached)
{
    double in, cached;

    if (tokens_in < 0)
        tokens_in = 0;
    if (tokens_out < 0)
        tokens_out = 0;
    if (tokens_cached < 0)
        tokens_cached = 0;
    if (tokens_cached > tokens_in)
        tokens_cached = tokens_in;
    in = (double)(tokens_in - tokens_cached);
    cached = (double)tokens_cached;
    return (in * m->input_usd_per_mtok + cached * m->cached_input_usd_per_mtok +
            (double)tokens_out * m->output_usd_per_mtok) /
           1e6;
}
