/*
 * Token estimates for budgeting and chunking before any model is called.
 *
 * The estimate is deliberately rough: one token per four Unicode code points,
 * rounded up. It is close to what BPE tokenizers produce for English prose and
 * undercounts code, CJK text and unusual scripts; it never looks at a real
 * tokenizer. Use it to size chunks and to estimate cost, and use the usage a
 * provider reports for anything that is billed or compared with a limit
 * afterwards. Pure functions: safe from any thread.
 */
#ifndef SHOAL_COMMON_TOKENS_H
#define SHOAL_COMMON_TOKENS_H

#include <stddef.h>

/* Code points in len bytes of UTF-8: every byte that is not a continuation
 * byte (10xxxxxx) starts one. Invalid UTF-8 is counted the same way, without
 * an error. s may be NULL when len is 0. */
size_t shoal_tokens_codepoints(const char *s, size_t len);

/* Rough token count: ceil(code points / 4); 0 for empty text. */
long shoal_tokens_estimate(const char *s, size_t len);

#endif
