/*
 * Job identity (see jobid.h), on common/sha256.
 */
#include "common/jobid.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>

#include "common/sha256.h"

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
    shoal_sha256_t s;
    char where[600];
    unsigned char d[SHOAL_SHA256_LEN];
    /* NUL-separated, so no two different tuples hash the same text */
    int n = snprintf(where, sizeof(where), "shoal-job-id-v1%c%s%c%s%c%d%c%lld%c%lld%c", 0,
                     cluster_id ? cluster_id : "", 0, topic ? topic : "", 0, partition, 0, offset,
                     0, timestamp_ms, 0);

    shoal_sha256_init(&s);
    shoal_sha256_update(&s, where,
                        n > 0 && (size_t)n < sizeof(where) ? (size_t)n : sizeof(where) - 1);
    shoal_sha256_update(&s, value, len);
    shoal_sha256_final(&s, d);
    out[0] = 'j';
    out[1] = '-';
    hex(d, 16, out + 2);
}

void shoal_jobid_content_hash(const void *value, size_t len, char out[SHOAL_JOBID_HASH_LEN])
{
    shoal_sha256_t s;
    unsigned char d[SHOAL_SHA256_LEN];

    shoal_sha256_init(&s);
    shoal_sha256_update(&s, value, len);
    shoal_sha256_final(&s, d);
    shoal_sha256_hex(d, out);
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
