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
#include "tests/support/mutate.h"

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
    mutate_expect(agrees, message, 1);
    mutate_expect(agrees, "{}", 1);
    mutate_expect(agrees, " \n{ \"a\" : [ ] , \"b\" : { } }\t", 1);
    mutate_expect(agrees, "{\"big\":999999999999999999,\"neg\":-999999999999999999,\"z\":-0}", 1);
    mutate_expect(agrees, "{\"esc\":\"\\b\\f\\n\\r\\t\\\"\\\\\\/\"}", 1);
    char xs[1100], long_string[1200], long_key[1200];
    memset(xs, 'x', sizeof(xs) - 1);
    xs[sizeof(xs) - 1] = '\0';
    snprintf(long_string, sizeof(long_string), "{\"k\":\"%s\"}", xs);
    mutate_expect(agrees, long_string, 1);
    snprintf(long_key, sizeof(long_key), "{\"%s\\n\":1}", xs);
    mutate_expect(agrees, long_key, 1); /* a key with an escape, past the stack buffer */

    mutate_expect(agrees, "", 0);
    mutate_expect(agrees, "[]", 0);
    mutate_expect(agrees, "\"a\"", 0);
    mutate_expect(agrees, "1", 0);
    mutate_expect(agrees, "{\"a\":1,\"a\":1}", 0);
    mutate_expect(agrees, "{\"a\":\"\\u0041\"}", 0);
    mutate_expect(agrees, "{\"a\\u0041\":1}", 0);
    mutate_expect(agrees, "{\"a\":1.5}", 0);
    mutate_expect(agrees, "{\"a\":1e3}", 0);
    mutate_expect(agrees, "{\"a\":1234567890123456789}", 0);
    mutate_expect(agrees, "{\"a\":01}", 0);
    mutate_expect(agrees, "{\"a\":-}", 0);
    mutate_expect(agrees, "{\"a\":.5}", 0);
    mutate_expect(agrees, "{\"a\":nul}", 0);
    mutate_expect(agrees, "{\"a\":\"\x1f\"}", 0);
    mutate_expect(agrees, "{\"a\":\"\xe0\x80\x80\"}", 0);     /* overlong */
    mutate_expect(agrees, "{\"a\":\"\xf4\x90\x80\x80\"}", 0); /* past U+10FFFF */
    mutate_expect(agrees, "{\"a\":\"\\q\"}", 0);
    mutate_expect(agrees, "{\"a\":1}}", 0);
    mutate_expect(agrees, "{\"a\":[1 2]}", 0);
    mutate_expect(agrees, "{\"a\" 1}", 0);
    mutate_expect(agrees, "{a:1}", 0);
    char deep[300];
    size_t n = (size_t)snprintf(deep, sizeof(deep), "{\"a\":");
    for (int i = 0; i < 100; i++)
        deep[n++] = '[';
    for (int i = 0; i < 100; i++)
        deep[n++] = ']';
    deep[n++] = '}';
    deep[n] = '\0';
    mutate_expect(agrees, deep, 0);
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
    long taken = mutate_count(agrees, message, 20000, 4242);
    /* a good share of mutations stay valid and plain (inside strings) */
    assert_int_ge(taken, 1000);
    printf("jsonlex_test: %ld of 20000 mutations taken by the fast path\n", taken);
}

int main(void)
{
    test_texts();
    test_pieces();
    test_mutations();
    printf("jsonlex_test: ok\n");
    return 0;
}
