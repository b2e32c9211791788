/*
 * Text built for tests: long or repetitive inputs written as a call rather
 * than spelled out. Fails the test (tests/support/check.h) when out of memory.
 */
#ifndef SHOAL_TESTS_SUPPORT_TEXTGEN_H
#define SHOAL_TESTS_SUPPORT_TEXTGEN_H

#include <stddef.h>

/* unit written times over, NUL-terminated (caller frees). */
char *textgen_repeat(const char *unit, size_t times);

/* Text common/tokens.h estimates at exactly k tokens (k >= 1): words "ab",
 * as many as it takes (each adds less than a token, so no count is
 * skipped). Caller frees. */
char *textgen_tokens(long k);

#endif
