/*
 * The models file (format in models.h): loading, validation, ${VAR}
 * expansion in endpoints, Azure's api-version, fallbacks, the API-key check,
 * look-ups and call cost.
 *
 * Validation is strict because a typo here otherwise shows up much later as a
 * wrong bill or an ignored rate limit: unknown fields are errors, numbers must
 * be non-negative, and every message names the alias and the field. Aliases
 * keep the file's order (jansson keeps object keys in insertion order).
 */
#include "common/models.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include <jansson.h>

#define MODELS_FILE_MAX ((size_t)1 << 20) /* bytes */
#define ALIAS_MAX 100                     /* as a job's "model" */
#define ENDPOINT_MAX 2048                 /* bytes, after expansion */
#define CA_FILE_MAX PATH_MAX              /* bytes, after expansion */
#define API_VERSION_MAX 64                /* bytes; real ones look like 2024-10-21 */
#define COUNT_MAX 1000000000000L          /* rpm, tpm and token counts */
#define CONCURRENCY_MAX 100000L
#define TIMEOUT_MAX_MS 3600000L /* an hour: longer is a typo, not a slow model */
#define FALLBACKS_MAX 16
#define HEADERS_MAX 32
#define HEADER_NAME_MAX 128
#define HEADER_VALUE_MAX 4096
#define HEADER_LINE_MAX SHOAL_MODEL_HEADER_LINE_MAX
/* Anthropic bills a 5-minute cache write at 1.25x the input price. */
#define ANTHROPIC_CACHE_WRITE_FACTOR 1.25

struct shoal_models {
    shoal_model_t *v; /* n entries; strings malloc'd, freed by destroy */
    size_t n;
};

static const char *const model_keys[] = {"provider",
                                         "endpoint",
                                         "model",
                                         "api_key_env",
                                         "api_version",
                                         "input_usd_per_mtok",
                                         "output_usd_per_mtok",
                                         "cached_input_usd_per_mtok",
                                         "cache_write_usd_per_mtok",
                                         "rpm",
                                         "tpm",
                                         "input_tpm",
                                         "output_tpm",
                                         "max_output_tokens",
                                         "max_concurrency",
                                         "timeout_ms",
                                         "fallbacks",
                                         "ca_file",
                                         "headers",
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

/* Replaces each ${NAME} in in (models.<alias>.<field>) by getenv("NAME")
 * into out (cap bytes). With need_set 0 an unset variable counts as empty:
 * only the text's form is checked. */
static shoal_err_t expand(const char *alias, const char *field, const char *in, int need_set,
                          char *out, size_t cap, char *errbuf, size_t errlen)
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
                                     "models.%s.%s: unterminated or overlong ${...} "
                                     "at offset %zu",
                                     alias, field, (size_t)(p - in));
            memcpy(name, p + 2, (size_t)(end - p - 2));
            name[end - p - 2] = '\0';
            if (!is_var_name(name))
                return shoal_err_set(errbuf, errlen, SHOAL_ERR_INVALID,
                                     "models.%s.%s: \"${%s}\" is not a variable name "
                                     "(letters, digits and _)",
                                     alias, field, name);
            if (!(add = getenv(name)) && need_set)
                return shoal_err_set(errbuf, errlen, SHOAL_ERR_INVALID,
                                     "models.%s.%s: environment variable %s is not set", alias,
                                     field, name);
            if (!add)
                add = "";
            n = strlen(add);
            p = end + 1;
        } else {
            p++;
        }
        if (n >= cap - o)
            return shoal_err_set(errbuf, errlen, SHOAL_ERR_INVALID,
                                 "models.%s.%s: longer than %zu bytes", alias, field, cap - 1);
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

static shoal_err_t get_count(const char *alias, const json_t *m, const char *key, long max,
                             long *out, char *errbuf, size_t errlen)
{
    const json_t *v = json_object_get(m, key);

    if (!v)
        return SHOAL_OK;
    if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > max)
        return shoal_err_set(errbuf, errlen, SHOAL_ERR_INVALID,
                             "models.%s.%s: expected a whole number from 0 to %ld", alias, key,
                             max);
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

static int is_version_char(char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '.' || c == '_';
}

