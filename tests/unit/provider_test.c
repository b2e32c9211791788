/*
 * worker/provider: request bodies and headers for OpenAI-compatible, Azure
 * and Anthropic models; the one outcome classification of a finished call
 * (content, normalized usage, truncation, every status and error-body shape);
 * the rate-limit signals in response headers (OpenAI durations, Anthropic RFC
 * 3339 resets, Retry-After in seconds and as an HTTP date, garbage, case,
 * bounds of the header block).
 */
#include "worker/provider.h"

#include <curl/curl.h>
#include <jansson.h>
#include <stdlib.h>
#include <stddef.h>
#include <string.h>

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

    /* Azure: api-key instead of Authorization: Bearer, the OpenAI body */
    m = openai;
    m.provider = SHOAL_PROVIDER_AZURE;
    assert_int_eq(setenv("SHOAL_TEST_OPENAI_KEY", "az-test-789", 1), 0);
    headers_text(&m, text, sizeof(text));
    assert_str_contains(text, "api-key: az-test-789\n");
    assert_str_contains(text, "Content-Type: application/json\n");
    assert_true(!strstr(text, "Authorization"));
    assert_true(!strstr(text, "x-api-key"));
    assert_true(!strstr(text, "anthropic-version"));
    assert_int_eq(unsetenv("SHOAL_TEST_OPENAI_KEY"), 0);
    headers_text(&m, text, sizeof(text));
    assert_true(!strstr(text, "api-key"));
    json_t *doc = request(&m, "sys", "hi", 1);
    assert_int_eq(json_array_size(json_object_get(doc, "messages")), 2);
    assert_str_eq(str_at(json_object_get(doc, "response_format"), "type"), "json_object");
    json_decref(doc);

    /* The models file's headers, in its order, after the key's, each
     * ${VAR} read now; an unset one gives no list at all. */
    static const char *const names[] = {"OpenAI-Organization", "Helicone-Auth"};
    static const char *const values[] = {"org-1", "Bearer ${SHOAL_TEST_GATEWAY_KEY}"};
    m = openai;
    m.header_names = names;
    m.header_values = values;
    m.nheaders = 2;
    assert_int_eq(setenv("SHOAL_TEST_OPENAI_KEY", "sk-test-123", 1), 0);
    assert_int_eq(setenv("SHOAL_TEST_GATEWAY_KEY", "gw-secret", 1), 0);
    headers_text(&m, text, sizeof(text));
    assert_str_contains(text, "Authorization: Bearer sk-test-123\nOpenAI-Organization: org-1\n"
                              "Helicone-Auth: Bearer gw-secret\nExpect:\n");
    assert_int_eq(unsetenv("SHOAL_TEST_GATEWAY_KEY"), 0);
    assert_true(shoal_provider_headers(&m) == NULL);
    assert_int_eq(unsetenv("SHOAL_TEST_OPENAI_KEY"), 0);
}

static const shoal_model_t azure = {
    .alias = "az",
    .provider = SHOAL_PROVIDER_AZURE,
    .endpoint = "https://r.openai.azure.com/openai/deployments/d/chat/completions",
    .model = "gpt-4o",
};

/* Classifies an answer with status and body (timed_out and error for
 * status 0). why is checked to be one line, terminated, in bounds. */
static shoal_outcome_t outcome(const shoal_model_t *m, long status, const char *body,
                               shoal_provider_reply_t *out, char *why, size_t whylen)
{
    shoal_http_reply_t r = {.status = status,
                            .body = body,
                            .len = body ? strlen(body) : 0,
                            .retry_after_ms = -1,
                            .headers = "",
                            .headers_len = 0};

    memset(why, 'x', whylen);
    shoal_outcome_t oc = shoal_provider_outcome(m, &r, out, why, whylen);
    assert_true(memchr(why, '\0', whylen) != NULL);
    assert_true(strchr(why, '\n') == NULL && strchr(why, '\r') == NULL);
    return oc;
}

/* Answers that carry content: the outcome, the content and every usage
 * count; why is empty unless the answer was truncated. */
