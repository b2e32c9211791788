/*
 * Test files (see files.h).
 */
#include "tests/support/files.h"

#include <stdio.h>

#include "tests/support/check.h"

const char *files_write(const char *dir, const char *name, const char *text, char *path,
                        size_t pathlen)
{
    int n = snprintf(path, pathlen, "%s/%s", dir, name);
    assert_true(n > 0 && (size_t)n < pathlen);
    FILE *f = fopen(path, "w");
    assert_true(f != NULL);
    assert_true(fputs(text, f) >= 0);
    assert_int_eq(fclose(f), 0);
    return path;
}
