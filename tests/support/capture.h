/*
 * Captures what a test writes to stderr (file descriptor 2, so write(2) from
 * the logger is caught too). Not nestable.
 */
#ifndef SHOAL_TESTS_SUPPORT_CAPTURE_H
#define SHOAL_TESTS_SUPPORT_CAPTURE_H

/* Sends stderr to a temporary file until capture_stderr_end. */
void capture_stderr_begin(void);

/* Restores stderr and returns what was written, at most 64 KiB (caller frees). */
char *capture_stderr_end(void);

#endif