static void test_outcome_answers(void)
{
    static const struct {
        const shoal_model_t *m;
        long status;
        const char *body;
        shoal_outcome_t want;
        const char *content;
        shoal_usage_t usage; /* input, cached, cache_write, output */
    } cases[] = {
        /* OpenAI's prompt_tokens already includes the cached ones */
        {&openai,
         200,
         "{\"id\":\"c1\",\"choices\":[{\"index\":0,\"message\":{\"role\":"
         "\"assistant\",\"content\":\"hello \\u00e9\"},\"finish_reason\":\"stop\"}],"
         "\"usage\":{\"prompt_tokens\":10,\"completion_tokens\":3,\"total_tokens\""
         ":13,\"prompt_tokens_details\":{\"cached_tokens\":4}}}",
         SHOAL_OUTCOME_OK,
         "hello \xc3\xa9",
         {10, 4, 0, 3}},
        /* usage is optional: counts are zero; 201 is a success too */
        {&openai,
         201,
         "{\"choices\":[{\"message\":{\"content\":\"\"}}]}",
         SHOAL_OUTCOME_OK,
         "",
         {0, 0, 0, 0}},
        /* Anthropic's input_tokens EXCLUDES cache reads and writes: input is
         * the sum of the three (this test asserted input == 21 before, which
         * billed cache reads as if they were never sent) */
        {&anthropic,
         200,
         "{\"id\":\"m1\",\"type\":\"message\",\"role\":\"assistant\","
         "\"content\":[{\"type\":\"text\",\"text\":\"bonjour\"}],"
         "\"stop_reason\":\"end_turn\",\"usage\":{\"input_tokens\":21,"
         "\"output_tokens\":7,\"cache_creation_input_tokens\":5,"
         "\"cache_read_input_tokens\":16}}",
         SHOAL_OUTCOME_OK,
         "bonjour",
         {42, 16, 5, 7}},
        /* text blocks are joined; a thinking block before them is not
         * output; no cache fields: nothing added to input */
        {&anthropic,
         200,
         "{\"content\":[{\"type\":\"thinking\",\"thinking\":\"hmm\"},"
         "{\"type\":\"text\",\"text\":\"one \"},{\"type\":\"text\",\"text\":"
         "\"two\"}],\"usage\":{\"input_tokens\":3,\"output_tokens\":2}}",
         SHOAL_OUTCOME_OK,
         "one two",
         {3, 0, 0, 2}},
        /* Azure answers in the OpenAI shape */
        {&azure,
         200,
         "{\"choices\":[{\"message\":{\"content\":\"az\"},\"finish_reason\":"
         "\"stop\"}],\"usage\":{\"prompt_tokens\":2,\"completion_tokens\":1}}",
         SHOAL_OUTCOME_OK,
         "az",
         {2, 0, 0, 1}},
        /* cut at the output limit: the content is still returned */
        {&openai,
         200,
         "{\"choices\":[{\"message\":{\"content\":\"half a sen\"},"
         "\"finish_reason\":\"length\"}],\"usage\":{\"prompt_tokens\":5,"
         "\"completion_tokens\":1024}}",
         SHOAL_OUTCOME_TRUNCATED,
         "half a sen",
         {5, 0, 0, 1024}},
        {&anthropic,
         200,
         "{\"content\":[{\"type\":\"text\",\"text\":\"half\"}],"
         "\"stop_reason\":\"max_tokens\",\"usage\":{\"input_tokens\":1,"
         "\"output_tokens\":4096}}",
         SHOAL_OUTCOME_TRUNCATED,
         "half",
         {1, 0, 0, 4096}},
        /* the other provider's word for it means nothing */
        {&openai,
         200,
         "{\"choices\":[{\"message\":{\"content\":\"x\"},\"stop_reason\":"
         "\"max_tokens\"}]}",
         SHOAL_OUTCOME_OK,
         "x",
         {0, 0, 0, 0}},
        {&anthropic,
         200,
         "{\"content\":[{\"type\":\"text\",\"text\":\"x\"}],\"finish_reason\":"
         "\"length\"}",
         SHOAL_OUTCOME_OK,
         "x",
         {0, 0, 0, 0}},
    };
    shoal_provider_reply_t r;
    char why[512];

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const shoal_usage_t *u = &cases[i].usage;
        shoal_outcome_t oc =
            outcome(cases[i].m, cases[i].status, cases[i].body, &r, why, sizeof(why));

        if (oc != cases[i].want || !r.content || strcmp(r.content, cases[i].content) != 0 ||
            r.usage.input != u->input || r.usage.cached != u->cached ||
            r.usage.cache_write != u->cache_write || r.usage.output != u->output)
            test_fail("answer %zu: %s \"%s\" usage %ld/%ld/%ld/%ld, expected %s \"%s\" usage "
                      "%ld/%ld/%ld/%ld",
                      i, shoal_outcome_name(oc), r.content ? r.content : "(null)", r.usage.input,
                      r.usage.cached, r.usage.cache_write, r.usage.output,
                      shoal_outcome_name(cases[i].want), cases[i].content, u->input, u->cached,
                      u->cache_write, u->output);
        if (cases[i].want == SHOAL_OUTCOME_TRUNCATED)
            assert_str_contains(why, "cut at the output token limit");
        else
            assert_str_eq(why, "");
        free(r.content);
    }

    /* the length bounds the body: trailing bytes are not read */
    const char *body = "{\"content\":[{\"type\":\"text\",\"text\":\"ok\"}]}GARBAGE";
    shoal_http_reply_t hr = {.status = 200, .body = body, .len = strlen(body) - 7};
    assert_int_eq(shoal_provider_outcome(&anthropic, &hr, &r, NULL, 0), SHOAL_OUTCOME_OK);
    assert_str_eq(r.content, "ok");
    free(r.content);
}

static void malformed(const shoal_model_t *m, const char *body, size_t len)
{
    shoal_provider_reply_t r;
    char why[256] = "";
    shoal_http_reply_t hr = {.status = 200, .body = body, .len = len};

    memset(&r, 0x5a, sizeof(r));
    shoal_outcome_t oc = shoal_provider_outcome(m, &hr, &r, why, sizeof(why));
    if (oc != SHOAL_OUTCOME_MALFORMED)
        test_fail("outcome of \"%.*s\" is %s, expected malformed", (int)len, body,
                  shoal_outcome_name(oc));
    assert_str_contains(why, "malformed answer");
    assert_true(r.content == NULL);
}

static void test_outcome_malformed(void)
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
        malformed(&openai, bodies[i], strlen(bodies[i]));

    /* a good OpenAI body is malformed for an Anthropic model and vice versa */
    const char *oa = "{\"choices\":[{\"message\":{\"content\":\"x\"}}]}";
    const char *an = "{\"content\":[{\"type\":\"text\",\"text\":\"x\"}]}";
    malformed(&anthropic, oa, strlen(oa));
    malformed(&openai, an, strlen(an));
    malformed(&azure, an, strlen(an));
    malformed(&anthropic, "{\"content\":[]}", 14);
    malformed(&anthropic, "{\"content\":\"x\"}", 15);
    malformed(&anthropic, "{\"content\":[{\"type\":\"tool_use\",\"text\":\"x\"}]}", 44);
    /* a body cut short by its length */
    malformed(&openai, oa, strlen(oa) - 1);
    /* a NULL body is an empty one */
    malformed(&openai, NULL, 0);

    /* a 200 carrying an error object (some proxies): its text is kept */
    shoal_provider_reply_t r;
    char why[512];
    assert_int_eq(
        outcome(&openai, 200, "{\"error\":{\"message\":\"upstream quota\"}}", &r, why, sizeof(why)),
        SHOAL_OUTCOME_MALFORMED);
    assert_str_eq(why, "malformed answer from the provider: no message content: upstream quota");

    /* tokens a malformed answer reports are still counted (they are billed) */
    assert_int_eq(outcome(&openai, 200,
                          "{\"choices\":[{\"message\":{\"content\":null}}],\"usage\":"
                          "{\"prompt_tokens\":9,\"completion_tokens\":2}}",
                          &r, why, sizeof(why)),
                  SHOAL_OUTCOME_MALFORMED);
    assert_int_eq(r.usage.input, 9);
    assert_int_eq(r.usage.output, 2);
}

