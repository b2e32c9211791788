/*
 * Dollar amounts as the CLI prints them: readable at any size. A fixed
 * "%.4f" shows a small job's $0.000012 as $0.0000, which says nothing, so
 * amounts under a dollar keep four significant digits instead.
 */
#ifndef SHOAL_CLI_USD_H
#define SHOAL_CLI_USD_H

#include <stddef.h>

/* Writes usd as "$12.35" (two decimals from one dollar up), "$0.0035",
 * "$0.000123" (four significant digits, trailing zeros dropped, at least two
 * decimals) or "$0.00" for zero, into buf (always terminated). Amounts under
 * $1e-9 print as $0.00. Returns buf. */
char *shoal_usd_format(double usd, char *buf, size_t len);

#endif
