/*
 * JSON text writer (see jsontext.h).
 */
#include "common/jsontext.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/jsonlex.h"

void shoal_jsontext_init(shoal_jsontext_t *b, size_t max)
{
    memset(b, 0, sizeof(*b));
    b->max = max;
    b->first = 1;
}

void shoal_jsontext_free(shoal_jsontext_t *b)
{
    if (!b)
        return;
    free(b->buf);
    b->buf = NULL;
    b->len = b->cap = 0;
}

char *shoal_jsontext_detach(shoal_jsontext_t *b, size_t *len)
{
    char *out = b->nomem ? NULL : b->buf;
    if (!out || b->len == 0) {
        out = b->nomem ? NULL : strdup("");
        free(b->buf);
        if (len)
            *len = 0;
    } else if (len) {
        *len = b->len;
    }
    size_t max = b->max;
    shoal_jsontext_init(b, max);
    return out;
}

/* Room for n more bytes and the NUL; 0 when there is none. */
static int grow(shoal_jsontext_t *b, size_t n)
{
    if (b->nomem)
        return 0;
    if (b->len + n + 1 <= b->cap)
        return 1;
    size_t ncap = b->cap ? b->cap * 2 : 256;
    while (ncap < b->len + n + 1)
        ncap *= 2;
    if (ncap > b->max)
        ncap = b->max;
    char *nb = b->len + n + 1 <= ncap ? realloc(b->buf, ncap) : NULL;
    if (!nb) {
        b->nomem = 1;
        return 0;
    }
    b->buf = nb;
    b->cap = ncap;
    return 1;
}

const char *shoal_jsontext_text(const shoal_jsontext_t *b, size_t *len)
{
    if (b->nomem)
        return NULL;
    *len = b->len;
    return b->buf ? b->buf : "";
}

void shoal_jsontext_reset(shoal_jsontext_t *b)
{
    b->len = 0;
    b->first = 1;
    b->nomem = 0;
    if (b->buf)
        b->buf[0] = '\0';
}

void shoal_jsontext_raw(shoal_jsontext_t *b, const char *s, size_t n)
{
    if (!grow(b, n))
        return;
    memcpy(b->buf + b->len, s, n);
    b->len += n;
    b->buf[b->len] = '\0';
}

static void put(shoal_jsontext_t *b, char c)
{
    if (!grow(b, 1))
        return;
    b->buf[b->len++] = c;
    b->buf[b->len] = '\0';
}

void shoal_jsontext_open(shoal_jsontext_t *b)
{
    put(b, '{');
    b->first = 1;
}

void shoal_jsontext_close(shoal_jsontext_t *b)
{
    put(b, '}');
    b->first = 0;
}

/* Whether s is valid UTF-8 by jansson's rule (no overlong forms, no
 * surrogates, nothing past U+10FFFF); *plain tells whether it has nothing
 * to escape. */
static int utf8_ok(const unsigned char *s, size_t *n, int *plain)
{
    size_t i = 0;
    int p = 1;
    for (;;) {
        unsigned c = s[i];
        if (c == 0)
            break;
        if (c < 0x80) {
            if (c < 0x20 || c == '"' || c == '\\')
                p = 0;
            i++;
            continue;
        }
        /* a NUL ends the sequence there: nothing past the string is read */
        size_t k = shoal_jsonlex_utf8_tail(s + i, s + i + 4);
        if (!k)
            return 0;
        i += k + 1;
    }
    *n = i;
    *plain = p;
    return 1;
}

/* Writes s (n bytes, already checked) quoted and escaped. */
static void put_str(shoal_jsontext_t *b, const char *s, size_t n, int plain)
{
    /* worst case: every byte a six-byte \u00XX */
    if (!grow(b, plain ? n + 2 : 6 * n + 2))
        return;
    char *o = b->buf + b->len;
    *o++ = '"';
    if (plain) {
        memcpy(o, s, n);
        o += n;
    } else {
        static const char hex[] = "0123456789ABCDEF"; /* as jansson writes */
        for (size_t i = 0; i < n; i++) {
            unsigned char c = (unsigned char)s[i];
            if (c >= 0x20 && c != '"' && c != '\\') {
                *o++ = (char)c;
                continue;
            }
            *o++ = '\\';
            switch (c) {
            case '"':
            case '\\':
                *o++ = (char)c;
                break;
            case '\b':
                *o++ = 'b';
                break;
            case '\f':
                *o++ = 'f';
                break;
            case '\n':
                *o++ = 'n';
                break;
            case '\r':
                *o++ = 'r';
                break;
            case '\t':
                *o++ = 't';
                break;
            default:
                *o++ = 'u';
                *o++ = '0';
                *o++ = '0';
                *o++ = hex[c >> 4];
                *o++ = hex[c & 15];
            }
        }
    }
    *o++ = '"';
    *o = '\0';
    b->len = (size_t)(o - b->buf);
}

/* utf8_ok for n bytes that hold no NUL. */
static int utf8n_ok(const unsigned char *s, size_t n, int *plain)
{
    int p = 1;
    for (size_t i = 0; i < n;) {
        unsigned c = s[i];
        if (c < 0x80) {
            if (c < 0x20 || c == '"' || c == '\\')
                p = 0;
            i++;
            continue;
        }
        size_t k = shoal_jsonlex_utf8_tail(s + i, s + n);
        if (!k)
            return 0;
        i += k + 1;
    }
    *plain = p;
    return 1;
}