/* Adds "api-version=<version>" to the query of url (cap bytes) unless the
 * query already carries it. A different version already in the URL is an
 * error: two sources for one setting is how a file drifts from reality. */
static shoal_err_t add_api_version(const char *alias, const char *version, char *url, size_t cap,
                                   char *errbuf, size_t errlen)
{
    const char *q = strchr(url, '?');
    size_t n = strlen(url);

    for (const char *p = q; p; p = strchr(p + 1, '&')) {
        const char *v = p + 1;
        size_t vlen;

        if (strncmp(v, "api-version=", 12) != 0)
            continue;
        v += 12;
        vlen = strcspn(v, "&#");
        if (vlen == strlen(version) && strncmp(v, version, vlen) == 0)
            return SHOAL_OK;
        return shoal_err_set(errbuf, errlen, SHOAL_ERR_INVALID,
                             "models.%s.api_version: \"%s\" differs from the endpoint's "
                             "api-version=%.*s; keep one",
                             alias, version, (int)vlen, v);
    }
    if (n + 1 + 12 + strlen(version) + 1 > cap)
        return shoal_err_set(errbuf, errlen, SHOAL_ERR_INVALID,
                             "models.%s.endpoint: longer than %zu bytes with api-version", alias,
                             cap - 1);
    snprintf(url + n, cap - n, "%capi-version=%s", q ? '&' : '?', version);
    return SHOAL_OK;
}

/* Reads "fallbacks" into *out (an array of newly allocated aliases). Whether
 * each alias exists is checked once the whole file is read. */
static shoal_err_t get_fallbacks(const char *alias, const json_t *def, shoal_model_t *m,
                                 char *errbuf, size_t errlen)
{
    const json_t *list = json_object_get(def, "fallbacks");
    char **v;
    size_t i, j;

    if (!list)
        return SHOAL_OK;
    if (!json_is_array(list) || json_array_size(list) > FALLBACKS_MAX)
        return shoal_err_set(errbuf, errlen, SHOAL_ERR_INVALID,
                             "models.%s.fallbacks: expected an array of at most %d aliases", alias,
                             FALLBACKS_MAX);
    if (json_array_size(list) == 0)
        return SHOAL_OK;
    if (!(v = calloc(json_array_size(list), sizeof(*v))))
        return shoal_err_set(errbuf, errlen, SHOAL_ERR_NOMEM, "out of memory");
    /* owned by m from here, so destroy frees it on any later error */
    m->fallbacks = (const char *const *)v;
    for (i = 0; i < json_array_size(list); i++) {
        const char *fb = json_string_value(json_array_get(list, i));

        if (!fb || !*fb)
            return shoal_err_set(errbuf, errlen, SHOAL_ERR_INVALID,
                                 "models.%s.fallbacks[%zu]: expected a non-empty alias", alias, i);
        if (strcmp(fb, alias) == 0)
            return shoal_err_set(errbuf, errlen, SHOAL_ERR_INVALID,
                                 "models.%s.fallbacks[%zu]: \"%s\" is the alias itself", alias, i,
                                 fb);
        for (j = 0; j < i; j++) {
            if (strcmp(v[j], fb) == 0)
                return shoal_err_set(errbuf, errlen, SHOAL_ERR_INVALID,
                                     "models.%s.fallbacks[%zu]: \"%s\" is listed twice", alias, i,
                                     fb);
        }
        if (!(v[i] = dup_str(fb)))
            return shoal_err_set(errbuf, errlen, SHOAL_ERR_NOMEM, "out of memory");
        m->nfallbacks = i + 1;
    }
    return SHOAL_OK;
}

const char *shoal_provider_key_header(shoal_provider_t p)
{
    return p == SHOAL_PROVIDER_ANTHROPIC ? "x-api-key"
           : p == SHOAL_PROVIDER_AZURE   ? "api-key"
                                         : "Authorization";
}

/* RFC 9110's token characters, which a header name is made of. */
static int is_token_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           (c && strchr("!#$%&'*+-.^_`|~", c));
}

/* A header value as RFC 9110 allows it: no control character but tab (a
 * line break would end the header and start another). */
