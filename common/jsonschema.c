/*
 * JSON Schema (draft 2020-12, with draft-07 compatibility) compiled to a graph
 * of nodes, one per subschema, then evaluated without allocating (but for a
 * sort buffer when uniqueItems meets a large array, see find_repeat).
 *
 * Compiling walks the schema (a private deep copy) once: every keyword's
 * value is checked and turned into a field of the node, patterns become
 * common/regex.h programs, subschemas become child nodes. $id and $anchor
 * register URIs as the walk meets them; $ref is resolved after the walk
 * against those URIs (a reference to a location the walk did not compile,
 * e.g. inside an unknown keyword, compiles it then). Finally a depth-first
 * search over the "same instance" edges ($ref, allOf, anyOf, oneOf, not,
 * if/then/else, dependentSchemas) refuses a cycle: such a schema would
 * recurse forever on the first instance that reaches it.
 *
 * Evaluation returns at the first violation, unless every violation is
 * asked for (shoal_jsonschema_validate_all): then the fields of an object
 * and the entries of an array are each checked after one of them failed,
 * up to a cap, while everything else still stops at its first. Subschemas whose failure is
 * not itself an error (anyOf branches, not, if, contains) run "quiet": no
 * text is formatted for them. A regex over its step budget or evaluation
 * deeper than SHOAL_JSONSCHEMA_MAX_DEPTH aborts the whole validation with a
 * message saying so, since the verdict is then unknown.
 */
#include "common/jsonschema.h"

#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/jsondesc.h"
#include "common/regex.h"

#define MAX_COMPILE_DEPTH 128 /* nesting of subschemas inside one another */
#define MAX_CHAIN 1000        /* longest chain of same-instance edges */
#define QUOTE_LEN SHOAL_JSONDESC_QUOTE_LEN
#define LIST_LEN 200   /* enum lists in messages */
#define PATH_SHOWN 120 /* instance path characters in messages */

enum {
    T_NULL = 1 << 0,
    T_BOOLEAN = 1 << 1,
    T_OBJECT = 1 << 2,
    T_ARRAY = 1 << 3,
    T_NUMBER = 1 << 4,
    T_STRING = 1 << 5,
    T_INTEGER = 1 << 6,
};

struct snode;

struct named {
    const char *key; /* borrowed from the schema copy */
    struct snode *node;
};

struct depreq {
    const char *key;
    const json_t *names; /* array of strings */
};

struct patprop {
    const char *src;
    shoal_regex_t *re;
    struct snode *node;
};

struct snode {
    const json_t *json;
    char *where; /* JSON pointer of this schema ("" for the root) */
    char *base;  /* base URI in effect here */
    const char *ref;
    struct snode *ref_node;
    int boolean; /* -1: an object schema; else the boolean schema's value */
    unsigned types;
    const json_t *enum_vals, *const_val;
    const json_t *multiple_of, *maximum, *ex_maximum, *minimum, *ex_minimum;
    long long min_length, max_length; /* -1: none */
    const char *pattern_src;
    shoal_regex_t *pattern;
    struct snode **prefix;
    size_t n_prefix;
    struct snode *items; /* entries after the prefix */
    struct snode *contains;
    long long min_contains, max_contains;
    long long min_items, max_items;
    int unique;
    const json_t *props_obj;
    struct named *props;
    size_t n_props;
    struct patprop *pats;
    size_t n_pats;
    struct snode *additional;
    const json_t *required;
    long long min_props, max_props;
    struct snode *names;
    struct depreq *dep_req;
    size_t n_dep_req;
    struct named *dep_schemas;
    size_t n_dep_schemas;
    struct snode **all_of, **any_of, **one_of;
    size_t n_all_of, n_any_of, n_one_of;
    struct snode *not_, *if_, *then_, *else_;
    int dfs; /* 0 unvisited, 1 on the stack, 2 done */
};

struct resource {
    char *uri; /* absolute, no fragment; anchors as uri#name */
    const json_t *json;
};

struct shoal_jsonschema {
    json_t *doc;
    struct snode *root;
    struct snode **nodes;
    size_t n_nodes, cap_nodes;
    int draft7;
};

struct compiler {
    shoal_jsonschema_t *s;
    struct resource *res;
    size_t n_res, cap_res;
    char *errbuf;
    size_t errlen;
    int failed;
};

/* ---- small helpers ---- */

static shoal_err_t cfail(struct compiler *cc, shoal_err_t err, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static shoal_err_t cfail(struct compiler *cc, shoal_err_t err, const char *fmt, ...)
{
    va_list ap;

    if (cc->failed)
        return err;
    cc->failed = 1;
    if (cc->errbuf && cc->errlen) {
        va_start(ap, fmt);
        vsnprintf(cc->errbuf, cc->errlen, fmt, ap);
        va_end(ap);
    }
    return err;
}

static void nomem(struct compiler *cc)
{
    cfail(cc, SHOAL_ERR_NOMEM, "out of memory");
}

/* "/" for the root in messages, the pointer otherwise. */
static const char *at(const char *where)
{
    return *where ? where : "/";
}

static char *dupstr(struct compiler *cc, const char *s, size_t n)
{
    char *d = malloc(n + 1);

    if (!d) {
        nomem(cc);
        return NULL;
    }
    memcpy(d, s, n);
    d[n] = '\0';
    return d;
}

/* where + "/" + seg with seg escaped as a JSON pointer token. */
static char *ptr_join(struct compiler *cc, const char *where, const char *seg)
{
    size_t n = strlen(where), m = 0, o;
    char *out;

    for (const char *p = seg; *p; p++)
        m += (*p == '~' || *p == '/') ? 2 : 1;
    if (!(out = malloc(n + m + 2))) {
        nomem(cc);
        return NULL;
    }
    memcpy(out, where, n);
    o = n;
    out[o++] = '/';
    for (const char *p = seg; *p; p++) {
        if (*p == '~' || *p == '/') {
            out[o++] = '~';
            out[o++] = *p == '~' ? '0' : '1';
        } else {
            out[o++] = *p;
        }
    }
    out[o] = '\0';
    return out;
}

static char *ptr_index(struct compiler *cc, const char *where, const char *key, size_t i)
{
    char seg[64];
    char *a = ptr_join(cc, where, key), *b;

    if (!a)
        return NULL;
    snprintf(seg, sizeof(seg), "%zu", i);
    b = ptr_join(cc, a, seg);
    free(a);
    return b;
}

/* JSON Schema's "integer": a number without a fractional part. */
static int is_integral(const json_t *v)
{
    if (json_is_integer(v))
        return 1;
    if (json_is_real(v)) {
        double d = json_real_value(v);
        return isfinite(d) && floor(d) == d;
    }
    return 0;
}

static int num_cmp(const json_t *a, const json_t *b)
{
    if (json_is_integer(a) && json_is_integer(b)) {
        json_int_t x = json_integer_value(a), y = json_integer_value(b);
        return (x > y) - (x < y);
    }
    {
        long double x = json_is_integer(a) ? (long double)json_integer_value(a)
                                           : (long double)json_real_value(a);
        long double y = json_is_integer(b) ? (long double)json_integer_value(b)
                                           : (long double)json_real_value(b);
        return (x > y) - (x < y);
    }
}

/* JSON equality as JSON Schema defines it: 1 and 1.0 are equal. */
static int json_eq(const json_t *a, const json_t *b)
{
    if (json_is_number(a) && json_is_number(b))
        return num_cmp(a, b) == 0;
    if (json_typeof(a) != json_typeof(b))
        return 0;
    switch (json_typeof(a)) {
    case JSON_OBJECT: {
        const char *key;
        const json_t *va;

        if (json_object_size(a) != json_object_size(b))
            return 0;
        json_object_foreach((json_t *)a, key, va)
        {
            const json_t *vb = json_object_get(b, key);
            if (!vb || !json_eq(va, vb))
                return 0;
        }
        return 1;
    }
    case JSON_ARRAY:
        if (json_array_size(a) != json_array_size(b))
            return 0;
        for (size_t i = 0; i < json_array_size(a); i++) {
            if (!json_eq(json_array_get(a, i), json_array_get(b, i)))
                return 0;
        }
        return 1;
    case JSON_STRING:
        return json_string_length(a) == json_string_length(b) &&
               memcmp(json_string_value(a), json_string_value(b), json_string_length(a)) == 0;
    default:
        return 1;
    }
}

static size_t codepoints(const char *s, size_t len)
{
    size_t n = 0;

    for (size_t i = 0; i < len; i++)
        n += ((unsigned char)s[i] & 0xC0) != 0x80;
    return n;
}

/* ---- URIs (enough of RFC 3986 for references inside one document) ---- */

static int has_scheme(const char *s)
{
    const char *p = s;

    if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z')))
        return 0;
    while ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
           *p == '+' || *p == '-' || *p == '.')
        p++;
    return *p == ':';
}

/* Removes "." and ".." segments from a path, in place (RFC 3986, 5.2.4).
 * out never passes in, so nothing is written ahead of what is still read. */
