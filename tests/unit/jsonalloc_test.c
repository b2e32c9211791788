/*
 * Scratch memory through jansson's allocator: every call goes through the
 * hooks installed at the time (so a failing allocator reaches the caller),
 * sizes that overflow are refused, a zero size still gets a pointer.
 */
#include "common/jsonalloc.h"

#include <stdint.h>
#include <stdlib.h>

#include <jansson.h>

#include "tests/support/check.h"

static int mallocs, frees, fail_next;

static void *counting_malloc(size_t n)
{
    mallocs++;
    if (fail_next) {
        fail_next = 0;
        return NULL;
    }
    return malloc(n);
}

static void counting_free(void *p)
{
    frees++;
    free(p);
}

int main(void)
{
    json_malloc_t m0;
    json_free_t f0;
    long *a;
    void *z;

    json_get_alloc_funcs(&m0, &f0);
    json_set_alloc_funcs(counting_malloc, counting_free);

    a = shoal_jsonalloc_array(8, sizeof(*a));
    assert_true(a != NULL);
    for (int i = 0; i < 8; i++)
        a[i] = i; /* all of it is usable (ASan checks) */
    assert_int_eq(a[7], 7);
    assert_int_eq(mallocs, 1);
    shoal_jsonalloc_free(a);
    assert_int_eq(frees, 1);

    z = shoal_jsonalloc_array(0, sizeof(long));
    assert_true(z != NULL);
    shoal_jsonalloc_free(z);
    assert_int_eq(frees, 2);

    /* overflow: refused before the allocator is asked */
    assert_true(shoal_jsonalloc_array(SIZE_MAX / 2 + 1, 2) == NULL);
    assert_int_eq(mallocs, 2);

    /* a failing allocator is the caller's NULL */
    fail_next = 1;
    assert_true(shoal_jsonalloc_array(1, 16) == NULL);
    assert_int_eq(mallocs, 3);

    shoal_jsonalloc_free(NULL);
    assert_int_eq(frees, 2);

    json_set_alloc_funcs(m0, f0);
    printf("jsonalloc_test: ok\n");
    return 0;
}