static int field_value(const char *v)
{
    for (; *v; v++)
        if (((unsigned char)*v < 0x20 && *v != '\t') || *v == 0x7f)
            return 0;
    return 1;
}

/* Headers shoal sends itself: a models file may not set them. The key's
 * header only counts when api_key_env is given (without it, a gateway's own
 * credential may go in headers). */
static const char *reserved_header(const shoal_model_t *m, int has_key, const char *name)
{
    static const char *const always[] = {
        "content-type", "content-length", "host", "transfer-encoding",
        "connection",   "expect",         NULL};
    for (size_t i = 0; always[i]; i++)
        if (!strcasecmp(name, always[i]))
            return "shoal sets it";
    if (m->provider == SHOAL_PROVIDER_ANTHROPIC && !strcasecmp(name, "anthropic-version"))
        return "shoal speaks anthropic-version 2023-06-01";
    if (has_key && !strcasecmp(name, shoal_provider_key_header(m->provider)))
        return "api_key_env sets it";
    return NULL;
}

/* "headers": extra request headers, names checked here and values kept as
 * written: a ${VAR} in a value is read when the worker builds its requests
 * (shoal_model_header_line), so a secret there need not be known to every
 * process that reads the file. */
static shoal_err_t get_headers(const char *alias, const json_t *def, int has_key, shoal_model_t *m,
                               char *errbuf, size_t errlen)
{
    const json_t *obj = json_object_get(def, "headers"), *val;
    const char *name;
    char field[HEADER_NAME_MAX + 16], scratch[HEADER_LINE_MAX];
    size_t n = 0;

    if (!obj)
        return SHOAL_OK;
    if (!json_is_object(obj) || json_object_size(obj) > HEADERS_MAX)
        return shoal_err_set(errbuf, errlen, SHOAL_ERR_INVALID,
                             "models.%s.headers: expected an object of at most %d header names "
                             "and their values",
                             alias, HEADERS_MAX);
    if (json_object_size(obj) == 0)
        return SHOAL_OK;
    char **names = calloc(json_object_size(obj), sizeof(*names));
    char **values = calloc(json_object_size(obj), sizeof(*values));
    /* owned by m from here, so destroy frees them on any later error */
    m->header_names = (const char *const *)names;
    m->header_values = (const char *const *)values;
    if (!names || !values)
        return shoal_err_set(errbuf, errlen, SHOAL_ERR_NOMEM, "out of memory");
    json_object_foreach((json_t *)obj, name, val)
    {
        size_t len = strlen(name), i;
        const char *why;

        for (i = 0; i < len && is_token_char(name[i]); i++)
            ;
        if (len == 0 || len > HEADER_NAME_MAX || i < len)
            return shoal_err_set(errbuf, errlen, SHOAL_ERR_INVALID,
                                 "models.%s.headers: a name of up to %d letters, digits and "
                                 "!#$%%&'*+-.^_`|~ expected (got %zu bytes, bad at byte %zu)",
                                 alias, HEADER_NAME_MAX, len, i);
        snprintf(field, sizeof(field), "headers.%s", name);
        if ((why = reserved_header(m, has_key, name)))
            return shoal_err_set(errbuf, errlen, SHOAL_ERR_INVALID, "models.%s.%s: %s", alias,
                                 field, why);
        for (i = 0; i < n; i++)
            if (!strcasecmp(names[i], name))
                return shoal_err_set(errbuf, errlen, SHOAL_ERR_INVALID,
                                     "models.%s.%s: given twice (names ignore case)", alias, field);
        const char *v = json_string_value(val);
        /* the value is never quoted in a message: it may hold a secret */
        if (!v || !*v || json_string_length(val) != strlen(v) || !field_value(v) ||
            strlen(v) > HEADER_VALUE_MAX)
            return shoal_err_set(errbuf, errlen, SHOAL_ERR_INVALID,
                                 "models.%s.%s: expected a non-empty string of at most %d bytes "
                                 "without control characters (tabs aside)",
                                 alias, field, HEADER_VALUE_MAX);
        shoal_err_t err = expand(alias, field, v, 0, scratch, sizeof(scratch), errbuf, errlen);
        memset(scratch, 0, sizeof(scratch));
        if (err)
            return err;
        if (!(names[n] = dup_str(name)) || !(values[n] = dup_str(v)))
            return shoal_err_set(errbuf, errlen, SHOAL_ERR_NOMEM, "out of memory");
        m->nheaders = ++n;
    }
    return SHOAL_OK;
}

