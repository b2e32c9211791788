/*
 * Models file: the checked-in tests/data/models.json loads, ${VAR} expands
 * from the environment, every field has its default and its bounds, Azure's
 * api-version lands in the endpoint, fallbacks name real aliases, the key
 * check names the missing variable (never a value), a ca_file is expanded and
 * must be readable, cost bills all four kinds
 * of token, and each kind of bad file is refused with a message naming the
 * alias and the field.
 */
#include "common/models.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tests/support/check.h"

static const char *source_dir(void)
{
    const char *d = getenv("SHOAL_SOURCE_DIR");
    return d && *d ? d : SHOAL_SOURCE_DIR;
}

static void data_path(char *buf, size_t len)
{
    snprintf(buf, len, "%s/tests/data/models.json", source_dir());
}

/* Parses text, which must fail with an error containing want. */
static void expect_error(const char *text, const char *want)
{
    char err[512] = "";
    shoal_models_t *m = shoal_models_parse(text, strlen(text), err, sizeof(err));

    if (m)
        test_fail("models file accepted, expected \"%s\": %s", want, text);
    assert_str_contains(err, want);
    assert_true(err[strlen(err) - 1] != '.');
}

/* One alias "m" with the given fields after provider and model. */
static void expect_field_error(const char *fields, const char *want)
{
    char text[1024];

    snprintf(text, sizeof(text),
             "{\"models\": {\"m\": {\"provider\": \"openai\", \"model\": \"x\"%s%s}}}",
             *fields ? ", " : "", fields);
    expect_error(text, want);
}

static void test_data_file(void)
{
    char path[1024], err[512] = "";
    shoal_models_t *m;
    const shoal_model_t *s;

    data_path(path, sizeof(path));
    setenv("SHOAL_SIM_URL", "http://127.0.0.1:9", 1);
    m = shoal_models_load(path, err, sizeof(err));
    if (!m)
        test_fail("cannot load %s: %s", path, err);
    assert_int_eq(shoal_models_count(m), 2);
    assert_str_eq(shoal_models_at(m, 0)->alias, "sim-small"); /* file order */
    assert_str_eq(shoal_models_at(m, 1)->alias, "sim-large");
    assert_true(shoal_models_at(m, 2) == NULL);
    assert_true(shoal_models_find(m, "gpt-9") == NULL);
    assert_true(shoal_models_find(m, NULL) == NULL);

    s = shoal_models_find(m, "sim-small");
    assert_true(s != NULL);
    assert_int_eq(s->provider, SHOAL_PROVIDER_OPENAI);
    assert_str_eq(s->endpoint, "http://127.0.0.1:9/v1/chat/completions");
    assert_str_eq(s->model, "sim-small-1");
    assert_true(s->api_key_env == NULL);
    assert_true(s->input_usd_per_mtok == 0.15);
    assert_true(s->cached_input_usd_per_mtok == 0.075);
    assert_int_eq(s->rpm, 6000);
    assert_int_eq(s->tpm, 2000000);
    assert_int_eq(s->max_output_tokens, 512);

    /* fields the file leaves out take their defaults */
    assert_true(s->cache_write_usd_per_mtok == 0.15); /* = input for openai */
    assert_int_eq(s->max_concurrency, 0);
    assert_int_eq(s->timeout_ms, 0);
    assert_int_eq(s->input_tpm, 0);
    assert_int_eq(s->output_tpm, 0);
    assert_int_eq(s->nfallbacks, 0);
    assert_true(s->fallbacks == NULL);
    assert_true(s->api_version == NULL);

    assert_int_eq(shoal_models_index(m, "sim-small"), 0);
    assert_int_eq(shoal_models_index(m, "sim-large"), 1);
    assert_int_eq(shoal_models_index(m, "gpt-9"), -1);
    assert_int_eq(shoal_models_index(m, NULL), -1);
    assert_int_eq(shoal_models_index(NULL, "sim-small"), -1);

    /* 1M prompt tokens, half of them cached, and 1M output tokens */
    s = shoal_models_find(m, "sim-large");
    shoal_usage_t u = {.input = 1000000, .cached = 500000, .output = 1000000};
    assert_true(fabs(shoal_model_cost(s, &u) - 11.875) < 1e-9);
    u = (shoal_usage_t){.input = 1000};
    assert_true(fabs(shoal_model_cost(s, &u) - 0.0025) < 1e-12);
    /* more cached than prompt tokens is clamped; negatives count as 0 */
    u = (shoal_usage_t){.input = 100, .cached = 400, .output = -5};
    assert_true(fabs(shoal_model_cost(s, &u) - 100 * 1.25 / 1e6) < 1e-12);
    /* no key variable named: nothing to check */
    assert_int_eq(shoal_models_check_keys(m, err, sizeof(err)), SHOAL_OK);
    shoal_models_destroy(m);

    /* the environment is read at load time */
    unsetenv("SHOAL_SIM_URL");
    m = shoal_models_load(path, err, sizeof(err));
    assert_true(m == NULL);
    assert_str_contains(err,
                        "models.sim-small.endpoint: environment variable SHOAL_SIM_URL is not set");

    setenv("SHOAL_SIM_URL", "", 1); /* set but empty: expands, then is not a URL */
    m = shoal_models_load(path, err, sizeof(err));
    assert_true(m == NULL);
    assert_str_contains(err, "is not an http:// or https:// URL");
    unsetenv("SHOAL_SIM_URL");

    shoal_models_destroy(NULL);
}

