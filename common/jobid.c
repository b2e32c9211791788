/*
 * Job identity (see jobid.h). SHA-256 is written out here (FIPS 180-4) so the
 * ids do not depend on a crypto library being linked; it hashes a job message
 * once at intake, far from any hot path.
 */
#include "common/jobid.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>

struct sha256 {
    uint32_t h[8];
    uint8_t block[64];
    size_t fill;
    uint64_t bits;
};

static const uint32_t K[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2};

static uint32_t ror(uint32_t x, int n)
{
    return (x >> n) | (x << (32 - n));
}

static void compress(struct sha256 *s, const uint8_t *p)
{
    uint32_t w[64], v[8];

    for (int i = 0; i < 16; i++)
        w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 |
               (uint32_t)p[4 * i + 2] << 8 | p[4 * i + 3];
    for (int i = 16; i < 64; i++) {
        uint32_t s0 = ror(w[i - 15], 7) ^ ror(w[i - 15], 18) ^ (w[i - 15] >> 3);
        uint32_t s1 = ror(w[i - 2], 17) ^ ror(w[i - 2], 19) ^ (w[i - 2] >> 10);
        w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    memcpy(v, s->h, sizeof(v));
    for (int i = 0; i < 64; i++) {
        uint32_t t1 = v[7] + (ror(v[4], 6) ^ ror(v[4], 11) ^ ror(v[4], 25)) +
                      ((v[4] & v[5]) ^ (~v[4] & v[6])) + K[i] + w[i];
        uint32_t t2 = (ror(v[0], 2) ^ ror(v[0], 13) ^ ror(v[0], 22)) +
                      ((v[0] & v[1]) ^ (v[0] & v[2]) ^ (v[1] & v[2]));
        memmove(v + 1, v, 7 * sizeof(v[0]));
        v[4] += t1;
        v[0] = t1 + t2;
    }
    for (int i = 0; i < 8; i++)
        s->h[i] += v[i];
}

static void sha_init(struct sha256 *s)
{
    static const uint32_t h0[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                                   0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
    memcpy(s->h, h0, sizeof(h0));
    s->fill = 0;
    s->bits = 0;
}

static void sha_update(struct sha256 *s, const void *data, size_t len)
{
    const uint8_t *p = data;

    s->bits += (uint64_t)len * 8;
    while (len > 0) {
        size_t take = 64 - s->fill < len ? 64 - s->fill : len;
        memcpy(s->block + s->fill, p, take);
        s->fill += take;
        p += take;
        len -= take;
        if (s->fill == 64) {
            compress(s, s->block);
            s->fill = 0;
        }
    }
}

static void sha_final(struct sha256 *s, uint8_t out[32])
{
    uint64_t bits = s->bits;
    uint8_t pad = 0x80, zero = 0, len[8];

    sha_update(s, &pad, 1);
    while (s->fill != 56)
        sha_update(s, &zero, 1);
    for (int i = 0; i < 8; i++)
        len[i] = (uint8_t)(bits >> (56 - 8 * i));
    sha_update(s, len, 8);
    for (int i = 0; i < 8; i++) {
        out[4 * i] = (uint8_t)(s->h[i] >> 24);
        out[4 * i + 1] = (uint8_t)(s->h[i] >> 16);
        out[4 * i + 2] = (uint8_t)(s->h[i] >> 8);
        out[4 * i + 3] = (uint8_t)s->h[i];
    }
}

void shoal_jobid_sha256(const void *data, size_t len, uint8_t out[32])
{
    struct sha256 s;

    sha_init(&s);
    sha_update(&s, data, len);
    sha_final(&s, out);
}

static void hex(const uint8_t *b, size_t n, char *out)
{
    static const char digits[] = "0123456789abcdef";

    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[b[i] >> 4];
        out[2 * i + 1] = digits[b[i] & 15];
    }
    out[2 * n] = '\0';
}

void shoal_jobid_derive(const char *cluster_id, const char *topic, int partition, long long offset,
                        long long timestamp_ms, const void *value, size_t len,
                        char out[SHOAL_JOBID_LEN])
{
    struct sha256 s;
    char where[600];
    uint8_t d[32];
    /* NUL-separated, so no two different tuples hash the same text */
    int n = snprintf(where, sizeof(where), "shoal-job-id-v1%c%s%c%s%c%d%c%lld%c%lld%c", 0,
                     cluster_id ? cluster_id : "", 0, topic ? topic : "", 0, partition, 0, offset,
                     0, timestamp_ms, 0);

    sha_init(&s);
    sha_update(&s, where, n > 0 && (size_t)n < sizeof(where) ? (size_t)n : sizeof(where) - 1);
    sha_update(&s, value, len);
    sha_final(&s, d);
    out[0] = 'j';
    out[1] = '-';
    hex(d, 16, out + 2);
}

void shoal_jobid_content_hash(const void *value, size_t len, char out[SHOAL_JOBID_HASH_LEN])
{
    uint8_t d[32];

    shoal_jobid_sha256(value, len, d);
    hex(d, 32, out);
}

shoal_err_t shoal_jobid_random(char *out, size_t len)
{
    uint8_t r[16];
    size_t got = 0;

    if (len < 37)
        return SHOAL_ERR_LIMIT;
    while (got < sizeof(r)) {
        ssize_t n = getrandom(r + got, sizeof(r) - got, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return SHOAL_ERR_IO;
        got += (size_t)n;
    }
    memcpy(out, "job-", 4);
    hex(r, sizeof(r), out + 4);
    return SHOAL_OK;
}