static void test_outcome_status(void)
{
    static const struct {
        long status;
        const char *body;
        shoal_outcome_t want;
    } cases[] = {
        {429, "{\"error\":{\"message\":\"Rate limit reached\",\"type\":\"requests\"}}",
         SHOAL_OUTCOME_RATE_LIMITED},
        {429, "{\"type\":\"error\",\"error\":{\"type\":\"rate_limit_error\",\"message\":\"x\"}}",
         SHOAL_OUTCOME_RATE_LIMITED},
        {429, "", SHOAL_OUTCOME_RATE_LIMITED},
        /* Anthropic's overload says nothing about our quota */
        {429, "{\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"x\"}}",
         SHOAL_OUTCOME_OVERLOADED},
        {529, "{\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"x\"}}",
         SHOAL_OUTCOME_OVERLOADED},
        {529, "", SHOAL_OUTCOME_OVERLOADED},
        {503, "Service Unavailable", SHOAL_OUTCOME_OVERLOADED},
        {500, "{\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"x\"}}",
         SHOAL_OUTCOME_OVERLOADED},
        {500, "", SHOAL_OUTCOME_SERVER_ERROR},
        {502, "<html>bad gateway</html>", SHOAL_OUTCOME_SERVER_ERROR},
        {504, "", SHOAL_OUTCOME_SERVER_ERROR},
        {408, "", SHOAL_OUTCOME_SERVER_ERROR},
        {409, "", SHOAL_OUTCOME_SERVER_ERROR},
        {425, "", SHOAL_OUTCOME_SERVER_ERROR},
        {400, "{\"error\":{\"message\":\"bad\"}}", SHOAL_OUTCOME_PERMANENT},
        {401, "", SHOAL_OUTCOME_PERMANENT},
        {403, "", SHOAL_OUTCOME_PERMANENT},
        {404, "", SHOAL_OUTCOME_PERMANENT},
        {413, "", SHOAL_OUTCOME_PERMANENT},
        {422, "{\"detail\":[{\"msg\":\"field required\"}]}", SHOAL_OUTCOME_PERMANENT},
        /* an overload type on a client error does not make it retriable */
        {400, "{\"error\":{\"type\":\"overloaded_error\"}}", SHOAL_OUTCOME_PERMANENT},
        {301, "", SHOAL_OUTCOME_PERMANENT}, /* a redirect we do not follow: a wrong endpoint */
        {101, "", SHOAL_OUTCOME_PERMANENT},
    };
    shoal_provider_reply_t r;
    char why[512];

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        shoal_outcome_t oc =
            outcome(&anthropic, cases[i].status, cases[i].body, &r, why, sizeof(why));
        if (oc != cases[i].want)
            test_fail("HTTP %ld %s: %s, expected %s", cases[i].status, cases[i].body,
                      shoal_outcome_name(oc), shoal_outcome_name(cases[i].want));
        assert_true(r.content == NULL);
        char prefix[32];
        snprintf(prefix, sizeof(prefix), "HTTP %ld", cases[i].status);
        assert_true(strncmp(why, prefix, strlen(prefix)) == 0);
        /* the same for an OpenAI model */
        assert_int_eq(outcome(&openai, cases[i].status, cases[i].body, &r, why, sizeof(why)),
                      cases[i].want);
    }

    /* no HTTP answer: a timeout, or a connection failure with curl's text */
    shoal_http_reply_t hr = {
        .status = 0, .timed_out = 1, .error = "Operation timed out after 200 ms"};
    assert_int_eq(shoal_provider_outcome(&openai, &hr, &r, why, sizeof(why)),
                  SHOAL_OUTCOME_TIMEOUT);
    assert_str_eq(why, "timed out: Operation timed out after 200 ms");
    hr = (shoal_http_reply_t){.status = 0, .error = "Connection refused"};
    assert_int_eq(shoal_provider_outcome(&openai, &hr, &r, why, sizeof(why)),
                  SHOAL_OUTCOME_CONNECTION);
    assert_str_eq(why, "Connection refused");
    assert_true(r.content == NULL);
    hr = (shoal_http_reply_t){.status = 0, .error = NULL};
    assert_int_eq(shoal_provider_outcome(&openai, &hr, &r, why, sizeof(why)),
                  SHOAL_OUTCOME_CONNECTION);
    assert_str_eq(why, "no answer");
    /* a certificate no trusted CA signed: every call would fail the same */
    hr = (shoal_http_reply_t){
        .status = 0, .untrusted = 1, .error = "SSL certificate problem: self-signed certificate"};
    assert_int_eq(shoal_provider_outcome(&openai, &hr, &r, why, sizeof(why)),
                  SHOAL_OUTCOME_PERMANENT);
    assert_str_eq(why, "SSL certificate problem: self-signed certificate; if the endpoint's "
                       "certificate is signed by a private CA, name that CA's PEM file in the "
                       "models file's ca_file");
}