/* Validates one alias and fills *m, its strings newly allocated. */
static shoal_err_t load_model(const char *alias, const json_t *def, shoal_model_t *m, char *errbuf,
                              size_t errlen)
{
    const char *provider, *endpoint, *model, *key_env, *version, *ca, *key;
    char url[ENDPOINT_MAX], ca_path[CA_FILE_MAX];
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
        (err = get_string(alias, def, "api_key_env", 0, &key_env, errbuf, errlen)) ||
        (err = get_string(alias, def, "api_version", 0, &version, errbuf, errlen)) ||
        (err = get_string(alias, def, "ca_file", 0, &ca, errbuf, errlen)))
        return err;
    if (strcmp(provider, "openai") == 0)
        m->provider = SHOAL_PROVIDER_OPENAI;
    else if (strcmp(provider, "anthropic") == 0)
        m->provider = SHOAL_PROVIDER_ANTHROPIC;
    else if (strcmp(provider, "azure") == 0)
        m->provider = SHOAL_PROVIDER_AZURE;
    else
        return shoal_err_set(errbuf, errlen, SHOAL_ERR_INVALID,
                             "models.%s.provider: \"%s\" is not one of openai, anthropic, azure",
                             alias, provider);
    if (key_env && !is_var_name(key_env))
        return shoal_err_set(errbuf, errlen, SHOAL_ERR_INVALID,
                             "models.%s.api_key_env: \"%s\" is not a variable name "
                             "(letters, digits and _)",
                             alias, key_env);
    if (version && m->provider != SHOAL_PROVIDER_AZURE)
        return shoal_err_set(errbuf, errlen, SHOAL_ERR_INVALID,
                             "models.%s.api_version: only for provider azure", alias);
    if (version) {
        size_t i;

        for (i = 0; version[i] && is_version_char(version[i]); i++)
            ;
        if (version[i] || i > API_VERSION_MAX)
            return shoal_err_set(errbuf, errlen, SHOAL_ERR_INVALID,
                                 "models.%s.api_version: expected up to %d letters, digits, "
                                 "'-', '.' or '_' (like 2024-10-21)",
                                 alias, API_VERSION_MAX);
    }
    if (m->provider != SHOAL_PROVIDER_ANTHROPIC) {
        /* OpenAI counts one token limit; a separate input or output limit
         * here would be silently ignored */
        const char *only[] = {"input_tpm", "output_tpm"};

        for (size_t i = 0; i < 2; i++) {
            if (json_object_get(def, only[i]))
                return shoal_err_set(errbuf, errlen, SHOAL_ERR_INVALID,
                                     "models.%s.%s: only for provider anthropic (use tpm)", alias,
                                     only[i]);
        }
    }
    if ((err = expand(alias, "endpoint", endpoint, 1, url, sizeof(url), errbuf, errlen)))
        return err;
    if (strncmp(url, "http://", 7) != 0 && strncmp(url, "https://", 8) != 0)
        return shoal_err_set(errbuf, errlen, SHOAL_ERR_INVALID,
                             "models.%s.endpoint: \"%s\" is not an http:// or https:// URL", alias,
                             url);
    if (version && (err = add_api_version(alias, version, url, sizeof(url), errbuf, errlen)))
        return err;
    if (ca && strncmp(url, "https://", 8) != 0)
        return shoal_err_set(errbuf, errlen, SHOAL_ERR_INVALID,
                             "models.%s.ca_file: only for an https:// endpoint (this one is "
                             "\"%s\")",
                             alias, url);
    if (ca && (err = expand(alias, "ca_file", ca, 1, ca_path, sizeof(ca_path), errbuf, errlen)))
        return err;
    if ((err = get_price(alias, def, "input_usd_per_mtok", &m->input_usd_per_mtok, errbuf, errlen)))
        return err;
    /* no discount unless stated; Anthropic's documented write premium otherwise */
    m->cached_input_usd_per_mtok = m->input_usd_per_mtok;
    m->cache_write_usd_per_mtok = m->provider == SHOAL_PROVIDER_ANTHROPIC
                                      ? m->input_usd_per_mtok * ANTHROPIC_CACHE_WRITE_FACTOR
                                      : m->input_usd_per_mtok;
    if ((err = get_price(alias, def, "output_usd_per_mtok", &m->output_usd_per_mtok, errbuf,
                         errlen)) ||
        (err = get_price(alias, def, "cached_input_usd_per_mtok", &m->cached_input_usd_per_mtok,
                         errbuf, errlen)) ||
        (err = get_price(alias, def, "cache_write_usd_per_mtok", &m->cache_write_usd_per_mtok,
                         errbuf, errlen)) ||
        (err = get_count(alias, def, "rpm", COUNT_MAX, &m->rpm, errbuf, errlen)) ||
        (err = get_count(alias, def, "tpm", COUNT_MAX, &m->tpm, errbuf, errlen)) ||
        (err = get_count(alias, def, "input_tpm", COUNT_MAX, &m->input_tpm, errbuf, errlen)) ||
        (err = get_count(alias, def, "output_tpm", COUNT_MAX, &m->output_tpm, errbuf, errlen)) ||
        (err = get_count(alias, def, "max_output_tokens", COUNT_MAX, &m->max_output_tokens, errbuf,
                         errlen)) ||
        (err = get_count(alias, def, "max_concurrency", CONCURRENCY_MAX, &m->max_concurrency,
                         errbuf, errlen)) ||
        (err =
             get_count(alias, def, "timeout_ms", TIMEOUT_MAX_MS, &m->timeout_ms, errbuf, errlen)) ||
        (err = get_fallbacks(alias, def, m, errbuf, errlen)) ||
        (err = get_headers(alias, def, key_env != NULL, m, errbuf, errlen)))
        return err;
    m->alias = dup_str(alias);
    m->endpoint = dup_str(url);
    m->model = dup_str(model);
    m->api_key_env = key_env ? dup_str(key_env) : NULL;
    m->api_version = version ? dup_str(version) : NULL;
    m->ca_file = ca ? dup_str(ca_path) : NULL;
    if (!m->alias || !m->endpoint || !m->model || (key_env && !m->api_key_env) ||
        (version && !m->api_version) || (ca && !m->ca_file))
        return shoal_err_set(errbuf, errlen, SHOAL_ERR_NOMEM, "out of memory");
    return SHOAL_OK;
}

