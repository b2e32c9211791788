/*
 * Scratch memory from jansson's allocator (json_get_alloc_funcs) for modules
 * that mix their own buffers with jansson values, so that a test that swaps
 * in a failing allocator with json_set_alloc_funcs reaches every error path,
 * not only the ones inside jansson. Thread-safe as long as nobody changes
 * jansson's allocator meanwhile.
 */
#ifndef SHOAL_COMMON_JSONALLOC_H
#define SHOAL_COMMON_JSONALLOC_H

#include <stddef.h>

/* n elements of size bytes (at least one byte), uninitialized. Caller frees
 * with shoal_jsonalloc_free(). NULL when out of memory or n * size
 * overflows. */
void *shoal_jsonalloc_array(size_t n, size_t size);

/* Frees what shoal_jsonalloc_array() returned. NULL is ok. */
void shoal_jsonalloc_free(void *p);

#endif