static void test_good_inline(void)
{
    const char *text =
        "{\"models\": {\"claude\": {\"provider\": \"anthropic\","
        " \"endpoint\": \"https://${MODELS_TEST_HOST}:${MODELS_TEST_PORT}/v1/messages\","
        " \"model\": \"claude-x\", \"api_key_env\": \"ANTHROPIC_API_KEY\","
        " \"input_usd_per_mtok\": 3, \"output_usd_per_mtok\": 15}}}";
    char err[512] = "";
    shoal_models_t *m;
    const shoal_model_t *c;

    setenv("MODELS_TEST_HOST", "api.example.com", 1);
    setenv("MODELS_TEST_PORT", "8443", 1);
    m = shoal_models_parse(text, strlen(text), err, sizeof(err));
    if (!m)
        test_fail("rejected: %s", err);
    c = shoal_models_find(m, "claude");
    assert_int_eq(c->provider, SHOAL_PROVIDER_ANTHROPIC);
    assert_str_eq(c->endpoint, "https://api.example.com:8443/v1/messages");
    assert_str_eq(c->api_key_env, "ANTHROPIC_API_KEY");
    /* no cached price given: cached tokens cost the input price */
    assert_true(c->cached_input_usd_per_mtok == 3);
    /* Anthropic's cache writes cost 1.25x input unless stated */
    assert_true(fabs(c->cache_write_usd_per_mtok - 3.75) < 1e-12);
    assert_int_eq(c->rpm, 0);
    assert_int_eq(c->max_output_tokens, 0);
    shoal_models_destroy(m);
}

static shoal_models_t *parse_ok(const char *text)
{
    char err[512] = "";
    shoal_models_t *m = shoal_models_parse(text, strlen(text), err, sizeof(err));

    if (!m)
        test_fail("rejected: %s\n%s", err, text);
    return m;
}

/* Every field of an alias, read back. */
static void test_all_fields(void)
{
    shoal_models_t *m = parse_ok(
        "{\"models\": {"
        "\"claude\": {\"provider\": \"anthropic\", \"endpoint\": \"https://a.example/v1/messages\","
        " \"model\": \"claude-x\", \"api_key_env\": \"MODELS_TEST_KEY_A\","
        " \"input_usd_per_mtok\": 3, \"cached_input_usd_per_mtok\": 0.3,"
        " \"cache_write_usd_per_mtok\": 6, \"output_usd_per_mtok\": 15,"
        " \"rpm\": 50, \"tpm\": 90000, \"input_tpm\": 40000, \"output_tpm\": 8000,"
        " \"max_output_tokens\": 2048, \"max_concurrency\": 8, \"timeout_ms\": 120000,"
        " \"fallbacks\": [\"az\", \"local\"]},"
        "\"az\": {\"provider\": \"azure\","
        " \"endpoint\": \"https://r.openai.azure.com/openai/deployments/d/chat/completions\","
        " \"model\": \"gpt-4o\", \"api_key_env\": \"MODELS_TEST_KEY_B\","
        " \"api_version\": \"2024-10-21\", \"input_usd_per_mtok\": 2.5},"
        "\"local\": {\"provider\": \"openai\", \"endpoint\": \"http://127.0.0.1:8000/v1/x\","
        " \"model\": \"llama\", \"fallbacks\": [\"claude\"]}}}");
    const shoal_model_t *c = shoal_models_find(m, "claude");

    assert_int_eq(shoal_models_count(m), 3);
    assert_int_eq(c->provider, SHOAL_PROVIDER_ANTHROPIC);
    assert_true(c->input_usd_per_mtok == 3);
    assert_true(c->cached_input_usd_per_mtok == 0.3);
    assert_true(c->cache_write_usd_per_mtok == 6); /* stated: no default */
    assert_true(c->output_usd_per_mtok == 15);
    assert_int_eq(c->rpm, 50);
    assert_int_eq(c->tpm, 90000);
    assert_int_eq(c->input_tpm, 40000);
    assert_int_eq(c->output_tpm, 8000);
    assert_int_eq(c->max_output_tokens, 2048);
    assert_int_eq(c->max_concurrency, 8);
    assert_int_eq(c->timeout_ms, 120000);
    assert_int_eq(c->nfallbacks, 2);
    assert_str_eq(c->fallbacks[0], "az"); /* in the file's order */
    assert_str_eq(c->fallbacks[1], "local");
    assert_int_eq(shoal_models_index(m, c->fallbacks[1]), 2);

    const shoal_model_t *a = shoal_models_find(m, "az");
    assert_int_eq(a->provider, SHOAL_PROVIDER_AZURE);
    assert_str_eq(a->api_version, "2024-10-21");
    assert_str_eq(a->endpoint, "https://r.openai.azure.com/openai/deployments/d/chat/"
                               "completions?api-version=2024-10-21");
    assert_true(a->cache_write_usd_per_mtok == 2.5); /* = input for azure */
    assert_true(a->cached_input_usd_per_mtok == 2.5);

    /* a cycle between aliases is allowed: a task only walks its own list */
    assert_int_eq(shoal_models_find(m, "local")->nfallbacks, 1);
    shoal_models_destroy(m);
}

