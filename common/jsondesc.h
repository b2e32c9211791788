/*
 * JSON values described in one-line error messages: a string quoted short
 * and escaped, a value named by its type ("an integer"). Shared by the job
 * checks (common/jobcheck), the schema validator (common/jsonschema) and the
 * task message parser (common/taskmsg), so a value reads the same in every
 * message a user or operator sees. No state, no allocation; thread-safe.
 */
#ifndef SHOAL_COMMON_JSONDESC_H
#define SHOAL_COMMON_JSONDESC_H

#include <stddef.h>

#include <jansson.h>

/* Size of the buffer shoal_jsondesc_quote() writes. */
#define SHOAL_JSONDESC_QUOTE_LEN 256

/* s (len bytes) as a short double-quoted string: control characters, quotes
 * and backslashes escaped, cut after 40 code points with "...". Bytes that
 * are not UTF-8 never overrun out: the text is cut short instead. Writes out
 * and returns it. */
const char *shoal_jsondesc_quote(char out[SHOAL_JSONDESC_QUOTE_LEN], const char *s, size_t len);

/* The type of v with its article: "an object", "a string", "an integer",
 * "a number" (a real), "a boolean", "null". Static text. */
const char *shoal_jsondesc_type(const json_t *v);

#endif
