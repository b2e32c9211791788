/*
 * A strict, fast JSON reader for the plain texts the fleet sends itself by
 * the thousand (task messages, model answers): jansson's json_loadb reads a
 * byte at a time through a stream and cost more per task than everything
 * the worker does with the result.
 *
 * It is a shortcut, never the authority. It accepts only texts it checked
 * completely by RFC 8259 and jansson's rules (valid UTF-8 without overlong
 * forms or surrogates, no raw control characters in strings, nothing after
 * the value but white space) that are also plain: strings without \u
 * escapes, integers of up to 18 digits, no reals, no duplicate keys, at
 * most 64 levels. Anything else, valid or not, gets "unsure" (NULL or 0),
 * and the caller reads the text with jansson as before, so verdicts and
 * error texts stay jansson's. Thread-safe.
 */
#ifndef SHOAL_COMMON_JSONLEX_H
#define SHOAL_COMMON_JSONLEX_H

#include <jansson.h>
#include <stddef.h>

/* A string starting at p (its opening quote), text ending at end: returns
 * where it ends (after the closing quote), NULL when it is not plainly
 * valid. *escaped tells whether its body holds escapes. */
const char *shoal_jsonlex_string(const char *p, const char *end, int *escaped);

/* A number starting at p: returns where it ends, NULL when it is invalid or
 * not plain (an exponent, over 300 characters). *is_int and, for an integer
 * of up to 18 digits, *value; a longer integer is not plain either. */
const char *shoal_jsonlex_number(const char *p, const char *end, int *is_int, long long *value);

/* Writes a string body (as shoal_jsonlex_string found it, len bytes) with
 * its escapes undone to out (room for len bytes and a NUL); returns the
 * length written. */
size_t shoal_jsonlex_unescape(char *out, const char *text, size_t len);

/* The object text (len bytes) as a jansson tree equal to what json_loadb
 * builds, or NULL when the text is not a plain object (see above) or memory
 * ran out: then the caller asks json_loadb. Caller decrefs. Memory comes
 * from jansson's allocator. */
json_t *shoal_jsonlex_load(const char *text, size_t len);

#endif
