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

/* Containers nest at most this deep (jansson allows 2048; deeper texts are
 * left to it). */
#define SHOAL_JSONLEX_DEPTH_MAX 64

/* Past JSON white space (space, tab, newline, carriage return) from p, not
 * beyond end. */
const char *shoal_jsonlex_ws(const char *p, const char *end);

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

/* How many bytes follow the lead byte at p (not ASCII) of a UTF-8 sequence
 * ending before end, by jansson's rule: no overlong forms, no surrogates,
 * nothing past U+10FFFF; 0 when the sequence is invalid. Reading stops at
 * the first byte that does not belong, a NUL included. */
size_t shoal_jsonlex_utf8_tail(const unsigned char *p, const unsigned char *end);

/* What a walk reports, in the text's order: a member's key before its value
 * (its text between the quotes, escapes as written), an element's index
 * before its value, a container's open and close, and each scalar (numbers
 * as shoal_jsonlex_number reads them; literals by their first letter). A
 * callback returns 0 to go on, anything else to stop the walk. */
typedef struct {
    int (*key)(void *arg, const char *text, size_t len, int escaped);
    int (*index)(void *arg, size_t i);
    int (*open)(void *arg, int is_array);
    int (*close)(void *arg, int is_array);
    int (*string)(void *arg, const char *text, size_t len, int escaped);
    int (*number)(void *arg, int is_int, long long value);
    int (*literal)(void *arg, char first);
} shoal_jsonlex_visitor_t;

/* Walks text (len bytes), which must be one object, through v; 1 when the
 * whole text was walked (plain, see above, and no callback stopped it), 0
 * when unsure. */
int shoal_jsonlex_walk(const char *text, size_t len, const shoal_jsonlex_visitor_t *v, void *arg);

/* The object text (len bytes) as a jansson tree equal to what json_loadb
 * builds, or NULL when the text is not a plain object (see above) or memory
 * ran out: then the caller asks json_loadb. Caller decrefs. Memory comes
 * from jansson's allocator. */
json_t *shoal_jsonlex_load(const char *text, size_t len);

/* shoal_jsonlex_load that tells, when it returns NULL, whether memory ran
 * out (*nomem 1) rather than the text being unsure (*nomem 0), for callers
 * that report running out of memory instead of asking jansson again. */
json_t *shoal_jsonlex_load_nomem(const char *text, size_t len, int *nomem);

#endif
