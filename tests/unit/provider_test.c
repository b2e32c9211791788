/*
 * worker/provider: request bodies and headers for OpenAI-compatible and
 * Anthropic models, parsing of their answers (malformed ones are retriable),
 * the one outcome classification, Retry-After values and error texts.
 */
#include "worker/provider.h"

#include <curl/curl.h>
#include <jansson.h>
#include <stdlib.h>

#include "tests/support/check.h"

static const shoal_model_t openai = {
    .alias = "fast",
    .provider = SHOAL_PROVIDER_OPENAI,
    .endpoint = "http://127.0.0.1:9/v1/chat/completions",
    .model = "gpt-4o-mini",
    .api_key_env = "SHOAL_TEST_OPENAI_KEY",
    .max_output_tokens = 1024,
};

static const shoal_model_t anthropic = {
    .alias = "smart",
    .provider = SHOAL_PROVIDER_ANTHROPIC,
    .endpoint = "http://127.0.0.1:9/v1/messages",
    .model = "claude-x",
    .api_key_env = "SHOAL_TEST_ANTHROPIC_KEY",
};

/* Builds a request and parses it back (caller decrefs). */
static json_t *request(const shoal_model_t *m, const char *system, const char *prompt,
                       int want_json)
{
    size_t len = 0;
    char *body = shoal_provider_request(m, system, prompt, want_json, &len);
    json_error_t jerr;

    assert_true(body != NULL);
    assert_int_eq(len, strlen(body));
    json_t *doc = json_loads(body, 0, &jerr);
    if (!json_is_object(doc))
        test_fail("request is not a JSON object (%s): %s", jerr.text, body);
    free(body);
    return doc;
}

static const char *str_at(json_t *o, const char *key)
{
    return json_string_value(json_object_get(o, key));
}

static void test_request_openai(void)
{
    json_t *doc = request(&openai, "be brief", "say \"hi\"\n", 0);
    assert_str_eq(str_at(doc, "model"), "gpt-4o-mini");
    assert_int_eq(json_integer_value(json_object_get(doc, "max_tokens")), 1024);
    assert_true(json_object_get(doc, "response_format") == NULL);
    assert_true(json_object_get(doc, "system") == NULL);
    json_t *msgs = json_object_get(doc, "messages");
    assert_int_eq(json_array_size(msgs), 2);
    assert_str_eq(str_at(json_array_get(msgs, 0), "role"), "system");
    assert_str_eq(str_at(json_array_get(msgs, 0), "content"), "be brief");
    assert_str_eq(str_at(json_array_get(msgs, 1), "role"), "user");
    assert_str_eq(str_at(json_array_get(msgs, 1), "content"), "say \"hi\"\n"); /* escaped */
    json_decref(doc);

    /* want_json asks for a JSON object; no system prompt means no system message */
    doc = request(&openai, NULL, "list", 1);
    json_t *rf = json_object_get(doc, "response_format");
    assert_str_eq(str_at(rf, "type"), "json_object");
    msgs = json_object_get(doc, "messages");
    assert_int_eq(json_array_size(msgs), 1);
    assert_str_eq(str_at(json_array_get(msgs, 0), "role"), "user");
    json_decref(doc);

    doc = request(&openai, "", "x", 0); /* an empty system prompt is left out too */
    assert_int_eq(json_array_size(json_object_get(doc, "messages")), 1);
    json_decref(doc);

    /* no max_output_tokens: the provider's default, so no field */
    shoal_model_t m = openai;
    m.max_output_tokens = 0;
    doc = request(&m, NULL, "x", 0);
    assert_true(json_object_get(doc, "max_tokens") == NULL);
    json_decref(doc);

    /* UTF-8 passes through intact */
    doc = request(&openai, NULL, "caf\xc3\xa9 \xe6\x97\xa5", 0);
    assert_str_eq(str_at(json_array_get(json_object_get(doc, "messages"), 0), "content"),
                  "caf\xc3\xa9 \xe6\x97\xa5");
    json_decref(doc);
}

