/*
 * libFuzzer targets (tests/fuzz/fuzz_<target>.c): each defines
 * LLVMFuzzerTestOneInput and checks what must hold for every input, aborting
 * (fuzz_check) when it does not, so a wrong answer is found like a crash.
 * The same files build two ways: with clang and -fsanitize=fuzzer for
 * `make fuzz`, and with replay.c as a plain program that ctest runs over the
 * seed corpora and the kept regression inputs.
 */
#ifndef SHOAL_TESTS_FUZZ_FUZZ_H
#define SHOAL_TESTS_FUZZ_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define fuzz_check(cond)                                                                           \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: broken invariant: %s\n", __FILE__, __LINE__, #cond);           \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

#endif
