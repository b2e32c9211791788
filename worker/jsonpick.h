/*
 * A few members picked out of a JSON text without building a tree: the
 * worker reads four or five values of every answer, and a jansson tree of
 * the whole answer cost more than the rest of the reply's handling.
 *
 * The reader is a fast path, not a second JSON parser to trust: it says yes
 * only to texts it checked completely and whose picked values it understood
 * (one JSON object; strings of valid UTF-8 with no \u escapes in them; no
 * member on a picked path given twice; integers of up to 18 digits, reals
 * without exponents). Anything else, valid or not, makes it answer "unsure",
 * and the caller parses with jansson as before, so its verdicts and error
 * texts stay jansson's. Nothing is allocated but the strings handed out.
 * Thread-safe.
 */
#ifndef SHOAL_WORKER_JSONPICK_H
#define SHOAL_WORKER_JSONPICK_H

#include <stddef.h>

typedef enum {
    SHOAL_JSONPICK_ABSENT = 0,
    SHOAL_JSONPICK_STRING,
    SHOAL_JSONPICK_INTEGER,
    SHOAL_JSONPICK_OTHER, /* a real, true, false, null, an object or an array */
} shoal_jsonpick_kind_t;

typedef struct {
    /* In: the member's path from the top object, components split by '.',
     * array elements by their index ("choices.0.message.content"). */
    const char *path;
    /* Out: what is there. A string is its text between the quotes, escapes
     * as written (see shoal_jsonpick_string); an integer is its value. */
    shoal_jsonpick_kind_t kind;
    const char *text;
    size_t len;
    long long integer;
} shoal_jsonpick_t;

/* 1 when text (len bytes) is a JSON object the fast path accepts (see
 * above), with every pick filled in (ABSENT when the path is not there); 0
 * when unsure: the caller must parse the text itself. At most 16 picks. */
int shoal_jsonpick_object(const char *text, size_t len, shoal_jsonpick_t *picks, size_t npicks);

/* A picked string's value with its escapes undone, NUL-terminated; caller
 * frees. NULL when the pick is not a string or memory ran out. */
char *shoal_jsonpick_string(const shoal_jsonpick_t *p);

#endif
