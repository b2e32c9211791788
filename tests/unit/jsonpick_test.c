/*
 * worker/jsonpick: the fast path past jansson. Whatever it accepts, jansson
 * accepts too and reads the same values at the picked paths (checked on
 * hand-written texts and on thousands of mutations of real answers); what
 * it is unsure of (\u escapes, duplicate keys on a picked path, exponents,
 * keys that pass for path steps, invalid texts) it says so;
 * escapes are undone.
 */
#include "worker/jsonpick.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tests/support/check.h"
#include "tests/support/mutate.h"

static const char *const paths[] = {"choices.0.message.content",
                                    "choices.0.finish_reason",
                                    "usage.prompt_tokens",
                                    "usage.completion_tokens",
                                    "usage.prompt_tokens_details.cached_tokens",
                                    "content.1",
                                    "a"};
#define NPATHS (sizeof(paths) / sizeof(paths[0]))

/* The value jansson finds at path (components split by '.', digits index
 * arrays), NULL when none. */
static json_t *at(json_t *doc, const char *path)
{
    char buf[256];
    snprintf(buf, sizeof(buf), "%s", path);
    json_t *v = doc;
    for (char *save = NULL, *tok = strtok_r(buf, ".", &save); v && tok;
         tok = strtok_r(NULL, ".", &save)) {
        if (json_is_array(v))
            v = strspn(tok, "0123456789") == strlen(tok) ? json_array_get(v, strtoul(tok, NULL, 10))
                                                         : NULL;
        else
            v = json_object_get(v, tok);
    }
    return v;
}

/* When the fast path accepts text, jansson must too, with the same values;
 * returns whether the fast path accepted. */
static int agrees(const char *text, size_t len)
{
    shoal_jsonpick_t p[NPATHS];
    for (size_t i = 0; i < NPATHS; i++)
        p[i].path = paths[i];
    if (!shoal_jsonpick_object(text, len, p, NPATHS))
        return 0;
    json_t *doc = json_loadb(text, len, 0, NULL);
    if (!json_is_object(doc))
        test_fail("fast path accepted what jansson refuses: %.*s", (int)len, text);
    for (size_t i = 0; i < NPATHS; i++) {
        json_t *v = at(doc, paths[i]);
        switch (p[i].kind) {
        case SHOAL_JSONPICK_ABSENT:
            if (v)
                test_fail("%s: absent, jansson has one in %.*s", paths[i], (int)len, text);
            break;
        case SHOAL_JSONPICK_STRING: {
            char *s = shoal_jsonpick_string(&p[i]);
            if (!json_is_string(v) || strcmp(s, json_string_value(v)) != 0)
                test_fail("%s: string \"%s\" differs from jansson's in %.*s", paths[i], s, (int)len,
                          text);
            free(s);
            break;
        }
        case SHOAL_JSONPICK_INTEGER:
            if (!json_is_integer(v) || json_integer_value(v) != p[i].integer)
                test_fail("%s: integer %lld differs from jansson's in %.*s", paths[i], p[i].integer,
                          (int)len, text);
            break;
        case SHOAL_JSONPICK_OTHER:
            if (!v || json_is_string(v) || json_is_integer(v))
                test_fail("%s: other, jansson's differs in %.*s", paths[i], (int)len, text);
            break;
        }
    }
    json_decref(doc);
    return 1;
}

static const char openai[] =
    "{\"id\":\"chatcmpl-sim-1\",\"object\":\"chat.completion\",\"created\":1795997265,"
    "\"model\":\"sim-small\",\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\","
    "\"content\":\"sim 471a \\\"q\\\" \\\\ \\/ \\b\\f\\n\\r\\t caf\xc3\xa9 \xf0\x9f\x98\x80\"},"
    "\"finish_reason\":\"stop\"}],\"usage\":{\"prompt_tokens\":6,\"completion_tokens\":11,"
    "\"total_tokens\":17,\"prompt_tokens_details\":{\"cached_tokens\":-0}},\"x\":[1.5,true,"
    "false,null,{},[],\"\"]}";