static void test_request_anthropic(void)
{
    json_t *doc = request(&anthropic, "be brief", "hello", 1);
    assert_str_eq(str_at(doc, "model"), "claude-x");
    /* system is a top-level field, not a message */
    assert_str_eq(str_at(doc, "system"), "be brief");
    json_t *msgs = json_object_get(doc, "messages");
    assert_int_eq(json_array_size(msgs), 1);
    assert_str_eq(str_at(json_array_get(msgs, 0), "role"), "user");
    assert_str_eq(str_at(json_array_get(msgs, 0), "content"), "hello");
    /* max_tokens is required by the API: a default when the model sets none */
    assert_true(json_is_integer(json_object_get(doc, "max_tokens")));
    assert_true(json_integer_value(json_object_get(doc, "max_tokens")) > 0);
    /* Anthropic has no response_format */
    assert_true(json_object_get(doc, "response_format") == NULL);
    json_decref(doc);

    shoal_model_t m = anthropic;
    m.max_output_tokens = 300;
    doc = request(&m, NULL, "hello", 0);
    assert_int_eq(json_integer_value(json_object_get(doc, "max_tokens")), 300);
    assert_true(json_object_get(doc, "system") == NULL);
    json_decref(doc);
}

/* The header list joined with newlines (fails on NULL). */
static void headers_text(const shoal_model_t *m, char *out, size_t outlen)
{
    struct curl_slist *h = shoal_provider_headers(m);
    size_t n = 0;

    assert_true(h != NULL);
    out[0] = '\0';
    for (struct curl_slist *p = h; p; p = p->next)
        n += (size_t)snprintf(out + n, n < outlen ? outlen - n : 0, "%s\n", p->data);
    assert_true(n < outlen);
    curl_slist_free_all(h);
}

static void test_headers(void)
{
    char text[8192];

    assert_int_eq(setenv("SHOAL_TEST_OPENAI_KEY", "sk-test-123", 1), 0);
    headers_text(&openai, text, sizeof(text));
    assert_str_contains(text, "Authorization: Bearer sk-test-123\n");
    assert_str_contains(text, "Content-Type: application/json\n");
    assert_true(!strstr(text, "x-api-key"));
    assert_true(!strstr(text, "anthropic-version"));

    assert_int_eq(setenv("SHOAL_TEST_ANTHROPIC_KEY", "ak-test-456", 1), 0);
    headers_text(&anthropic, text, sizeof(text));
    assert_str_contains(text, "x-api-key: ak-test-456\n");
    assert_str_contains(text, "anthropic-version: ");
    assert_str_contains(text, "Content-Type: application/json\n");
    assert_true(!strstr(text, "Authorization"));

    /* unset or empty variable: no credential header at all */
    assert_int_eq(unsetenv("SHOAL_TEST_OPENAI_KEY"), 0);
    headers_text(&openai, text, sizeof(text));
    assert_true(!strstr(text, "Authorization"));
    assert_int_eq(setenv("SHOAL_TEST_OPENAI_KEY", "", 1), 0);
    headers_text(&openai, text, sizeof(text));
    assert_true(!strstr(text, "Authorization"));
    assert_int_eq(unsetenv("SHOAL_TEST_ANTHROPIC_KEY"), 0);
    headers_text(&anthropic, text, sizeof(text));
    assert_true(!strstr(text, "x-api-key"));
    assert_str_contains(text, "anthropic-version: ");

    /* no api_key_env in the models file: no credential header */
    shoal_model_t m = openai;
    m.api_key_env = NULL;
    headers_text(&m, text, sizeof(text));
    assert_true(!strstr(text, "Authorization"));
    assert_int_eq(unsetenv("SHOAL_TEST_OPENAI_KEY"), 0);
}

static void parse_ok(const shoal_model_t *m, const char *body, shoal_provider_reply_t *out)
{
    char err[256] = "";
    shoal_err_t e = shoal_provider_parse(m, body, strlen(body), out, err, sizeof(err));
    if (e != SHOAL_OK)
        test_fail("parse of %s failed (%d): %s", body, (int)e, err);
}

