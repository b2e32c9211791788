/*
 * common/jsonlex: the fast reader of plain JSON. Whatever tree it builds is
 * the tree json_loadb builds from the same text (hand-written texts and
 * thousands of mutations of a real task message); what it is unsure of (\u
 * escapes, duplicate keys, reals, long integers, deep nesting, invalid texts,
 * texts that are not an object) it leaves alone; strings and numbers are
 * scanned to their ends.
 */
#include "common/jsonlex.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tests/support/check.h"

/* When the fast reader builds a tree, it is jansson's; returns whether it
 * built one. */
static int agrees(const char *text, size_t len)
{
    json_t *fast = shoal_jsonlex_load(text, len);
    if (!fast)
        return 0;
    json_t *slow = json_loadb(text, len, JSON_REJECT_DUPLICATES, NULL);
    if (!slow)
        test_fail("fast reader accepted what jansson refuses: %.*s", (int)len, text);
    if (!json_equal(fast, slow))
        test_fail("trees differ for %.*s", (int)len, text);
    json_decref(fast);
    json_decref(slow);
    return 1;
}

static void accepted(const char *text)
{
    if (!agrees(text, strlen(text)))
        test_fail("fast reader unsure of %s", text);
}

static void unsure(const char *text)
{
    if (agrees(text, strlen(text)))
        test_fail("fast reader accepted %s", text);
}

static const char message[] =
    "{\"v\":1,\"task_id\":\"job-7:000000\",\"job_id\":\"job-7\",\"chunk\":0,\"n_chunks\":2,"
    "\"tenant\":\"acme\",\"priority\":\"normal\",\"model\":\"fast\",\"fallback_models\":[],"
    "\"system\":\"You sort \\\"tickets\\\".\\n\\t\\/ caf\xc3\xa9 \xf0\x9f\x98\x80\","
    "\"prompt_template\":\"Classify:\\n{{input}}\",\"items\":[{\"id\":\"a\",\"input\":"
    "\"printer jams\"},{\"id\":\"b\",\"input\":\"\"}],\"output\":{\"format\":\"json\","
    "\"on_truncated\":\"retry\",\"schema\":{\"type\":\"object\",\"required\":[]}},"
    "\"max_attempts\":5,\"timeout_ms\":60000,\"est_tokens\":-12,\"deadline_s\":null,"
    "\"flags\":[true,false,null]}";

static void test_texts(void)
{
    accepted(message);
    accepted("{}");
    accepted(" \n{ \"a\" : [ ] , \"b\" : { } }\t");
    accepted("{\"big\":999999999999999999,\"neg\":-999999999999999999,\"z\":-0}");
    accepted("{\"esc\":\"\\b\\f\\n\\r\\t\\\"\\\\\\/\"}");
    char xs[1100], long_string[1200], long_key[1200];
    memset(xs, 'x', sizeof(xs) - 1);
    xs[sizeof(xs) - 1] = '\0';
    snprintf(long_string, sizeof(long_string), "{\"k\":\"%s\"}", xs);
    accepted(long_string);
    snprintf(long_key, sizeof(long_key), "{\"%s\\n\":1}", xs);
    accepted(long_key); /* a key with an escape, past the stack buffer */

    unsure("");
    unsure("[]");
    unsure("\"a\"");
    unsure("1");
    unsure("{\"a\":1,\"a\":1}");
    unsure("{\"a\":\"\\u0041\"}");
    unsure("{\"a\\u0041\":1}");
    unsure("{\"a\":1.5}");
    unsure("{\"a\":1e3}");
    unsure("{\"a\":1234567890123456789}");
    unsure("{\"a\":01}");
    unsure("{\"a\":-}");
    unsure("{\"a\":.5}");
    unsure("{\"a\":nul}");
    unsure("{\"a\":\"\x1f\"}");
    unsure("{\"a\":\"\xe0\x80\x80\"}");     /* overlong */
    unsure("{\"a\":\"\xf4\x90\x80\x80\"}"); /* past U+10FFFF */
    unsure("{\"a\":\"\\q\"}");
    unsure("{\"a\":1}}");
    unsure("{\"a\":[1 2]}");
    unsure("{\"a\" 1}");
    unsure("{a:1}");
    char deep[300];
    size_t n = (size_t)snprintf(deep, sizeof(deep), "{\"a\":");
    for (int i = 0; i < 100; i++)
        deep[n++] = '[';
    for (int i = 0; i < 100; i++)
        deep[n++] = ']';
    deep[n++] = '}';
    deep[n] = '\0';
    unsure(deep);
    assert_true(shoal_jsonlex_load(NULL, 0) == NULL);
    /* a NUL inside is not the end of the text */
    assert_true(shoal_jsonlex_load("{}\0{}", 5) == NULL);
}

static void test_pieces(void)
{
    int esc = -1, is_int = -1;
    long long v = 0;
    const char s[] = "\"a\\\"b\" tail";
    const char *end = shoal_jsonlex_string(s, s + strlen(s), &esc);
    assert_true(end == s + 6);
    assert_int_eq(esc, 1);
    char out[16];
    assert_int_eq(shoal_jsonlex_unescape(out, s + 1, 4), 3);
    assert_str_eq(out, "a\"b");
    assert_true(shoal_jsonlex_string(s, s + 4, &esc) == NULL); /* cut short */
    const char num[] = "-1250,";
    assert_true(shoal_jsonlex_number(num, num + 6, &is_int, &v) == num + 5);
    assert_int_eq(is_int, 1);
    assert_int_eq(v, -1250);
    const char real[] = "3.25]";
    assert_true(shoal_jsonlex_number(real, real + 5, &is_int, &v) == real + 4);
    assert_int_eq(is_int, 0);
}

/* Mutations of a real message: byte changes, cuts and insertions. Whatever
 * the fast reader builds must be jansson's tree. */
static void test_mutations(void)
{
    static const char alphabet[] = "{}[],:\"\\.-0123456789eEtrufalsn ux\x01\xc3\xa9\xff";
    unsigned seed = 4242;
    size_t len = strlen(message);
    char *buf = malloc(len + 8);
    long taken = 0;
    for (int round = 0; round < 20000; round++) {
        memcpy(buf, message, len + 1);
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
                n = at + 1;
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
    assert_int_ge(taken, 1000);
    printf("jsonlex_test: %ld of 20000 mutations read by the fast reader\n", taken);
}

int main(void)
{
    test_texts();
    test_pieces();
    test_mutations();
    printf("jsonlex_test: ok\n");
    return 0;
}
