/*
 * The token estimator (common/tokens.c) against a real tokenizer: every
 * sample of tests/bench/data/estimate/ is counted with o200k_base by npm's
 * js-tiktoken, a benchmark-only dependency installed into the build folder
 * (<build>/estimate-npm) on first run; when npm itself is missing it is
 * installed from Debian's "npm" package first (apt-get, needs root). Counts
 * that differ from the committed counts.tsv are reported (copy the fresh
 * file over it to update). Without node the committed counts are used and
 * the run says so. Prints each sample's error and each class's, ending with
 *   RESULT bench=estimate samples=N estimate_error_p95=F
 * Target: estimate_error_p95 <= 0.10.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "tests/support/estcorpus.h"

#ifndef SHOAL_BINARY_DIR
#define SHOAL_BINARY_DIR "build"
#endif

#define JS_TIKTOKEN "js-tiktoken@1"

static const char count_js[] =
    "const { getEncoding } = require('js-tiktoken');\n"
    "const fs = require('fs'), path = require('path');\n"
    "const enc = getEncoding('o200k_base'), dir = process.argv[2];\n"
    "console.log('# o200k_base token counts of each sample, from js-tiktoken');\n"
    "for (const f of fs.readdirSync(dir).filter((n) => n.endsWith('.txt')).sort())\n"
    "  console.log(f + '\\t' + enc.encode(fs.readFileSync(path.join(dir, f), 'utf8')).length);\n";

static int run(const char *cmd)
{
    fprintf(stderr, "estimate: %s\n", cmd);
    return system(cmd);
}

static int have(const char *prog)
{
    char cmd[256];
    snprintf(cmd, sizeof(cmd), "command -v %s >/dev/null 2>&1", prog);
    return system(cmd) == 0;
}

/* Installs js-tiktoken under dir unless it is there; 0 when it is usable. */
static int ensure_tokenizer(const char *dir)
{
    char probe[1200], cmd[1400];
    struct stat st;

    snprintf(probe, sizeof(probe), "%s/node_modules/js-tiktoken/package.json", dir);
    if (stat(probe, &st) == 0)
        return have("node") ? 0 : -1;
    if (!have("npm")) {
        fprintf(stderr, "estimate: npm is missing; installing Debian's npm package\n");
        if (run("apt-get install -y -q npm >/dev/null 2>&1 || "
                "(apt-get update -q >/dev/null 2>&1 && apt-get install -y -q npm >/dev/null)") !=
                0 ||
            !have("npm"))
            return -1;
    }
    snprintf(cmd, sizeof(cmd),
             "mkdir -p '%s' && npm install --prefix '%s' --no-audit --no-fund --silent %s", dir,
             dir, JS_TIKTOKEN);
    if (run(cmd) != 0 || stat(probe, &st) != 0)
        return -1;
    return have("node") ? 0 : -1;
}

/* Writes fresh counts of the corpus to out; 0 on success. */
static int count_corpus(const char *dir, const char *out)
{
    char js[1200], cmd[4000];
    FILE *f;

    snprintf(js, sizeof(js), "%s/count.js", dir);
    if (!(f = fopen(js, "w")))
        return -1;
    fputs(count_js, f);
    fclose(f);
    snprintf(cmd, sizeof(cmd), "cd '%s' && node count.js '%s' > '%s'", dir, estcorpus_dir(), out);
    return run(cmd) == 0 ? 0 : -1;
}

int main(void)
{
    static estcorpus_t fresh, committed;
    char dir[1024], fresh_path[1200], committed_path[1200];
    const char *bin = getenv("SHOAL_BINARY_DIR");
    const estcorpus_t *c = &fresh;
    static const char *const classes[] = {"prose", "code", "json", "mixed", "intl"};
    size_t n;

    snprintf(dir, sizeof(dir), "%s/estimate-npm", bin && *bin ? bin : SHOAL_BINARY_DIR);
    snprintf(fresh_path, sizeof(fresh_path), "%s/counts.tsv", dir);
    snprintf(committed_path, sizeof(committed_path), "%s/counts.tsv", estcorpus_dir());
    if (estcorpus_load(&committed, estcorpus_dir(), committed_path) != 0)
        return 1;
    if (ensure_tokenizer(dir) != 0 || count_corpus(dir, fresh_path) != 0 ||
        estcorpus_load(&fresh, estcorpus_dir(), fresh_path) != 0) {
        fprintf(stderr, "estimate: no js-tiktoken; using the committed counts\n");
        c = &committed;
    } else {
        int differ = 0;
        for (size_t i = 0; i < fresh.n; i++) {
            long old = -1;
            for (size_t j = 0; j < committed.n; j++)
                if (!strcmp(committed.s[j].name, fresh.s[i].name))
                    old = committed.s[j].real;
            if (old != fresh.s[i].real) {
                printf("count changed: %s committed %ld, js-tiktoken %ld\n", fresh.s[i].name, old,
                       fresh.s[i].real);
                differ = 1;
            }
        }
        if (differ || fresh.n != committed.n)
            printf("the committed counts are stale: cp %s %s\n", fresh_path, committed_path);
    }

    for (size_t i = 0; i < c->n; i++)
        printf("%-28s %6zu bytes  real %5ld  estimate %5ld  error %+.3f\n", c->s[i].name,
               c->s[i].len, c->s[i].real, c->s[i].estimate, c->s[i].rel_err);
    for (size_t k = 0; k < sizeof(classes) / sizeof(classes[0]); k++) {
        double p50 = estcorpus_abs_err_quantile(c, classes[k], 0.5, &n);
        double p95 = estcorpus_abs_err_quantile(c, classes[k], 0.95, NULL);
        double sum = 0;
        for (size_t i = 0; i < c->n; i++)
            if (!strcmp(c->s[i].klass, classes[k]))
                sum += c->s[i].rel_err;
        printf("class %-6s samples=%zu error_p50=%.3f error_p95=%.3f mean_signed=%+.3f\n",
               classes[k], n, p50, p95, n ? sum / (double)n : 0.0);
    }
    double p95 = estcorpus_abs_err_quantile(c, NULL, 0.95, &n);
    printf("RESULT bench=estimate samples=%zu estimate_error_p95=%.3f\n", n, p95);
    estcorpus_free(&fresh);
    estcorpus_free(&committed);
    return 0;
}