static void remove_dots(char *path)
{
    char *in = path, *out = path;

    while (*in) {
        if (strncmp(in, "/./", 3) == 0) {
            in += 2;
        } else if (strcmp(in, "/.") == 0) {
            in += 1;
            *in = '/';
            in[1] = '\0';
        } else if (strncmp(in, "/../", 4) == 0 || strcmp(in, "/..") == 0) {
            int last = in[3] == '\0';
            in += 3;
            while (out > path && *--out != '/')
                ;
            if (last) {
                *out++ = '/';
                break;
            }
        } else {
            do {
                *out++ = *in++;
            } while (*in && *in != '/');
        }
    }
    *out = '\0';
}

/* Resolves ref against base; caller frees. */
static char *uri_resolve(struct compiler *cc, const char *base, const char *ref)
{
    size_t blen = strcspn(base, "#"), rlen = strlen(ref), cut;
    const char *authority_end, *path_start;
    char *out;

    if (has_scheme(ref) || !*base)
        out = dupstr(cc, ref, rlen);
    else if (*ref == '#' || *ref == '\0') {
        if ((out = malloc(blen + rlen + 1))) {
            memcpy(out, base, blen);
            memcpy(out + blen, ref, rlen + 1);
        }
    } else {
        /* the base's scheme and authority end where its path starts */
        path_start = strchr(base, ':');
        path_start = path_start ? path_start + 1 : base;
        if (strncmp(path_start, "//", 2) == 0) {
            authority_end = path_start + 2 + strcspn(path_start + 2, "/?#");
            path_start = authority_end;
        }
        if (strncmp(ref, "//", 2) == 0)
            cut = (size_t)(strchr(base, ':') ? strchr(base, ':') + 1 - base : 0);
        else if (*ref == '/')
            cut = (size_t)(path_start - base);
        else {
            const char *slash = NULL;
            for (const char *p = path_start; p < base + blen && *p != '?'; p++) {
                if (*p == '/')
                    slash = p;
            }
            cut = slash ? (size_t)(slash + 1 - base) : (size_t)(path_start - base);
            if (!slash && path_start > base && path_start[-1] != ':') {
                /* authority without a path: the reference starts the path */
                if ((out = malloc(cut + rlen + 2))) {
                    memcpy(out, base, cut);
                    out[cut] = '/';
                    memcpy(out + cut + 1, ref, rlen + 1);
                }
                goto done;
            }
        }
        if ((out = malloc(cut + rlen + 1))) {
            memcpy(out, base, cut);
            memcpy(out + cut, ref, rlen + 1);
        }
    }
done:
    if (!out) {
        nomem(cc);
        return NULL;
    }
    {
        /* normalise the path's dot segments, leaving the fragment alone */
        char *p = strchr(out, ':'), *frag = strchr(out, '#'), save = 0;
        p = p ? p + 1 : out;
        if (strncmp(p, "//", 2) == 0)
            p += 2 + strcspn(p + 2, "/?#");
        if (frag) {
            save = *frag;
            *frag = '\0';
        }
        if (*p == '/' && (strstr(p, "/.") != NULL)) {
            char *tail = frag ? dupstr(cc, frag + 1, strlen(frag + 1)) : NULL;
            if (frag && !tail) {
                free(out);
                return NULL;
            }
            remove_dots(p);
            if (frag) {
                size_t n = strlen(out);
                memmove(out + n + 1, tail, strlen(tail) + 1);
                out[n] = save;
                free(tail);
            }
        } else if (frag) {
            *frag = save;
        }
    }
    return out;
}

static int add_resource(struct compiler *cc, char *uri, const json_t *json)
{
    for (size_t i = 0; i < cc->n_res; i++) {
        if (strcmp(cc->res[i].uri, uri) == 0) {
            if (cc->res[i].json != json) {
                cfail(cc, SHOAL_ERR_INVALID, "\"%s\" is defined twice", uri);
                free(uri);
                return -1;
            }
            free(uri);
            return 0;
        }
    }
    if (cc->n_res == cc->cap_res) {
        size_t cap = cc->cap_res ? cc->cap_res * 2 : 16;
        struct resource *r = realloc(cc->res, cap * sizeof(*r));
        if (!r) {
            free(uri);
            nomem(cc);
            return -1;
        }
        cc->res = r;
        cc->cap_res = cap;
    }
    cc->res[cc->n_res].uri = uri;
    cc->res[cc->n_res].json = json;
    cc->n_res++;
    return 0;
}

static const json_t *find_resource(const struct compiler *cc, const char *uri, size_t len)
{
    for (size_t i = 0; i < cc->n_res; i++) {
        if (strlen(cc->res[i].uri) == len && memcmp(cc->res[i].uri, uri, len) == 0)
            return cc->res[i].json;
    }
    return NULL;
}

/* ---- compiling ---- */

/* Keywords of 2020-12 whose meaning this validator does not implement: a
 * schema using them is refused. Everything else that is not implemented is
 * an annotation (title, format, default, content*, ...) or no keyword of any
 * draft, both of which never change a verdict. */
static const char *const unsupported[] = {"unevaluatedProperties", "unevaluatedItems",
                                          "$dynamicRef", "$recursiveRef", NULL};

static int in_list(const char *const *list, const char *s)
{
    for (size_t i = 0; list[i]; i++) {
        if (strcmp(list[i], s) == 0)
            return 1;
    }
    return 0;
}

static int dialect_of(const char *uri)
{
    static const char *const d2020[] = {"https://json-schema.org/draft/2020-12/schema",
                                        "https://json-schema.org/draft/2020-12/schema#", NULL};
    static const char *const d7[] = {"http://json-schema.org/draft-07/schema#",
                                     "http://json-schema.org/draft-07/schema",
                                     "https://json-schema.org/draft-07/schema#",
                                     "https://json-schema.org/draft-07/schema", NULL};

    if (in_list(d2020, uri))
        return 2020;
    if (in_list(d7, uri))
        return 7;
    return 0;
}

static struct snode *compile(struct compiler *cc, const json_t *json, char *where, const char *base,
                             int depth);

static struct snode *sub(struct compiler *cc, const json_t *json, const char *where,
                         const char *key, const char *base, int depth)
{
    char *w = ptr_join(cc, where, key);

    return w ? compile(cc, json, w, base, depth + 1) : NULL;
}

/* An array of one or more schemas (allOf, anyOf, oneOf, prefixItems). */
static int sub_array(struct compiler *cc, const json_t *arr, const struct snode *n, const char *key,
                     int depth, struct snode ***out, size_t *n_out)
{
    size_t k = json_array_size(arr);

    if (!json_is_array(arr) ||
        (k == 0 && strcmp(key, "prefixItems") != 0 && strcmp(key, "items") != 0)) {
        cfail(cc, SHOAL_ERR_INVALID, "%s at %s must be a non-empty array of schemas", key,
              at(n->where));
        return -1;
    }
    if (!(*out = calloc(k ? k : 1, sizeof(**out)))) {
        nomem(cc);
        return -1;
    }
    *n_out = k;
    for (size_t i = 0; i < k; i++) {
        char *w = ptr_index(cc, n->where, key, i);
        if (!w || !((*out)[i] = compile(cc, json_array_get(arr, i), w, n->base, depth + 1)))
            return -1;
    }
    return 0;
}

/* An object of schemas (properties, patternProperties, dependentSchemas,
 * $defs): compiled into *out when out is not NULL. */
static int sub_map(struct compiler *cc, const json_t *obj, const struct snode *n, const char *key,
                   int depth, struct named **out, size_t *n_out)
{
    const char *k;
    const json_t *v;
    char *w;
    size_t i = 0;

    if (!json_is_object(obj)) {
        cfail(cc, SHOAL_ERR_INVALID, "%s at %s must be an object of schemas", key, at(n->where));
        return -1;
    }
    if (out && !(*out = calloc(json_object_size(obj) + 1, sizeof(**out)))) {
        nomem(cc);
        return -1;
    }
    if (!(w = ptr_join(cc, n->where, key)))
        return -1;
    json_object_foreach((json_t *)obj, k, v)
    {
        struct snode *child = sub(cc, v, w, k, n->base, depth);
        if (!child) {
            free(w);
            return -1;
        }
        if (out) {
            (*out)[i].key = k;
            (*out)[i].node = child;
        }
        i++;
    }
    free(w);
    if (n_out)
        *n_out = i;
    return 0;
}

static int get_count(struct compiler *cc, const json_t *v, const struct snode *n, const char *key,
                     long long *out)
{
    if (!is_integral(v) || json_number_value(v) < 0) {
        cfail(cc, SHOAL_ERR_INVALID, "%s at %s must be a non-negative integer", key, at(n->where));
        return -1;
    }
    *out = json_is_integer(v)          ? (long long)json_integer_value(v)
           : json_real_value(v) > 9e18 ? (long long)9e18
                                       : (long long)json_real_value(v);
    return 0;
}

static int get_number(struct compiler *cc, const json_t *v, const struct snode *n, const char *key,
                      const json_t **out)
{
    if (!json_is_number(v)) {
        cfail(cc, SHOAL_ERR_INVALID, "%s at %s must be a number", key, at(n->where));
        return -1;
    }
    *out = v;
    return 0;
}

static int type_bit(const char *name)
{
    static const struct {
        const char *name;
        unsigned bit;
    } t[] = {{"null", T_NULL},      {"boolean", T_BOOLEAN}, {"object", T_OBJECT},
             {"array", T_ARRAY},    {"number", T_NUMBER},   {"string", T_STRING},
             {"integer", T_INTEGER}};

    for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
        if (strcmp(t[i].name, name) == 0)
            return (int)t[i].bit;
    }
    return 0;
}

