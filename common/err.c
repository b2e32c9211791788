/*
 * Error names and the single retriable/permanent classification.
 */
#include "common/err.h"

#include <stdio.h>

const char *shoal_err_name(shoal_err_t err)
{
    switch (err) {
    case SHOAL_OK:
        return "ok";
    case SHOAL_ERR_INVALID:
        return "invalid";
    case SHOAL_ERR_RETRY:
        return "retry";
    case SHOAL_ERR_NOMEM:
        return "out of memory";
    case SHOAL_ERR_IO:
        return "i/o error";
    case SHOAL_ERR_NOTFOUND:
        return "not found";
    case SHOAL_ERR_LIMIT:
        return "limit exceeded";
    }
    return "unknown";
}

int shoal_err_retriable(shoal_err_t err)
{
    return err == SHOAL_ERR_RETRY || err == SHOAL_ERR_NOMEM;
}

shoal_err_t shoal_err_set(char *errbuf, size_t errlen, shoal_err_t err, const char *fmt, ...)
{
    if (errbuf && errlen > 0) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(errbuf, errlen, fmt, ap);
        va_end(ap);
    }
    return err;
}
