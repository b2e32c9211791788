/*
 * stderr capture for tests (see capture.h).
 */
#include "tests/support/capture.h"

#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "tests/support/check.h"

#define CAPTURE_MAX 65536

static int saved_stderr = -1;
static FILE *capture_file;

void capture_stderr_begin(void)
{
    fflush(stderr);
    saved_stderr = dup(STDERR_FILENO);
    assert_true(saved_stderr >= 0);
    capture_file = tmpfile();
    assert_true(capture_file != NULL);
    assert_true(dup2(fileno(capture_file), STDERR_FILENO) == STDERR_FILENO);
}

char *capture_stderr_end(void)
{
    fflush(stderr);
    assert_true(dup2(saved_stderr, STDERR_FILENO) == STDERR_FILENO);
    close(saved_stderr);
    saved_stderr = -1;
    rewind(capture_file);
    char *text = malloc(CAPTURE_MAX);
    assert_true(text != NULL);
    size_t n = fread(text, 1, CAPTURE_MAX - 1, capture_file);
    text[n] = '\0';
    fclose(capture_file);
    capture_file = NULL;
    return text;
}