static int compile_type(struct compiler *cc, struct snode *n, const json_t *v)
{
    int bit;

    if (json_is_string(v)) {
        if (!(bit = type_bit(json_string_value(v))))
            goto bad;
        n->types = (unsigned)bit;
        return 0;
    }
    if (!json_is_array(v) || json_array_size(v) == 0)
        goto bad;
    for (size_t i = 0; i < json_array_size(v); i++) {
        const json_t *t = json_array_get(v, i);
        if (!json_is_string(t) || !(bit = type_bit(json_string_value(t))))
            goto bad;
        n->types |= (unsigned)bit;
    }
    return 0;
bad:
    cfail(cc, SHOAL_ERR_INVALID,
          "type at %s must be one of null, boolean, object, array, number, string, integer "
          "or an array of them",
          at(n->where));
    return -1;
}

static int string_array(struct compiler *cc, const json_t *v, const struct snode *n,
                        const char *key)
{
    if (!json_is_array(v))
        goto bad;
    for (size_t i = 0; i < json_array_size(v); i++) {
        if (!json_is_string(json_array_get(v, i)))
            goto bad;
    }
    return 0;
bad:
    cfail(cc, SHOAL_ERR_INVALID, "%s at %s must be an array of strings", key, at(n->where));
    return -1;
}

static shoal_regex_t *compile_regex(struct compiler *cc, const json_t *v, const struct snode *n,
                                    const char *key)
{
    char err[200];
    shoal_regex_t *re;

    if (!json_is_string(v)) {
        cfail(cc, SHOAL_ERR_INVALID, "%s at %s must be a string", key, at(n->where));
        return NULL;
    }
    if (!(re = shoal_regex_new(json_string_value(v), json_string_length(v), err, sizeof(err))))
        cfail(cc, SHOAL_ERR_INVALID, "%s at %s: cannot use regex \"%s\": %s", key, at(n->where),
              json_string_value(v), err);
    return re;
}

static int compile_pattern_props(struct compiler *cc, struct snode *n, const json_t *v, int depth)
{
    const char *k;
    const json_t *sv;
    char *w;
    size_t i = 0;

    if (!json_is_object(v)) {
        cfail(cc, SHOAL_ERR_INVALID, "patternProperties at %s must be an object of schemas",
              at(n->where));
        return -1;
    }
    if (!(n->pats = calloc(json_object_size(v) + 1, sizeof(*n->pats)))) {
        nomem(cc);
        return -1;
    }
    if (!(w = ptr_join(cc, n->where, "patternProperties")))
        return -1;
    json_object_foreach((json_t *)v, k, sv)
    {
        json_t *ks = json_string(k);
        n->pats[i].src = k;
        n->n_pats = i + 1;
        if (!ks) {
            nomem(cc);
            break;
        }
        n->pats[i].re = compile_regex(cc, ks, n, "patternProperties");
        json_decref(ks);
        if (!n->pats[i].re || !(n->pats[i].node = sub(cc, sv, w, k, n->base, depth)))
            break;
        i++;
    }
    free(w);
    return cc->failed ? -1 : 0;
}

/* draft-07 "dependencies": arrays are dependentRequired, schemas
 * dependentSchemas. */
static int compile_deps(struct compiler *cc, struct snode *n, const json_t *v, const char *key,
                        int want_arrays, int want_schemas, int depth)
{
    const char *k;
    const json_t *dv;
    size_t cap = json_object_size(v) + 1;
    char *w;

    if (!json_is_object(v)) {
        cfail(cc, SHOAL_ERR_INVALID, "%s at %s must be an object", key, at(n->where));
        return -1;
    }
    if (!n->dep_req && !(n->dep_req = calloc(cap, sizeof(*n->dep_req))))
        goto oom;
    if (!n->dep_schemas && !(n->dep_schemas = calloc(cap, sizeof(*n->dep_schemas))))
        goto oom;
    if (!(w = ptr_join(cc, n->where, key)))
        return -1;
    json_object_foreach((json_t *)v, k, dv)
    {
        if (json_is_array(dv) && want_arrays) {
            if (string_array(cc, dv, n, key))
                break;
            n->dep_req[n->n_dep_req].key = k;
            n->dep_req[n->n_dep_req].names = dv;
            n->n_dep_req++;
        } else if ((json_is_object(dv) || json_is_boolean(dv)) && want_schemas) {
            struct snode *child = sub(cc, dv, w, k, n->base, depth);
            if (!child)
                break;
            n->dep_schemas[n->n_dep_schemas].key = k;
            n->dep_schemas[n->n_dep_schemas].node = child;
            n->n_dep_schemas++;
        } else {
            cfail(cc, SHOAL_ERR_INVALID, "%s at %s: \"%s\" must be %s", key, at(n->where), k,
                  want_arrays && want_schemas ? "an array of strings or a schema"
                  : want_arrays               ? "an array of strings"
                                              : "a schema");
            break;
        }
    }
    free(w);
    return cc->failed ? -1 : 0;
oom:
    nomem(cc);
    return -1;
}

static int add_node(struct compiler *cc, struct snode *n)
{
    shoal_jsonschema_t *s = cc->s;

    if (s->n_nodes == s->cap_nodes) {
        size_t cap = s->cap_nodes ? s->cap_nodes * 2 : 32;
        struct snode **a = realloc(s->nodes, cap * sizeof(*a));
        if (!a) {
            nomem(cc);
            return -1;
        }
        s->nodes = a;
        s->cap_nodes = cap;
    }
    s->nodes[s->n_nodes++] = n;
    return 0;
}

static int compile_keyword(struct compiler *cc, struct snode *n, const char *key, const json_t *v,
                           int depth)
{
    const json_t *items_arr = NULL;

    if (strcmp(key, "type") == 0)
        return compile_type(cc, n, v);
    if (strcmp(key, "enum") == 0) {
        if (!json_is_array(v)) {
            cfail(cc, SHOAL_ERR_INVALID, "enum at %s must be an array", at(n->where));
            return -1;
        }
        n->enum_vals = v;
        return 0;
    }
    if (strcmp(key, "const") == 0) {
        n->const_val = v;
        return 0;
    }
    if (strcmp(key, "multipleOf") == 0) {
        if (get_number(cc, v, n, key, &n->multiple_of))
            return -1;
        if (!(json_number_value(v) > 0)) {
            cfail(cc, SHOAL_ERR_INVALID, "multipleOf at %s must be more than 0", at(n->where));
            return -1;
        }
        return 0;
    }
    if (strcmp(key, "maximum") == 0)
        return get_number(cc, v, n, key, &n->maximum);
    if (strcmp(key, "exclusiveMaximum") == 0)
        return get_number(cc, v, n, key, &n->ex_maximum);
    if (strcmp(key, "minimum") == 0)
        return get_number(cc, v, n, key, &n->minimum);
    if (strcmp(key, "exclusiveMinimum") == 0)
        return get_number(cc, v, n, key, &n->ex_minimum);
    if (strcmp(key, "maxLength") == 0)
        return get_count(cc, v, n, key, &n->max_length);
    if (strcmp(key, "minLength") == 0)
        return get_count(cc, v, n, key, &n->min_length);
    if (strcmp(key, "pattern") == 0) {
        n->pattern_src = json_string_value(v);
        return (n->pattern = compile_regex(cc, v, n, key)) ? 0 : -1;
    }
    if (strcmp(key, "maxItems") == 0)
        return get_count(cc, v, n, key, &n->max_items);
    if (strcmp(key, "minItems") == 0)
        return get_count(cc, v, n, key, &n->min_items);
    if (strcmp(key, "uniqueItems") == 0) {
        if (!json_is_boolean(v)) {
            cfail(cc, SHOAL_ERR_INVALID, "uniqueItems at %s must be a boolean", at(n->where));
            return -1;
        }
        n->unique = json_is_true(v);
        return 0;
    }
    if (strcmp(key, "maxContains") == 0)
        return get_count(cc, v, n, key, &n->max_contains);
    if (strcmp(key, "minContains") == 0)
        return get_count(cc, v, n, key, &n->min_contains);
    if (strcmp(key, "contains") == 0)
        return (n->contains = sub(cc, v, n->where, key, n->base, depth)) ? 0 : -1;
    if (strcmp(key, "prefixItems") == 0) {
        if (json_is_array(json_object_get(n->json, "items"))) {
            cfail(cc, SHOAL_ERR_INVALID, "prefixItems at %s cannot be used with array-form items",
                  at(n->where));
            return -1;
        }
        return sub_array(cc, v, n, key, depth, &n->prefix, &n->n_prefix);
    }
    if (strcmp(key, "items") == 0) {
        if (json_is_array(v)) {
            /* draft-07's tuple form: additionalItems covers the rest */
            const json_t *more = json_object_get(n->json, "additionalItems");
            items_arr = v;
            if (sub_array(cc, items_arr, n, key, depth, &n->prefix, &n->n_prefix))
                return -1;
            if (more && !(n->items = sub(cc, more, n->where, "additionalItems", n->base, depth)))
                return -1;
            return 0;
        }
        return (n->items = sub(cc, v, n->where, key, n->base, depth)) ? 0 : -1;
    }
    if (strcmp(key, "additionalItems") == 0)
        return 0; /* with array-form items (above); meaningless otherwise */
    if (strcmp(key, "properties") == 0) {
        n->props_obj = v;
        return sub_map(cc, v, n, key, depth, &n->props, &n->n_props);
    }
    if (strcmp(key, "patternProperties") == 0)
        return compile_pattern_props(cc, n, v, depth);
    if (strcmp(key, "additionalProperties") == 0)
        return (n->additional = sub(cc, v, n->where, key, n->base, depth)) ? 0 : -1;
    if (strcmp(key, "required") == 0) {
        if (string_array(cc, v, n, key))
            return -1;
        n->required = v;
        return 0;
    }
    if (strcmp(key, "maxProperties") == 0)
        return get_count(cc, v, n, key, &n->max_props);
    if (strcmp(key, "minProperties") == 0)
        return get_count(cc, v, n, key, &n->min_props);
    if (strcmp(key, "propertyNames") == 0)
        return (n->names = sub(cc, v, n->where, key, n->base, depth)) ? 0 : -1;
    if (strcmp(key, "dependentRequired") == 0)
        return compile_deps(cc, n, v, key, 1, 0, depth);
    if (strcmp(key, "dependentSchemas") == 0)
        return compile_deps(cc, n, v, key, 0, 1, depth);
    if (strcmp(key, "dependencies") == 0)
        return compile_deps(cc, n, v, key, 1, 1, depth);
    if (strcmp(key, "allOf") == 0)
        return sub_array(cc, v, n, key, depth, &n->all_of, &n->n_all_of);
    if (strcmp(key, "anyOf") == 0)
        return sub_array(cc, v, n, key, depth, &n->any_of, &n->n_any_of);
    if (strcmp(key, "oneOf") == 0)
        return sub_array(cc, v, n, key, depth, &n->one_of, &n->n_one_of);
    if (strcmp(key, "not") == 0)
        return (n->not_ = sub(cc, v, n->where, key, n->base, depth)) ? 0 : -1;
    if (strcmp(key, "if") == 0)
        return (n->if_ = sub(cc, v, n->where, key, n->base, depth)) ? 0 : -1;
    if (strcmp(key, "then") == 0)
        return (n->then_ = sub(cc, v, n->where, key, n->base, depth)) ? 0 : -1;
    if (strcmp(key, "else") == 0)
        return (n->else_ = sub(cc, v, n->where, key, n->base, depth)) ? 0 : -1;
    if (strcmp(key, "$defs") == 0 || strcmp(key, "definitions") == 0)
        return sub_map(cc, v, n, key, depth, NULL, NULL);
    if (strcmp(key, "$ref") == 0) {
        if (!json_is_string(v)) {
            cfail(cc, SHOAL_ERR_INVALID, "$ref at %s must be a string", at(n->where));
            return -1;
        }
        n->ref = json_string_value(v);
        return 0;
    }
    if (in_list(unsupported, key)) {
        cfail(cc, SHOAL_ERR_INVALID, "unsupported keyword \"%s\" at %s", key, at(n->where));
        return -1;
    }
    /* annotations and keywords no draft defines: ignored, as the spec says */
    return 0;
}

