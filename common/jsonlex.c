/*
 * The strict, fast JSON reader (see jsonlex.h).
 *
 * Every function stops at the first doubt; nothing here reports why, since
 * the caller's jansson parse says that for every text this one gives up on.
 */
#include "common/jsonlex.h"

#include <stdlib.h>
#include <string.h>

#define NUMBER_LEN 300 /* longer numbers are left to jansson (strtod's limits) */
#define INT_DIGITS 18  /* below LLONG_MAX whatever the digits */
#define SMALL_STRING 256

size_t shoal_jsonlex_utf8_tail(const unsigned char *p, const unsigned char *end)
{
    unsigned c = *p;
    size_t k;
    unsigned cp;
    if (c >= 0xC2 && c <= 0xDF) {
        k = 1;
        cp = c & 0x1F;
    } else if (c >= 0xE0 && c <= 0xEF) {
        k = 2;
        cp = c & 0x0F;
    } else if (c >= 0xF0 && c <= 0xF4) {
        k = 3;
        cp = c & 0x07;
    } else {
        return 0;
    }
    if ((size_t)(end - p) <= k)
        return 0;
    for (size_t j = 1; j <= k; j++) {
        unsigned d = p[j];
        if ((d & 0xC0) != 0x80)
            return 0;
        cp = (cp << 6) | (d & 0x3F);
    }
    if ((k == 2 && (cp < 0x800 || (cp >= 0xD800 && cp <= 0xDFFF))) ||
        (k == 3 && (cp < 0x10000 || cp > 0x10FFFF)))
        return 0;
    return k;
}

const char *shoal_jsonlex_string(const char *start, const char *stop, int *escaped)
{
    const unsigned char *p = (const unsigned char *)start + 1;
    const unsigned char *end = (const unsigned char *)stop;
    *escaped = 0;
    for (;;) {
        while (p < end && *p >= 0x20 && *p < 0x80 && *p != '"' && *p != '\\')
            p++;
        if (p >= end)
            return NULL;
        unsigned c = *p;
        if (c == '"')
            return (const char *)p + 1;
        if (c == '\\') {
            /* \u is jansson's: surrogate pairs, \u0000 */
            if (p + 1 >= end || p[1] == '\0' || !strchr("\"\\/bfnrt", p[1]))
                return NULL;
            *escaped = 1;
            p += 2;
            continue;
        }
        if (c < 0x20)
            return NULL;
        size_t k = shoal_jsonlex_utf8_tail(p, end);
        if (!k)
            return NULL;
        p += k + 1;
    }
}

static const char *digits(const char *p, const char *end)
{
    while (p < end && *p >= '0' && *p <= '9')
        p++;
    return p;
}

const char *shoal_jsonlex_number(const char *start, const char *end, int *is_int, long long *value)
{
    const char *p = start;
    int neg = p < end && *p == '-';
    const char *int_start = p + neg;
    p = digits(int_start, end);
    size_t nint = (size_t)(p - int_start);
    if (nint == 0 || (nint > 1 && *int_start == '0'))
        return NULL;
    *is_int = 1;
    if (p < end && *p == '.') {
        const char *frac = p + 1;
        p = digits(frac, end);
        if (p == frac)
            return NULL;
        *is_int = 0;
    }
    if (p < end && (*p == 'e' || *p == 'E'))
        return NULL;
    if (p - start > NUMBER_LEN || (*is_int && nint > INT_DIGITS))
        return NULL;
    if (*is_int) {
        long long v = 0;
        for (const char *q = int_start; q < p; q++)
            v = v * 10 + (*q - '0');
        *value = neg ? -v : v;
    }
    return p;
}

size_t shoal_jsonlex_unescape(char *out, const char *text, size_t len)
{
    char *o = out;
    for (size_t i = 0; i < len; i++) {
        char c = text[i];
        if (c != '\\') {
            *o++ = c;
            continue;
        }
        switch (text[++i]) {
        case 'b':
            *o++ = '\b';
            break;
        case 'f':
            *o++ = '\f';
            break;
        case 'n':
            *o++ = '\n';
            break;
        case 'r':
            *o++ = '\r';
            break;
        case 't':
            *o++ = '\t';
            break;
        default: /* '"', '\\', '/' stand for themselves (nothing else gets here) */
            *o++ = text[i];
        }
    }
    *o = '\0';
    return (size_t)(o - out);
}

