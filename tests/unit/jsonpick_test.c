/*
 * worker/jsonpick: the fast path past jansson. Whatever it accepts, jansson
 * accepts too and reads the same values at the picked paths (checked on
 * hand-written texts and on thousands of mutations of real answers); what
 * it is unsure of (\u escapes, duplicate keys on a picked path, exponents,
 * deep nesting, keys that pass for path steps, invalid texts) it says so;
 * escapes are undone.
 */
#include "worker/jsonpick.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tests/support/check.h"

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

static void accepted(const char *text)
{
    if (!agrees(text, strlen(text)))
        test_fail("fast path unsure of %s", text);
}

static void unsure(const char *text)
{
    if (agrees(text, strlen(text)))
        test_fail("fast path accepted %s", text);
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
    accepted(openai);

    accepted(" {} ");
    accepted("{\"a\":1.25}");
    accepted("{\"a\":{\"b\":[1,2,{\"c\":null}]},\"a2\":\"x\"}");
    accepted("{\"choices\":[],\"usage\":[{\"prompt_tokens\":3}]}");
    accepted("{\"choices\":{\"x\":1},\"usage\":\"none\"}");
    accepted("{\"dup\":1,\"dup\":2}"); /* off the picked paths */
    accepted("{\"x.y\":1,\"7\":2}");   /* off the picked paths */
    accepted("{\"a\":-123456789012345678}");
}

static void test_unsure(void)
{
    unsure("");
    unsure("[]");
    unsure("\"a\"");
    unsure("{\"a\":\"\\u00e9\"}");                                     /* \u escapes: jansson's */
    unsure("{\"a\":1,\"a\":2}");                                       /* a picked duplicate */
    unsure("{\"usage\":{},\"usage\":{\"prompt_tokens\":1}}");          /* a duplicate on the way */
    unsure("{\"a\":1e5}");                                             /* exponents: jansson's */
    unsure("{\"a\":1234567890123456789}");                             /* 19 digits */
    unsure("{\"choices\":{\"0\":{\"message\":{\"content\":\"x\"}}}}"); /* "0" is no index */
    unsure("{\"choices.0\":1}");
    unsure("{\"\\u0061\":1}");
    unsure("{\"a\":1} x");
    unsure("{\"a\":01}");
    unsure("{\"a\":1.}");
    unsure("{\"a\":-}");
    unsure("{\"a\":tru}");
    unsure("{\"a\":\"\x01\"}");
    unsure("{\"a\":\"\xc0\xaf\"}");
    unsure("{\"a\":\"\xed\xa0\x80\"}"); /* a surrogate */
    unsure("{\"a\":\"\\x\"}");
    unsure("{\"a\":[1,]}");
    unsure("{\"a\":1,}");
    unsure("{\"a\" 1}");
    unsure("{\"a\":\"x}");
    char deep[300];
    size_t n = 0;
    n += (size_t)snprintf(deep + n, sizeof(deep) - n, "{\"a\":");
    for (int i = 0; i < 100; i++)
        deep[n++] = '[';
    for (int i = 0; i < 100; i++)
        deep[n++] = ']';
    deep[n++] = '}';
    deep[n] = '\0';
    unsure(deep);
}

/* Mutations of a real answer: byte changes, cuts and insertions. Whatever
 * the fast path accepts must read the same as jansson. */
static void test_mutations(void)
{
    static const char alphabet[] = "{}[],:\"\\.-0123456789eEtrufalsn ux\x01\xc3\xa9\xff";
    unsigned seed = 12345;
    size_t len = strlen(openai);
    char *buf = malloc(len + 8);
    long taken = 0;
    for (int round = 0; round < 20000; round++) {
        memcpy(buf, openai, len + 1);
        size_t n = len;
        int edits = 1 + (int)(rand_r(&seed) % 3);
        for (int e = 0; e < edits; e++) {
            size_t at = (size_t)rand_r(&seed) % n;
            char c = alphabet[(size_t)rand_r(&seed) % (sizeof(alphabet) - 1)];
            switch (rand_r(&seed) % 3) {
            case 0:
                buf[at] = c;
                break;
            case 1:
                n = at + 1; /* cut */
                break;
            default:
                if (n < len + 7) {
                    memmove(buf + at + 1, buf + at, n - at);
                    buf[at] = c;
                    n++;
                }
            }
        }
        taken += agrees(buf, n);
    }
    free(buf);
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
