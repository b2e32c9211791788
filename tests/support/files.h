/*
 * Test files: writing a small text file for a test to hand to a command.
 * Fails the test (tests/support/check.h) instead of returning an error.
 */
#ifndef SHOAL_TESTS_SUPPORT_FILES_H
#define SHOAL_TESTS_SUPPORT_FILES_H

#include <stddef.h>

/* Writes text to dir/name (replacing it) and returns its path, written into
 * path (pathlen bytes). */
const char *files_write(const char *dir, const char *name, const char *text, char *path,
                        size_t pathlen);

#endif