/* The endpoint after api_version is applied to url. */
static void expect_azure_url(const char *url, const char *want)
{
    char text[1024];
    shoal_models_t *m;

    snprintf(text, sizeof(text),
             "{\"models\": {\"az\": {\"provider\": \"azure\", \"endpoint\": \"%s\","
             " \"model\": \"x\", \"api_version\": \"2024-10-21\"}}}",
             url);
    m = parse_ok(text);
    assert_str_eq(shoal_models_at(m, 0)->endpoint, want);
    shoal_models_destroy(m);
}

static void test_azure_url(void)
{
    expect_azure_url("https://h/openai/deployments/d/chat/completions",
                     "https://h/openai/deployments/d/chat/completions?api-version=2024-10-21");
    /* a query already there: joined with & */
    expect_azure_url("https://h/c?foo=1", "https://h/c?foo=1&api-version=2024-10-21");
    /* the same version already in the URL: left as it is, wherever it sits */
    expect_azure_url("https://h/c?api-version=2024-10-21", "https://h/c?api-version=2024-10-21");
    expect_azure_url("https://h/c?a=1&api-version=2024-10-21&b=2",
                     "https://h/c?a=1&api-version=2024-10-21&b=2");
    /* a parameter that merely ends in api-version is another parameter */
    expect_azure_url("https://h/c?x-api-version=1",
                     "https://h/c?x-api-version=1&api-version=2024-10-21");

    /* no api_version: the endpoint as written */
    shoal_models_t *m = parse_ok("{\"models\": {\"az\": {\"provider\": \"azure\","
                                 " \"endpoint\": \"https://h/c?api-version=2023-05-15\","
                                 " \"model\": \"x\"}}}");
    assert_str_eq(shoal_models_at(m, 0)->endpoint, "https://h/c?api-version=2023-05-15");
    assert_true(shoal_models_at(m, 0)->api_version == NULL);
    shoal_models_destroy(m);
}

