/*
 * Token-estimate corpus loading and error statistics (see estcorpus.h).
 */
#include "tests/support/estcorpus.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/tokens.h"

#ifndef SHOAL_SOURCE_DIR
#define SHOAL_SOURCE_DIR "."
#endif

const char *estcorpus_dir(void)
{
    static char dir[1024];
    const char *src = getenv("SHOAL_SOURCE_DIR");

    snprintf(dir, sizeof(dir), "%s/tests/bench/data/estimate",
             src && *src ? src : SHOAL_SOURCE_DIR);
    return dir;
}

static char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    char *buf = NULL;
    long n;

    if (!f)
        return NULL;
    if (fseek(f, 0, SEEK_END) == 0 && (n = ftell(f)) >= 0 && fseek(f, 0, SEEK_SET) == 0 &&
        (buf = malloc((size_t)n + 1)) != NULL) {
        *len = fread(buf, 1, (size_t)n, f);
        buf[*len] = '\0';
    }
    fclose(f);
    return buf;
}

int estcorpus_load(estcorpus_t *c, const char *dir, const char *counts_path)
{
    char line[512], path[1200];
    FILE *f = fopen(counts_path, "r");

    memset(c, 0, sizeof(*c));
    if (!f) {
        fprintf(stderr, "cannot open %s: %s\n", counts_path, strerror(errno));
        return -1;
    }
    while (fgets(line, sizeof(line), f)) {
        char *tab = strchr(line, '\t'), *end;
        estcorpus_sample_t *s;

        if (line[0] == '#' || !tab)
            continue;
        *tab = '\0';
        if (c->n == ESTCORPUS_MAX) {
            fprintf(stderr, "%s: more than %d samples\n", counts_path, ESTCORPUS_MAX);
            break;
        }
        s = &c->s[c->n];
        snprintf(s->name, sizeof(s->name), "%s", line);
        snprintf(s->klass, sizeof(s->klass), "%.*s", (int)strcspn(line, "-"), line);
        errno = 0;
        s->real = strtol(tab + 1, &end, 10);
        if (errno || end == tab + 1 || s->real <= 0) {
            fprintf(stderr, "%s: bad count for %s\n", counts_path, s->name);
            fclose(f);
            estcorpus_free(c);
            return -1;
        }
        snprintf(path, sizeof(path), "%s/%s", dir, s->name);
        if (!(s->text = slurp(path, &s->len))) {
            fprintf(stderr, "cannot read %s\n", path);
            fclose(f);
            estcorpus_free(c);
            return -1;
        }
        s->estimate = shoal_tokens_estimate(s->text, s->len);
        s->rel_err = (double)(s->estimate - s->real) / (double)s->real;
        c->n++;
    }
    fclose(f);
    return 0;
}

void estcorpus_free(estcorpus_t *c)
{
    for (size_t i = 0; i < c->n; i++)
        free(c->s[i].text);
    c->n = 0;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;

    return (x > y) - (x < y);
}

double estcorpus_abs_err_quantile(const estcorpus_t *c, const char *klass, double p, size_t *n_out)
{
    double e[ESTCORPUS_MAX];
    size_t n = 0, rank;

    for (size_t i = 0; i < c->n; i++) {
        if (klass && strcmp(c->s[i].klass, klass) != 0)
            continue;
        e[n++] = c->s[i].rel_err < 0 ? -c->s[i].rel_err : c->s[i].rel_err;
    }
    if (n_out)
        *n_out = n;
    if (n == 0)
        return 0;
    qsort(e, n, sizeof(e[0]), cmp_double);
    /* nearest rank: the smallest value with at least p of the samples at or below it */
    rank = (size_t)(p * (double)n + 0.999999);
    if (rank < 1)
        rank = 1;
    if (rank > n)
        rank = n;
    return e[rank - 1];
}