/* ---- the walk ---- */

struct walk {
    const char *p, *end;
    const shoal_jsonlex_visitor_t *v;
    void *arg;
};

const char *shoal_jsonlex_ws(const char *p, const char *end)
{
    while (p < end && (*p == ' ' || *p == '\n' || *p == '\r' || *p == '\t'))
        p++;
    return p;
}

static void skip_ws(struct walk *w)
{
    w->p = shoal_jsonlex_ws(w->p, w->end);
}

/* Whether the next byte (after white space) is c; consumes it when it is. */
static int next_is(struct walk *w, char c)
{
    skip_ws(w);
    if (w->p < w->end && *w->p == c) {
        w->p++;
        return 1;
    }
    return 0;
}

static int value(struct walk *w, int depth);

/* The members or elements of the container just opened, and its close. */
static int container(struct walk *w, int is_array, int depth)
{
    const char close = is_array ? ']' : '}';
    if (w->v->open(w->arg, is_array))
        return 0;
    if (next_is(w, close))
        return w->v->close(w->arg, is_array) == 0;
    for (size_t i = 0;; i++) {
        if (is_array) {
            if (w->v->index(w->arg, i))
                return 0;
        } else {
            int escaped;
            const char *key = w->p + 1, *after;
            if (w->p >= w->end || *w->p != '"' ||
                !(after = shoal_jsonlex_string(w->p, w->end, &escaped)))
                return 0;
            w->p = after;
            if (w->v->key(w->arg, key, (size_t)(after - 1 - key), escaped) || !next_is(w, ':'))
                return 0;
        }
        if (!value(w, depth + 1))
            return 0;
        if (next_is(w, ','))
            skip_ws(w);
        else if (next_is(w, close))
            return w->v->close(w->arg, is_array) == 0;
        else
            return 0;
    }
}

static int literal(struct walk *w, const char *word, size_t n)
{
    if ((size_t)(w->end - w->p) < n || memcmp(w->p, word, n) != 0)
        return 0;
    w->p += n;
    return w->v->literal(w->arg, *word) == 0;
}

static int value(struct walk *w, int depth)
{
    if (depth > SHOAL_JSONLEX_DEPTH_MAX)
        return 0;
    skip_ws(w);
    if (w->p >= w->end)
        return 0;
    switch (*w->p) {
    case '{':
    case '[':
        return container(w, *w->p++ == '[', depth);
    case '"': {
        int escaped;
        const char *body = w->p + 1, *after = shoal_jsonlex_string(w->p, w->end, &escaped);
        if (!after)
            return 0;
        w->p = after;
        return w->v->string(w->arg, body, (size_t)(after - 1 - body), escaped) == 0;
    }
    case 't':
        return literal(w, "true", 4);
    case 'f':
        return literal(w, "false", 5);
    case 'n':
        return literal(w, "null", 4);
    default: {
        int is_int = 0;
        long long n = 0;
        const char *after = shoal_jsonlex_number(w->p, w->end, &is_int, &n);
        if (!after)
            return 0;
        w->p = after;
        return w->v->number(w->arg, is_int, n) == 0;
    }
    }
}

int shoal_jsonlex_walk(const char *text, size_t len, const shoal_jsonlex_visitor_t *v, void *arg)
{
    struct walk w = {text, text ? text + len : NULL, v, arg};
    if (!text)
        return 0;
    skip_ws(&w);
    if (w.p >= w.end || *w.p != '{' || !value(&w, 1))
        return 0;
    skip_ws(&w);
    return w.p == w.end;
}

/* ---- the tree ---- */

/* The tree as the walk goes: the containers open, innermost last, and the
 * key of the member whose value comes next (escapes undone). */