static void test_check_keys(void)
{
    const char *text = "{\"models\": {"
                       "\"free\": {\"provider\": \"openai\", \"endpoint\": \"http://h\","
                       " \"model\": \"x\"},"
                       "\"fast\": {\"provider\": \"openai\", \"endpoint\": \"http://h\","
                       " \"model\": \"x\", \"api_key_env\": \"MODELS_TEST_OPENAI_KEY\"},"
                       "\"smart\": {\"provider\": \"anthropic\", \"endpoint\": \"http://h\","
                       " \"model\": \"x\", \"api_key_env\": \"MODELS_TEST_ANTHROPIC_KEY\"}}}";
    shoal_models_t *m = parse_ok(text);
    char err[512];

    unsetenv("MODELS_TEST_OPENAI_KEY");
    unsetenv("MODELS_TEST_ANTHROPIC_KEY");
    assert_int_eq(shoal_models_check_keys(m, err, sizeof(err)), SHOAL_ERR_INVALID);
    assert_str_eq(err, "models.fast.api_key_env: environment variable MODELS_TEST_OPENAI_KEY is "
                       "not set; export it or remove api_key_env");

    /* empty counts as missing; the message never holds a value */
    setenv("MODELS_TEST_OPENAI_KEY", "sk-secret-value-1", 1);
    setenv("MODELS_TEST_ANTHROPIC_KEY", "", 1);
    assert_int_eq(shoal_models_check_keys(m, err, sizeof(err)), SHOAL_ERR_INVALID);
    assert_str_eq(err, "models.smart.api_key_env: environment variable MODELS_TEST_ANTHROPIC_KEY "
                       "is empty; export it or remove api_key_env");
    assert_true(strstr(err, "sk-secret") == NULL);

    setenv("MODELS_TEST_ANTHROPIC_KEY", "ak-secret-value-2", 1);
    err[0] = '\0';
    assert_int_eq(shoal_models_check_keys(m, err, sizeof(err)), SHOAL_OK);
    assert_str_eq(err, "");
    unsetenv("MODELS_TEST_OPENAI_KEY");
    unsetenv("MODELS_TEST_ANTHROPIC_KEY");
    assert_int_eq(shoal_models_check_keys(NULL, err, sizeof(err)), SHOAL_OK);
    shoal_models_destroy(m);
}

/* ca_file: ${VAR} expanded, only for https, and the start-up check wants a
 * readable regular file. */
static void test_ca_file(void)
{
    char err[512], path[64] = "/tmp/models_test_ca_XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_eq((int)write(fd, "-----BEGIN CERTIFICATE-----\n", 28), 28);
    close(fd);
    char *slash = strrchr(path, '/');
    *slash = '\0';
    setenv("MODELS_TEST_CA_DIR", path, 1);
    *slash = '/';

    char text[512];
    snprintf(text, sizeof(text),
             "{\"models\": {\"private\": {\"provider\": \"openai\", \"endpoint\": "
             "\"https://gw.internal/v1\", \"model\": \"x\", \"ca_file\": "
             "\"${MODELS_TEST_CA_DIR}%s\"}, \"public\": {\"provider\": \"openai\", "
             "\"endpoint\": \"https://h/v1\", \"model\": \"x\"}}}",
             slash);
    shoal_models_t *m = parse_ok(text);
    assert_str_eq(shoal_models_find(m, "private")->ca_file, path);
    assert_true(shoal_models_find(m, "public")->ca_file == NULL);
    assert_int_eq(shoal_models_check_files(m, err, sizeof(err)), SHOAL_OK);

    /* gone after loading: the check names the alias and the path */
    unlink(path);
    assert_int_eq(shoal_models_check_files(m, err, sizeof(err)), SHOAL_ERR_INVALID);
    assert_str_contains(err, "models.private.ca_file: cannot read \"");
    assert_str_contains(err, path);
    assert_str_contains(err, "No such file or directory");
    shoal_models_destroy(m);

    /* a directory is not a CA file */
    snprintf(text, sizeof(text),
             "{\"models\": {\"d\": {\"provider\": \"openai\", \"endpoint\": \"https://h\", "
             "\"model\": \"x\", \"ca_file\": \"/tmp\"}}}");
    m = parse_ok(text);
    assert_int_eq(shoal_models_check_files(m, err, sizeof(err)), SHOAL_ERR_INVALID);
    assert_str_eq(err, "models.d.ca_file: cannot read \"/tmp\": not a regular file");
    shoal_models_destroy(m);
    assert_int_eq(shoal_models_check_files(NULL, err, sizeof(err)), SHOAL_OK);
    unsetenv("MODELS_TEST_CA_DIR");

    expect_field_error("\"endpoint\": \"http://h/v1\", \"ca_file\": \"/etc/ca.pem\"",
                       "models.m.ca_file: only for an https:// endpoint (this one is "
                       "\"http://h/v1\")");
    expect_field_error("\"endpoint\": \"https://h/v1\", \"ca_file\": \"\"",
                       "models.m.ca_file: expected a non-empty string");
    expect_field_error("\"endpoint\": \"https://h/v1\", \"ca_file\": 7",
                       "models.m.ca_file: expected a non-empty string");
    expect_field_error(
        "\"endpoint\": \"https://h/v1\", \"ca_file\": \"${MODELS_TEST_UNSET_VAR}/ca\"",
        "models.m.ca_file: environment variable MODELS_TEST_UNSET_VAR is not set");
}

/* headers: names checked at load, values kept as written, their ${VAR}
 * read when a line is asked for; the start-up check names the variable,
 * never a value. */