/* Every fallback names an alias of the file (checked once all are read). */
static shoal_err_t check_fallbacks(const shoal_models_t *models, char *errbuf, size_t errlen)
{
    for (size_t i = 0; i < models->n; i++) {
        const shoal_model_t *m = &models->v[i];

        for (size_t j = 0; j < m->nfallbacks; j++) {
            if (shoal_models_index(models, m->fallbacks[j]) < 0)
                return shoal_err_set(errbuf, errlen, SHOAL_ERR_INVALID,
                                     "models.%s.fallbacks[%zu]: \"%s\" is not an alias of this "
                                     "file",
                                     m->alias, j, m->fallbacks[j]);
        }
    }
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
        free((char *)models->v[i].api_version);
        free((char *)models->v[i].ca_file);
        for (size_t j = 0; j < models->v[i].nheaders; j++) {
            free((char *)models->v[i].header_names[j]);
            free((char *)models->v[i].header_values[j]);
        }
        free((void *)models->v[i].header_names);
        free((void *)models->v[i].header_values);
        for (size_t j = 0; j < models->v[i].nfallbacks; j++)
            free((char *)models->v[i].fallbacks[j]);
        free((void *)models->v[i].fallbacks);
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
        models->v[models->n - 1].index = models->n - 1;
        if (load_model(alias, def, &models->v[models->n - 1], errbuf, errlen))
            goto fail;
    }
    if (check_fallbacks(models, errbuf, errlen))
        goto fail;
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

int shoal_models_index(const shoal_models_t *models, const char *alias)
{
    if (!models || !alias)
        return -1;
    for (size_t i = 0; i < models->n; i++) {
        if (strcmp(models->v[i].alias, alias) == 0)
            return (int)i;
    }
    return -1;
}

