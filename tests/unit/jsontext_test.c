/*
 * common/jsontext: every string jansson accepts reads back equal (escapes,
 * control characters, multibyte UTF-8), strings jansson refuses (invalid
 * UTF-8, overlong forms, surrogates) and non-finite numbers write nothing and
 * say so, reals round-trip exactly and stay reals, the size cap loses the
 * text instead of truncating it, and string bodies read from JSON text are
 * written as their decoded strings would be. The worker's rows (written with
 * common/pgrow.h) are tested in pgrow_test.
 */
#include "common/jsontext.h"

#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "tests/support/check.h"

static json_t *load(const char *text)
{
    json_error_t jerr;
    json_t *j = json_loads(text, JSON_DECODE_ANY, &jerr);
    if (!j)
        test_fail("not JSON (%s): %s", jerr.text, text);
    return j;
}

static void test_strings(void)
{
    static const char *const ok[] = {"",
                                     "plain ascii",
                                     "quote \" backslash \\ slash /",
                                     "\b\f\n\r\t \x01\x1f\x7f",
                                     "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x90\x9f \xf4\x8f\xbf\xbf",
                                     NULL};
    for (int i = 0; ok[i]; i++) {
        shoal_jsontext_t b;
        shoal_jsontext_init(&b, 1 << 20);
        assert_int_eq(shoal_jsontext_str(&b, ok[i]), 0);
        size_t len;
        char *text = shoal_jsontext_detach(&b, &len);
        assert_true(text != NULL);
        assert_int_eq(len, strlen(text));
        json_t *j = load(text);
        assert_str_eq(json_string_value(j), ok[i]);
        json_decref(j);
        free(text);
    }
    static const char *const bad[] = {"\xff",
                                      "a\xc3",
                                      "\xc0\xaf", /* overlong */
                                      "\xe0\x80\xaf",
                                      "\xed\xa0\x80",     /* surrogate */
                                      "\xf4\x90\x80\x80", /* > U+10FFFF */
                                      NULL};
    for (int i = 0; bad[i]; i++) {
        assert_true(json_string(bad[i]) == NULL); /* jansson refuses it too */
        shoal_jsontext_t b;
        shoal_jsontext_init(&b, 1 << 20);
        shoal_jsontext_open(&b);
        assert_int_eq(shoal_jsontext_key_str(&b, "k", bad[i]), -1);
        assert_int_eq(shoal_jsontext_str(&b, bad[i]), -1);
        shoal_jsontext_close(&b);
        char *text = shoal_jsontext_detach(&b, NULL);
        assert_str_eq(text, "{}");
        free(text);
    }
}

/* A string body read from JSON text comes out as the decoded string
 * written by shoal_jsontext_strn: copied when it has no escapes, decoded and
 * written again when it has. */
static void test_bodies(void)
{
    static const struct {
        const char *body;
        int escaped;
        const char *want;
    } cases[] = {
        {"plain caf\xc3\xa9", 0, "\"plain caf\xc3\xa9\""},
        {"a\\nb \\\" \\/", 1, "\"a\\nb \\\" /\""},
        {"", 0, "\"\""},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        shoal_jsontext_t b;
        shoal_jsontext_init(&b, 1 << 20);
        assert_int_eq(
            shoal_jsontext_body(&b, cases[i].body, strlen(cases[i].body), cases[i].escaped), 0);
        char *text = shoal_jsontext_detach(&b, NULL);
        assert_str_eq(text, cases[i].want);
        free(text);
    }
}

