/*
 * The strict, fast JSON reader (see jsonlex.h).
 *
 * Every function stops at the first doubt; nothing here reports why, since
 * the caller's jansson parse says that for every text this one gives up on.
 */
#include "common/jsonlex.h"

#include <stdlib.h>
#include <string.h>

#define DEPTH_MAX 64   /* jansson allows 2048; deeper texts are left to it */
#define NUMBER_LEN 300 /* longer numbers are left to jansson (strtod's limits) */
#define INT_DIGITS 18  /* below LLONG_MAX whatever the digits */
#define SMALL_STRING 256

/* The bytes after a lead byte c of a UTF-8 sequence, by jansson's rule (no
 * overlong forms, no surrogates, nothing past U+10FFFF); 0 when invalid. */
static size_t utf8_tail(const unsigned char *p, const unsigned char *end, unsigned c)
{
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
        size_t k = utf8_tail(p, end, c);
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

/* ---- the tree ---- */

struct lex {
    const char *p, *end;
};

static void skip_ws(struct lex *x)
{
    while (x->p < x->end && (*x->p == ' ' || *x->p == '\n' || *x->p == '\r' || *x->p == '\t'))
        x->p++;
}

/* The string at x->p, its escapes undone, handed to fn(arg, text, len)
 * (text NUL-terminated); returns fn's result, -1 when the string is not
 * plain or memory ran out. */
static int with_string(struct lex *x, int (*fn)(void *arg, const char *s, size_t n), void *arg)
{
    int escaped;
    const char *body = x->p + 1, *after = shoal_jsonlex_string(x->p, x->end, &escaped);
    if (!after)
        return -1;
    x->p = after;
    size_t len = (size_t)(after - 1 - body);
    char small[SMALL_STRING], *buf = small;
    if (len >= sizeof(small) && !(buf = malloc(len + 1)))
        return -1;
    if (escaped) {
        len = shoal_jsonlex_unescape(buf, body, len);
    } else {
        memcpy(buf, body, len);
        buf[len] = '\0';
    }
    int r = fn(arg, buf, len);
    if (buf != small)
        free(buf);
    return r;
}

static int make_string(void *arg, const char *s, size_t n)
{
    json_t **out = arg;
    return (*out = json_stringn_nocheck(s, n)) ? 0 : -1;
}

static json_t *value(struct lex *x, int depth);

struct member {
    json_t *obj;
    struct lex *x;
    int depth;
};

/* One member: the key (s, n) was read; reads ':' and the value. */
static int add_member(void *arg, const char *key, size_t n)
{
    struct member *m = arg;
    /* jansson refuses a second key (JSON_REJECT_DUPLICATES) or keeps the
     * last: either way it is jansson's to read */
    if (json_object_getn(m->obj, key, n))
        return -1;
    skip_ws(m->x);
    if (m->x->p >= m->x->end || *m->x->p != ':')
        return -1;
    m->x->p++;
    json_t *v = value(m->x, m->depth + 1);
    if (!v)
        return -1;
    return json_object_setn_new_nocheck(m->obj, key, n, v) == 0 ? 0 : -1;
}

static json_t *object(struct lex *x, int depth)
{
    json_t *obj = json_object();
    struct member m = {obj, x, depth};
    if (!obj)
        return NULL;
    x->p++;
    skip_ws(x);
    if (x->p < x->end && *x->p == '}') {
        x->p++;
        return obj;
    }
    for (;;) {
        if (x->p >= x->end || *x->p != '"' || with_string(x, add_member, &m) != 0)
            break;
        skip_ws(x);
        if (x->p < x->end && *x->p == ',') {
            x->p++;
            skip_ws(x);
            continue;
        }
        if (x->p < x->end && *x->p == '}') {
            x->p++;
            return obj;
        }
        break;
    }
    json_decref(obj);
    return NULL;
}

static json_t *array(struct lex *x, int depth)
{
    json_t *arr = json_array();
    if (!arr)
        return NULL;
    x->p++;
    skip_ws(x);
    if (x->p < x->end && *x->p == ']') {
        x->p++;
        return arr;
    }
    for (;;) {
        json_t *v = value(x, depth + 1);
        if (!v || json_array_append_new(arr, v) != 0)
            break;
        skip_ws(x);
        if (x->p < x->end && *x->p == ',') {
            x->p++;
            continue;
        }
        if (x->p < x->end && *x->p == ']') {
            x->p++;
            return arr;
        }
        break;
    }
    json_decref(arr);
    return NULL;
}

static json_t *literal(struct lex *x, const char *word, size_t n, json_t *v)
{
    if ((size_t)(x->end - x->p) < n || memcmp(x->p, word, n) != 0)
        return NULL;
    x->p += n;
    return v;
}

static json_t *value(struct lex *x, int depth)
{
    json_t *v = NULL;
    if (depth > DEPTH_MAX)
        return NULL;
    skip_ws(x);
    if (x->p >= x->end)
        return NULL;
    switch (*x->p) {
    case '{':
        return object(x, depth);
    case '[':
        return array(x, depth);
    case '"':
        return with_string(x, make_string, &v) == 0 ? v : NULL;
    case 't':
        return literal(x, "true", 4, json_true());
    case 'f':
        return literal(x, "false", 5, json_false());
    case 'n':
        return literal(x, "null", 4, json_null());
    default: {
        int is_int = 0;
        long long n = 0;
        const char *after = shoal_jsonlex_number(x->p, x->end, &is_int, &n);
        /* reals are jansson's: its strtod ignores the locale, ours would not */
        if (!after || !is_int)
            return NULL;
        x->p = after;
        return json_integer((json_int_t)n);
    }
    }
}

json_t *shoal_jsonlex_load(const char *text, size_t len)
{
    struct lex x = {text, text + len};
    if (!text)
        return NULL;
    skip_ws(&x);
    if (x.p >= x.end || *x.p != '{')
        return NULL;
    json_t *doc = object(&x, 1);
    if (!doc)
        return NULL;
    skip_ws(&x);
    if (x.p != x.end) {
        json_decref(doc);
        return NULL;
    }
    return doc;
}
