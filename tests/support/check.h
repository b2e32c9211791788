/*
 * Assertions for shoal's tests. Each prints both values and the location, then
 * aborts the test executable with a non-zero status. assert_wait polls a
 * condition to a deadline instead of sleeping blindly.
 */
#ifndef SHOAL_TESTS_SUPPORT_CHECK_H
#define SHOAL_TESTS_SUPPORT_CHECK_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define test_fail(...)                                                                             \
    do {                                                                                           \
        fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__);                                       \
        fprintf(stderr, __VA_ARGS__);                                                              \
        fputc('\n', stderr);                                                                       \
        exit(1);                                                                                   \
    } while (0)

#define assert_true(cond)                                                                          \
    do {                                                                                           \
        if (!(cond))                                                                               \
            test_fail("expected %s", #cond);                                                       \
    } while (0)

#define assert_int_eq(a, b)                                                                        \
    do {                                                                                           \
        long long a_ = (long long)(a), b_ = (long long)(b);                                        \
        if (a_ != b_)                                                                              \
            test_fail("%s == %s: %lld != %lld", #a, #b, a_, b_);                                   \
    } while (0)

#define assert_int_ge(a, b)                                                                        \
    do {                                                                                           \
        long long a_ = (long long)(a), b_ = (long long)(b);                                        \
        if (a_ < b_)                                                                               \
            test_fail("%s >= %s: %lld < %lld", #a, #b, a_, b_);                                    \
    } while (0)

#define assert_str_eq(a, b)                                                                        \
    do {                                                                                           \
        const char *a_ = (a), *b_ = (b);                                                           \
        if (!a_ || !b_ || strcmp(a_, b_) != 0)                                                     \
            test_fail("%s == %s: \"%s\" != \"%s\"", #a, #b, a_ ? a_ : "(null)",                    \
                      b_ ? b_ : "(null)");                                                         \
    } while (0)

#define assert_str_contains(hay, needle)                                                           \
    do {                                                                                           \
        const char *h_ = (hay), *n_ = (needle);                                                    \
        if (!h_ || !strstr(h_, n_))                                                                \
            test_fail("\"%s\" does not contain \"%s\"", h_ ? h_ : "(null)", n_);                   \
    } while (0)

static inline double check_now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Polls cond every 50 ms until it holds or timeout_s passes (then fails). */
#define assert_wait(cond, timeout_s, what)                                                         \
    do {                                                                                           \
        double dl_ = check_now_s() + (timeout_s);                                                  \
        while (!(cond)) {                                                                          \
            if (check_now_s() > dl_)                                                               \
                test_fail("timed out after %.0f s waiting for %s", (double)(timeout_s), what);     \
            struct timespec st_ = {0, 50 * 1000 * 1000};                                           \
            nanosleep(&st_, NULL);                                                                 \
        }                                                                                          \
    } while (0)

#endif