static void test_outcome_rule(void)
{
    static const struct {
        shoal_outcome_t o;
        const char *name;
        int retriable;
    } rule[] = {
        {SHOAL_OUTCOME_OK, "ok", 0},
        {SHOAL_OUTCOME_TRUNCATED, "truncated", 0},
        {SHOAL_OUTCOME_RATE_LIMITED, "rate_limited", 1},
        {SHOAL_OUTCOME_OVERLOADED, "overloaded", 1},
        {SHOAL_OUTCOME_SERVER_ERROR, "server_error", 1},
        {SHOAL_OUTCOME_TIMEOUT, "timeout", 1},
        {SHOAL_OUTCOME_CONNECTION, "connection", 1},
        {SHOAL_OUTCOME_PERMANENT, "permanent", 0},
        {SHOAL_OUTCOME_MALFORMED, "malformed", 1},
    };
    for (size_t i = 0; i < sizeof(rule) / sizeof(rule[0]); i++) {
        assert_str_eq(shoal_outcome_name(rule[i].o), rule[i].name);
        assert_int_eq(shoal_outcome_retriable(rule[i].o), rule[i].retriable);
    }
    assert_str_eq(shoal_outcome_name((shoal_outcome_t)99), "unknown");
    assert_int_eq(shoal_outcome_retriable((shoal_outcome_t)99), 0);
}

/* why for an error answer with this body. */
static void expect_why(long status, const char *body, const char *want)
{
    shoal_provider_reply_t r;
    char why[512];

    outcome(&openai, status, body, &r, why, sizeof(why));
    if (strcmp(why, want) != 0)
        test_fail("body %s: why \"%s\", expected \"%s\"", body, why, want);
}

static void test_error_bodies(void)
{
    /* OpenAI */
    expect_why(401,
               "{\"error\":{\"message\":\"Incorrect API key provided\",\"type\":"
               "\"invalid_request_error\",\"code\":\"invalid_api_key\"}}",
               "HTTP 401: Incorrect API key provided");
    /* Anthropic */
    expect_why(529,
               "{\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\","
               "\"message\":\"Overloaded\"}}",
               "HTTP 529: Overloaded");
    expect_why(400, "{\"type\":\"error\",\"error\":{\"type\":\"invalid_request_error\"}}",
               "HTTP 400: invalid_request_error"); /* no message: the type */
    /* flat strings, bare messages, FastAPI/vLLM detail */
    expect_why(500, "{\"error\":\"flat string\"}", "HTTP 500: flat string");
    expect_why(404, "{\"message\":\"Not Found\"}", "HTTP 404: Not Found");
    expect_why(404, "{\"detail\":\"Not Found\"}", "HTTP 404: Not Found");
    expect_why(422,
               "{\"detail\":[{\"loc\":[\"body\",\"messages\"],\"msg\":\"field required\","
               "\"type\":\"value_error.missing\"}]}",
               "HTTP 422: field required");
    expect_why(422, "{\"detail\":{\"code\":5}}", "HTTP 422: {\"code\":5}");
    /* JSON of no known shape, and text: the body itself, as one line */
    expect_why(500, "{\"foo\":1}", "HTTP 500: {\"foo\":1}");
    expect_why(502, "\r\n  upstream connect error\r\nreset reason: overflow\r\n",
               "HTTP 502: upstream connect error  reset reason: overflow");
    expect_why(500, "", "HTTP 500");
    expect_why(500, "\r\n", "HTTP 500");
    /* not UTF-8: replaced, so the text is always valid in a JSON row */
    expect_why(500, "\xff\xfe abc \xc3", "HTTP 500: ?? abc ?");
    expect_why(500, "caf\xc3\xa9 \xe2\x82\xac", "HTTP 500: caf\xc3\xa9 \xe2\x82\xac");
    json_t *j = json_string("HTTP 500: ?? abc ?");
    assert_true(j != NULL);
    json_decref(j);

    /* long texts are cut at 200 bytes, never inside a character */
    char body[2048], want[512];
    memset(body, 'h', 1000);
    body[1000] = '\0';
    snprintf(want, sizeof(want), "HTTP 500: %.200s", body);
    expect_why(500, body, want);
    char longmsg[1001];
    memset(longmsg, 'm', 1000);
    longmsg[1000] = '\0';
    snprintf(body, sizeof(body), "{\"error\":{\"message\":\"%s\"}}", longmsg);
    snprintf(want, sizeof(want), "HTTP 400: %.200s", longmsg);
    expect_why(400, body, want);
    memset(body, 'a', 199);
    memcpy(body + 199, "\xc3\xa9zz", 5);
    snprintf(want, sizeof(want), "HTTP 500: %.199s", body);
    expect_why(500, body, want);

    /* a small buffer is never overrun; NULL is fine */
    shoal_provider_reply_t r;
    char small[16];
    snprintf(body, sizeof(body), "{\"error\":{\"message\":\"%s\"}}", longmsg);
    outcome(&openai, 400, body, &r, small, sizeof(small));
    assert_int_eq(strlen(small), 15);
    assert_str_eq(small, "HTTP 400: mmmmm");
    outcome(&openai, 400, body, &r, small, 9);
    assert_str_eq(small, "HTTP 400");
    shoal_http_reply_t hr = {.status = 400, .body = body, .len = strlen(body)};
    assert_int_eq(shoal_provider_outcome(&openai, &hr, &r, NULL, 0), SHOAL_OUTCOME_PERMANENT);
}

/* ---- rate-limit signals ---- */

#define NOW 1714564800.0 /* 2024-05-01T12:00:00Z */

/* Signals of a header block held in an exact-size heap copy, so reading
 * past len is caught by ASan. */
static void signals(const char *block, shoal_provider_signals_t *out)
{
    size_t len = strlen(block);
    char *copy = malloc(len ? len : 1);

    assert_true(copy != NULL);
    memcpy(copy, block, len);
    shoal_provider_signals(copy, len, NOW, out);
    free(copy);
}

static void assert_all_absent(const shoal_provider_signals_t *s)
{
    const long *f = &s->retry_after_ms;
    long v[] = {s->retry_after_ms,        s->limit_requests,      s->remaining_requests,
                s->reset_requests_ms,     s->limit_tokens,        s->remaining_tokens,
                s->reset_tokens_ms,       s->limit_input_tokens,  s->remaining_input_tokens,
                s->reset_input_tokens_ms, s->limit_output_tokens, s->remaining_output_tokens,
                s->reset_output_tokens_ms};
    (void)f;
    assert_int_eq(sizeof(v), sizeof(*s)); /* every field is listed */
    for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
        if (v[i] != -1)
            test_fail("field %zu is %ld, expected absent", i, v[i]);
    }
}

