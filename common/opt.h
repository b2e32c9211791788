/*
 * Command-line and environment options from one table per binary. The table
 * drives parsing, defaults, bounds, --help and environment twins: option
 * "max-inflight" is also read from SHOAL_MAX_INFLIGHT; the flag wins over the
 * environment, the environment over the default.
 *
 * String values are borrowed from argv, environ or the table (no allocation),
 * so they live as long as the process. "-X key=value" pairs are collected into
 * a shoal_kprops_t for librdkafka; SHOAL_KAFKA_* variables are read by
 * common/kafka.c itself.
 */
#ifndef SHOAL_COMMON_OPT_H
#define SHOAL_COMMON_OPT_H

#include <stddef.h>
#include <stdio.h>

#include "common/err.h"

enum {
    SHOAL_OPT_STR = 1,  /* const char * */
    SHOAL_OPT_INT = 2,  /* long, bounded by min/max */
    SHOAL_OPT_BOOL = 3, /* int: present = 1; env "1/true/yes" or "0/false/no" */
    SHOAL_OPT_DOUBLE = 4,
    SHOAL_OPT_KPROPS = 5, /* shoal_kprops_t, filled by -X key=value */
    SHOAL_OPT_TYPE_MASK = 0xff,
    SHOAL_OPT_SECRET = 0x100, /* never printed: --help shows [redacted] */
};

#define SHOAL_KPROPS_MAX 64
typedef struct {
    int n;
    const char *kv[SHOAL_KPROPS_MAX]; /* "key=value", borrowed from argv */
} shoal_kprops_t;

struct shoal_opt {
    const char *name; /* long name without dashes; NULL ends the table */
    int type;         /* SHOAL_OPT_* | flags */
    size_t offset;    /* offsetof the field in the caller's config struct */
    const char *def;  /* default as text, or NULL */
    long min, max;    /* bounds for INT (ignored when both are 0) */
    const char *help;
};

#define SHOAL_OPT_MAX_POSITIONAL 8

typedef struct {
    int npos;
    const char *pos[SHOAL_OPT_MAX_POSITIONAL]; /* borrowed from argv */
    int help;                                  /* --help or -h was given */
} shoal_optres_t;

/* Applies defaults, then the environment, then argv[first..argc). Fills conf
 * and res. Returns SHOAL_ERR_INVALID with a message naming the option on a
 * bad value, an unknown option or too many positionals. */
shoal_err_t shoal_opt_parse(const struct shoal_opt *opts, void *conf, int argc, char **argv,
                            int first, shoal_optres_t *res, char *errbuf, size_t errlen);

/* Prints "usage: <usage>", the summary and one line per option with its
 * environment twin and default. */
void shoal_opt_help(FILE *out, const char *usage, const char *summary,
                    const struct shoal_opt *opts);

/* Writes the environment twin of an option name ("max-inflight" ->
 * "SHOAL_MAX_INFLIGHT") into buf. */
void shoal_opt_env_name(const char *name, char *buf, size_t len);

#endif
