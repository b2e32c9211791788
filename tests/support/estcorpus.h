/*
 * The token-estimate corpus (tests/bench/data/estimate/): samples of prose,
 * code, JSON, mixed and non-English text, each with its o200k_base token
 * count in counts.tsv. Shared by tests/unit/tokens_test.c, which checks the
 * estimator against the committed counts, and tests/bench/estimate.c, which
 * counts again with a real tokenizer. A sample's class is its file name up
 * to the first '-' ("code-go-server.txt" is "code").
 */
#ifndef SHOAL_TESTS_SUPPORT_ESTCORPUS_H
#define SHOAL_TESTS_SUPPORT_ESTCORPUS_H

#include <stddef.h>

#define ESTCORPUS_MAX 256

typedef struct {
    char name[128]; /* file name inside the corpus folder */
    char klass[32]; /* prose, code, json, mixed, intl */
    long real;      /* o200k_base tokens */
    long estimate;  /* shoal_tokens_estimate() */
    double rel_err; /* (estimate - real) / real */
    char *text;     /* owned */
    size_t len;
} estcorpus_sample_t;

typedef struct {
    size_t n;
    estcorpus_sample_t s[ESTCORPUS_MAX];
} estcorpus_t;

/* The corpus folder under the source tree (SHOAL_SOURCE_DIR). */
const char *estcorpus_dir(void);

/* Loads every sample named in counts_path (lines "name<TAB>tokens"; '#'
 * starts a comment) from dir and estimates it. 0, or -1 with the reason on
 * stderr. Free with estcorpus_free(). */
int estcorpus_load(estcorpus_t *c, const char *dir, const char *counts_path);
void estcorpus_free(estcorpus_t *c);

/* The p-quantile (0..1, nearest rank) of |rel_err| over the samples whose
 * class is klass (NULL: all); 0 when there are none. *n_out (may be NULL)
 * receives how many samples counted. */
double estcorpus_abs_err_quantile(const estcorpus_t *c, const char *klass, double p, size_t *n_out);

#endif
