/*
 * Splitting a job document (see jobsplit.h).
 */
#include "common/jobsplit.h"

#include <stdlib.h>
#include <string.h>

struct shoal_jobsplit {
    const char *text, *end;
    const char *items; /* just after the items array's '[' */
    const char *cur;   /* where the next item (or ']') is looked for */
    int started;       /* an item was handed out since the last rewind */
    const char *prev;  /* cur and started before the last item, for unread */
    int prev_started;
    json_t *header;
};

static const char *skip_ws(const char *p, const char *end)
{
    while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'))
        p++;
    return p;
}

/* Past the string starting at p ('"'), or NULL when it does not end. */
static const char *skip_string(const char *p, const char *end)
{
    for (p++; p < end; p++) {
        if (*p == '\\')
            p++;
        else if (*p == '"')
            return p + 1;
    }
    return NULL;
}

/* Past the value starting at p, or NULL when it is cut off or its brackets
 * do not match. Scalars other than strings run to the next separator. */
static const char *skip_value(const char *p, const char *end)
{
    char stack[256];
    int depth = 0;

    if (p >= end)
        return NULL;
    if (*p == '"')
        return skip_string(p, end);
    if (*p != '{' && *p != '[') {
        const char *s = p;
        while (p < end && !strchr(",]} \t\r\n", *p))
            p++;
        return p > s ? p : NULL;
    }
    while (p < end) {
        char ch = *p;
        if (ch == '"') {
            if (!(p = skip_string(p, end)))
                return NULL;
            continue;
        }
        if (ch == '{' || ch == '[') {
            if (depth == (int)sizeof(stack))
                return NULL;
            stack[depth++] = ch == '{' ? '}' : ']';
        } else if (ch == '}' || ch == ']') {
            if (depth == 0 || stack[depth - 1] != ch)
                return NULL;
            if (--depth == 0)
                return p + 1;
        }
        p++;
    }
    return NULL;
}

static shoal_jobsplit_t *fail(shoal_jobsplit_t *s, const char *at, char *errbuf, size_t errlen,
                              const char *what)
{
    shoal_err_set(errbuf, errlen, SHOAL_ERR_INVALID, "%s at byte %zu", what,
                  (size_t)(at - s->text));
    shoal_jobsplit_destroy(s);
    return NULL;
}

shoal_jobsplit_t *shoal_jobsplit_new(const char *text, size_t len, char *errbuf, size_t errlen)
{
    shoal_jobsplit_t *s = calloc(1, sizeof(*s));
    if (!s || !(s->header = json_object())) {
        free(s);
        shoal_err_set(errbuf, errlen, SHOAL_ERR_NOMEM, "out of memory");
        return NULL;
    }
    s->text = text;
    s->end = text + len;
    const char *p = skip_ws(text, s->end);
    if (p >= s->end || *p != '{')
        return fail(s, p, errbuf, errlen, "expected a JSON object");
    p = skip_ws(p + 1, s->end);
    while (p < s->end && *p != '}') {
        if (*p != '"')
            return fail(s, p, errbuf, errlen, "expected a member name");
        const char *key = p, *kend = skip_string(p, s->end);
        if (!kend)
            return fail(s, p, errbuf, errlen, "unterminated string");
        p = skip_ws(kend, s->end);
        if (p >= s->end || *p != ':')
            return fail(s, p, errbuf, errlen, "expected ':'");
        p = skip_ws(p + 1, s->end);
        const char *val = p, *vend = skip_value(p, s->end);
        if (!vend)
            return fail(s, p, errbuf, errlen, "malformed value");
        json_t *k = json_loadb(key, (size_t)(kend - key), JSON_DECODE_ANY, NULL);
        if (!json_is_string(k)) {
            json_decref(k);
            return fail(s, key, errbuf, errlen, "malformed member name");
        }
        if (!strcmp(json_string_value(k), "items")) {
            if (*val != '[') {
                json_decref(k);
                return fail(s, val, errbuf, errlen, "items: expected an array");
            }
            s->items = val + 1;
        } else {
            json_t *v = json_loadb(val, (size_t)(vend - val), JSON_DECODE_ANY, NULL);
            if (!v || json_object_set_new(s->header, json_string_value(k), v)) {
                json_decref(k);
                return fail(s, val, errbuf, errlen, "malformed value");
            }
        }
        json_decref(k);
        p = skip_ws(vend, s->end);
        if (p < s->end && *p == ',')
            p = skip_ws(p + 1, s->end);
        else if (p >= s->end || *p != '}')
            return fail(s, p, errbuf, errlen, "expected ',' or '}'");
    }
    if (p >= s->end)
        return fail(s, p, errbuf, errlen, "the object does not end");
    if (skip_ws(p + 1, s->end) != s->end)
        return fail(s, p + 1, errbuf, errlen, "text after the object");
    if (!s->items)
        return fail(s, text, errbuf, errlen, "items: the job has no items");
    s->cur = s->items;
    return s;
}

void shoal_jobsplit_destroy(shoal_jobsplit_t *s)
{
    if (!s)
        return;
    json_decref(s->header);
    free(s);
}

json_t *shoal_jobsplit_header(shoal_jobsplit_t *s)
{
    return s->header;
}

int shoal_jobsplit_next(shoal_jobsplit_t *s, const char **item, size_t *len, char *errbuf,
                        size_t errlen)
{
    const char *p = skip_ws(s->cur, s->end);
    if (p < s->end && *p == ']')
        return 0;
    if (s->started) {
        if (p >= s->end || *p != ',') {
            shoal_err_set(errbuf, errlen, SHOAL_ERR_INVALID,
                          "items: expected ',' or ']' at byte %zu", (size_t)(p - s->text));
            return -1;
        }
        p = skip_ws(p + 1, s->end);
    }
    const char *e = skip_value(p, s->end);
    if (!e) {
        shoal_err_set(errbuf, errlen, SHOAL_ERR_INVALID, "items: malformed item at byte %zu",
                      (size_t)(p - s->text));
        return -1;
    }
    *item = p;
    *len = (size_t)(e - p);
    s->prev = s->cur;
    s->prev_started = s->started;
    s->cur = e;
    s->started = 1;
    return 1;
}

void shoal_jobsplit_unread(shoal_jobsplit_t *s)
{
    if (s->prev) {
        s->cur = s->prev;
        s->started = s->prev_started;
        s->prev = NULL;
    }
}

void shoal_jobsplit_rewind(shoal_jobsplit_t *s)
{
    s->cur = s->items;
    s->started = 0;
    s->prev = NULL;
}

void shoal_jobsplit_tell(const shoal_jobsplit_t *s, shoal_jobsplit_pos_t *pos)
{
    pos->cur = s->cur;
    pos->started = s->started;
}

void shoal_jobsplit_seek(shoal_jobsplit_t *s, const shoal_jobsplit_pos_t *pos)
{
    s->cur = pos->cur;
    s->started = pos->started;
    s->prev = NULL;
}
