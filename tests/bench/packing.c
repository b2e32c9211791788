/*
 * Packing of a job (pure planning, no stack): 2,000 items of mixed sizes in
 * 20 groups, the groups scattered through the job, parsed and chunked by
 * shoal_job_parse exactly as the scheduler does, with max_items 40,
 * max_tokens 8000 and group_by. Compares the calls with one item per call
 * (the default max_items 1) and checks every chunk against the limits.
 *   RESULT bench=packing calls_unpacked=N calls_packed=N size_ratio=F over_limit=N
 * size_ratio is the largest chunk's estimated tokens over the mean chunk's.
 * Target: calls_packed <= 0.3 x calls_unpacked, size_ratio <= 1.5,
 * over_limit = 0.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "common/job.h"

#define ITEMS 2000
#define GROUPS 20
#define MAX_TOKENS 8000
#define MAX_ITEMS 40

static uint64_t rng = 42;

static unsigned rnd(unsigned n)
{
    rng = rng * 6364136223846793005ULL + 1442695040888963407ULL;
    return (unsigned)(rng >> 33) % n;
}

/* Mixed sizes: mostly short prompts, a fair share of medium ones, a few long
 * (about 4 characters a token: 10 to 3,000 tokens). */
static size_t item_chars(void)
{
    unsigned r = rnd(100);

    if (r < 60)
        return 40 + rnd(400);
    if (r < 92)
        return 400 + rnd(2400);
    return 2800 + rnd(9200);
}

static shoal_job_t *make_job(int packed)
{
    json_t *doc =
        json_pack("{s:s, s:s, s:s, s:s, s:s}", "job_id", "bench-packing", "tenant", "bench",
                  "model", "sim-small", "system", "You document one module of a web service's API.",
                  "prompt_template", "Describe these endpoints:\n{{input}}");
    json_t *items = json_array();
    char *text, err[256], *buf = malloc(12001);
    static const char words[] = "get post user order billing token page limit cursor id ";

    rng = 42;
    for (size_t i = 0; i < ITEMS; i++) {
        size_t n = item_chars();
        char id[32], group[32];

        for (size_t k = 0; k < n; k++)
            buf[k] = words[(k + i) % (sizeof(words) - 1)];
        buf[n] = '\0';
        snprintf(id, sizeof(id), "e%zu", i);
        snprintf(group, sizeof(group), "module-%u", rnd(GROUPS));
        json_array_append_new(items,
                              json_pack("{s:s, s:s, s:s}", "id", id, "input", buf, "group", group));
    }
    free(buf);
    json_object_set_new(doc, "items", items);
    if (packed)
        json_object_set_new(doc, "chunking",
                            json_pack("{s:i, s:i, s:s}", "max_tokens", MAX_TOKENS, "max_items",
                                      MAX_ITEMS, "group_by", "group"));
    text = json_dumps(doc, JSON_COMPACT);
    json_decref(doc);
    shoal_job_t *job = shoal_job_parse(text, strlen(text), 0, NULL, err, sizeof(err));
    free(text);
    if (!job) {
        fprintf(stderr, "packing: job refused: %s\n", err);
        exit(1);
    }
    return job;
}

int main(void)
{
    shoal_job_t *unpacked = make_job(0), *packed = make_job(1);
    size_t calls = shoal_job_n_chunks(packed), over = 0;
    long largest = 0;
    double sum = 0;

    for (size_t k = 0; k < calls; k++) {
        long est = shoal_job_chunk_est_tokens(packed, k);
        size_t first, end;

        shoal_job_chunk_range(packed, k, &first, &end);
        if (est > MAX_TOKENS || end - first > MAX_ITEMS)
            over++;
        if (est > largest)
            largest = est;
        sum += (double)est;
    }
    for (size_t k = 0; getenv("PACKING_CHUNKS") && k < calls; k++) {
        size_t first, end;
        shoal_job_chunk_range(packed, k, &first, &end);
        fprintf(stderr, "chunk %zu: %ld tokens, %zu items\n", k,
                shoal_job_chunk_est_tokens(packed, k), end - first);
    }
    printf("RESULT bench=packing calls_unpacked=%zu calls_packed=%zu size_ratio=%.3f "
           "over_limit=%zu\n",
           shoal_job_n_chunks(unpacked), calls, (double)largest / (sum / (double)calls), over);
    shoal_job_destroy(unpacked);
    shoal_job_destroy(packed);
    return 0;
}