static void test_answers(void)
{
    shoal_jsonpick_t p[NPATHS];
    for (size_t i = 0; i < NPATHS; i++)
        p[i].path = paths[i];
    assert_int_eq(shoal_jsonpick_object(openai, strlen(openai), p, NPATHS), 1);
    char *s = shoal_jsonpick_string(&p[0]);
    assert_str_eq(s, "sim 471a \"q\" \\ / \b\f\n\r\t caf\xc3\xa9 \xf0\x9f\x98\x80");
    free(s);
    assert_int_eq(p[2].integer, 6);
    assert_int_eq(p[3].integer, 11);
    assert_int_eq(p[4].kind, SHOAL_JSONPICK_INTEGER);
    assert_true(shoal_jsonpick_string(&p[2]) == NULL); /* not a string */
    mutate_expect(agrees, openai, 1);

    mutate_expect(agrees, " {} ", 1);
    mutate_expect(agrees, "{\"a\":1.25}", 1);
    mutate_expect(agrees, "{\"a\":{\"b\":[1,2,{\"c\":null}]},\"a2\":\"x\"}", 1);
    mutate_expect(agrees, "{\"choices\":[],\"usage\":[{\"prompt_tokens\":3}]}", 1);
    mutate_expect(agrees, "{\"choices\":{\"x\":1},\"usage\":\"none\"}", 1);
    mutate_expect(agrees, "{\"dup\":1,\"dup\":2}", 1); /* off the picked paths */
    mutate_expect(agrees, "{\"x.y\":1,\"7\":2}", 1);   /* off the picked paths */
    mutate_expect(agrees, "{\"a\":-123456789012345678}", 1);
}

static void test_unsure(void)
{
    mutate_expect(agrees, "", 0);
    mutate_expect(agrees, "[]", 0);
    mutate_expect(agrees, "\"a\"", 0);
    mutate_expect(agrees, "{\"a\":\"\\u00e9\"}", 0); /* \u escapes: jansson's */
    mutate_expect(agrees, "{\"a\":1,\"a\":2}", 0);   /* a picked duplicate */
    mutate_expect(agrees, "{\"usage\":{},\"usage\":{\"prompt_tokens\":1}}",
                  0);                                        /* a duplicate on the way */
    mutate_expect(agrees, "{\"a\":1e5}", 0);                 /* exponents: jansson's */
    mutate_expect(agrees, "{\"a\":1234567890123456789}", 0); /* 19 digits */
    mutate_expect(agrees, "{\"choices\":{\"0\":{\"message\":{\"content\":\"x\"}}}}",
                  0); /* "0" is no index */
    mutate_expect(agrees, "{\"choices.0\":1}", 0);
    mutate_expect(agrees, "{\"\\u0061\":1}", 0);
    mutate_expect(agrees, "{\"a\":1} x", 0);
    mutate_expect(agrees, "{\"a\":01}", 0);
    mutate_expect(agrees, "{\"a\":1.}", 0);
    mutate_expect(agrees, "{\"a\":-}", 0);
    mutate_expect(agrees, "{\"a\":tru}", 0);
    mutate_expect(agrees, "{\"a\":\"\x01\"}", 0);
    mutate_expect(agrees, "{\"a\":\"\xc0\xaf\"}", 0);
    mutate_expect(agrees, "{\"a\":\"\xed\xa0\x80\"}", 0); /* a surrogate */
    mutate_expect(agrees, "{\"a\":\"\\x\"}", 0);
    mutate_expect(agrees, "{\"a\":[1,]}", 0);
    mutate_expect(agrees, "{\"a\":1,}", 0);
    mutate_expect(agrees, "{\"a\" 1}", 0);
    mutate_expect(agrees, "{\"a\":\"x}", 0);
}

/* Mutations of a real answer: byte changes, cuts and insertions. Whatever
 * the fast path accepts must read the same as jansson. */
static void test_mutations(void)
{
    long taken = mutate_count(agrees, openai, 20000, 12345);
    /* a good share of mutations stay valid and plain (inside strings) */
    assert_int_ge(taken, 1000);
    printf("jsonpick_test: %ld of 20000 mutations taken by the fast path\n", taken);
}

int main(void)
{
    test_answers();
    test_unsure();
    test_mutations();
    printf("jsonpick_test: ok\n");
    return 0;
}
