/*
 * ECMA-262 regular expressions for JSON Schema's "pattern" and
 * "patternProperties", as a small backtracking matcher over UTF-8 text.
 *
 * POSIX <regex.h> does not speak ECMA-262 (no lookahead, no \d, no lazy
 * quantifiers), so this is its own engine for the subset schemas use:
 * literals, ".", classes with ranges and negation, \d \w \s \D \W \S \b \B,
 * escapes (\t \n \v \f \r \0 \cX \xHH \uHHHH \u{H..}), ^ $, groups (capturing,
 * named and (?:...)), alternation, * + ? {n} {n,} {n,m} greedy and lazy, and
 * lookahead (?= (?!. It works on code points, not bytes, and has no flags
 * (JSON Schema gives none: ^ and $ anchor the whole string). Anything else
 * (backreferences, lookbehind, \p{...}) is refused when compiling, never
 * matched approximately.
 *
 * Matching never allocates and is bounded: each search gets a step budget and
 * a recursion limit, so a hostile pattern ("(a+)+b" on a long run of a's)
 * ends with SHOAL_REGEX_BUDGET instead of hanging a worker. A compiled regex
 * is read-only and may be searched from any number of threads at once.
 */
#ifndef SHOAL_COMMON_REGEX_H
#define SHOAL_COMMON_REGEX_H

#include <stddef.h>

typedef struct shoal_regex shoal_regex_t;

/* Steps one search may take by default: a few milliseconds of work. */
#define SHOAL_REGEX_DEFAULT_BUDGET 1000000UL

/* Results of shoal_regex_search(). */
#define SHOAL_REGEX_NOMATCH 0
#define SHOAL_REGEX_MATCH 1
#define SHOAL_REGEX_BUDGET (-1) /* gave up: step budget or recursion limit */

/* Compiles pattern (len bytes of UTF-8, not NUL-terminated necessarily).
 * Returns an owned regex, or NULL with the reason in errbuf: a syntax error
 * or syntax this engine does not support, with its offset. */
shoal_regex_t *shoal_regex_new(const char *pattern, size_t len, char *errbuf, size_t errlen);

void shoal_regex_destroy(shoal_regex_t *re); /* NULL is ok */

/* Searches s (len bytes of UTF-8) for a match anywhere, as ECMA-262's
 * RegExp.prototype.test does. budget is the most steps to spend (0: the
 * default). Returns SHOAL_REGEX_MATCH, SHOAL_REGEX_NOMATCH or
 * SHOAL_REGEX_BUDGET. Thread-safe on a compiled regex. */
int shoal_regex_search(const shoal_regex_t *re, const char *s, size_t len, unsigned long budget);

#endif