const shoal_model_t *shoal_models_find(const shoal_models_t *models, const char *alias)
{
    int i = shoal_models_index(models, alias);

    return i < 0 ? NULL : &models->v[i];
}

shoal_err_t shoal_models_check_keys(const shoal_models_t *models, char *errbuf, size_t errlen)
{
    for (size_t i = 0; models && i < models->n; i++) {
        const shoal_model_t *m = &models->v[i];
        const char *key;

        if (!m->api_key_env)
            continue;
        /* only whether it is set: the value must not reach any text */
        key = getenv(m->api_key_env);
        if (!key || !*key)
            return shoal_err_set(errbuf, errlen, SHOAL_ERR_INVALID,
                                 "models.%s.api_key_env: environment variable %s is %s; export "
                                 "it or remove api_key_env",
                                 m->alias, m->api_key_env, key ? "empty" : "not set");
    }
    for (size_t i = 0; models && i < models->n; i++) {
        char line[HEADER_LINE_MAX];
        for (size_t j = 0; j < models->v[i].nheaders; j++) {
            shoal_err_t err =
                shoal_model_header_line(&models->v[i], j, line, sizeof(line), errbuf, errlen);
            memset(line, 0, sizeof(line));
            if (err)
                return err;
        }
    }
    return SHOAL_OK;
}

shoal_err_t shoal_model_header_line(const shoal_model_t *m, size_t i, char *out, size_t cap,
                                    char *errbuf, size_t errlen)
{
    char field[HEADER_NAME_MAX + 16];
    size_t n;

    if (i >= m->nheaders)
        return shoal_err_set(errbuf, errlen, SHOAL_ERR_INVALID, "models.%s: no header %zu",
                             m->alias, i);
    snprintf(field, sizeof(field), "headers.%s", m->header_names[i]);
    n = (size_t)snprintf(out, cap, "%s: ", m->header_names[i]);
    if (n >= cap)
        return shoal_err_set(errbuf, errlen, SHOAL_ERR_INVALID,
                             "models.%s.%s: longer than %zu bytes", m->alias, field, cap - 1);
    shoal_err_t err =
        expand(m->alias, field, m->header_values[i], 1, out + n, cap - n, errbuf, errlen);
    if (err == SHOAL_OK && out[n] == '\0')
        err = shoal_err_set(errbuf, errlen, SHOAL_ERR_INVALID,
                            "models.%s.%s: the value is empty once its variables are read; "
                            "export them",
                            m->alias, field);
    return err;
}

shoal_err_t shoal_models_check_files(const shoal_models_t *models, char *errbuf, size_t errlen)
{
    for (size_t i = 0; models && i < models->n; i++) {
        const shoal_model_t *m = &models->v[i];
        struct stat st;
        FILE *f;

        if (!m->ca_file)
            continue;
        errno = 0;
        if (stat(m->ca_file, &st) != 0 || !S_ISREG(st.st_mode) || !(f = fopen(m->ca_file, "r")))
            return shoal_err_set(errbuf, errlen, SHOAL_ERR_INVALID,
                                 "models.%s.ca_file: cannot read \"%s\": %s", m->alias, m->ca_file,
                                 errno ? strerror(errno) : "not a regular file");
        fclose(f);
    }
    return SHOAL_OK;
}

size_t shoal_models_count(const shoal_models_t *models)
{
    return models ? models->n : 0;
}

const shoal_model_t *shoal_models_at(const shoal_models_t *models, size_t i)
{
    return models && i < models->n ? &models->v[i] : NULL;
}

static long clamp(long v, long hi)
{
    return v < 0 ? 0 : v > hi ? hi : v;
}

double shoal_model_cost(const shoal_model_t *m, const shoal_usage_t *u)
{
    long input = clamp(u->input, LONG_MAX);
    long cached = clamp(u->cached, input);
    long write = clamp(u->cache_write, input - cached);
    long output = clamp(u->output, LONG_MAX);

    return ((double)(input - cached - write) * m->input_usd_per_mtok +
            (double)cached * m->cached_input_usd_per_mtok +
            (double)write * m->cache_write_usd_per_mtok + (double)output * m->output_usd_per_mtok) /
           1e6;
}
