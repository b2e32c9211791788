/*
 * Splitting a job document into its header and its items without decoding
 * it whole: a job file of 1,000,000 items is scanned in place (the text can
 * be a mapped file) and each item handed out as the span of text it is, so
 * that a job can be sent in parts (scheduler/parts.h) with memory that does
 * not grow with the job. Only the members other than "items" are decoded.
 * The scan checks the JSON structure (strings, brackets, separators), not the
 * values: an item's text is decoded by whoever uses it. One thread at a time.
 */
#ifndef SHOAL_COMMON_JOBSPLIT_H
#define SHOAL_COMMON_JOBSPLIT_H

#include <stddef.h>

#include <jansson.h>

#include "common/err.h"

typedef struct shoal_jobsplit shoal_jobsplit_t;

/* Scans text[0..len) (borrowed: it must outlive the handle) as one JSON
 * object with an "items" array. NULL with the reason in errbuf ("out of
 * memory", or where the text stops being what it must be). */
shoal_jobsplit_t *shoal_jobsplit_new(const char *text, size_t len, char *errbuf, size_t errlen);

void shoal_jobsplit_destroy(shoal_jobsplit_t *s); /* NULL is ok */

/* The object's members other than "items", decoded. Borrowed until
 * shoal_jobsplit_destroy(); the caller may change it. */
json_t *shoal_jobsplit_header(shoal_jobsplit_t *s);

/* The next item's text (a span of the borrowed text, not NUL terminated):
 * 1 with *item and *len set, 0 after the last item, -1 with the reason in
 * errbuf when the array is malformed there. */
int shoal_jobsplit_next(shoal_jobsplit_t *s, const char **item, size_t *len, char *errbuf,
                        size_t errlen);

/* Hands the item the last shoal_jobsplit_next() returned back: the next call
 * returns it again. Once only between two calls of shoal_jobsplit_next(). */
void shoal_jobsplit_unread(shoal_jobsplit_t *s);

/* Starts the items over from the first. */
void shoal_jobsplit_rewind(shoal_jobsplit_t *s);

/* A place in the items: shoal_jobsplit_tell() notes where the next item
 * starts, shoal_jobsplit_seek() goes back there (a place of the same split,
 * noted since its last rewind). */
typedef struct {
    const char *cur;
    int started;
} shoal_jobsplit_pos_t;
void shoal_jobsplit_tell(const shoal_jobsplit_t *s, shoal_jobsplit_pos_t *pos);
void shoal_jobsplit_seek(shoal_jobsplit_t *s, const shoal_jobsplit_pos_t *pos);

#endif
