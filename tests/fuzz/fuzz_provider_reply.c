/*
 * Fuzz target: provider answers (worker/provider.c shoal_provider_outcome).
 * The first byte picks the provider and the HTTP status, the rest is the
 * body. Content comes back exactly for ok and truncated answers, and the
 * reason is one line that fits its buffer.
 */
#include <stdlib.h>
#include <string.h>

#include "tests/fuzz/fuzz.h"
#include "worker/provider.h"

static const shoal_model_t models[] = {
    {.alias = "o",
     .provider = SHOAL_PROVIDER_OPENAI,
     .endpoint = "http://127.0.0.1:9/v1/chat/completions",
     .model = "m",
     .api_key_env = "SHOAL_FUZZ_KEY",
     .max_output_tokens = 64},
    {.alias = "a",
     .provider = SHOAL_PROVIDER_ANTHROPIC,
     .endpoint = "http://127.0.0.1:9/v1/messages",
     .model = "m",
     .api_key_env = "SHOAL_FUZZ_KEY",
     .max_output_tokens = 64},
    {.alias = "z",
     .provider = SHOAL_PROVIDER_AZURE,
     .endpoint = "http://127.0.0.1:9/openai/deployments/d/chat/completions?api-version=1",
     .model = "m",
     .api_key_env = "SHOAL_FUZZ_KEY",
     .max_output_tokens = 64},
};

static const long statuses[] = {200, 200, 200, 201, 400, 401, 404, 408,
                                409, 422, 429, 500, 503, 529, 0,   299};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    const shoal_model_t *m = &models[(data[0] >> 4) % 3];
    shoal_http_reply_t r;
    memset(&r, 0, sizeof(r));
    r.status = statuses[data[0] & 15];
    r.timed_out = r.status == 0 && (data[0] & 0x80);
    r.error = r.status == 0 ? "connection refused" : NULL;
    r.body = (const char *)data + 1;
    r.len = size - 1;
    r.retry_after_ms = -1;
    r.headers = "";

    shoal_provider_reply_t out;
    char why[256];
    memset(&out, 0, sizeof(out));
    memset(why, 'x', sizeof(why));
    shoal_outcome_t oc = shoal_provider_outcome(m, &r, &out, why, sizeof(why));
    fuzz_check(strcmp(shoal_outcome_name(oc), "unknown") != 0);
    fuzz_check(memchr(why, '\0', sizeof(why)) != NULL);
    if (oc == SHOAL_OUTCOME_OK || oc == SHOAL_OUTCOME_TRUNCATED) {
        fuzz_check(out.content != NULL);
        fuzz_check(r.status >= 200 && r.status < 300);
    } else {
        fuzz_check(out.content == NULL);
        fuzz_check(why[0] != '\0');
        fuzz_check(strchr(why, '\n') == NULL && strchr(why, '\r') == NULL);
    }
    free(out.content);
    return 0;
}