/* Registers $id and $anchor; may replace n->base. */
static int compile_ids(struct compiler *cc, struct snode *n, const json_t *json)
{
    const json_t *id = json_object_get(json, "$id"), *anchor = json_object_get(json, "$anchor");
    const json_t *dyn = json_object_get(json, "$dynamicAnchor");
    const json_t *schema = json_object_get(json, "$schema");
    char *uri;

    if (schema) {
        if (!json_is_string(schema) ||
            dialect_of(json_string_value(schema)) != (cc->s->draft7 ? 7 : 2020)) {
            cfail(cc, SHOAL_ERR_INVALID,
                  "$schema at %s: unsupported dialect (only draft 2020-12 and draft-07, one per "
                  "document)",
                  at(n->where));
            return -1;
        }
    }
    if (id) {
        const char *s = json_string_value(id);
        if (!s) {
            cfail(cc, SHOAL_ERR_INVALID, "$id at %s must be a string", at(n->where));
            return -1;
        }
        if (*s == '#' && cc->s->draft7) {
            /* draft-07: "$id": "#name" is an anchor */
            if (!(uri = uri_resolve(cc, n->base, s)) || add_resource(cc, uri, json))
                return -1;
        } else {
            size_t len = strcspn(s, "#");
            char *ref = dupstr(cc, s, len);
            if (!ref)
                return -1;
            if (s[len] && s[len + 1]) {
                free(ref);
                cfail(cc, SHOAL_ERR_INVALID, "$id at %s must not have a fragment (use $anchor)",
                      at(n->where));
                return -1;
            }
            uri = uri_resolve(cc, n->base, ref);
            free(ref);
            if (!uri)
                return -1;
            free(n->base);
            if (!(n->base = dupstr(cc, uri, strlen(uri)))) {
                free(uri);
                return -1;
            }
            if (add_resource(cc, uri, json))
                return -1;
        }
    }
    for (int k = 0; k < 2; k++) {
        const json_t *a = k ? dyn : anchor;
        size_t blen = strcspn(n->base, "#");
        if (!a)
            continue;
        if (!json_is_string(a)) {
            cfail(cc, SHOAL_ERR_INVALID, "%s at %s must be a string",
                  k ? "$dynamicAnchor" : "$anchor", at(n->where));
            return -1;
        }
        if (!(uri = malloc(blen + json_string_length(a) + 2))) {
            nomem(cc);
            return -1;
        }
        memcpy(uri, n->base, blen);
        uri[blen] = '#';
        memcpy(uri + blen + 1, json_string_value(a), json_string_length(a) + 1);
        if (add_resource(cc, uri, json))
            return -1;
    }
    return 0;
}

/* Compiles json found at where (taken: freed on error) with base in effect. */
static struct snode *compile(struct compiler *cc, const json_t *json, char *where, const char *base,
                             int depth)
{
    struct snode *n = calloc(1, sizeof(*n));
    const char *key;
    const json_t *v;

    if (!n) {
        free(where);
        nomem(cc);
        return NULL;
    }
    n->json = json;
    n->where = where;
    n->boolean = -1;
    n->min_length = n->max_length = n->min_items = n->max_items = -1;
    n->min_props = n->max_props = n->max_contains = n->min_contains = -1;
    if (add_node(cc, n)) {
        free(where);
        free(n);
        return NULL;
    }
    if (!(n->base = dupstr(cc, base, strlen(base))))
        return NULL;
    if (json_is_boolean(json)) {
        n->boolean = json_is_true(json);
        return n;
    }
    if (!json_is_object(json)) {
        cfail(cc, SHOAL_ERR_INVALID, "schema at %s must be an object or a boolean, got %s",
              at(where), shoal_jsondesc_type(json));
        return NULL;
    }
    if (depth > MAX_COMPILE_DEPTH) {
        cfail(cc, SHOAL_ERR_INVALID, "schema at %s nests deeper than %d levels", at(where),
              MAX_COMPILE_DEPTH);
        return NULL;
    }
    if (cc->s->draft7 && json_object_get(json, "$ref")) {
        /* draft-07: $ref replaces every keyword beside it */
        return compile_keyword(cc, n, "$ref", json_object_get(json, "$ref"), depth) ? NULL : n;
    }
    if (compile_ids(cc, n, json))
        return NULL;
    json_object_foreach((json_t *)json, key, v)
    {
        if (compile_keyword(cc, n, key, v, depth))
            return NULL;
    }
    return n;
}

