/*
 * JSON text written straight into a growable buffer, for the rows the worker
 * sends to PostgreSQL and the task messages the scheduler sends workers, by
 * the thousand: building a jansson tree per row only to dump it costs a few
 * dozen allocations, this costs none beyond the buffer. Values mean what jansson's would: strings
 * must be valid UTF-8 and numbers finite, else the call writes nothing and returns -1, as
 * json_string() and json_real() refuse them. Key order is the caller's.
 *
 * A value type on the caller's stack (or in a struct): fields are private.
 * Not thread-safe; one writer per buffer.
 */
#ifndef SHOAL_COMMON_JSONTEXT_H
#define SHOAL_COMMON_JSONTEXT_H

#include <stddef.h>

typedef struct {
    char *buf;
    size_t len, cap, max;
    int first; /* no member written yet in the open object */
    int nomem; /* an allocation failed or max was reached: the text is lost */
} shoal_jsontext_t;

/* Starts an empty buffer that never grows past max bytes. */
void shoal_jsontext_init(shoal_jsontext_t *b, size_t max);
/* Frees the text (NULL ok). */
void shoal_jsontext_free(shoal_jsontext_t *b);

/* Hands the text (NUL-terminated, *len bytes) to the caller, who frees it,
 * and leaves b empty; NULL when memory or max ran out on the way. */
char *shoal_jsontext_detach(shoal_jsontext_t *b, size_t *len);

/* The text so far (NUL-terminated, *len bytes), borrowed until the next
 * call on b; NULL when memory or max ran out on the way. */
const char *shoal_jsontext_text(const shoal_jsontext_t *b, size_t *len);

/* Empties the text but keeps the buffer, for the next text of a series. */
void shoal_jsontext_reset(shoal_jsontext_t *b);

/* Appends n bytes as they are. */
void shoal_jsontext_raw(shoal_jsontext_t *b, const char *s, size_t n);

/* A quoted, escaped string of n bytes (no NUL among them), escaped as
 * jansson's json_dumps escapes it, so a text built from a jansson value's
 * strings equals its dump byte for byte; -1 (nothing written) when s is not
 * valid UTF-8. */
int shoal_jsontext_strn(shoal_jsontext_t *b, const char *s, size_t n);

/* A string whose body was read from JSON text (between its quotes, len
 * bytes, escaped when it holds escapes), written as shoal_jsontext_strn
 * writes the decoded string: a body without escapes that
 * shoal_jsonlex_string let through (no control character, quote or invalid
 * UTF-8) is that already and is copied; one with escapes is decoded and
 * written again. -1 when out of memory or not valid UTF-8. */
int shoal_jsontext_body(shoal_jsontext_t *b, const char *body, size_t len, int escaped);

/* An integer as a value (an array element, or after shoal_jsontext_key). */
void shoal_jsontext_int(shoal_jsontext_t *b, long long v);

/* '{' and '}' of an object whose members the key_ calls write. */
void shoal_jsontext_open(shoal_jsontext_t *b);
void shoal_jsontext_close(shoal_jsontext_t *b);

/* A quoted, escaped string (keys included); -1 (nothing written) when s is
 * not valid UTF-8. */
int shoal_jsontext_str(shoal_jsontext_t *b, const char *s);

/* Members of the open object; keys are plain ASCII. -1, nothing written, for
 * a value jansson refuses (see above). */
int shoal_jsontext_key_str(shoal_jsontext_t *b, const char *key, const char *v);
void shoal_jsontext_key_int(shoal_jsontext_t *b, const char *key, long long v);
int shoal_jsontext_key_real(shoal_jsontext_t *b, const char *key, double v);
/* v rounded to decimals (1..9) places, written without printf: for clock
 * readings and durations, whose last bits carry no meaning, at a tenth of
 * the cost of key_real's 17 digits. Past 2^53 units it writes key_real's
 * form. -1, nothing written, for a value that is not finite. */
int shoal_jsontext_key_fixed(shoal_jsontext_t *b, const char *key, double v, int decimals);

/* The values of key_fixed and key_real alone (an array element, or after
 * shoal_jsontext_key); -1, nothing written, for a value that is not
 * finite. */
int shoal_jsontext_fixed(shoal_jsontext_t *b, double v, int decimals);
int shoal_jsontext_real(shoal_jsontext_t *b, double v);

/* `"key":` of a member whose value the caller writes next (an object with
 * shoal_jsontext_open, an array with shoal_jsontext_raw). */
void shoal_jsontext_key(shoal_jsontext_t *b, const char *key);

#endif
