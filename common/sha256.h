/*
 * SHA-256 (FIPS 180-4), for content hashes such as the result cache's keys
 * (common/cachekey.h). Not for secrets: no constant-time guarantees are
 * needed or made. A context is a plain value on the caller's stack; the
 * functions keep no other state and are thread-safe.
 */
#ifndef SHOAL_COMMON_SHA256_H
#define SHOAL_COMMON_SHA256_H

#include <stddef.h>
#include <stdint.h>

#define SHOAL_SHA256_LEN 32                         /* bytes of a digest */
#define SHOAL_SHA256_HEX (SHOAL_SHA256_LEN * 2 + 1) /* lower-case hex and its NUL */

/* Fields are private to sha256.c; declared here only so a context can live
 * on the stack. */
typedef struct {
    uint32_t h[8];
    uint64_t bytes; /* message length so far */
    unsigned char block[64];
    size_t used; /* bytes waiting in block */
} shoal_sha256_t;

void shoal_sha256_init(shoal_sha256_t *c);

/* Adds len bytes of data (NULL is fine when len is 0). */
void shoal_sha256_update(shoal_sha256_t *c, const void *data, size_t len);

/* Writes the digest of everything added; c must be initialized again before
 * further use. */
void shoal_sha256_final(shoal_sha256_t *c, unsigned char out[SHOAL_SHA256_LEN]);

/* The digest as 64 lower-case hex digits and a NUL. */
void shoal_sha256_hex(const unsigned char digest[SHOAL_SHA256_LEN], char out[SHOAL_SHA256_HEX]);

#endif
