/*
 * Picking members out of a JSON text (see jsonpick.h).
 *
 * The strict walk of common/jsonlex.h checks the whole text (RFC 8259 and
 * jansson's rules); this file only follows where the walk is, building the
 * path of a value while it may still lead to a pick. Every doubt returns 0:
 * the caller's jansson parse is the authority, this is only a shortcut.
 */
#include "worker/jsonpick.h"

#include <stdlib.h>
#include <string.h>

#include "common/jsonlex.h"

#define PICKS_MAX 16
#define PATH_LEN 256   /* longer paths are never picked */
#define ENTERED_MAX 64 /* picked paths and their prefixes met in one text */

/* Where the walk is: the path of each open container (its length; the
 * paths share one buffer) and how it relates to the picks, and the path of
 * the value that comes next. */
struct scan {
    shoal_jsonpick_t *picks;
    size_t npicks;
    char path[PATH_LEN];
    size_t open_len[SHOAL_JSONLEX_DEPTH_MAX + 2];
    int open_rel[SHOAL_JSONLEX_DEPTH_MAX + 2];
    int depth;
    size_t next_len; /* path[0..next_len) names the next value */
    int next_rel;    /* its relation (see relation) */
    const char *next_pick;
    /* Paths on the way to a pick met so far, each as a prefix of a pick's
     * path: a second one is a duplicate key, whose meaning (jansson keeps
     * the last) is left to jansson. */
    struct {
        const char *path;
        size_t len;
    } entered[ENTERED_MAX];
    size_t nentered;
};

/* How path[0..n) relates to the picks: 2 when it is one, 1 when it leads to
 * one, 0 when neither; *which is a pick whose path starts with it. */
static int relation(const struct scan *s, size_t n, const char **which)
{
    int rel = 0;
    for (size_t i = 0; i < s->npicks; i++) {
        const char *pp = s->picks[i].path;
        if (strncmp(pp, s->path, n) != 0)
            continue;
        *which = pp;
        if (pp[n] == '\0')
            return 2;
        if (pp[n] == '.')
            rel = 1;
    }
    return rel;
}

/* Records that the path n bytes long, the start of pick path pp, was met;
 * 0 when it was met before. */
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

/* The next value is step (len bytes) below the innermost open container:
 * its path and relation, when the container leads to a pick. -1 for a
 * duplicate on the way to a pick. */
static int step(struct scan *s, const char *name, size_t len)
{
    s->next_rel = 0;
    if (s->open_rel[s->depth] == 0)
        return 0;
    size_t plen = s->open_len[s->depth];
    size_t n = plen + (plen ? 1 : 0) + len;
    if (n >= PATH_LEN)
        return 0;
    if (plen)
        s->path[plen] = '.';
    memcpy(s->path + n - len, name, len);
    s->path[n] = '\0';
    s->next_len = n;
    const char *pp = NULL;
    s->next_rel = relation(s, n, &pp);
    s->next_pick = pp;
    if (s->next_rel && !enter(s, pp, n))
        return -1;
    return 0;
}

static int pick_key(void *arg, const char *text, size_t len, int escaped)
{
    struct scan *s = arg;
    /* an escaped key may name a picked member in another spelling: those
     * texts are jansson's to read */
    if (s->open_rel[s->depth] && escaped)
        return -1;
    if (step(s, text, len) != 0)
        return -1;
    /* a key with a dot or only digits passes for two steps or an index */
    if (s->next_rel && (memchr(text, '.', len) || strspn(text, "0123456789") >= len))
        return -1;
    return 0;
}

static int pick_index(void *arg, size_t i)
{
    char rev[24], idx[24];
    size_t n = 0;
    do {
        rev[n++] = (char)('0' + i % 10);
        i /= 10;
    } while (i);
    for (size_t j = 0; j < n; j++)
        idx[j] = rev[n - 1 - j];
    return step(arg, idx, n);
}

/* The pick the value now read fills, NULL when none. */
static shoal_jsonpick_t *here(struct scan *s)
{
    if (s->next_rel != 2)
        return NULL;
    for (size_t i = 0; i < s->npicks; i++)
        if (s->picks[i].path == s->next_pick)
            return &s->picks[i];
    return NULL;
}

static int pick_open(void *arg, int is_array)
{
    struct scan *s = arg;
    shoal_jsonpick_t *p = here(s);
    (void)is_array;
    if (p)
        p->kind = SHOAL_JSONPICK_OTHER;
    /* the top object is the path "", which leads to every pick */
    int top = s->depth == 0 && s->open_rel[0] == -1;
    s->depth += top ? 0 : 1;
    s->open_len[s->depth] = top ? 0 : s->next_len;
    s->open_rel[s->depth] = top ? 1 : s->next_rel;
    return 0;
}

static int pick_close(void *arg, int is_array)
{
    struct scan *s = arg;
    (void)is_array;
    s->next_rel = 0;
    if (s->depth > 0)
        s->depth--;
    return 0;
}

static int pick_string(void *arg, const char *text, size_t len, int escaped)
{
    shoal_jsonpick_t *p = here(arg);
    (void)escaped;
    if (p) {
        p->kind = SHOAL_JSONPICK_STRING;
        p->text = text;
        p->len = len;
    }
    return 0;
}

static int pick_number(void *arg, int is_int, long long value)
{
    shoal_jsonpick_t *p = here(arg);
    if (p) {
        p->kind = is_int ? SHOAL_JSONPICK_INTEGER : SHOAL_JSONPICK_OTHER;
        p->integer = value;
    }
    return 0;
}

static int pick_literal(void *arg, char first)
{
    shoal_jsonpick_t *p = here(arg);
    (void)first;
    if (p)
        p->kind = SHOAL_JSONPICK_OTHER;
    return 0;
}

int shoal_jsonpick_object(const char *text, size_t len, shoal_jsonpick_t *picks, size_t npicks)
{
    static const shoal_jsonlex_visitor_t pick = {pick_key,    pick_index,  pick_open,   pick_close,
                                                 pick_string, pick_number, pick_literal};
    struct scan s;

    if (!text || npicks > PICKS_MAX)
        return 0;
    for (size_t i = 0; i < npicks; i++) {
        picks[i].kind = SHOAL_JSONPICK_ABSENT;
        picks[i].text = NULL;
        picks[i].len = 0;
        picks[i].integer = 0;
    }
    s.picks = picks;
    s.npicks = npicks;
    s.path[0] = '\0';
    s.depth = 0;
    s.open_rel[0] = -1; /* the top object is not open yet */
    s.next_rel = 0;
    s.nentered = 0;
    int ok = shoal_jsonlex_walk(text, len, &pick, &s);
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