static void test_headers(void)
{
    char err[512], line[SHOAL_MODEL_HEADER_LINE_MAX];
    shoal_models_t *m = parse_ok(
        "{\"models\": {\"gw\": {\"provider\": \"openai\", \"endpoint\": \"https://gw/v1\", "
        "\"model\": \"x\", \"headers\": {\"OpenAI-Organization\": \"org-1\", "
        "\"Authorization\": \"Bearer ${MODELS_TEST_GW_KEY}\"}}}}");
    const shoal_model_t *gw = shoal_models_find(m, "gw");
    assert_int_eq((long)gw->nheaders, 2);
    assert_str_eq(gw->header_names[0], "OpenAI-Organization");
    assert_str_eq(gw->header_values[1], "Bearer ${MODELS_TEST_GW_KEY}");
    assert_int_eq(shoal_model_header_line(gw, 0, line, sizeof(line), err, sizeof(err)), SHOAL_OK);
    assert_str_eq(line, "OpenAI-Organization: org-1");

    unsetenv("MODELS_TEST_GW_KEY");
    assert_int_eq(shoal_models_check_keys(m, err, sizeof(err)), SHOAL_ERR_INVALID);
    assert_str_eq(err, "models.gw.headers.Authorization: environment variable MODELS_TEST_GW_KEY "
                       "is not set");
    setenv("MODELS_TEST_GW_KEY", "", 1);
    assert_int_eq(shoal_models_check_keys(m, err, sizeof(err)), SHOAL_OK); /* "Bearer " */
    setenv("MODELS_TEST_GW_KEY", "gw-secret-1", 1);
    assert_int_eq(shoal_models_check_keys(m, err, sizeof(err)), SHOAL_OK);
    assert_int_eq(shoal_model_header_line(gw, 1, line, sizeof(line), err, sizeof(err)), SHOAL_OK);
    assert_str_eq(line, "Authorization: Bearer gw-secret-1");
    assert_int_eq(shoal_model_header_line(gw, 2, line, sizeof(line), err, sizeof(err)),
                  SHOAL_ERR_INVALID);
    shoal_models_destroy(m);

    /* a value that is nothing but an unset-then-empty variable */
    m = parse_ok("{\"models\": {\"e\": {\"provider\": \"openai\", \"endpoint\": \"http://h\", "
                 "\"model\": \"x\", \"headers\": {\"X-Key\": \"${MODELS_TEST_GW_KEY}\"}}}}");
    setenv("MODELS_TEST_GW_KEY", "", 1);
    assert_int_eq(shoal_models_check_keys(m, err, sizeof(err)), SHOAL_ERR_INVALID);
    assert_str_eq(err, "models.e.headers.X-Key: the value is empty once its variables are read; "
                       "export them");
    unsetenv("MODELS_TEST_GW_KEY");
    shoal_models_destroy(m);

    expect_field_error("\"endpoint\": \"http://h\", \"headers\": [\"X-A: 1\"]",
                       "models.m.headers: expected an object of at most 32 header names");
    expect_field_error("\"endpoint\": \"http://h\", \"headers\": {\"X A\": \"1\"}",
                       "models.m.headers: a name of up to 128 letters, digits and "
                       "!#$%&'*+-.^_`|~ expected (got 3 bytes, bad at byte 1)");
    expect_field_error("\"endpoint\": \"http://h\", \"headers\": {\"\": \"1\"}",
                       "(got 0 bytes, bad at byte 0)");
    expect_field_error("\"endpoint\": \"http://h\", \"headers\": {\"X-A\": \"1\\r\\nX-B: 2\"}",
                       "models.m.headers.X-A: expected a non-empty string of at most 4096 bytes "
                       "without control characters (tabs aside)");
    expect_field_error("\"endpoint\": \"http://h\", \"headers\": {\"X-A\": \"a\\u0001b\"}",
                       "models.m.headers.X-A: expected a non-empty string");
    expect_field_error("\"endpoint\": \"http://h\", \"headers\": {\"X-A\": \"\"}",
                       "models.m.headers.X-A: expected a non-empty string");
    expect_field_error("\"endpoint\": \"http://h\", \"headers\": {\"X-A\": 1}",
                       "models.m.headers.X-A: expected a non-empty string");
    expect_field_error("\"endpoint\": \"http://h\", \"headers\": {\"X-A\": \"${BAD\"}",
                       "models.m.headers.X-A: unterminated or overlong ${...} at offset 0");
    expect_field_error("\"endpoint\": \"http://h\", \"headers\": {\"x-a\": \"1\", \"X-A\": \"2\"}",
                       "models.m.headers.X-A: given twice (names ignore case)");
    expect_field_error(
        "\"endpoint\": \"http://h\", \"headers\": {\"content-type\": \"text/plain\"}",
        "models.m.headers.content-type: shoal sets it");
    expect_field_error("\"endpoint\": \"http://h\", \"api_key_env\": \"K\", \"headers\": "
                       "{\"AUTHORIZATION\": \"x\"}",
                       "models.m.headers.AUTHORIZATION: api_key_env sets it");
    expect_error("{\"models\": {\"c\": {\"provider\": \"anthropic\", \"endpoint\": \"http://h\", "
                 "\"model\": \"x\", \"headers\": {\"anthropic-version\": \"2099-01-01\"}}}}",
                 "models.c.headers.anthropic-version: shoal speaks anthropic-version 2023-06-01");
    /* anthropic-beta and a bring-your-own Authorization without api_key_env are fine */
    m = parse_ok("{\"models\": {\"c\": {\"provider\": \"anthropic\", \"endpoint\": \"http://h\", "
                 "\"model\": \"x\", \"headers\": {\"anthropic-beta\": \"b-1\\tb-2\"}}, "
                 "\"o\": {\"provider\": \"openai\", \"endpoint\": \"http://h\", \"model\": \"x\", "
                 "\"headers\": {\"Authorization\": \"Bearer t\"}}}}");
    assert_int_eq((long)shoal_models_find(m, "c")->nheaders, 1);
    assert_str_eq(shoal_models_find(m, "c")->header_values[0], "b-1\tb-2"); /* a tab is fine */
    shoal_models_destroy(m);
}