/* The value one header gives field (by offset), alone in a block. */
static long one(const char *line, size_t off)
{
    shoal_provider_signals_t s;

    signals(line, &s);
    return *(const long *)((const char *)&s + off);
}

#define RESET_REQ offsetof(shoal_provider_signals_t, reset_requests_ms)
#define RETRY offsetof(shoal_provider_signals_t, retry_after_ms)

static void test_signals_openai(void)
{
    shoal_provider_signals_t s;

    signals("HTTP/1.1 200 OK\r\n"
            "date: Wed, 01 May 2024 12:00:00 GMT\r\n"
            "x-ratelimit-limit-requests: 500\r\n"
            "x-ratelimit-remaining-requests: 499\r\n"
            "x-ratelimit-reset-requests: 120ms\r\n"
            "x-ratelimit-limit-tokens: 200000\r\n"
            "x-ratelimit-remaining-tokens: 199000\r\n"
            "x-ratelimit-reset-tokens: 6m0s\r\n"
            "\r\n",
            &s);
    assert_int_eq(s.limit_requests, 500);
    assert_int_eq(s.remaining_requests, 499);
    assert_int_eq(s.reset_requests_ms, 120);
    assert_int_eq(s.limit_tokens, 200000);
    assert_int_eq(s.remaining_tokens, 199000);
    assert_int_eq(s.reset_tokens_ms, 360000);
    assert_int_eq(s.retry_after_ms, -1);
    assert_int_eq(s.limit_input_tokens, -1);
    assert_int_eq(s.reset_output_tokens_ms, -1);

    static const struct {
        const char *value;
        long ms;
    } durations[] = {
        {"12ms", 12},
        {"1s", 1000},
        {"6m0s", 360000},
        {"1m30.5s", 90500},
        {"2h", 7200000},
        {"1h2m3s", 3723000},
        {"0s", 0},
        {"0", 0},
        {"3", 3000}, /* bare numbers are seconds */
        {"0.5", 500},
        {"1.5ms", 2}, /* rounded up: a wait is never cut short */
        {"250us", 1},
        {"250\xc2\xb5s", 1},
        {"100ns", 1},
        {"59.999s", 59999},
        {"0.001", 1},
        {"4.095s", 4095},
        {"0.3s", 300},
        {"24h", 86400000},
        {"24h1ms", -1}, /* more than a day is nonsense */
        {"", -1},
        {"ms", -1},
        {"-1s", -1},
        {"-1", -1},
        {"5x", -1},
        {"1s2", -1},
        {"1..5s", -1},
        {".s", -1},
        {"abc", -1},
        {"1e3", -1},
        {"1 s", -1},
        {"nan", -1},
        {"99999999999999999999s", -1},
    };
    for (size_t i = 0; i < sizeof(durations) / sizeof(durations[0]); i++) {
        char line[128];
        snprintf(line, sizeof(line), "x-ratelimit-reset-requests: %s\r\n", durations[i].value);
        long got = one(line, RESET_REQ);
        if (got != durations[i].ms)
            test_fail("duration \"%s\": %ld ms, expected %ld", durations[i].value, got,
                      durations[i].ms);
    }
}

static void test_signals_anthropic(void)
{
    shoal_provider_signals_t s;

    signals("anthropic-ratelimit-requests-limit: 50\r\n"
            "anthropic-ratelimit-requests-remaining: 49\r\n"
            "anthropic-ratelimit-requests-reset: 2024-05-01T12:00:30Z\r\n"
            "anthropic-ratelimit-tokens-limit: 90000\r\n"
            "anthropic-ratelimit-tokens-remaining: 80000\r\n"
            "anthropic-ratelimit-tokens-reset: 2024-05-01T12:00:01.25Z\r\n"
            "anthropic-ratelimit-input-tokens-limit: 40000\r\n"
            "anthropic-ratelimit-input-tokens-remaining: 39000\r\n"
            "anthropic-ratelimit-input-tokens-reset: 2024-05-01T14:00:05+02:00\r\n"
            "anthropic-ratelimit-output-tokens-limit: 8000\r\n"
            "anthropic-ratelimit-output-tokens-remaining: 0\r\n"
            "anthropic-ratelimit-output-tokens-reset: 2024-05-01T11:59:00Z\r\n"
            "retry-after: 30\r\n",
            &s);
    assert_int_eq(s.limit_requests, 50);
    assert_int_eq(s.remaining_requests, 49);
    assert_int_eq(s.reset_requests_ms, 30000);
    assert_int_eq(s.limit_tokens, 90000);
    assert_int_eq(s.remaining_tokens, 80000);
    assert_int_eq(s.reset_tokens_ms, 1250);
    assert_int_eq(s.limit_input_tokens, 40000);
    assert_int_eq(s.remaining_input_tokens, 39000);
    assert_int_eq(s.reset_input_tokens_ms, 5000); /* +02:00 */
    assert_int_eq(s.limit_output_tokens, 8000);
    assert_int_eq(s.remaining_output_tokens, 0); /* empty is a real value */
    assert_int_eq(s.reset_output_tokens_ms, 0);  /* in the past: floored at 0 */
    assert_int_eq(s.retry_after_ms, 30000);

    static const struct {
        const char *value;
        long ms;
    } times[] = {
        {"2024-05-01T12:00:30Z", 30000},
        {"2024-05-01t12:00:30z", 30000},
        {"2024-05-01 12:00:30Z", 30000},
        {"2024-05-01T12:00:00.0001Z", 1},
        {"2024-05-01T06:30:30-05:30", 30000},
        {"2024-05-02T12:00:00Z", 86400000},
        {"2024-04-30T12:00:00Z", 0},
        {"1970-01-01T00:00:00Z", 0},
        {"2030-01-01T00:00:00Z", -1}, /* more than a day away */
        {"2024-05-01T12:00:30", -1},  /* no offset */
        {"2024-05-01T12:00:30+0200", -1},
        {"2024-05-01T12:00:30.Z", -1},
        {"2024-13-01T00:00:00Z", -1},
        {"2024-02-30T00:00:00Z", -1},
        {"2024-05-01T24:00:00Z", -1},
        {"2024-5-1T12:00:30Z", -1},
        {"2024-05-01T12:00:30Zjunk", -1},
        {"30", -1},
        {"tomorrow", -1},
        {"", -1},
    };
    for (size_t i = 0; i < sizeof(times) / sizeof(times[0]); i++) {
        char line[128];
        snprintf(line, sizeof(line), "anthropic-ratelimit-requests-reset: %s\r\n", times[i].value);
        long got = one(line, RESET_REQ);
        if (got != times[i].ms)
            test_fail("reset \"%s\": %ld ms, expected %ld", times[i].value, got, times[i].ms);
    }
    /* leap day and a year boundary, against days_from_civil */
    shoal_provider_signals("anthropic-ratelimit-tokens-reset: 2024-03-01T00:00:10Z", 55,
                           1709251200.0, &s);
    assert_int_eq(s.reset_tokens_ms, 10000);
    shoal_provider_signals("anthropic-ratelimit-tokens-reset: 2025-01-01T00:00:02Z", 55,
                           1735689600.0 - 1, &s);
    assert_int_eq(s.reset_tokens_ms, 3000);
}