static int hexdigit(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Decodes %XX escapes of a URI fragment into out (len + 1 bytes or more). */
static void percent_decode(char *out, const char *in, size_t len)
{
    size_t o = 0;

    for (size_t i = 0; i < len; i++) {
        int h1 = i + 2 < len ? hexdigit(in[i + 1]) : -1,
            h2 = i + 2 < len ? hexdigit(in[i + 2]) : -1;

        if (in[i] == '%' && h1 >= 0 && h2 >= 0) {
            out[o++] = (char)(h1 * 16 + h2);
            i += 2;
        } else {
            out[o++] = in[i];
        }
    }
    out[o] = '\0';
}

/* Follows a JSON pointer (already percent-decoded) from doc; NULL if absent. */
static const json_t *pointer_get(const json_t *doc, const char *ptr, char *tok, size_t toklen)
{
    const json_t *cur = doc;

    while (*ptr == '/' && cur) {
        size_t o = 0;
        ptr++;
        while (*ptr && *ptr != '/') {
            char c = *ptr++;
            if (c == '~' && (*ptr == '0' || *ptr == '1'))
                c = *ptr++ == '0' ? '~' : '/';
            if (o + 1 < toklen)
                tok[o++] = c;
        }
        tok[o] = '\0';
        if (json_is_object(cur)) {
            cur = json_object_get(cur, tok);
        } else if (json_is_array(cur)) {
            char *end;
            unsigned long i;
            if (!*tok || (tok[0] == '0' && tok[1]) || tok[0] < '0' || tok[0] > '9')
                return NULL;
            i = strtoul(tok, &end, 10);
            cur = *end ? NULL : json_array_get(cur, i);
        } else {
            return NULL;
        }
    }
    return *ptr ? NULL : cur;
}

static struct snode *node_of(const shoal_jsonschema_t *s, const json_t *json)
{
    for (size_t i = 0; i < s->n_nodes; i++) {
        if (s->nodes[i]->json == json)
            return s->nodes[i];
    }
    return NULL;
}

static int resolve_ref(struct compiler *cc, struct snode *n)
{
    char *uri = uri_resolve(cc, n->base, n->ref), *frag, *dec = NULL, *tok = NULL, *w;
    const json_t *res, *target;
    size_t doclen;

    if (!uri)
        return -1;
    doclen = strcspn(uri, "#");
    frag = uri[doclen] ? uri + doclen + 1 : NULL;
    if (!(res = find_resource(cc, uri, doclen))) {
        cfail(cc, SHOAL_ERR_INVALID,
              "$ref \"%s\" at %s points to another document; only references within the "
              "schema are supported",
              n->ref, at(n->where));
        goto fail;
    }
    if (!frag || !*frag) {
        target = res;
    } else if (*frag == '/') {
        size_t fl = strlen(frag);
        if (!(dec = malloc(fl + 1)) || !(tok = malloc(fl + 1))) {
            nomem(cc);
            goto fail;
        }
        percent_decode(dec, frag, fl);
        target = pointer_get(res, dec, tok, fl + 1);
    } else {
        target = find_resource(cc, uri, strlen(uri));
    }
    if (!target) {
        cfail(cc, SHOAL_ERR_INVALID, "$ref \"%s\" at %s points to nothing in the schema", n->ref,
              at(n->where));
        goto fail;
    }
    if (!(n->ref_node = node_of(cc->s, target))) {
        /* a location the walk did not compile (under an unknown keyword) */
        if (!(w = ptr_join(cc, n->where, "$ref")) ||
            !(n->ref_node = compile(cc, target, w, n->base, 0)))
            goto fail;
    }
    free(dec);
    free(tok);
    free(uri);
    return 0;
fail:
    free(dec);
    free(tok);
    free(uri);
    return -1;
}

/* Depth-first over the edges that stay on the same instance location. */
static int find_loop(struct compiler *cc, struct snode *n, int depth)
{
    struct snode *next[8];
    size_t k = 0;

    if (n->dfs == 2)
        return 0;
    if (n->dfs == 1) {
        cfail(cc, SHOAL_ERR_INVALID,
              "schema at %s refers to itself without moving into the instance (a $ref loop)",
              at(n->where));
        return -1;
    }
    if (depth > MAX_CHAIN) {
        cfail(cc, SHOAL_ERR_INVALID, "schema at %s: chain of $ref longer than %d", at(n->where),
              MAX_CHAIN);
        return -1;
    }
    n->dfs = 1;
    next[k++] = n->ref_node;
    next[k++] = n->not_;
    next[k++] = n->if_;
    next[k++] = n->then_;
    next[k++] = n->else_;
    for (size_t i = 0; i < k; i++) {
        if (next[i] && find_loop(cc, next[i], depth + 1))
            return -1;
    }
    for (size_t i = 0; i < n->n_all_of; i++) {
        if (find_loop(cc, n->all_of[i], depth + 1))
            return -1;
    }
    for (size_t i = 0; i < n->n_any_of; i++) {
        if (find_loop(cc, n->any_of[i], depth + 1))
            return -1;
    }
    for (size_t i = 0; i < n->n_one_of; i++) {
        if (find_loop(cc, n->one_of[i], depth + 1))
            return -1;
    }
    for (size_t i = 0; i < n->n_dep_schemas; i++) {
        if (find_loop(cc, n->dep_schemas[i].node, depth + 1))
            return -1;
    }
    n->dfs = 2;
    return 0;
}

static void free_node(struct snode *n)
{
    free(n->where);
    free(n->base);
    free(n->prefix);
    free(n->props);
    for (size_t i = 0; i < n->n_pats; i++)
        shoal_regex_destroy(n->pats[i].re);
    free(n->pats);
    shoal_regex_destroy(n->pattern);
    free(n->dep_req);
    free(n->dep_schemas);
    free(n->all_of);
    free(n->any_of);
    free(n->one_of);
    free(n);
}

void shoal_jsonschema_destroy(shoal_jsonschema_t *s)
{
    if (!s)
        return;
    for (size_t i = 0; i < s->n_nodes; i++)
        free_node(s->nodes[i]);
    free(s->nodes);
    json_decref(s->doc);
    free(s);
}

shoal_jsonschema_t *shoal_jsonschema_new(const json_t *schema, char *errbuf, size_t errlen)
{
    struct compiler cc;
    shoal_jsonschema_t *s;
    const json_t *dialect, *id;
    char *root_uri = NULL, *where;

    memset(&cc, 0, sizeof(cc));
    cc.errbuf = errbuf;
    cc.errlen = errlen;
    if (!schema) {
        shoal_err_set(errbuf, errlen, SHOAL_ERR_INVALID, "no schema");
        return NULL;
    }
    if (!(s = calloc(1, sizeof(*s))) || !(s->doc = json_deep_copy(schema))) {
        free(s);
        shoal_err_set(errbuf, errlen, SHOAL_ERR_NOMEM, "out of memory");
        return NULL;
    }
    cc.s = s;
    dialect = json_object_get(s->doc, "$schema");
    if (dialect) {
        int d = json_is_string(dialect) ? dialect_of(json_string_value(dialect)) : 0;
        if (!d) {
            cfail(&cc, SHOAL_ERR_INVALID,
                  "$schema at /: unsupported dialect (only draft 2020-12 and draft-07)");
            goto fail;
        }
        s->draft7 = d == 7;
    }
    /* the root is a resource under its $id, or under "" without one */
    id = json_object_get(s->doc, "$id");
    if (json_is_string(id) && !(s->draft7 && json_string_value(id)[0] == '#')) {
        size_t len = strcspn(json_string_value(id), "#");
        root_uri = dupstr(&cc, json_string_value(id), len);
    } else {
        root_uri = dupstr(&cc, "", 0);
    }
    if (!root_uri)
        goto fail;
    if (add_resource(&cc, dupstr(&cc, root_uri, strlen(root_uri)), s->doc))
        goto fail;
    if (!(where = dupstr(&cc, "", 0)) || !(s->root = compile(&cc, s->doc, where, root_uri, 0)))
        goto fail;
    for (size_t i = 0; i < s->n_nodes; i++) {
        if (s->nodes[i]->ref && resolve_ref(&cc, s->nodes[i]))
            goto fail;
    }
    for (size_t i = 0; i < s->n_nodes; i++) {
        if (find_loop(&cc, s->nodes[i], 0))
            goto fail;
    }
    goto out;
fail:
    if (!cc.failed)
        nomem(&cc);
    shoal_jsonschema_destroy(s);
    s = NULL;
out:
    for (size_t i = 0; i < cc.n_res; i++)
        free(cc.res[i].uri);
    free(cc.res);
    free(root_uri);
    return s;
}

/* ---- validating ---- */

/* The instance location, as a chain on the C stack. */
struct ipath {
    const struct ipath *up;
    const char *key; /* NULL: index */
    size_t index;
};

struct vctx {
    char *errbuf;
    size_t errlen;
    shoal_jsonschema_error_t *detail;
    unsigned depth;
    int quiet; /* > 0: inside a subschema whose failure is not an error */
    int aborted;
    /* shoal_jsonschema_validate_all(): every violation goes to each_fn */
    shoal_jsonschema_each_fn each_fn;
    void *each_arg;
    size_t each_max, each_count;
};

/* After a violation in one field or entry, whether to go on with its
 * siblings: only when collecting every violation, never inside a quiet
 * probe (its verdict is all that counts) and not past the cap. */
static int keep_going(const struct vctx *c)
{
    return c->each_fn && !c->quiet && !c->aborted && c->each_count < c->each_max;
}

static int ident_key(const char *k)
{
    if (!*k || (*k >= '0' && *k <= '9'))
        return 0;
    for (; *k; k++) {
        if (!((*k >= 'a' && *k <= 'z') || (*k >= 'A' && *k <= 'Z') || (*k >= '0' && *k <= '9') ||
              *k == '_' || *k == '-' || *k == '$'))
            return 0;
    }
    return 1;
}

static size_t path_fmt(char *buf, size_t len, const struct ipath *p)
{
    size_t o;
    char q[QUOTE_LEN];

    if (!p) {
        if (len)
            buf[0] = '\0';
        return 0;
    }
    o = path_fmt(buf, len, p->up);
    if (o >= len)
        return o;
    if (!p->key)
        o += (size_t)snprintf(buf + o, len - o, "[%zu]", p->index);
    else if (ident_key(p->key))
        o += (size_t)snprintf(buf + o, len - o, "%s%s", o ? "." : "", p->key);
    else
        o += (size_t)snprintf(buf + o, len - o, "[%s]",
                              shoal_jsondesc_quote(q, p->key, strlen(p->key)));
    return o;
}

/* A value for a message: strings quoted, numbers as written, else its type. */
static const char *value_text(char out[QUOTE_LEN], const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_STRING:
        return shoal_jsondesc_quote(out, json_string_value(v), json_string_length(v));
    case JSON_INTEGER:
        snprintf(out, QUOTE_LEN, "%lld", (long long)json_integer_value(v));
        return out;
    case JSON_REAL:
        snprintf(out, QUOTE_LEN, "%.15g", json_real_value(v));
        return out;
    case JSON_TRUE:
        return "true";
    case JSON_FALSE:
        return "false";
    default:
        return shoal_jsondesc_type(v);
    }
}