static double cost_of(const shoal_model_t *m, long input, long cached, long write, long output)
{
    shoal_usage_t u = {.input = input, .cached = cached, .cache_write = write, .output = output};

    return shoal_model_cost(m, &u);
}

/* Known bills with all four kinds of token, for both providers. */
static void test_cost(void)
{
    shoal_models_t *m = parse_ok(
        "{\"models\": {"
        "\"claude\": {\"provider\": \"anthropic\", \"endpoint\": \"http://h\", \"model\": \"x\","
        " \"input_usd_per_mtok\": 3, \"cached_input_usd_per_mtok\": 0.3,"
        " \"output_usd_per_mtok\": 15},"
        "\"gpt\": {\"provider\": \"openai\", \"endpoint\": \"http://h\", \"model\": \"x\","
        " \"input_usd_per_mtok\": 2.5, \"cached_input_usd_per_mtok\": 1.25,"
        " \"output_usd_per_mtok\": 10}}}");
    const shoal_model_t *c = shoal_models_find(m, "claude");
    const shoal_model_t *g = shoal_models_find(m, "gpt");

    /* Anthropic: 1M prompt tokens of which 600k cache reads and 300k cache
     * writes, 100k output: 100k x 3 + 600k x 0.3 + 300k x 3.75 + 100k x 15,
     * per million: 0.3 + 0.18 + 1.125 + 1.5 */
    assert_true(fabs(cost_of(c, 1000000, 600000, 300000, 100000) - 3.105) < 1e-9);
    /* OpenAI (no cache-write premium): 1M in, 400k cached, 200k "written",
     * 50k out: 400k x 2.5 + 400k x 1.25 + 200k x 2.5 + 50k x 10 */
    assert_true(fabs(cost_of(g, 1000000, 400000, 200000, 50000) - 2.5) < 1e-9);
    /* each kind alone */
    assert_true(fabs(cost_of(c, 1000000, 0, 0, 0) - 3) < 1e-9);
    assert_true(fabs(cost_of(c, 1000000, 1000000, 0, 0) - 0.3) < 1e-9);
    assert_true(fabs(cost_of(c, 1000000, 0, 1000000, 0) - 3.75) < 1e-9);
    assert_true(fabs(cost_of(c, 0, 0, 0, 1000000) - 15) < 1e-9);
    /* nonsense is clamped: cached beyond input, writes beyond what is left,
     * negatives */
    assert_true(fabs(cost_of(c, 1000, 5000, 0, 0) - 1000 * 0.3 / 1e6) < 1e-12);
    assert_true(fabs(cost_of(c, 1000, 600, 900, 0) - (600 * 0.3 + 400 * 3.75) / 1e6) < 1e-12);
    assert_true(cost_of(c, -1, -1, -1, -1) == 0);
    assert_true(fabs(cost_of(c, 1000, -5, -5, 0) - 1000 * 3 / 1e6) < 1e-12);
    shoal_models_destroy(m);
}

