/*
 * Dollar amounts the CLI prints: small costs keep four significant digits,
 * a dollar and more two decimals, zero and dust print as $0.00.
 */
#include <stdio.h>

#include "cli/usd.h"
#include "tests/support/check.h"

static void check(double usd, const char *want)
{
    char buf[32];
    assert_str_eq(shoal_usd_format(usd, buf, sizeof(buf)), want);
}

int main(void)
{
    check(0, "$0.00");
    check(0.000123, "$0.000123");
    check(0.0001234567, "$0.0001235");
    check(0.0000123, "$0.0000123");
    check(0.0035, "$0.0035");
    check(0.5, "$0.50");
    check(0.123456, "$0.1235");
    check(1, "$1.00");
    check(12.3456, "$12.35");
    check(1234.5, "$1234.50");
    check(-0.25, "-$0.25");
    check(1e-12, "$0.00");
    /* A buffer too small is still terminated. */
    char small[4];
    shoal_usd_format(0.000123, small, sizeof(small));
    assert_int_eq((long)sizeof(small) > 0 && small[3] == '\0', 1);
    printf("usd_test: ok\n");
    return 0;
}