struct tree {
    json_t *root;
    json_t *open[SHOAL_JSONLEX_DEPTH_MAX + 1];
    int depth;
    char small[SMALL_STRING];
    char *key; /* small, or allocated for a long key */
    size_t klen;
    int nomem; /* an allocation failed (rather than the text being unsure) */
};

/* Puts v (a new reference, stolen) where the walk is: under the pending key
 * of the open object, at the end of the open array, or as the root. */
static int place(struct tree *t, json_t *v)
{
    if (!v) {
        t->nomem = 1;
        return -1;
    }
    if (t->depth == 0) {
        t->root = v;
        return 0;
    }
    json_t *parent = t->open[t->depth - 1];
    int r = json_is_array(parent) ? json_array_append_new(parent, v)
                                  : json_object_setn_new_nocheck(parent, t->key, t->klen, v);
    if (r)
        t->nomem = 1; /* both fail only for memory */
    return r;
}

static int tree_key(void *arg, const char *text, size_t len, int escaped)
{
    struct tree *t = arg;
    if (t->key != t->small)
        free(t->key);
    t->key = t->small;
    if (len >= sizeof(t->small) && !(t->key = malloc(len + 1))) {
        t->key = t->small;
        t->nomem = 1;
        return -1;
    }
    if (escaped) {
        len = shoal_jsonlex_unescape(t->key, text, len);
    } else {
        memcpy(t->key, text, len);
        t->key[len] = '\0';
    }
    t->klen = len;
    /* jansson refuses a second key (JSON_REJECT_DUPLICATES) or keeps the
     * last: either way it is jansson's to read */
    return json_object_getn(t->open[t->depth - 1], t->key, len) ? -1 : 0;
}

static int tree_index(void *arg, size_t i)
{
    (void)arg;
    (void)i;
    return 0;
}

static int tree_open(void *arg, int is_array)
{
    struct tree *t = arg;
    json_t *c = is_array ? json_array() : json_object();
    /* the container is placed first and filled while its parent holds it */
    if (!c)
        t->nomem = 1;
    if (!c || place(t, json_incref(c)) != 0) {
        json_decref(c);
        return -1;
    }
    t->open[t->depth++] = c;
    json_decref(c);
    return 0;
}

static int tree_close(void *arg, int is_array)
{
    struct tree *t = arg;
    (void)is_array;
    t->depth--;
    return 0;
}

static int tree_string(void *arg, const char *text, size_t len, int escaped)
{
    struct tree *t = arg;
    if (!escaped)
        return place(t, json_stringn_nocheck(text, len));
    char small[SMALL_STRING], *buf = small;
    if (len >= sizeof(small) && !(buf = malloc(len + 1))) {
        t->nomem = 1;
        return -1;
    }
    int r = place(t, json_stringn_nocheck(buf, shoal_jsonlex_unescape(buf, text, len)));
    if (buf != small)
        free(buf);
    return r;
}

static int tree_number(void *arg, int is_int, long long value)
{
    /* reals are jansson's: its strtod ignores the locale, ours would not */
    return is_int ? place(arg, json_integer((json_int_t)value)) : -1;
}

static int tree_literal(void *arg, char c)
{
    return place(arg, c == 't' ? json_true() : c == 'f' ? json_false() : json_null());
}

json_t *shoal_jsonlex_load_nomem(const char *text, size_t len, int *nomem)
{
    static const shoal_jsonlex_visitor_t build = {tree_key,    tree_index,  tree_open,   tree_close,
                                                  tree_string, tree_number, tree_literal};
    struct tree t;
    t.root = NULL;
    t.depth = 0;
    t.key = t.small;
    t.nomem = 0;
    int ok = shoal_jsonlex_walk(text, len, &build, &t);
    if (t.key != t.small)
        free(t.key);
    *nomem = !ok && t.nomem;
    if (!ok) {
        json_decref(t.root);
        return NULL;
    }
    return t.root;
}

json_t *shoal_jsonlex_load(const char *text, size_t len)
{
    int nomem;
    return shoal_jsonlex_load_nomem(text, len, &nomem);
}
