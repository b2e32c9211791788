/*
 * Picking members out of a JSON text (see jsonpick.h).
 *
 * One recursive pass checks the whole text by RFC 8259 and jansson's rules
 * (valid UTF-8, no raw control characters in strings, nothing after the
 * value but white space) and builds the path of a value only while it may
 * still lead to a pick. Every doubt returns 0: the caller's jansson parse is
 * the authority, this is only a shortcut past it.
 */
#include "worker/jsonpick.h"

#include <stdlib.h>
#include <string.h>

#include "common/jsonlex.h"

#define PICKS_MAX 16
#define DEPTH_MAX 64   /* jansson allows 2048; deeper answers take the slow path */
#define PATH_LEN 256   /* longer paths are never picked */
#define ENTERED_MAX 64 /* picked paths and their prefixes met in one text */

struct scan {
    const unsigned char *p, *end;
    shoal_jsonpick_t *picks;
    size_t npicks;
    /* Paths on the way to a pick met so far, each as a prefix of a pick's
     * path: a second one is a duplicate key, whose meaning (jansson keeps
     * the last) is left to jansson. */
    struct {
        const char *path;
        size_t len;
    } entered[ENTERED_MAX];
    size_t nentered;
};

static void skip_ws(struct scan *s)
{
    while (s->p < s->end && (*s->p == ' ' || *s->p == '\n' || *s->p == '\r' || *s->p == '\t'))
        s->p++;
}

/* How path relates to the picks: 2 when it is one, 1 when it leads to one,
 * 0 when neither; *which is a pick whose path starts with it. */
static int relation(const struct scan *s, const char *path, size_t n, const char **which)
{
    int rel = 0;
    for (size_t i = 0; i < s->npicks; i++) {
        const char *pp = s->picks[i].path;
        if (strncmp(pp, path, n) != 0)
            continue;
        *which = pp;
        if (pp[n] == '\0')
            return 2;
        if (pp[n] == '.')
            rel = 1;
    }
    return rel;
}

/* Records that path (n bytes, the start of pick path pp) was met; 0 when it
 * was met before. */
static int enter(struct scan *s, const char *pp, size_t n)
{
    for (size_t i = 0; i < s->nentered; i++)
        if (s->entered[i].len == n && strncmp(s->entered[i].path, pp, n) == 0)
            return 0;
    if (s->nentered == ENTERED_MAX)
        return 0;
    s->entered[s->nentered].path = pp;
    s->entered[s->nentered].len = n;
    s->nentered++;
    return 1;
}

/* A string at s->p (on its opening quote): its body into *text and *len. */
static int string(struct scan *s, const char **text, size_t *len, int *escaped)
{
    const char *start = (const char *)s->p;
    const char *after = shoal_jsonlex_string(start, (const char *)s->end, escaped);
    if (!after)
        return 0;
    *text = start + 1;
    *len = (size_t)(after - 1 - *text);
    s->p = (const unsigned char *)after;
    return 1;
}

static int number(struct scan *s, int *is_int, long long *value)
{
    const char *after =
        shoal_jsonlex_number((const char *)s->p, (const char *)s->end, is_int, value);
    if (!after)
        return 0;
    s->p = (const unsigned char *)after;
    return 1;
}

static int literal(struct scan *s, const char *word, size_t n)
{
    if ((size_t)(s->end - s->p) < n || memcmp(s->p, word, n) != 0)
        return 0;
    s->p += n;
    return 1;
}

static int value(struct scan *s, char *path, size_t plen, int rel, int depth);

/* The path of a member (key) or an element (index as digits) below path
 * into child; its length, or 0 when too long to be picked. */
static size_t child_path(char *child, const char *path, size_t plen, const char *key, size_t klen)
{
    size_t n = plen + (plen ? 1 : 0) + klen;
    if (n >= PATH_LEN)
        return 0;
    memcpy(child, path, plen);
    if (plen)
        child[plen] = '.';
    memcpy(child + n - klen, key, klen);
    child[n] = '\0';
    return n;
}

/* A value below a path that leads to a pick: its own relation to the picks,
 * and whether it may be entered (not a duplicate). -1 when it may not. */
static int below(struct scan *s, char *child, const char *path, size_t plen, const char *key,
                 size_t klen, size_t *clen)
{
    *clen = child_path(child, path, plen, key, klen);
    if (*clen == 0)
        return 0;
    const char *pp = NULL;
    int rel = relation(s, child, *clen, &pp);
    if (rel && !enter(s, pp, *clen))
        return -1;
    return rel;
}