int shoal_jsontext_strn(shoal_jsontext_t *b, const char *s, size_t n)
{
    int plain;
    if (!utf8n_ok((const unsigned char *)s, n, &plain))
        return -1;
    put_str(b, s, n, plain);
    return 0;
}

int shoal_jsontext_body(shoal_jsontext_t *b, const char *body, size_t len, int escaped)
{
    if (!escaped) {
        shoal_jsontext_raw(b, "\"", 1);
        shoal_jsontext_raw(b, body, len);
        shoal_jsontext_raw(b, "\"", 1);
        return 0;
    }
    char *tmp = malloc(len + 1);
    if (!tmp)
        return -1;
    int r = shoal_jsontext_strn(b, tmp, shoal_jsonlex_unescape(tmp, body, len));
    free(tmp);
    return r;
}

int shoal_jsontext_str(shoal_jsontext_t *b, const char *s)
{
    size_t n;
    int plain;
    if (!utf8_ok((const unsigned char *)s, &n, &plain))
        return -1;
    put_str(b, s, n, plain);
    return 0;
}

/* `,"key":` (the comma unless first). */
static void key(shoal_jsontext_t *b, const char *k)
{
    size_t n = strlen(k);
    if (!grow(b, n + 4))
        return;
    char *o = b->buf + b->len;
    if (!b->first)
        *o++ = ',';
    *o++ = '"';
    memcpy(o, k, n);
    o += n;
    *o++ = '"';
    *o++ = ':';
    *o = '\0';
    b->len = (size_t)(o - b->buf);
    b->first = 0;
}

int shoal_jsontext_key_str(shoal_jsontext_t *b, const char *k, const char *v)
{
    size_t n;
    int plain;
    if (!v || !utf8_ok((const unsigned char *)v, &n, &plain))
        return -1;
    key(b, k);
    put_str(b, v, n, plain);
    return 0;
}

void shoal_jsontext_key(shoal_jsontext_t *b, const char *k)
{
    key(b, k);
}

/* v in decimal into the end of num (at least 21 bytes before end); returns
 * where the digits start. printf's %lld costs ten times as much and rows
 * carry a dozen numbers. */
static char *int_text(long long v, char *end)
{
    unsigned long long u = v < 0 ? 0ULL - (unsigned long long)v : (unsigned long long)v;
    char *p = end;
    do {
        *--p = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    if (v < 0)
        *--p = '-';
    return p;
}

void shoal_jsontext_int(shoal_jsontext_t *b, long long v)
{
    char num[24];
    char *p = int_text(v, num + sizeof(num));
    shoal_jsontext_raw(b, p, (size_t)(num + sizeof(num) - p));
}

void shoal_jsontext_key_int(shoal_jsontext_t *b, const char *k, long long v)
{
    char num[24];
    char *p = int_text(v, num + sizeof(num));
    key(b, k);
    shoal_jsontext_raw(b, p, (size_t)(num + sizeof(num) - p));
}

int shoal_jsontext_fixed(shoal_jsontext_t *b, double v, int decimals)
{
    static const double scale[] = {1, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9};
    if (!isfinite(v) || decimals < 1 || decimals > 9)
        return -1;
    double scaled = round(fabs(v) * scale[decimals]);
    /* beyond 2^53 the integer digits are no longer exact: jansson's form */
    if (scaled >= 9007199254740992.0)
        return shoal_jsontext_real(b, v);
    long long n = (long long)scaled, unit = (long long)scale[decimals];
    char num[48];
    char *end = num + sizeof(num), *p = end;
    long long frac = n % unit;
    for (int i = 0; i < decimals; i++) {
        *--p = (char)('0' + frac % 10);
        frac /= 10;
    }
    *--p = '.';
    p = int_text(n / unit, p);
    if (v < 0 && n != 0)
        *--p = '-';
    shoal_jsontext_raw(b, p, (size_t)(end - p));
    return 0;
}

int shoal_jsontext_real(shoal_jsontext_t *b, double v)
{
    if (!isfinite(v))
        return -1;
    /* jansson's form: 17 significant digits (exact on a round trip), and a
     * dot or an exponent always, so it reads back as a real */
    char num[40];
    int n = snprintf(num, sizeof(num), "%.17g", v);
    if (n < 0 || (size_t)n >= sizeof(num) - 3)
        return -1;
    if (!strpbrk(num, ".eE")) {
        memcpy(num + n, ".0", 3);
        n += 2;
    }
    shoal_jsontext_raw(b, num, (size_t)n);
    return 0;
}

int shoal_jsontext_key_fixed(shoal_jsontext_t *b, const char *k, double v, int decimals)
{
    if (!isfinite(v) || decimals < 1 || decimals > 9)
        return -1;
    key(b, k);
    return shoal_jsontext_fixed(b, v, decimals);
}

int shoal_jsontext_key_real(shoal_jsontext_t *b, const char *k, double v)
{
    if (!isfinite(v))
        return -1;
    key(b, k);
    return shoal_jsontext_real(b, v);
}