static void test_signals_retry_after(void)
{
    static const struct {
        const char *line;
        long ms;
    } cases[] = {
        {"Retry-After: 2", 2000},
        {"Retry-After: 0", 0},
        {"Retry-After: 0.5", 500},
        {"Retry-After: 86400", 86400000},
        {"Retry-After: 86401", -1},
        {"Retry-After: 1e9", -1},
        {"Retry-After: -3", -1},
        {"Retry-After: inf", -1},
        {"Retry-After: nan", -1},
        {"Retry-After: soon", -1},
        {"Retry-After: ", -1},
        /* HTTP dates, relative to NOW */
        {"Retry-After: Wed, 01 May 2024 12:00:07 GMT", 7000},
        {"Retry-After: Wednesday, 01-May-24 12:00:07 GMT", 7000},
        {"Retry-After: Wed May  1 12:00:07 2024", 7000},
        {"Retry-After: Wed May 01 12:00:07 2024", 7000},
        {"Retry-After: wed, 01 may 2024 12:00:07 GMT", 7000},
        {"Retry-After: Wed, 01 May 2024 11:00:00 GMT", 0}, /* past: now */
        {"Retry-After: Wed, 01 May 2024 12:00:07 UTC", -1},
        {"Retry-After: Wed, 01 May 2024 12:00:07", -1},
        {"Retry-After: Wed, 1 May 2024 12:00:07 GMT", -1},
        {"Retry-After: Wed, 01 Foo 2024 12:00:07 GMT", -1},
        {"Retry-After: Wed, 31 Apr 2024 12:00:07 GMT", -1},
        {"Retry-After: Wed, 01 May 2025 12:00:07 GMT", -1}, /* a year away */
        {"Retry-After: Wed May  1 12:00:07 2024 extra", -1},
        {"Retry-After: Wed", -1},
        {"Retry-After: Wed,", -1},
        {"Retry-After: We, 01 May 2024 12:00:07 GMT", -1},
        /* milliseconds */
        {"retry-after-ms: 1500", 1500},
        {"retry-after-ms: 0.4", 1},
        {"retry-after-ms: soon", -1},
        {"retry-after-ms: -1", -1},
        /* the millisecond form wins, whichever comes first */
        {"Retry-After: 3\r\nretry-after-ms: 2500", 2500},
        {"retry-after-ms: 2500\r\nRetry-After: 3", 2500},
        /* an unreadable one does not hide the other */
        {"retry-after-ms: soon\r\nRetry-After: 3", 3000},
        {"Retry-After: soon\r\nretry-after-ms: 100", 100},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        long got = one(cases[i].line, RETRY);
        if (got != cases[i].ms)
            test_fail("\"%s\": %ld ms, expected %ld", cases[i].line, got, cases[i].ms);
    }
}

static void test_signals_garbage(void)
{
    shoal_provider_signals_t s;

    /* Azure's -1 and 0: absent (a limit of 0 is no limit we can use; a
     * remaining count of 0 is real) */
    signals("x-ratelimit-limit-requests: 0\r\n"
            "x-ratelimit-remaining-requests: -1\r\n"
            "x-ratelimit-limit-tokens: -1\r\n"
            "x-ratelimit-remaining-tokens: 0\r\n"
            "x-ratelimit-reset-tokens: -1\r\n",
            &s);
    assert_int_eq(s.limit_requests, -1);
    assert_int_eq(s.remaining_requests, -1);
    assert_int_eq(s.limit_tokens, -1);
    assert_int_eq(s.remaining_tokens, 0);
    assert_int_eq(s.reset_tokens_ms, -1);

    static const char *const counts[] = {
        "abc", "12abc", "1.5", "+5", "", "1 000", "99999999999999999999", "0x10"};
    for (size_t i = 0; i < sizeof(counts) / sizeof(counts[0]); i++) {
        char line[128];
        snprintf(line, sizeof(line), "x-ratelimit-remaining-tokens: %s", counts[i]);
        if (one(line, offsetof(shoal_provider_signals_t, remaining_tokens)) != -1)
            test_fail("count \"%s\" was read", counts[i]);
    }
    /* surrounding blanks are not part of a value */
    assert_int_eq(one("x-ratelimit-remaining-tokens: \t 42 \t\r\n",
                      offsetof(shoal_provider_signals_t, remaining_tokens)),
                  42);
    assert_int_eq(one("x-ratelimit-remaining-tokens:42",
                      offsetof(shoal_provider_signals_t, remaining_tokens)),
                  42);

    /* nothing at all */
    signals("", &s);
    assert_all_absent(&s);
    shoal_provider_signals(NULL, 0, NOW, &s);
    assert_all_absent(&s);
    signals("HTTP/1.1 429 Too Many Requests\r\nContent-Type: application/json\r\n\r\n", &s);
    assert_all_absent(&s);
    /* names must match whole: prefixes and suffixes are other headers */
    signals("x-ratelimit-limit-requests-extra: 5\r\nx-ratelimit-limit-request: 5\r\n"
            "retry-after-seconds: 5\r\nx-retry-after: 5\r\n: 5\r\nretry-after 5\r\n",
            &s);
    assert_all_absent(&s);
    /* an overlong value is not read, whatever it holds */
    char line[256], zeros[64];
    memset(zeros, '0', 50);
    zeros[50] = '\0';
    snprintf(line, sizeof(line), "anthropic-ratelimit-requests-reset: 2024-05-01T12:00:30.%.40sZ",
             zeros);
    assert_int_eq(one(line, RESET_REQ), 30000); /* 62 bytes */
    snprintf(line, sizeof(line), "anthropic-ratelimit-requests-reset: 2024-05-01T12:00:30.%.50sZ",
             zeros);
    assert_int_eq(one(line, RESET_REQ), -1); /* 72 bytes */
}

