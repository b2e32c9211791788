/*
 * Token estimate: ceil(code points / 4), counted in UTF-8 code points, not
 * bytes, and bounded by the length given rather than by a NUL.
 */
#include "common/tokens.h"

#include "tests/support/check.h"

static long est(const char *s)
{
    return shoal_tokens_estimate(s, strlen(s));
}

int main(void)
{
    assert_int_eq(est(""), 0);
    assert_int_eq(shoal_tokens_estimate(NULL, 0), 0);
    assert_int_eq(est("a"), 1);
    assert_int_eq(est("abcd"), 1);
    assert_int_eq(est("abcde"), 2);
    assert_int_eq(est("abcdefgh"), 2);
    assert_int_eq(est("abcdefghi"), 3);

    /* four two-byte code points are one token, not two */
    assert_int_eq(shoal_tokens_codepoints("\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9", 8), 4);
    assert_int_eq(est("\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9"), 1);
    /* a four-byte emoji and three ASCII letters: four code points */
    assert_int_eq(shoal_tokens_codepoints("\xf0\x9f\x9a\x80"
                                          "abc",
                                          7),
                  4);
    assert_int_eq(est("\xf0\x9f\x9a\x80"
                      "abc"),
                  1);
    /* CJK: three bytes each */
    assert_int_eq(est("\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e\xe3\x81\xae\xe3\x83\x86"), 2);

    /* the length bounds the count; embedded NULs are characters */
    assert_int_eq(shoal_tokens_estimate("abcdefgh", 4), 1);
    assert_int_eq(shoal_tokens_codepoints("a\0b\0c", 5), 5);

    /* a long text: 10000 ASCII characters are 2500 tokens */
    {
        static char big[10001];
        memset(big, 'x', 10000);
        assert_int_eq(est(big), 2500);
        big[9999] = '\0';
        assert_int_eq(est(big), 2500);
    }
    printf("tokens_test: ok\n");
    return 0;
}
