/*
 * Models file: the checked-in tests/data/models.json loads, ${VAR} expands
 * from the environment, and each kind of bad file is refused with a message
 * naming the alias and the field.
 */
#include "common/models.h"

#include <math.h>
#include <stdlib.h>

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

    /* 1M prompt tokens, half of them cached, and 1M output tokens */
    s = shoal_models_find(m, "sim-large");
    assert_true(fabs(shoal_model_cost(s, 1000000, 1000000, 500000) - 11.875) < 1e-9);
    assert_true(fabs(shoal_model_cost(s, 1000, 0, 0) - 0.0025) < 1e-12);
    /* more cached than prompt tokens is clamped; negatives count as 0 */
    assert_true(fabs(shoal_model_cost(s, 100, -5, 400) - 100 * 1.25 / 1e6) < 1e-12);
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
    assert_int_eq(c->rpm, 0);
    assert_int_eq(c->max_output_tokens, 0);
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
                 "models.m.provider: \"gemini\" is not one of openai, anthropic");
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
    test_bad_files();
    printf("models_test: ok\n");
    return 0;
}