static int report(struct vctx *c, const struct snode *n, const char *keyword,
                  const struct ipath *path, const json_t *value, const char *fmt, ...)
    __attribute__((format(printf, 6, 7)));

/* Records a violation (unless quiet) and returns 1, the "invalid" verdict. */
static int report(struct vctx *c, const struct snode *n, const char *keyword,
                  const struct ipath *path, const json_t *value, const char *fmt, ...)
{
    char full[1024], where[PATH_SHOWN + 4], msg[768];
    size_t n_full;
    va_list ap;

    if (c->quiet || (!c->errbuf && !c->detail && !c->each_fn))
        return 1;
    path_fmt(full, sizeof(full), path);
    /* a very deep path keeps its end, where the problem is */
    if ((n_full = strlen(full)) > PATH_SHOWN)
        snprintf(where, sizeof(where), "...%s", full + n_full - PATH_SHOWN);
    else
        memcpy(where, full, n_full + 1);
    if (c->errbuf && c->errlen) {
        va_start(ap, fmt);
        vsnprintf(msg, sizeof(msg), fmt, ap);
        va_end(ap);
        if (*where)
            snprintf(c->errbuf, c->errlen, "%s: %s", where, msg);
        else
            snprintf(c->errbuf, c->errlen, "%s", msg);
    }
    if (c->detail) {
        snprintf(c->detail->instance_path, sizeof(c->detail->instance_path), "%s", where);
        snprintf(c->detail->schema_path, sizeof(c->detail->schema_path), "%s/%s", n->where,
                 keyword);
        c->detail->keyword = keyword;
        c->detail->value = value;
    }
    if (c->each_fn && c->each_count < c->each_max) {
        shoal_jsonschema_error_t d;
        char line[1024];

        va_start(ap, fmt);
        vsnprintf(msg, sizeof(msg), fmt, ap);
        va_end(ap);
        snprintf(line, sizeof(line), "%s%s%s", where, *where ? ": " : "", msg);
        snprintf(d.instance_path, sizeof(d.instance_path), "%s", where);
        snprintf(d.schema_path, sizeof(d.schema_path), "%s/%s", n->where, keyword);
        d.keyword = keyword;
        d.value = value;
        c->each_count++;
        c->each_fn(c->each_arg, &d, line);
    }
    return 1;
}

/* Gives up on the whole validation: reported even when quiet. */
static int abort_validation(struct vctx *c, const struct snode *n, const char *keyword,
                            const struct ipath *path, const json_t *value, const char *msg)
{
    int q = c->quiet;

    c->quiet = 0;
    report(c, n, keyword, path, value, "%s", msg);
    c->quiet = q;
    c->aborted = 1;
    return 1;
}

static int validate(struct vctx *c, const struct snode *n, const json_t *v,
                    const struct ipath *path);

/* Runs n quietly: 0 valid, 1 invalid; c->aborted says whether to stop. */
static int probe(struct vctx *c, const struct snode *n, const json_t *v, const struct ipath *path)
{
    int r;

    c->quiet++;
    r = validate(c, n, v, path);
    c->quiet--;
    return r;
}

static int type_ok(unsigned types, const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT:
        return (types & T_OBJECT) != 0;
    case JSON_ARRAY:
        return (types & T_ARRAY) != 0;
    case JSON_STRING:
        return (types & T_STRING) != 0;
    case JSON_INTEGER:
        return (types & (T_NUMBER | T_INTEGER)) != 0;
    case JSON_REAL:
        return (types & T_NUMBER) || ((types & T_INTEGER) && is_integral(v));
    case JSON_TRUE:
    case JSON_FALSE:
        return (types & T_BOOLEAN) != 0;
    case JSON_NULL:
        return (types & T_NULL) != 0;
    }
    return 0;
}

static void types_text(char *buf, size_t len, unsigned types)
{
    static const struct {
        unsigned bit;
        const char *text;
    } t[] = {{T_OBJECT, "an object"},   {T_ARRAY, "an array"},  {T_STRING, "a string"},
             {T_INTEGER, "an integer"}, {T_NUMBER, "a number"}, {T_BOOLEAN, "a boolean"},
             {T_NULL, "null"}};
    size_t o = 0, n = 0, total = 0;

    if (types & T_NUMBER)
        types &= ~(unsigned)T_INTEGER;
    for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++)
        total += (types & t[i].bit) != 0;
    buf[0] = '\0';
    for (size_t i = 0; i < sizeof(t) / sizeof(t[0]) && o < len; i++) {
        if (!(types & t[i].bit))
            continue;
        n++;
        o += (size_t)snprintf(buf + o, len - o, "%s%s",
                              n == 1       ? ""
                              : n == total ? " or "
                                           : ", ",
                              t[i].text);
    }
}

static void enum_text(char *buf, size_t len, const json_t *vals)
{
    size_t o = 0;
    int all_strings = 1;

    for (size_t i = 0; i < json_array_size(vals); i++)
        all_strings &= json_is_string(json_array_get(vals, i));
    buf[0] = '\0';
    for (size_t i = 0; i < json_array_size(vals) && o < len; i++) {
        const json_t *e = json_array_get(vals, i);
        char *d = all_strings ? NULL : json_dumps(e, JSON_COMPACT | JSON_ENCODE_ANY);
        o += (size_t)snprintf(buf + o, len - o, "%s%s", i ? ", " : "",
                              all_strings ? json_string_value(e)
                              : d         ? d
                                          : "?");
        free(d);
    }
    if (o >= len && len > 4)
        memcpy(buf + len - 4, "...", 4);
}

static int check_number(struct vctx *c, const struct snode *n, const json_t *v,
                        const struct ipath *path)
{
    char a[QUOTE_LEN], b[QUOTE_LEN];

    if (n->minimum && num_cmp(v, n->minimum) < 0)
        return report(c, n, "minimum", path, v, "%s is less than the minimum %s", value_text(a, v),
                      value_text(b, n->minimum));
    if (n->maximum && num_cmp(v, n->maximum) > 0)
        return report(c, n, "maximum", path, v, "%s is more than the maximum %s", value_text(a, v),
                      value_text(b, n->maximum));
    if (n->ex_minimum && num_cmp(v, n->ex_minimum) <= 0)
        return report(c, n, "exclusiveMinimum", path, v, "must be more than %s, got %s",
                      value_text(b, n->ex_minimum), value_text(a, v));
    if (n->ex_maximum && num_cmp(v, n->ex_maximum) >= 0)
        return report(c, n, "exclusiveMaximum", path, v, "must be less than %s, got %s",
                      value_text(b, n->ex_maximum), value_text(a, v));
    if (n->multiple_of) {
        int ok;
        if (json_is_integer(v) && json_is_integer(n->multiple_of)) {
            ok = json_integer_value(v) % json_integer_value(n->multiple_of) == 0;
        } else {
            double q = json_number_value(v) / json_number_value(n->multiple_of);
            /* a quotient too big to have a fraction is an integer multiple */
            ok = !isfinite(q) ? 0 : fabs(q - nearbyint(q)) <= 1e-9 * fmax(1.0, fabs(q));
        }
        if (!ok)
            return report(c, n, "multipleOf", path, v, "%s is not a multiple of %s",
                          value_text(a, v), value_text(b, n->multiple_of));
    }
    return 0;
}

static int check_string(struct vctx *c, const struct snode *n, const json_t *v,
                        const struct ipath *path)
{
    char q[QUOTE_LEN];

    if (n->min_length >= 0 || n->max_length >= 0) {
        size_t len = codepoints(json_string_value(v), json_string_length(v));
        if (n->min_length >= 0 && (long long)len < n->min_length) {
            if (n->min_length == 1)
                return report(c, n, "minLength", path, v, "must not be empty");
            return report(c, n, "minLength", path, v,
                          "too short (%zu characters; the minimum is %lld)", len, n->min_length);
        }
        if (n->max_length >= 0 && (long long)len > n->max_length)
            return report(c, n, "maxLength", path, v,
                          "too long (%zu characters; the limit is %lld)", len, n->max_length);
    }
    if (n->pattern) {
        int r = shoal_regex_search(n->pattern, json_string_value(v), json_string_length(v), 0);
        if (r == SHOAL_REGEX_BUDGET) {
            char msg[512];
            snprintf(msg, sizeof(msg),
                     "pattern %s needs more than %lu steps on this value; simplify the pattern",
                     n->pattern_src, (unsigned long)SHOAL_REGEX_DEFAULT_BUDGET);
            return abort_validation(c, n, "pattern", path, v, msg);
        }
        if (r != SHOAL_REGEX_MATCH)
            return report(c, n, "pattern", path, v, "%s does not match the pattern %s",
                          shoal_jsondesc_quote(q, json_string_value(v), json_string_length(v)),
                          n->pattern_src);
    }
    return 0;
}

/* A hash under which JSON-equal values (1 and 1.0, objects in any key
 * order) collide. */
