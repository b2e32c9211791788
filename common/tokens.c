/*
 * Rough token estimates (see tokens.h for how rough, and why that is enough).
 */
#include "common/tokens.h"

#include <limits.h>

size_t shoal_tokens_codepoints(const char *s, size_t len)
{
    size_t n = 0;

    if (!s)
        return 0;
    for (size_t i = 0; i < len; i++) {
        if (((unsigned char)s[i] & 0xC0) != 0x80)
            n++;
    }
    return n;
}

long shoal_tokens_estimate(const char *s, size_t len)
{
    size_t cp = shoal_tokens_codepoints(s, len);
    size_t t = cp / 4 + (cp % 4 != 0);

    return t > (size_t)LONG_MAX ? LONG_MAX : (long)t;
}