static void test_signals_case_and_bounds(void)
{
    shoal_provider_signals_t s;

    /* names are case-insensitive; LF-only lines work; a repeated header's
     * last readable value wins */
    signals("X-RateLimit-Remaining-Tokens: 5\n"
            "RETRY-AFTER: 4\n"
            "Anthropic-RateLimit-Requests-Limit: 50\n"
            "ANTHROPIC-RATELIMIT-OUTPUT-TOKENS-REMAINING: 7\n"
            "x-ratelimit-limit-tokens: 10\n"
            "x-ratelimit-limit-tokens: 20\n"
            "x-ratelimit-limit-tokens: junk\n",
            &s);
    assert_int_eq(s.remaining_tokens, 5);
    assert_int_eq(s.retry_after_ms, 4000);
    assert_int_eq(s.limit_requests, 50);
    assert_int_eq(s.remaining_output_tokens, 7);
    assert_int_eq(s.limit_tokens, 20);

    /* no final line break: the last line still counts */
    assert_int_eq(one("Retry-After: 12", RETRY), 12000);
    /* len cuts a value: only the bytes inside it are read (the block is not
     * terminated, and ASan watches the byte after it) */
    const char *block = "retry-after: 123\r\nx-ratelimit-remaining-tokens: 77\r\n";
    char *copy = malloc(strlen(block));
    assert_true(copy != NULL);
    memcpy(copy, block, strlen(block));
    shoal_provider_signals(copy, 15, NOW, &s);
    assert_int_eq(s.retry_after_ms, 12000);
    assert_int_eq(s.remaining_tokens, -1);
    shoal_provider_signals(copy, strlen(block) - 3, NOW, &s);
    assert_int_eq(s.retry_after_ms, 123000);
    assert_int_eq(s.remaining_tokens, 7);
    free(copy);

    /* every prefix of a full block, each in an exact-size buffer: no read
     * past the end, and every field absent or a value from the block */
    const char *full = "HTTP/2 429\r\nretry-after-ms: 1500\r\nRetry-After: "
                       "Wed, 01 May 2024 12:00:07 GMT\r\nanthropic-ratelimit-tokens-reset: "
                       "2024-05-01T12:00:30Z\r\nx-ratelimit-reset-requests: 1m30.5s\r\n"
                       "x-ratelimit-limit-tokens: 200000\r\n\r\n";
    for (size_t n = 0; n <= strlen(full); n++) {
        char *p = malloc(n ? n : 1);
        assert_true(p != NULL);
        memcpy(p, full, n);
        shoal_provider_signals(p, n, NOW, &s);
        free(p);
        assert_int_ge(s.retry_after_ms, -1);
        assert_true(s.retry_after_ms <= 7000);
        assert_true(s.reset_tokens_ms == -1 || s.reset_tokens_ms == 30000);
        assert_true(s.reset_requests_ms <= 90500);
        assert_true(s.limit_tokens <= 200000);
    }
    shoal_provider_signals(full, strlen(full), NOW, &s);
    assert_int_eq(s.retry_after_ms, 1500);
    assert_int_eq(s.reset_requests_ms, 90500);

    /* random bytes (fixed seed): never a crash, never below -1 */
    unsigned seed = 12345;
    static const char alphabet[] = "retry-afterms:0123456789 ,.-+TZ\r\nGMTxlimitXanthropic\xc3\xff";
    for (int round = 0; round < 3000; round++) {
        size_t n = (size_t)(rand_r(&seed) % 96);
        char *p = malloc(n ? n : 1);
        assert_true(p != NULL);
        for (size_t i = 0; i < n; i++)
            p[i] = alphabet[(size_t)rand_r(&seed) % (sizeof(alphabet) - 1)];
        if (n > 14 && rand_r(&seed) % 2)
            memcpy(p, "retry-after: ", 13);
        shoal_provider_signals(p, n, NOW, &s);
        free(p);
        const long *f = (const long *)&s;
        for (size_t i = 0; i < sizeof(s) / sizeof(long); i++)
            assert_int_ge(f[i], -1);
    }
}

/* Answers the fast reading (worker/jsonpick.h) takes, and the same answers
 * with one more member it leaves to jansson (a \u escape): both readings
 * give the same outcome, content, usage and why. */
