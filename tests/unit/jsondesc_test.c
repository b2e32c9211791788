/*
 * JSON values in error messages: quoting (escapes, the cut after 40 code
 * points, never inside a character, bounded on bytes that are not UTF-8) and
 * type names.
 */
#include "common/jsondesc.h"

#include <string.h>

#include "tests/support/check.h"

static const char *quote(char out[SHOAL_JSONDESC_QUOTE_LEN], const char *s)
{
    return shoal_jsondesc_quote(out, s, strlen(s));
}

static void test_quote(void)
{
    char q[SHOAL_JSONDESC_QUOTE_LEN];
    char in[400];

    assert_str_eq(quote(q, ""), "\"\"");
    assert_str_eq(quote(q, "abc"), "\"abc\"");
    assert_str_eq(quote(q, "a\"b\\c"), "\"a\\\"b\\\\c\"");
    assert_str_eq(quote(q, "l1\nl2\tx"), "\"l1\\nl2\\tx\"");
    assert_str_eq(quote(q, "\x01\x1f\x7f"), "\"\\u0001\\u001f\\u007f\"");
    assert_true(shoal_jsondesc_quote(q, "ab", 1) == q);
    assert_str_eq(q, "\"a\"");
    /* length, not the terminator, bounds the input */
    assert_str_eq(shoal_jsondesc_quote(q, "a\0b", 3), "\"a\\u0000b\"");

    /* 40 code points pass whole; the 41st is cut with "..." */
    memset(in, 'x', 41);
    in[40] = '\0';
    quote(q, in);
    assert_int_eq(strlen(q), 42);
    in[40] = 'y';
    in[41] = '\0';
    quote(q, in);
    assert_int_eq(strlen(q), 45);
    assert_true(strcmp(q + 41, "...\"") == 0);

    /* code points, not bytes: 41 two-byte characters cut after 40 of them */
    for (int i = 0; i < 41; i++)
        memcpy(in + 2 * i, "\xc3\xa9", 2);
    in[82] = '\0';
    quote(q, in);
    assert_int_eq(strlen(q), 1 + 80 + 3 + 1);
    assert_true(memcmp(q + 79, "\xc3\xa9...\"", 6) == 0);

    /* the longest valid case, 40 escaped control characters, is whole */
    memset(in, 1, 41);
    in[41] = '\0';
    quote(q, in);
    assert_int_eq(strlen(q), 1 + 40 * 6 + 3 + 1);

    /* continuation bytes count no code points: bounded by bytes instead */
    memset(in, 0x80, 399);
    in[399] = '\0';
    quote(q, in);
    assert_true(strlen(q) < SHOAL_JSONDESC_QUOTE_LEN);
    assert_int_eq(q[strlen(q) - 1], '"');
}

static void test_type(void)
{
    static const struct {
        const char *json;
        const char *want;
    } cases[] = {
        {"{}", "an object"}, {"[]", "an array"},    {"\"s\"", "a string"},  {"1", "an integer"},
        {"1.5", "a number"}, {"true", "a boolean"}, {"false", "a boolean"}, {"null", "null"},
    };

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        json_t *v = json_loads(cases[i].json, JSON_DECODE_ANY, NULL);

        assert_true(v != NULL);
        assert_str_eq(shoal_jsondesc_type(v), cases[i].want);
        json_decref(v);
    }
}

int main(void)
{
    test_quote();
    test_type();
    printf("jsondesc_test: ok\n");
    return 0;
}