static void test_bad_files(void)
{
    char err[512] = "";

    expect_error("", "invalid JSON at line");
    expect_error("{\"models\": ", "invalid JSON at line 1");
    expect_error("[]", "expected an object with \"models\"");
    expect_error("{}", "missing required field \"models\"");
    expect_error("{\"models\": []}", "models: expected an object of aliases");
    expect_error("{\"models\": {}}", "models: must not be empty");
    expect_error("{\"models\": {\"a\": 1}}", "models.a: expected an object");
    expect_error("{\"models\": {\"a\": {}}, \"extra\": 1}", "unknown field \"extra\"");
    expect_error("{\"models\": {\"a\": {}, \"a\": {}}}", "duplicate object key");

    expect_field_error("\"endpoint\": \"http://h/v1\", \"rmp\": 5",
                       "models.m: unknown field \"rmp\"");
    expect_error("{\"models\": {\"m\": {\"provider\": \"openai\", \"model\": \"x\"}}}",
                 "models.m: missing required field \"endpoint\"");
    expect_error("{\"models\": {\"m\": {\"endpoint\": \"http://h\", \"model\": \"x\"}}}",
                 "models.m: missing required field \"provider\"");
    expect_error("{\"models\": {\"m\": {\"provider\": \"gemini\", \"endpoint\": \"http://h\","
                 " \"model\": \"x\"}}}",
                 "models.m.provider: \"gemini\" is not one of openai, anthropic, azure");
    expect_field_error("\"endpoint\": 5", "models.m.endpoint: expected a non-empty string");
    expect_field_error("\"endpoint\": \"\"", "models.m.endpoint: expected a non-empty string");
    expect_field_error("\"endpoint\": \"ftp://h/v1\"", "is not an http:// or https:// URL");
    expect_field_error("\"endpoint\": \"${MODELS_TEST_UNSET_VAR}/v1\"",
                       "models.m.endpoint: environment variable MODELS_TEST_UNSET_VAR is not set");
    expect_field_error("\"endpoint\": \"${NO_END/v1\"", "models.m.endpoint: unterminated");
    expect_field_error("\"endpoint\": \"${1BAD}/v1\"", "\"${1BAD}\" is not a variable name");
    expect_field_error("\"endpoint\": \"http://h\", \"api_key_env\": \"MY KEY\"",
                       "models.m.api_key_env: \"MY KEY\" is not a variable name");
    expect_field_error("\"endpoint\": \"http://h\", \"input_usd_per_mtok\": -1",
                       "models.m.input_usd_per_mtok: expected a number >= 0");
    expect_field_error("\"endpoint\": \"http://h\", \"output_usd_per_mtok\": \"1\"",
                       "models.m.output_usd_per_mtok: expected a number >= 0");
    expect_field_error("\"endpoint\": \"http://h\", \"cached_input_usd_per_mtok\": -0.5",
                       "models.m.cached_input_usd_per_mtok: expected a number >= 0");
    expect_field_error("\"endpoint\": \"http://h\", \"rpm\": -1",
                       "models.m.rpm: expected a whole number");
    expect_field_error("\"endpoint\": \"http://h\", \"tpm\": 1.5",
                       "models.m.tpm: expected a whole number");
    expect_field_error("\"endpoint\": \"http://h\", \"max_output_tokens\": -3",
                       "models.m.max_output_tokens: expected a whole number");
    expect_field_error("\"endpoint\": \"http://h\", \"cache_write_usd_per_mtok\": -1",
                       "models.m.cache_write_usd_per_mtok: expected a number >= 0");
    expect_field_error("\"endpoint\": \"http://h\", \"max_concurrency\": -1",
                       "models.m.max_concurrency: expected a whole number from 0 to 100000");
    expect_field_error("\"endpoint\": \"http://h\", \"max_concurrency\": 100001",
                       "models.m.max_concurrency: expected a whole number from 0 to 100000");
    expect_field_error("\"endpoint\": \"http://h\", \"timeout_ms\": 3600001",
                       "models.m.timeout_ms: expected a whole number from 0 to 3600000");
    expect_field_error("\"endpoint\": \"http://h\", \"timeout_ms\": \"30s\"",
                       "models.m.timeout_ms: expected a whole number");
    /* separate input and output limits are Anthropic's */
    expect_field_error("\"endpoint\": \"http://h\", \"input_tpm\": 5",
                       "models.m.input_tpm: only for provider anthropic (use tpm)");
    expect_field_error("\"endpoint\": \"http://h\", \"output_tpm\": 5",
                       "models.m.output_tpm: only for provider anthropic (use tpm)");
    expect_error("{\"models\": {\"m\": {\"provider\": \"anthropic\", \"endpoint\": \"http://h\","
                 " \"model\": \"x\", \"input_tpm\": -5}}}",
                 "models.m.input_tpm: expected a whole number");
    expect_error("{\"models\": {\"m\": {\"provider\": \"anthropic\", \"endpoint\": \"http://h\","
                 " \"model\": \"x\", \"output_tpm\": 0.5}}}",
                 "models.m.output_tpm: expected a whole number");
    /* api_version: Azure's, URL-safe, and not contradicting the endpoint */
    expect_field_error("\"endpoint\": \"http://h\", \"api_version\": \"2024-10-21\"",
                       "models.m.api_version: only for provider azure");
    expect_error("{\"models\": {\"m\": {\"provider\": \"azure\", \"endpoint\": \"http://h\","
                 " \"model\": \"x\", \"api_version\": \"2024 10&x=1\"}}}",
                 "models.m.api_version: expected up to 64 letters, digits");
    expect_error("{\"models\": {\"m\": {\"provider\": \"azure\", \"endpoint\": \"http://h\","
                 " \"model\": \"x\", \"api_version\": 20241021}}}",
                 "models.m.api_version: expected a non-empty string");
    expect_error("{\"models\": {\"m\": {\"provider\": \"azure\","
                 " \"endpoint\": \"http://h/c?api-version=2023-05-15\","
                 " \"model\": \"x\", \"api_version\": \"2024-10-21\"}}}",
                 "models.m.api_version: \"2024-10-21\" differs from the endpoint's "
                 "api-version=2023-05-15");
    /* fallbacks: an array of other, existing aliases, each once */
    expect_field_error("\"endpoint\": \"http://h\", \"fallbacks\": \"other\"",
                       "models.m.fallbacks: expected an array of at most 16 aliases");
    expect_field_error("\"endpoint\": \"http://h\", \"fallbacks\": [\"m\"]",
                       "models.m.fallbacks[0]: \"m\" is the alias itself");
    expect_field_error("\"endpoint\": \"http://h\", \"fallbacks\": [3]",
                       "models.m.fallbacks[0]: expected a non-empty alias");
    expect_field_error("\"endpoint\": \"http://h\", \"fallbacks\": [\"\"]",
                       "models.m.fallbacks[0]: expected a non-empty alias");
    expect_field_error("\"endpoint\": \"http://h\", \"fallbacks\": [\"gone\"]",
                       "models.m.fallbacks[0]: \"gone\" is not an alias of this file");
    expect_error(
        "{\"models\": {\"a\": {\"provider\": \"openai\", \"endpoint\": \"http://h\","
        " \"model\": \"x\", \"fallbacks\": [\"b\", \"c\", \"b\"]},"
        " \"b\": {\"provider\": \"openai\", \"endpoint\": \"http://h\", \"model\": \"x\"},"
        " \"c\": {\"provider\": \"openai\", \"endpoint\": \"http://h\", \"model\": \"x\"}}}",
        "models.a.fallbacks[2]: \"b\" is listed twice");
    /* a later alias fails after an earlier one's fallbacks were read (ASan) */
    expect_error("{\"models\": {\"a\": {\"provider\": \"openai\", \"endpoint\": \"http://h\","
                 " \"model\": \"x\", \"fallbacks\": [\"b\"]},"
                 " \"b\": {\"provider\": \"openai\", \"endpoint\": \"http://h\", \"model\": \"x\","
                 " \"fallbacks\": [\"a\", \"zz\"]}}}",
                 "models.b.fallbacks[1]: \"zz\" is not an alias of this file");

    /* the second alias is bad: the first one's memory is released (ASan) */
    expect_error("{\"models\": {\"ok\": {\"provider\": \"openai\", \"endpoint\": \"http://h\","
                 " \"model\": \"x\", \"api_key_env\": \"K\"}, \"bad\": {\"provider\": \"x\"}}}",
                 "models.bad");

    assert_true(shoal_models_load("/nonexistent/models.json", err, sizeof(err)) == NULL);
    assert_str_contains(err, "could not open the file");
}

int main(void)
{
    test_data_file();
    test_good_inline();
    test_all_fields();
    test_azure_url();
    test_check_keys();
    test_ca_file();
    test_headers();
    test_cost();
    test_bad_files();
    printf("models_test: ok\n");
    return 0;
}