static void test_outcome_fast_and_slow(void)
{
    static const struct {
        const shoal_model_t *m;
        const char *body; /* without its closing brace */
    } cases[] = {
        {&openai, "{\"choices\":[{\"message\":{\"content\":\"a \\\"b\\\"\\n\"},"
                  "\"finish_reason\":\"stop\"}],\"usage\":{\"prompt_tokens\":10,"
                  "\"completion_tokens\":3,\"prompt_tokens_details\":{\"cached_tokens\":4}}"},
        {&openai, "{\"choices\":[{\"message\":{\"content\":\"cut\"},\"finish_reason\":"
                  "\"length\"}],\"usage\":{\"prompt_tokens\":-5,\"completion_tokens\":1.5}"},
        {&openai, "{\"choices\":[{\"message\":{\"content\":\"\"}}],\"usage\":[1]"},
        {&openai, "{\"choices\":[{\"message\":{\"content\":\"x\"}}],\"usage\":{"
                  "\"prompt_tokens\":99999999999999999}"},
        {&anthropic, "{\"content\":[{\"type\":\"text\",\"text\":\"bon\\tjour\"}],"
                     "\"stop_reason\":\"max_tokens\",\"usage\":{\"input_tokens\":21,"
                     "\"output_tokens\":7,\"cache_creation_input_tokens\":5,"
                     "\"cache_read_input_tokens\":16}"},
        {&anthropic, "{\"content\":[{\"text\":\"no type\"}],\"stop_reason\":\"end_turn\""},
        {&anthropic, "{\"content\":[{\"type\":7,\"text\":\"odd type\"}]"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char fast[1024], slow[1024], why1[256], why2[256];
        shoal_provider_reply_t o1, o2;
        snprintf(fast, sizeof(fast), "%s}", cases[i].body);
        snprintf(slow, sizeof(slow), "%s,\"pad\":\"\\u0041\"}", cases[i].body);
        shoal_outcome_t a = outcome(cases[i].m, 200, fast, &o1, why1, sizeof(why1));
        shoal_outcome_t b = outcome(cases[i].m, 200, slow, &o2, why2, sizeof(why2));
        assert_int_eq(a, b);
        assert_true(o1.content != NULL && o2.content != NULL);
        assert_str_eq(o1.content, o2.content);
        assert_str_eq(why1, why2);
        assert_int_eq(o1.usage.input, o2.usage.input);
        assert_int_eq(o1.usage.output, o2.usage.output);
        assert_int_eq(o1.usage.cached, o2.usage.cached);
        assert_int_eq(o1.usage.cache_write, o2.usage.cache_write);
        free(o1.content);
        free(o2.content);
    }
}

/* The body as the jansson tree it replaced dumped it (members in the same
 * order), for a byte-for-byte comparison. */
static char *jansson_request(const shoal_model_t *m, const char *system, const char *prompt,
                             int want_json)
{
    json_t *req = json_object(), *msgs = json_array();
    json_object_set_new(req, "model", json_string(m->model));
    if (m->provider == SHOAL_PROVIDER_ANTHROPIC) {
        if (system && *system)
            json_object_set_new(req, "system", json_string(system));
        json_object_set_new(req, "max_tokens",
                            json_integer(m->max_output_tokens > 0 ? m->max_output_tokens : 4096));
    } else {
        if (system && *system)
            json_array_append_new(msgs,
                                  json_pack("{s:s, s:s}", "role", "system", "content", system));
        if (m->max_output_tokens > 0)
            json_object_set_new(req, "max_tokens", json_integer(m->max_output_tokens));
        if (want_json)
            json_object_set_new(req, "response_format", json_pack("{s:s}", "type", "json_object"));
    }
    json_array_append_new(msgs, json_pack("{s:s, s:s}", "role", "user", "content", prompt));
    json_object_set_new(req, "messages", msgs);
    char *out = json_dumps(req, JSON_COMPACT);
    json_decref(req);
    return out;
}

/* Request bodies are the bytes jansson wrote for every shape (system or
 * not, JSON output or not, escapes, non-ASCII text); invalid UTF-8 in the
 * prompt or the system text gives no body at all. */
static void test_request_bytes(void)
{
    static const shoal_model_t plain = {.provider = SHOAL_PROVIDER_OPENAI, .model = "m"};
    static const shoal_model_t anth0 = {.provider = SHOAL_PROVIDER_ANTHROPIC, .model = "c"};
    const shoal_model_t *ms[] = {&openai, &anthropic, &plain, &anth0};
    const char *systems[] = {NULL, "", "be \"brief\"\n\tnow", "caf\xc3\xa9 \x01"};
    const char *prompt = "Summarize:\nline \\ two / \xe2\x82\xac \x7f end";
    for (size_t i = 0; i < sizeof(ms) / sizeof(ms[0]); i++) {
        for (size_t k = 0; k < sizeof(systems) / sizeof(systems[0]); k++) {
            for (int want_json = 0; want_json < 2; want_json++) {
                size_t len = 0;
                char *got = shoal_provider_request(ms[i], systems[k], prompt, want_json, &len);
                char *want = jansson_request(ms[i], systems[k], prompt, want_json);
                assert_true(got != NULL && want != NULL);
                assert_str_eq(got, want);
                assert_int_eq(len, strlen(want));
                free(got);
                free(want);
            }
        }
    }
    size_t len = 0;
    assert_true(shoal_provider_request(&openai, NULL, "bad \xc0\xaf", 0, &len) == NULL);
    assert_true(shoal_provider_request(&openai, "bad \xff", "ok", 0, &len) == NULL);
    assert_true(shoal_provider_request(&anthropic, "bad \xff", "ok", 0, &len) == NULL);
    assert_true(shoal_provider_request(&openai, NULL, NULL, 0, &len) == NULL);
}

int main(void)
{
    test_request_openai();
    test_request_anthropic();
    test_request_bytes();
    test_headers();
    test_outcome_answers();
    test_outcome_fast_and_slow();
    test_outcome_malformed();
    test_outcome_status();
    test_outcome_rule();
    test_error_bodies();
    test_signals_openai();
    test_signals_anthropic();
    test_signals_retry_after();
    test_signals_garbage();
    test_signals_case_and_bounds();
    printf("provider_test: ok\n");
    return 0;
}
