/*
 * Mutation testing helpers (see mutate.h).
 */
#include "tests/support/mutate.h"

#include <stdlib.h>
#include <string.h>

#include "tests/support/check.h"

void mutate_expect(mutate_check_fn check, const char *text, int taken)
{
    if (check(text, strlen(text)) != taken)
        test_fail("the reader %s %s", taken ? "did not take" : "took", text);
}

long mutate_count(mutate_check_fn check, const char *base, int rounds, unsigned seed)
{
    static const char alphabet[] = "{}[],:\"\\.-0123456789eEtrufalsn ux\x01\xc3\xa9\xff";
    size_t len = strlen(base);
    char *buf = malloc(len + 8);
    long taken = 0;
    assert_true(buf != NULL);
    for (int round = 0; round < rounds; round++) {
        memcpy(buf, base, len + 1);
        size_t n = len;
        int edits = 1 + (int)(rand_r(&seed) % 3);
        for (int e = 0; e < edits; e++) {
            size_t at = (size_t)rand_r(&seed) % n;
            char c = alphabet[(size_t)rand_r(&seed) % (sizeof(alphabet) - 1)];
            switch (rand_r(&seed) % 3) {
            case 0:
                buf[at] = c;
                break;
            case 1:
                n = at + 1; /* cut */
                break;
            default:
                if (n < len + 7) {
                    memmove(buf + at + 1, buf + at, n - at);
                    buf[at] = c;
                    n++;
                }
            }
        }
        taken += check(buf, n);
    }
    free(buf);
    return taken;
}