static uint64_t json_hash(const json_t *v)
{
    uint64_t h = 1469598103934665603ULL;

    switch (json_typeof(v)) {
    case JSON_INTEGER:
    case JSON_REAL: {
        double d = json_number_value(v);
        uint64_t bits;
        if (d == 0)
            d = 0; /* -0.0 equals 0 */
        memcpy(&bits, &d, sizeof(bits));
        return bits * 0x9E3779B97F4A7C15ULL;
    }
    case JSON_STRING: {
        const unsigned char *p = (const unsigned char *)json_string_value(v);
        for (size_t i = 0; i < json_string_length(v); i++)
            h = (h ^ p[i]) * 1099511628211ULL;
        return h;
    }
    case JSON_ARRAY:
        for (size_t i = 0; i < json_array_size(v); i++)
            h = (h ^ json_hash(json_array_get(v, i))) * 1099511628211ULL;
        return h + 1;
    case JSON_OBJECT: {
        const char *key;
        const json_t *val;
        uint64_t sum = 0;
        json_object_foreach((json_t *)v, key, val)
        {
            uint64_t k = 1469598103934665603ULL;
            for (const unsigned char *p = (const unsigned char *)key; *p; p++)
                k = (k ^ *p) * 1099511628211ULL;
            sum += (k ^ json_hash(val)) * 0x9E3779B97F4A7C15ULL;
        }
        return sum + 2;
    }
    default:
        return (uint64_t)json_typeof(v) + 3;
    }
}

struct hashed {
    uint64_t hash;
    size_t index;
};

static int cmp_hashed(const void *a, const void *b)
{
    const struct hashed *x = a, *y = b;

    if (x->hash != y->hash)
        return x->hash < y->hash ? -1 : 1;
    return (x->index > y->index) - (x->index < y->index);
}

/* The first repeated entry (smallest j, then smallest i < j with equal
 * values): 1 with *i, *j set, 0 when all differ, -1 out of memory. Small
 * arrays compare pairwise; large ones sort by hash first, so a hostile
 * array of 100,000 entries costs n log n, not n squared. That sort is the
 * one allocation validation makes. */
static int find_repeat(const json_t *arr, size_t *i_out, size_t *j_out)
{
    size_t len = json_array_size(arr), best_j = SIZE_MAX, best_i = 0;
    struct hashed *h;

    if (len <= 32) {
        for (size_t j = 1; j < len; j++) {
            for (size_t i = 0; i < j; i++) {
                if (json_eq(json_array_get(arr, i), json_array_get(arr, j))) {
                    *i_out = i;
                    *j_out = j;
                    return 1;
                }
            }
        }
        return 0;
    }
    if (!(h = malloc(len * sizeof(*h))))
        return -1;
    for (size_t k = 0; k < len; k++) {
        h[k].hash = json_hash(json_array_get(arr, k));
        h[k].index = k;
    }
    qsort(h, len, sizeof(*h), cmp_hashed);
    for (size_t b = 1, run = 0; b < len; b++) {
        if (h[b].hash != h[run].hash) {
            run = b;
            continue;
        }
        if (h[b].index >= best_j)
            continue;
        /* a run is in index order: the first equal entry is the earliest */
        for (size_t a = run; a < b; a++) {
            if (json_eq(json_array_get(arr, h[a].index), json_array_get(arr, h[b].index))) {
                best_j = h[b].index;
                best_i = h[a].index;
                break;
            }
        }
    }
    free(h);
    if (best_j == SIZE_MAX)
        return 0;
    *i_out = best_i;
    *j_out = best_j;
    return 1;
}

static int check_array(struct vctx *c, const struct snode *n, const json_t *v,
                       const struct ipath *path)
{
    size_t len = json_array_size(v);

    if (n->min_items >= 0 && (long long)len < n->min_items) {
        if (n->min_items == 1)
            return report(c, n, "minItems", path, v, "must not be empty");
        return report(c, n, "minItems", path, v, "too few entries (%zu; the minimum is %lld)", len,
                      n->min_items);
    }
    if (n->max_items >= 0 && (long long)len > n->max_items)
        return report(c, n, "maxItems", path, v, "too many entries (%zu; the limit is %lld)", len,
                      n->max_items);
    int bad = 0;
    for (size_t i = 0; i < len; i++) {
        const struct snode *s = i < n->n_prefix ? n->prefix[i] : n->items;
        struct ipath p = {path, NULL, i};

        if (s && validate(c, s, json_array_get(v, i), &p)) {
            if (!keep_going(c))
                return 1;
            bad = 1;
        }
    }
    if (bad)
        return 1;
    if (n->unique) {
        size_t i, j;
        int r = find_repeat(v, &i, &j);

        if (r < 0)
            return abort_validation(c, n, "uniqueItems", path, v,
                                    "out of memory checking uniqueItems");
        if (r) {
            struct ipath pj = {path, NULL, j}, pi = {path, NULL, i};
            char other[256], q[QUOTE_LEN];
            path_fmt(other, sizeof(other), &pi);
            return report(c, n, "uniqueItems", &pj, json_array_get(v, j), "%s repeats %s",
                          value_text(q, json_array_get(v, j)), other);
        }
    }
    if (n->contains) {
        size_t count = 0;
        long long min = n->min_contains >= 0 ? n->min_contains : 1;

        for (size_t i = 0; i < len; i++) {
            struct ipath p = {path, NULL, i};
            if (!probe(c, n->contains, json_array_get(v, i), &p))
                count++;
            if (c->aborted)
                return 1;
        }
        if ((long long)count < min)
            return report(c, n, "contains", path, v,
                          "expected at least %lld %s matching \"contains\", got %zu", min,
                          min == 1 ? "entry" : "entries", count);
        if (n->max_contains >= 0 && (long long)count > n->max_contains)
            return report(c, n, "maxContains", path, v,
                          "expected at most %lld entries matching \"contains\", got %zu",
                          n->max_contains, count);
    }
    return 0;
}

static size_t edit_distance(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b), row[65], prev;

    if (la > 64 || lb > 64)
        return SIZE_MAX;
    for (size_t j = 0; j <= lb; j++)
        row[j] = j;
    for (size_t i = 1; i <= la; i++) {
        prev = row[0];
        row[0] = i;
        for (size_t j = 1; j <= lb; j++) {
            size_t best = prev + (a[i - 1] != b[j - 1]);
            if (row[j] + 1 < best)
                best = row[j] + 1;
            if (row[j - 1] + 1 < best)
                best = row[j - 1] + 1;
            prev = row[j];
            row[j] = best;
        }
    }
    return row[lb];
}

static int unknown_field(struct vctx *c, const struct snode *n, const char *key,
                         const struct ipath *path, const json_t *v)
{
    const char *best = NULL;
    size_t best_d = 3;
    char q[QUOTE_LEN];

    if (c->quiet || (!c->errbuf && !c->detail))
        return 1;
    for (size_t i = 0; i < n->n_props; i++) {
        size_t d = edit_distance(key, n->props[i].key);
        if (d < best_d) {
            best_d = d;
            best = n->props[i].key;
        }
    }
    if (best)
        return report(c, n, "additionalProperties", path, v,
                      "unknown field %s (did you mean \"%s\"?)",
                      shoal_jsondesc_quote(q, key, strlen(key)), best);
    return report(c, n, "additionalProperties", path, v, "unknown field %s",
                  shoal_jsondesc_quote(q, key, strlen(key)));
}

/* True when key is covered by properties or patternProperties. */
static int matched_key(struct vctx *c, const struct snode *n, const char *key, const json_t *v,
                       const struct ipath *path)
{
    if (n->props_obj && json_object_get(n->props_obj, key))
        return 1;
    for (size_t i = 0; i < n->n_pats; i++) {
        int r = shoal_regex_search(n->pats[i].re, key, strlen(key), 0);
        if (r == SHOAL_REGEX_BUDGET) {
            abort_validation(c, n, "patternProperties", path, v,
                             "a patternProperties pattern needs too many steps on a field name");
            return -1;
        }
        if (r == SHOAL_REGEX_MATCH)
            return 1;
    }
    return 0;
}