static int object(struct scan *s, char *path, size_t plen, int rel, int depth)
{
    char child[PATH_LEN];
    s->p++;
    skip_ws(s);
    if (s->p < s->end && *s->p == '}') {
        s->p++;
        return 1;
    }
    for (;;) {
        const char *key;
        size_t klen, clen = 0;
        int escaped, crel = 0;
        if (s->p >= s->end || *s->p != '"' || !string(s, &key, &klen, &escaped))
            return 0;
        if (rel) {
            /* an escaped key may name a picked member in another spelling,
             * and one with a dot or only digits passes for two steps or an
             * index: those texts are jansson's to read */
            if (escaped || (crel = below(s, child, path, plen, key, klen, &clen)) < 0)
                return 0;
            if (crel && (memchr(key, '.', klen) || strspn(key, "0123456789") >= klen))
                return 0;
        }
        skip_ws(s);
        if (s->p >= s->end || *s->p != ':')
            return 0;
        s->p++;
        if (!value(s, child, clen, crel, depth + 1))
            return 0;
        skip_ws(s);
        if (s->p < s->end && *s->p == ',') {
            s->p++;
            skip_ws(s);
            continue;
        }
        if (s->p < s->end && *s->p == '}') {
            s->p++;
            return 1;
        }
        return 0;
    }
}

static int array(struct scan *s, char *path, size_t plen, int rel, int depth)
{
    char child[PATH_LEN];
    s->p++;
    skip_ws(s);
    if (s->p < s->end && *s->p == ']') {
        s->p++;
        return 1;
    }
    for (size_t i = 0;; i++) {
        size_t clen = 0;
        int crel = 0;
        if (rel) {
            char idx[24];
            size_t n = 0;
            char rev[24];
            size_t v = i;
            do {
                rev[n++] = (char)('0' + v % 10);
                v /= 10;
            } while (v);
            for (size_t j = 0; j < n; j++)
                idx[j] = rev[n - 1 - j];
            if ((crel = below(s, child, path, plen, idx, n, &clen)) < 0)
                return 0;
        }
        if (!value(s, child, clen, crel, depth + 1))
            return 0;
        skip_ws(s);
        if (s->p < s->end && *s->p == ',') {
            s->p++;
            continue;
        }
        if (s->p < s->end && *s->p == ']') {
            s->p++;
            return 1;
        }
        return 0;
    }
}

static shoal_jsonpick_t *pick_of(struct scan *s, const char *path)
{
    for (size_t i = 0; i < s->npicks; i++)
        if (strcmp(s->picks[i].path, path) == 0)
            return &s->picks[i];
    return NULL;
}

/* One value at s->p; rel is path's relation to the picks (see relation). */
static int value(struct scan *s, char *path, size_t plen, int rel, int depth)
{
    if (depth > DEPTH_MAX)
        return 0;
    skip_ws(s);
    if (s->p >= s->end)
        return 0;
    shoal_jsonpick_t *pk = rel == 2 ? pick_of(s, path) : NULL;
    shoal_jsonpick_kind_t kind = SHOAL_JSONPICK_OTHER;
    int ok;
    switch (*s->p) {
    case '{':
        ok = object(s, path, plen, rel, depth);
        break;
    case '[':
        ok = array(s, path, plen, rel, depth);
        break;
    case '"': {
        const char *text;
        size_t len;
        int escaped;
        ok = string(s, &text, &len, &escaped);
        if (ok && pk) {
            kind = SHOAL_JSONPICK_STRING;
            pk->text = text;
            pk->len = len;
        }
        break;
    }
    case 't':
        ok = literal(s, "true", 4);
        break;
    case 'f':
        ok = literal(s, "false", 5);
        break;
    case 'n':
        ok = literal(s, "null", 4);
        break;
    default: {
        int is_int = 0;
        long long v = 0;
        ok = (*s->p == '-' || (*s->p >= '0' && *s->p <= '9')) && number(s, &is_int, &v);
        if (ok && pk && is_int) {
            kind = SHOAL_JSONPICK_INTEGER;
            pk->integer = v;
        }
    }
    }
    if (ok && pk)
        pk->kind = kind;
    return ok;
}

int shoal_jsonpick_object(const char *text, size_t len, shoal_jsonpick_t *picks, size_t npicks)
{
    struct scan sc, *s = &sc;
    char path[PATH_LEN] = "";
    int ok;

    if (!text || npicks > PICKS_MAX)
        return 0;
    for (size_t i = 0; i < npicks; i++) {
        picks[i].kind = SHOAL_JSONPICK_ABSENT;
        picks[i].text = NULL;
        picks[i].len = 0;
        picks[i].integer = 0;
    }
    s->p = (const unsigned char *)text;
    s->end = s->p + len;
    s->picks = picks;
    s->npicks = npicks;
    s->nentered = 0;
    skip_ws(s);
    ok = s->p < s->end && *s->p == '{' && object(s, path, 0, 1, 1);
    if (ok) {
        skip_ws(s);
        ok = s->p == s->end;
    }
    if (!ok)
        for (size_t i = 0; i < npicks; i++)
            picks[i].kind = SHOAL_JSONPICK_ABSENT;
    return ok;
}

char *shoal_jsonpick_string(const shoal_jsonpick_t *p)
{
    if (p->kind != SHOAL_JSONPICK_STRING)
        return NULL;
    char *out = malloc(p->len + 1);
    if (out)
        shoal_jsonlex_unescape(out, p->text, p->len);
    return out;
}
