/*
 * Table-driven option parsing (see opt.h).
 */
#include "common/opt.h"

#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

void shoal_opt_env_name(const char *name, char *buf, size_t len)
{
    size_t n = (size_t)snprintf(buf, len, "SHOAL_");
    for (const char *p = name; *p && n + 1 < len; p++)
        buf[n++] = *p == '-' ? '_' : (char)toupper((unsigned char)*p);
    buf[n < len ? n : len - 1] = '\0';
}

static shoal_err_t set_value(const struct shoal_opt *o, void *conf, const char *val,
                             const char *from, char *errbuf, size_t errlen)
{
    char *field = (char *)conf + o->offset;
    char *end;

    switch (o->type & SHOAL_OPT_TYPE_MASK) {
    case SHOAL_OPT_STR:
        *(const char **)field = val;
        return SHOAL_OK;
    case SHOAL_OPT_INT: {
        errno = 0;
        long v = strtol(val, &end, 10);
        if (errno || end == val || *end)
            return shoal_err_set(errbuf, errlen, SHOAL_ERR_INVALID,
                                 "%s %s: \"%s\" is not a whole number", from, o->name, val);
        if ((o->min || o->max) && (v < o->min || v > o->max))
            return shoal_err_set(errbuf, errlen, SHOAL_ERR_INVALID,
                                 "%s %s: %ld is out of range (%ld to %ld)", from, o->name, v,
                                 o->min, o->max);
        *(long *)field = v;
        return SHOAL_OK;
    }
    case SHOAL_OPT_DOUBLE: {
        errno = 0;
        double v = strtod(val, &end);
        if (errno || end == val || *end)
            return shoal_err_set(errbuf, errlen, SHOAL_ERR_INVALID, "%s %s: \"%s\" is not a number",
                                 from, o->name, val);
        *(double *)field = v;
        return SHOAL_OK;
    }
    case SHOAL_OPT_BOOL:
        if (!strcasecmp(val, "1") || !strcasecmp(val, "true") || !strcasecmp(val, "yes") ||
            !strcasecmp(val, "on")) {
            *(int *)field = 1;
        } else if (!strcasecmp(val, "0") || !strcasecmp(val, "false") || !strcasecmp(val, "no") ||
                   !strcasecmp(val, "off") || !*val) {
            *(int *)field = 0;
        } else {
            return shoal_err_set(errbuf, errlen, SHOAL_ERR_INVALID,
                                 "%s %s: \"%s\" is not a boolean (use true or false)", from,
                                 o->name, val);
        }
        return SHOAL_OK;
    case SHOAL_OPT_KPROPS: {
        shoal_kprops_t *kp = (shoal_kprops_t *)field;
        if (!strchr(val, '=') && strcmp(val, "list") != 0)
            return shoal_err_set(errbuf, errlen, SHOAL_ERR_INVALID,
                                 "-X %s: expected key=value (or -X list)", val);
        if (kp->n >= SHOAL_KPROPS_MAX)
            return shoal_err_set(errbuf, errlen, SHOAL_ERR_LIMIT, "too many -X options (max %d)",
                                 SHOAL_KPROPS_MAX);
        kp->kv[kp->n++] = val;
        return SHOAL_OK;
    }
    }
    return shoal_err_set(errbuf, errlen, SHOAL_ERR_INVALID, "option %s has an unknown type",
                         o->name);
}

static const struct shoal_opt *find(const struct shoal_opt *opts, const char *name, size_t len)
{
    for (const struct shoal_opt *o = opts; o->name; o++)
        if (strlen(o->name) == len && strncmp(o->name, name, len) == 0)
            return o;
    return NULL;
}