static void test_parse_good(void)
{
    shoal_provider_reply_t r;

    parse_ok(&openai,
             "{\"id\":\"c1\",\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\","
             "\"content\":\"hello \\u00e9\"},\"finish_reason\":\"stop\"}],"
             "\"usage\":{\"prompt_tokens\":10,\"completion_tokens\":3,\"total_tokens\":13,"
             "\"prompt_tokens_details\":{\"cached_tokens\":4}}}",
             &r);
    assert_str_eq(r.content, "hello \xc3\xa9");
    assert_int_eq(r.tokens_in, 10);
    assert_int_eq(r.tokens_out, 3);
    assert_int_eq(r.tokens_cached, 4);
    free(r.content);

    /* usage is optional: counts are zero */
    parse_ok(&openai, "{\"choices\":[{\"message\":{\"content\":\"\"}}]}", &r);
    assert_str_eq(r.content, "");
    assert_int_eq(r.tokens_in, 0);
    assert_int_eq(r.tokens_out, 0);
    assert_int_eq(r.tokens_cached, 0);
    free(r.content);

    parse_ok(&anthropic,
             "{\"id\":\"m1\",\"type\":\"message\",\"role\":\"assistant\","
             "\"content\":[{\"type\":\"text\",\"text\":\"bonjour\"}],\"stop_reason\":\"end_turn\","
             "\"usage\":{\"input_tokens\":21,\"output_tokens\":7,"
             "\"cache_creation_input_tokens\":0,\"cache_read_input_tokens\":16}}",
             &r);
    assert_str_eq(r.content, "bonjour");
    assert_int_eq(r.tokens_in, 21);
    assert_int_eq(r.tokens_out, 7);
    assert_int_eq(r.tokens_cached, 16);
    free(r.content);

    /* the length bounds the body: trailing bytes are not read */
    const char *body = "{\"content\":[{\"type\":\"text\",\"text\":\"ok\"}]}GARBAGE";
    char err[256] = "";
    assert_int_eq(shoal_provider_parse(&anthropic, body, strlen(body) - 7, &r, err, sizeof(err)),
                  SHOAL_OK);
    assert_str_eq(r.content, "ok");
    free(r.content);
}

static void parse_bad(const shoal_model_t *m, const char *body, size_t len)
{
    shoal_provider_reply_t r;
    char err[256] = "";

    memset(&r, 0x5a, sizeof(r));
    shoal_err_t e = shoal_provider_parse(m, body, len, &r, err, sizeof(err));
    if (e != SHOAL_ERR_RETRY)
        test_fail("parse of \"%.*s\" gave %d, expected retry", (int)len, body, (int)e);
    assert_str_contains(err, "malformed answer");
    assert_true(r.content == NULL);
}

static void test_parse_bad(void)
{
    static const char *const bodies[] = {
        "",
        "not json",
        "[1,2]",
        "\"text\"",
        "{}",
        "{\"choices\":[]}",
        "{\"choices\":[{\"message\":{}}]}",
        "{\"choices\":[{\"message\":{\"content\":null}}]}",
        "{\"choices\":[{\"message\":{\"content\":42}}]}",
        "{\"choices\":[{\"message\":{\"content\":\"cut",
        "<html>502 Bad Gateway</html>",
    };
    for (size_t i = 0; i < sizeof(bodies) / sizeof(bodies[0]); i++)
        parse_bad(&openai, bodies[i], strlen(bodies[i]));

    /* a good OpenAI body is malformed for an Anthropic model and vice versa */
    const char *oa = "{\"choices\":[{\"message\":{\"content\":\"x\"}}]}";
    const char *an = "{\"content\":[{\"type\":\"text\",\"text\":\"x\"}]}";
    parse_bad(&anthropic, oa, strlen(oa));
    parse_bad(&openai, an, strlen(an));
    parse_bad(&anthropic, "{\"content\":[]}", 14);
    parse_bad(&anthropic, "{\"content\":\"x\"}", 15);
    /* a body cut short by its length */
    parse_bad(&openai, oa, strlen(oa) - 1);
}

