/*
 * Text built for tests (see textgen.h).
 */
#include "tests/support/textgen.h"

#include <stdlib.h>
#include <string.h>

#include "common/tokens.h"
#include "tests/support/check.h"

char *textgen_repeat(const char *unit, size_t times)
{
    size_t u = strlen(unit);
    char *s = malloc(u * times + 1);

    assert_true(s != NULL);
    for (size_t i = 0; i < times; i++)
        memcpy(s + i * u, unit, u);
    s[u * times] = '\0';
    return s;
}

char *textgen_tokens(long k)
{
    size_t n = 0, cap = 4 * (size_t)(k > 0 ? k : 0) + 4;
    char *s = calloc(1, cap);

    assert_true(s != NULL && k >= 1);
    while (shoal_tokens_estimate(s, strlen(s)) < k) {
        /* "ab", then " ab" for each further word */
        assert_true(3 * n + 3 < cap);
        memcpy(s + (n ? 3 * n - 1 : 0), n ? " ab" : "ab", n ? 3 : 2);
        s[3 * n + 2] = '\0';
        n++;
    }
    assert_int_eq(shoal_tokens_estimate(s, strlen(s)), k);
    return s;
}