static int check_object(struct vctx *c, const struct snode *n, const json_t *v,
                        const struct ipath *path)
{
    const char *key;
    const json_t *val;
    size_t size = json_object_size(v);

    int bad = 0;

    if (n->additional && n->additional->boolean == 0) {
        json_object_foreach((json_t *)v, key, val)
        {
            int m = matched_key(c, n, key, v, path);
            if (m < 0)
                return 1;
            if (!m) {
                unknown_field(c, n, key, path, v);
                if (!keep_going(c))
                    return 1;
                bad = 1;
            }
        }
    }
    for (size_t i = 0; n->required && i < json_array_size(n->required); i++) {
        const char *r = json_string_value(json_array_get(n->required, i));
        if (!json_object_get(v, r)) {
            report(c, n, "required", path, v, "missing required field \"%s\"", r);
            if (!keep_going(c))
                return 1;
            bad = 1;
        }
    }
    if (n->min_props >= 0 && (long long)size < n->min_props)
        return report(c, n, "minProperties", path, v, "too few fields (%zu; the minimum is %lld)",
                      size, n->min_props);
    if (n->max_props >= 0 && (long long)size > n->max_props)
        return report(c, n, "maxProperties", path, v, "too many fields (%zu; the limit is %lld)",
                      size, n->max_props);
    if (n->names) {
        json_object_foreach((json_t *)v, key, val)
        {
            json_t *ks = json_string(key);
            struct ipath p = {path, key, 0};
            int r;
            if (!ks)
                return abort_validation(c, n, "propertyNames", path, v, "out of memory");
            r = probe(c, n->names, ks, &p);
            json_decref(ks);
            if (c->aborted)
                return 1;
            if (r) {
                char q[QUOTE_LEN];
                return report(c, n, "propertyNames", path, v,
                              "field name %s is not allowed by propertyNames",
                              shoal_jsondesc_quote(q, key, strlen(key)));
            }
        }
    }
    for (size_t i = 0; i < n->n_props; i++) {
        const json_t *pv = json_object_get(v, n->props[i].key);
        struct ipath p = {path, n->props[i].key, 0};

        if (pv && validate(c, n->props[i].node, pv, &p)) {
            if (!keep_going(c))
                return 1;
            bad = 1;
        }
    }
    if (bad)
        return 1;
    if (n->n_pats || (n->additional && n->additional->boolean != 0)) {
        json_object_foreach((json_t *)v, key, val)
        {
            struct ipath p = {path, key, 0};
            int matched = n->props_obj && json_object_get(n->props_obj, key);

            for (size_t i = 0; i < n->n_pats; i++) {
                int r = shoal_regex_search(n->pats[i].re, key, strlen(key), 0);
                if (r == SHOAL_REGEX_BUDGET)
                    return abort_validation(
                        c, n, "patternProperties", path, v,
                        "a patternProperties pattern needs too many steps on a field name");
                if (r != SHOAL_REGEX_MATCH)
                    continue;
                matched = 1;
                if (validate(c, n->pats[i].node, val, &p))
                    return 1;
            }
            if (!matched && n->additional && validate(c, n->additional, val, &p))
                return 1;
        }
    }
    for (size_t i = 0; i < n->n_dep_req; i++) {
        const json_t *names = n->dep_req[i].names;
        if (!json_object_get(v, n->dep_req[i].key))
            continue;
        for (size_t j = 0; j < json_array_size(names); j++) {
            const char *need = json_string_value(json_array_get(names, j));
            if (!json_object_get(v, need))
                return report(c, n, "dependentRequired", path, v,
                              "missing field \"%s\" (required when \"%s\" is present)", need,
                              n->dep_req[i].key);
        }
    }
    for (size_t i = 0; i < n->n_dep_schemas; i++) {
        if (json_object_get(v, n->dep_schemas[i].key) &&
            validate(c, n->dep_schemas[i].node, v, path))
            return 1;
    }
    return 0;
}

static int check_combinators(struct vctx *c, const struct snode *n, const json_t *v,
                             const struct ipath *path)
{
    for (size_t i = 0; i < n->n_all_of; i++) {
        if (validate(c, n->all_of[i], v, path))
            return 1;
    }
    if (n->n_any_of) {
        size_t i;
        for (i = 0; i < n->n_any_of; i++) {
            if (!probe(c, n->any_of[i], v, path))
                break;
            if (c->aborted)
                return 1;
        }
        if (i == n->n_any_of)
            return report(c, n, "anyOf", path, v,
                          "expected a value matching at least one of %zu "
                          "anyOf schemas, got one matching none",
                          n->n_any_of);
    }
    if (n->n_one_of) {
        size_t first = SIZE_MAX;
        for (size_t i = 0; i < n->n_one_of; i++) {
            int r = probe(c, n->one_of[i], v, path);
            if (c->aborted)
                return 1;
            if (r)
                continue;
            if (first != SIZE_MAX)
                return report(c, n, "oneOf", path, v,
                              "expected a value matching exactly one oneOf schema, got one "
                              "matching schemas %zu and %zu",
                              first, i);
            first = i;
        }
        if (first == SIZE_MAX)
            return report(c, n, "oneOf", path, v,
                          "expected a value matching exactly one of %zu oneOf schemas, got one "
                          "matching none",
                          n->n_one_of);
    }
    if (n->not_) {
        int r = probe(c, n->not_, v, path);
        if (c->aborted)
            return 1;
        if (!r)
            return report(c, n, "not", path, v,
                          "expected a value not matching the \"not\" schema, got one matching it");
    }
    if (n->if_) {
        int r = probe(c, n->if_, v, path);
        if (c->aborted)
            return 1;
        if (!r && n->then_ && validate(c, n->then_, v, path))
            return 1;
        if (r && n->else_ && validate(c, n->else_, v, path))
            return 1;
    }
    return 0;
}

static int validate_here(struct vctx *c, const struct snode *n, const json_t *v,
                         const struct ipath *path)
{
    char a[QUOTE_LEN], b[QUOTE_LEN];

    if (n->ref_node && validate(c, n->ref_node, v, path))
        return 1;
    if (n->types && !type_ok(n->types, v)) {
        if (c->quiet || (!c->errbuf && !c->detail))
            return 1;
        types_text(a, sizeof(a), n->types);
        return report(c, n, "type", path, v, "expected %s, got %s", a, shoal_jsondesc_type(v));
    }
    if (n->const_val && !json_eq(n->const_val, v)) {
        char *d;
        int r;
        if (c->quiet || (!c->errbuf && !c->detail))
            return 1;
        if (json_is_string(n->const_val))
            return report(c, n, "const", path, v, "expected %s, got %s",
                          shoal_jsondesc_quote(a, json_string_value(n->const_val),
                                               json_string_length(n->const_val)),
                          value_text(b, v));
        d = json_dumps(n->const_val, JSON_COMPACT | JSON_ENCODE_ANY);
        r = report(c, n, "const", path, v, "expected %.200s, got %s", d ? d : "a constant",
                   value_text(b, v));
        free(d);
        return r;
    }
    if (n->enum_vals) {
        size_t i, k = json_array_size(n->enum_vals);
        int all_strings = 1;
        for (i = 0; i < k; i++) {
            if (json_eq(json_array_get(n->enum_vals, i), v))
                break;
        }
        if (i == k) {
            if (c->quiet || (!c->errbuf && !c->detail))
                return 1;
            for (i = 0; i < k; i++)
                all_strings &= json_is_string(json_array_get(n->enum_vals, i));
            enum_text(a, LIST_LEN, n->enum_vals);
            if (all_strings && json_is_string(v))
                return report(c, n, "enum", path, v, "%s is not one of %s",
                              shoal_jsondesc_quote(b, json_string_value(v), json_string_length(v)),
                              a);
            return report(c, n, "enum", path, v, "expected one of %s, got %s", a,
                          all_strings ? shoal_jsondesc_type(v) : value_text(b, v));
        }
    }
    switch (json_typeof(v)) {
    case JSON_INTEGER:
    case JSON_REAL:
        if (check_number(c, n, v, path))
            return 1;
        break;
    case JSON_STRING:
        if (check_string(c, n, v, path))
            return 1;
        break;
    case JSON_ARRAY:
        if (check_array(c, n, v, path))
            return 1;
        break;
    case JSON_OBJECT:
        if (check_object(c, n, v, path))
            return 1;
        break;
    default:
        break;
    }
    return check_combinators(c, n, v, path);
}

static int validate(struct vctx *c, const struct snode *n, const json_t *v,
                    const struct ipath *path)
{
    int r;

    if (n->boolean >= 0)
        return n->boolean ? 0 : report(c, n, "false", path, v, "not allowed");
    if (c->depth >= SHOAL_JSONSCHEMA_MAX_DEPTH) {
        char msg[128];
        snprintf(msg, sizeof(msg), "schema evaluation nests deeper than %d levels",
                 SHOAL_JSONSCHEMA_MAX_DEPTH);
        return abort_validation(c, n, "$ref", path, v, msg);
    }
    c->depth++;
    r = validate_here(c, n, v, path);
    c->depth--;
    return r;
}

shoal_err_t shoal_jsonschema_validate_ex(const shoal_jsonschema_t *s, const json_t *instance,
                                         shoal_jsonschema_error_t *detail, char *errbuf,
                                         size_t errlen)
{
    struct vctx c = {errbuf, errlen, detail, 0, 0, 0, NULL, NULL, 0, 0};

    if (detail)
        memset(detail, 0, sizeof(*detail));
    if (!instance)
        return shoal_err_set(errbuf, errlen, SHOAL_ERR_INVALID, "expected a value, got nothing");
    return validate(&c, s->root, instance, NULL) ? SHOAL_ERR_INVALID : SHOAL_OK;
}

shoal_err_t shoal_jsonschema_validate_all(const shoal_jsonschema_t *s, const json_t *instance,
                                          size_t max_errors, shoal_jsonschema_each_fn fn, void *arg,
                                          size_t *n_errors)
{
    shoal_jsonschema_error_t first;
    struct vctx c = {NULL, 0, &first, 0, 0, 0, fn, arg, max_errors ? max_errors : 1, 0};
    int bad = instance ? validate(&c, s->root, instance, NULL) : 1;

    if (!instance) {
        memset(&first, 0, sizeof(first));
        fn(arg, &first, "expected a value, got nothing");
        c.each_count = 1;
    }
    if (n_errors)
        *n_errors = c.each_count;
    return bad ? SHOAL_ERR_INVALID : SHOAL_OK;
}

shoal_err_t shoal_jsonschema_validate(const shoal_jsonschema_t *s, const json_t *instance,
                                      char *errbuf, size_t errlen)
{
    return shoal_jsonschema_validate_ex(s, instance, NULL, errbuf, errlen);
}