static void test_classify(void)
{
    assert_int_eq(shoal_provider_classify(200), SHOAL_OUTCOME_OK);
    assert_int_eq(shoal_provider_classify(201), SHOAL_OUTCOME_OK);
    assert_int_eq(shoal_provider_classify(400), SHOAL_OUTCOME_FATAL);
    assert_int_eq(shoal_provider_classify(401), SHOAL_OUTCOME_FATAL);
    assert_int_eq(shoal_provider_classify(403), SHOAL_OUTCOME_FATAL);
    assert_int_eq(shoal_provider_classify(404), SHOAL_OUTCOME_FATAL);
    assert_int_eq(shoal_provider_classify(413), SHOAL_OUTCOME_FATAL);
    assert_int_eq(shoal_provider_classify(408), SHOAL_OUTCOME_RETRY);
    assert_int_eq(shoal_provider_classify(409), SHOAL_OUTCOME_RETRY);
    assert_int_eq(shoal_provider_classify(425), SHOAL_OUTCOME_RETRY);
    assert_int_eq(shoal_provider_classify(429), SHOAL_OUTCOME_RETRY);
    assert_int_eq(shoal_provider_classify(500), SHOAL_OUTCOME_RETRY);
    assert_int_eq(shoal_provider_classify(502), SHOAL_OUTCOME_RETRY);
    assert_int_eq(shoal_provider_classify(503), SHOAL_OUTCOME_RETRY);
    assert_int_eq(shoal_provider_classify(529), SHOAL_OUTCOME_RETRY); /* Anthropic overloaded */
    assert_int_eq(shoal_provider_classify(0), SHOAL_OUTCOME_RETRY);
}

static void test_retry_after(void)
{
    assert_int_eq(shoal_provider_retry_after_ms("2"), 2000);
    assert_int_eq(shoal_provider_retry_after_ms("0.5"), 500);
    assert_int_eq(shoal_provider_retry_after_ms(" 7"), 7000);
    assert_int_eq(shoal_provider_retry_after_ms(" 7\r\n"), 7000); /* as a header line ends */
    assert_int_eq(shoal_provider_retry_after_ms("0"), 0);
    assert_int_eq(shoal_provider_retry_after_ms("abc"), -1);
    assert_int_eq(shoal_provider_retry_after_ms(""), -1);
    assert_int_eq(shoal_provider_retry_after_ms(NULL), -1);
    assert_int_eq(shoal_provider_retry_after_ms("-3"), -1);
    assert_int_eq(shoal_provider_retry_after_ms("1e9"), -1); /* beyond a day */
    assert_int_eq(shoal_provider_retry_after_ms("inf"), -1);
    assert_int_eq(shoal_provider_retry_after_ms("nan"), -1);
    /* an HTTP date is not read (the caller falls back to its own backoff) */
    assert_int_eq(shoal_provider_retry_after_ms("Wed, 21 Oct 2015 07:28:00 GMT"), -1);
}

static void error_text(const char *body, char *out, size_t outlen)
{
    memset(out, 'x', outlen);
    shoal_provider_error_text(body, strlen(body), out, outlen);
    assert_true(memchr(out, '\0', outlen) != NULL);
}

static void test_error_text(void)
{
    char out[512];

    error_text("{\"error\":{\"message\":\"Incorrect API key provided\",\"type\":"
               "\"invalid_request_error\",\"code\":\"invalid_api_key\"}}",
               out, sizeof(out));
    assert_str_eq(out, "Incorrect API key provided");
    error_text("{\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\","
               "\"message\":\"Overloaded\"}}",
               out, sizeof(out));
    assert_str_eq(out, "Overloaded");

    /* anything else gives an empty text */
    error_text("upstream connect error", out, sizeof(out));
    assert_str_eq(out, "");
    error_text("{\"error\":\"flat string\"}", out, sizeof(out));
    assert_str_eq(out, "");
    error_text("", out, sizeof(out));
    assert_str_eq(out, "");

    /* long messages are cut, and never overrun the buffer */
    char body[2048];
    char longmsg[1001];
    memset(longmsg, 'm', 1000);
    longmsg[1000] = '\0';
    snprintf(body, sizeof(body), "{\"error\":{\"message\":\"%s\"}}", longmsg);
    error_text(body, out, sizeof(out));
    assert_int_eq(strlen(out), 200);
    char small[16];
    error_text(body, small, sizeof(small));
    assert_int_eq(strlen(small), 15);
}

int main(void)
{
    test_request_openai();
    test_request_anthropic();
    test_headers();
    test_parse_good();
    test_parse_bad();
    test_classify();
    test_retry_after();
    test_error_text();
    printf("provider_test: ok\n");
    return 0;
}