static void test_numbers(void)
{
    static const double reals[] = {0.0, 1.0, -2.5, 1e300, 1712345678.123456, 0.1 + 0.2, 5e-324};
    shoal_jsontext_t b;
    shoal_jsontext_init(&b, 1 << 20);
    shoal_jsontext_open(&b);
    for (size_t i = 0; i < sizeof(reals) / sizeof(reals[0]); i++) {
        char k[8];
        snprintf(k, sizeof(k), "r%zu", i);
        assert_int_eq(shoal_jsontext_key_real(&b, k, reals[i]), 0);
    }
    assert_int_eq(shoal_jsontext_key_real(&b, "nan", NAN), -1);
    assert_int_eq(shoal_jsontext_key_real(&b, "inf", INFINITY), -1);
    shoal_jsontext_key_int(&b, "big", -9007199254740993LL);
    shoal_jsontext_close(&b);
    char *text = shoal_jsontext_detach(&b, NULL);
    json_t *j = load(text);
    for (size_t i = 0; i < sizeof(reals) / sizeof(reals[0]); i++) {
        char k[8];
        snprintf(k, sizeof(k), "r%zu", i);
        json_t *v = json_object_get(j, k);
        if (!json_is_real(v) || json_real_value(v) != reals[i])
            test_fail("%s: %.17g did not read back as the same real: %s", k, reals[i], text);
    }
    assert_true(json_object_get(j, "nan") == NULL);
    assert_true(json_object_get(j, "inf") == NULL);
    assert_true(json_integer_value(json_object_get(j, "big")) == -9007199254740993LL);
    json_decref(j);
    free(text);
}

/* Integers without printf: the extremes and zero read back exactly; fixed
 * decimals round to the place asked, keep the sign, refuse what is not
 * finite and fall back to 17 digits past 2^53 units; a bare key takes the
 * caller's value. */
static void test_ints_and_fixed(void)
{
    static const struct {
        const char *key;
        long long v;
    } ints[] = {{"zero", 0},        {"seven", 7},      {"minus", -1}, {"big", 1234567890123LL},
                {"max", LLONG_MAX}, {"min", LLONG_MIN}};
    const size_t nints = sizeof(ints) / sizeof(ints[0]);
    shoal_jsontext_t b;
    shoal_jsontext_init(&b, 1 << 20);
    shoal_jsontext_open(&b);
    for (size_t i = 0; i < nints; i++)
        shoal_jsontext_key_int(&b, ints[i].key, ints[i].v);
    assert_int_eq(shoal_jsontext_key_fixed(&b, "t", 1712345678.25, 6), 0);
    assert_int_eq(shoal_jsontext_key_fixed(&b, "round", 0.0000125, 5), 0);
    assert_int_eq(shoal_jsontext_key_fixed(&b, "neg", -3.5, 2), 0);
    assert_int_eq(shoal_jsontext_key_fixed(&b, "tiny_neg", -0.0000001, 3), 0);
    assert_int_eq(shoal_jsontext_key_fixed(&b, "huge", 1e300, 6), 0);
    assert_int_eq(shoal_jsontext_key_fixed(&b, "nan", NAN, 6), -1);
    assert_int_eq(shoal_jsontext_key_fixed(&b, "zero_places", 1.0, 0), -1);
    shoal_jsontext_key(&b, "nested");
    shoal_jsontext_open(&b);
    shoal_jsontext_key_int(&b, "a", 1);
    shoal_jsontext_close(&b);
    shoal_jsontext_close(&b);
    char *text = shoal_jsontext_detach(&b, NULL);
    const char *want = "\"t\":1712345678.250000,\"round\":0.00001,\"neg\":-3.50,"
                       "\"tiny_neg\":0.000,\"huge\":1.0000000000000001e+300,"
                       "\"nested\":{\"a\":1}}";
    if (!strstr(text, want))
        test_fail("fixed decimals: %s", text);
    json_t *j = load(text);
    for (size_t i = 0; i < nints; i++)
        assert_true(json_integer_value(json_object_get(j, ints[i].key)) == ints[i].v);
    json_decref(j);
    free(text);
}

static void test_cap(void)
{
    shoal_jsontext_t b;
    shoal_jsontext_init(&b, 64);
    shoal_jsontext_open(&b);
    assert_int_eq(shoal_jsontext_key_str(&b, "k", "short"), 0);
    shoal_jsontext_key_str(&b, "long",
                           "far more than sixty-four bytes of text, which the cap does not allow");
    shoal_jsontext_close(&b);
    assert_true(shoal_jsontext_detach(&b, NULL) == NULL);
    /* detached: empty and usable again */
    assert_int_eq(shoal_jsontext_str(&b, "again"), 0);
    char *text = shoal_jsontext_detach(&b, NULL);
    assert_str_eq(text, "\"again\"");
    free(text);
    shoal_jsontext_free(&b);
}

int main(void)
{
    test_strings();
    test_numbers();
    test_ints_and_fixed();
    test_cap();
    test_bodies();
    printf("jsontext_test: ok\n");
    return 0;
}
