/*
 * Fuzz target: rate-limit headers (worker/provider.c shoal_provider_signals)
 * of OpenAI, Anthropic and Retry-After, in any header block. Every signal is
 * absent (-1) or a count or wait that is not negative, waits at most a day.
 */
#include <string.h>

#include "tests/fuzz/fuzz.h"
#include "worker/provider.h"

#define DAY_MS (24L * 3600 * 1000)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    shoal_provider_signals_t s;
    /* 2024-06-01T00:00:00Z, so dates in the seeds are near it */
    shoal_provider_signals((const char *)data, size, 1717200000.0, &s);
    const long counts[] = {s.limit_requests,      s.remaining_requests,
                           s.limit_tokens,        s.remaining_tokens,
                           s.limit_input_tokens,  s.remaining_input_tokens,
                           s.limit_output_tokens, s.remaining_output_tokens};
    const long waits[] = {s.retry_after_ms, s.reset_requests_ms, s.reset_tokens_ms,
                          s.reset_input_tokens_ms, s.reset_output_tokens_ms};
    for (size_t i = 0; i < sizeof(counts) / sizeof(counts[0]); i++)
        fuzz_check(counts[i] == -1 || counts[i] >= 0);
    for (size_t i = 0; i < sizeof(waits) / sizeof(waits[0]); i++)
        fuzz_check(waits[i] == -1 || (waits[i] >= 0 && waits[i] <= DAY_MS));
    return 0;
}
