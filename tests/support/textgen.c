/*
 * Text built for tests (see textgen.h).
 */
#include "tests/support/textgen.h"

#include <stdlib.h>
#include <string.h>

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
