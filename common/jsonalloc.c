/*
 * Scratch memory through jansson's allocator hooks (see jsonalloc.h). The
 * hooks are read on every call, not cached, so a test may swap them between
 * calls.
 */
#include "common/jsonalloc.h"

#include <stdint.h>

#include <jansson.h>

void *shoal_jsonalloc_array(size_t n, size_t size)
{
    json_malloc_t m;
    json_free_t f;

    if (size && n > SIZE_MAX / size)
        return NULL;
    json_get_alloc_funcs(&m, &f);
    n *= size;
    return m(n ? n : 1);
}

void shoal_jsonalloc_free(void *p)
{
    json_malloc_t m;
    json_free_t f;

    if (!p)
        return;
    json_get_alloc_funcs(&m, &f);
    f(p);
}