shoal_err_t shoal_opt_parse(const struct shoal_opt *opts, void *conf, int argc, char **argv,
                            int first, shoal_optres_t *res, char *errbuf, size_t errlen)
{
    shoal_err_t err;
    char env[128];

    memset(res, 0, sizeof(*res));
    for (const struct shoal_opt *o = opts; o->name; o++) {
        if (o->def && (err = set_value(o, conf, o->def, "default", errbuf, errlen)) != SHOAL_OK)
            return err;
        if ((o->type & SHOAL_OPT_TYPE_MASK) == SHOAL_OPT_KPROPS)
            continue;
        shoal_opt_env_name(o->name, env, sizeof(env));
        const char *v = getenv(env);
        if (v && (err = set_value(o, conf, v, env, errbuf, errlen)) != SHOAL_OK)
            return err;
    }

    for (int i = first; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            res->help = 1;
            continue;
        }
        if (!strcmp(a, "-X")) {
            const struct shoal_opt *o = NULL;
            for (const struct shoal_opt *p = opts; p->name; p++)
                if ((p->type & SHOAL_OPT_TYPE_MASK) == SHOAL_OPT_KPROPS)
                    o = p;
            if (!o)
                return shoal_err_set(errbuf, errlen, SHOAL_ERR_INVALID,
                                     "-X is not an option of this command");
            if (i + 1 >= argc)
                return shoal_err_set(errbuf, errlen, SHOAL_ERR_INVALID, "-X needs key=value");
            if ((err = set_value(o, conf, argv[++i], "option", errbuf, errlen)) != SHOAL_OK)
                return err;
            continue;
        }
        if (!strcmp(a, "--")) {
            for (i++; i < argc; i++) {
                if (res->npos >= SHOAL_OPT_MAX_POSITIONAL)
                    return shoal_err_set(errbuf, errlen, SHOAL_ERR_INVALID, "too many arguments");
                res->pos[res->npos++] = argv[i];
            }
            break;
        }
        if (a[0] != '-' || a[1] == '\0') {
            if (res->npos >= SHOAL_OPT_MAX_POSITIONAL)
                return shoal_err_set(errbuf, errlen, SHOAL_ERR_INVALID,
                                     "too many arguments at \"%s\"", a);
            res->pos[res->npos++] = a;
            continue;
        }
        if (a[1] != '-')
            return shoal_err_set(errbuf, errlen, SHOAL_ERR_INVALID,
                                 "unknown option \"%s\" (see --help)", a);
        const char *name = a + 2;
        const char *eq = strchr(name, '=');
        const struct shoal_opt *o = find(opts, name, eq ? (size_t)(eq - name) : strlen(name));
        if (!o || (o->type & SHOAL_OPT_TYPE_MASK) == SHOAL_OPT_KPROPS)
            return shoal_err_set(errbuf, errlen, SHOAL_ERR_INVALID,
                                 "unknown option \"%s\" (see --help)", a);
        const char *val;
        if (eq) {
            val = eq + 1;
        } else if ((o->type & SHOAL_OPT_TYPE_MASK) == SHOAL_OPT_BOOL) {
            val = "true";
        } else if (i + 1 < argc) {
            val = argv[++i];
        } else {
            return shoal_err_set(errbuf, errlen, SHOAL_ERR_INVALID, "option --%s needs a value",
                                 o->name);
        }
        if ((err = set_value(o, conf, val, "option", errbuf, errlen)) != SHOAL_OK)
            return err;
    }
    return SHOAL_OK;
}

void shoal_opt_help(FILE *out, const char *usage, const char *summary, const struct shoal_opt *opts)
{
    char env[128];

    fprintf(out, "usage: %s\n\n%s\n\noptions (each also read from its environment twin):\n", usage,
            summary);
    for (const struct shoal_opt *o = opts; o->name; o++) {
        int type = o->type & SHOAL_OPT_TYPE_MASK;
        if (type == SHOAL_OPT_KPROPS) {
            fprintf(out,
                    "  -X key=value\n      %s\n      (also SHOAL_KAFKA_<KEY>, dots as "
                    "underscores; -X list prints librdkafka's properties)\n",
                    o->help);
            continue;
        }
        shoal_opt_env_name(o->name, env, sizeof(env));
        fprintf(out, "  --%s%s\n      %s\n      env %s", o->name,
                type == SHOAL_OPT_BOOL ? "" : " VALUE", o->help, env);
        if (o->type & SHOAL_OPT_SECRET)
            fprintf(out, ", secret: never printed");
        else if (o->def)
            fprintf(out, ", default %s", *o->def ? o->def : "empty");
        if (type == SHOAL_OPT_INT && (o->min || o->max))
            fprintf(out, ", range %ld..%ld", o->min, o->max);
        fputc('\n', out);
    }
    fprintf(out, "  -h, --help\n      show this help\n");
}
