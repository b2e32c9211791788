/*
 * Dollar formatting (see usd.h).
 */
#include "cli/usd.h"

#include <stdio.h>
#include <string.h>

char *shoal_usd_format(double usd, char *buf, size_t len)
{
    if (!len)
        return buf;
    const char *sign = usd < 0 ? "-" : "";
    double v = usd < 0 ? -usd : usd;
    int decimals = 2;
    if (v > 0 && v < 1) {
        /* Four significant digits: 0.5 needs 4 decimals, 0.000123 needs 7. */
        double scaled = v;
        decimals = 3;
        while (scaled < 1 && decimals < 12) {
            scaled *= 10;
            decimals++;
        }
        if (scaled < 1) { /* below a billionth of a dollar: nothing to read */
            v = 0;
            decimals = 2;
        }
    }
    int n = snprintf(buf, len, "%s$%.*f", v == 0 ? "" : sign, decimals, v);
    if (n < 0 || (size_t)n >= len)
        return buf;
    /* Drop trailing zeros past the second decimal: $0.0035, not $0.003500. */
    char *dot = strchr(buf, '.');
    if (dot) {
        char *end = buf + n - 1;
        while (end > dot + 2 && *end == '0')
            *end-- = '\0';
    }
    return buf;
}
