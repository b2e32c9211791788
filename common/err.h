/*
 * Error codes shared by every module. Functions return a shoal_err_t and write
 * the reason into a caller-supplied buffer; only main() prints or exits.
 * shoal_err_retriable() is the one place that says which failures a retry may
 * cure (transient: network, 429, 5xx, a restarting database) and which never
 * will (a bad job, a bad file).
 */
#ifndef SHOAL_COMMON_ERR_H
#define SHOAL_COMMON_ERR_H

#include <stdarg.h>
#include <stddef.h>

typedef enum {
    SHOAL_OK = 0,
    SHOAL_ERR_INVALID,  /* bad input: permanent */
    SHOAL_ERR_RETRY,    /* transient: try again later */
    SHOAL_ERR_NOMEM,    /* allocation failed */
    SHOAL_ERR_IO,       /* file or system call failed */
    SHOAL_ERR_NOTFOUND, /* the thing asked for does not exist */
    SHOAL_ERR_LIMIT,    /* a size or count cap was hit */
} shoal_err_t;

/* Short lower-case name of an error code; never NULL. */
const char *shoal_err_name(shoal_err_t err);

/* True when a retry may succeed. */
int shoal_err_retriable(shoal_err_t err);

/* Formats into errbuf (may be NULL) and returns err, so callers can write
 * `return shoal_err_set(buf, len, SHOAL_ERR_INVALID, "...", ...);`. */
shoal_err_t shoal_err_set(char *errbuf, size_t errlen, shoal_err_t err, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

#endif
