/*
 * Log line formatting. The fields of a line are found in the format string,
 * never in the text it expands to: " key=" in the format starts a field whose
 * value is whatever the format expands to up to the next " key=". So a value
 * holding spaces, quotes, "=" or a whole " other=field" stays one value; the
 * writer quotes and escapes it (logfmt) or makes it a JSON string. A value
 * written as key=\"%s\" in the format has those quotes dropped: the writer
 * quotes when the value needs it.
 *
 * A line is built in stack buffers and written with a single write(2) so
 * lines from several threads never interleave. Lines longer than the buffer
 * are cut between characters (never inside an escape or a quoted value) and
 * stay one parseable line.
 */
#include "common/log.h"

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

shoal_log_level_t shoal_log_min_level = SHOAL_LOG_INFO;
static const char *log_proc = "shoal";
static int log_json;

static const char *level_names[] = {"debug", "info", "warn", "error", "off"};

#define MAX_FIELDS 32
#define LOG_MSG_MAX 2048  /* expanded message text, before escaping */
#define LOG_TEXT_MAX 4096 /* all expanded text of one event */
#define LOG_LINE_MAX 4096 /* one written line, newline included */

void shoal_log_init(const char *proc, shoal_log_level_t level, int json)
{
    log_proc = proc ? proc : "shoal";
    shoal_log_min_level = level;
    log_json = json;
}

int shoal_log_level_parse(const char *s)
{
    for (int i = 0; i <= SHOAL_LOG_OFF; i++)
        if (s && strcasecmp(s, level_names[i]) == 0)
            return i;
    return -1;
}

/* Length of the well-formed UTF-8 sequence (RFC 3629: no overlongs, no
 * surrogates, nothing past U+10FFFF) at the start of s, 0 if there is none. */
static size_t utf8_seq_len(const unsigned char *s)
{
    unsigned char c = s[0], lo = 0x80, hi = 0xbf;
    size_t len;

    if (c >= 0xc2 && c <= 0xdf)
        len = 2;
    else if (c >= 0xe0 && c <= 0xef)
        len = 3;
    else if (c >= 0xf0 && c <= 0xf4)
        len = 4;
    else
        return 0;
    if (c == 0xe0)
        lo = 0xa0;
    else if (c == 0xed)
        hi = 0x9f;
    else if (c == 0xf0)
        lo = 0x90;
    else if (c == 0xf4)
        hi = 0x8f;
    if (s[1] < lo || s[1] > hi)
        return 0;
    for (size_t i = 2; i < len; i++)
        if (s[i] < 0x80 || s[i] > 0xbf)
            return 0;
    return len;
}

/* A growing line; cap already leaves room for what closes it. */
struct out {
    char *buf;
    size_t n, cap;
};

static int put(struct out *o, const char *s, size_t len)
{
    if (o->n + len > o->cap)
        return -1;
    memcpy(o->buf + o->n, s, len);
    o->n += len;
    return 0;
}

/* Appends "s" quoted, with the escapes JSON and logfmt parsers both read:
 * \" \\ \n \r \t, \u00XX for other control bytes and \ufffd for bytes that
 * are not UTF-8 (such as a character cut by a truncated message). Cuts s
 * between characters when the line is full; the closing quote always fits
 * because room for it is kept. */
static void put_quoted(struct out *o, const char *s)
{
    size_t cap = o->cap;
    if (o->n + 2 > cap)
        return;
    o->cap = cap - 1;
    o->buf[o->n++] = '"';
    for (const unsigned char *p = (const unsigned char *)s; *p;) {
        char esc[8];
        const char *w = (const char *)p;
        size_t wl = 1, step = 1;
        if (*p == '"' || *p == '\\') {
            esc[0] = '\\';
            esc[1] = (char)*p;
            w = esc;
            wl = 2;
        } else if (*p == '\n' || *p == '\r' || *p == '\t') {
            esc[0] = '\\';
            esc[1] = *p == '\n' ? 'n' : *p == '\r' ? 'r' : 't';
            w = esc;
            wl = 2;
        } else if (*p < 0x20 || *p == 0x7f) {
            snprintf(esc, sizeof(esc), "\\u%04x", *p);
            w = esc;
            wl = 6;
        } else if (*p >= 0x80) {
            wl = step = utf8_seq_len(p);
            if (wl == 0) {
                w = "\\ufffd";
                wl = 6;
                step = 1;
            }
        }
        if (put(o, w, wl) != 0)
            break;
        p += step;
    }
    o->cap = cap;
    o->buf[o->n++] = '"';
}

/* logfmt leaves a value bare only when a parser cannot misread it. */
static int needs_quotes(const char *s)
{
    if (!*s)
        return 1;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++)
        if (*p <= ' ' || *p == '"' || *p == '=' || *p == '\\' || *p >= 0x7f)
            return 1;
    return 0;
}

/* Appends one field: ` key=value` or `,"key":"value"`; quote forces quotes in
 * logfmt. Nothing when even the key does not fit, so a cut line drops whole
 * fields. */
static void put_field(struct out *o, const char *key, size_t klen, const char *val, int quote)
{
    size_t before = o->n;
    int ok = log_json ? put(o, ",\"", 2) == 0 && put(o, key, klen) == 0 && put(o, "\":", 2) == 0
                      : put(o, " ", 1) == 0 && put(o, key, klen) == 0 && put(o, "=", 1) == 0;
    if (!ok || o->n + 3 > o->cap) {
        o->n = before;
        return;
    }
    if (!log_json && !quote && !needs_quotes(val) && put(o, val, strlen(val)) == 0)
        return;
    put_quoted(o, val);
}

/* Length of the key when p is at " key=" (lower case, digits, '_'), else 0. */
static size_t field_key_len(const char *p)
{
    if (*p++ != ' ')
        return 0;
    const char *k = p;
    while ((*p >= 'a' && *p <= 'z') || *p == '_' || (*p >= '0' && *p <= '9'))
        p++;
    return p > k && *p == '=' ? (size_t)(p - k) : 0;
}

/* Text that expands format conversions into a bounded buffer. */
struct text {
    char buf[LOG_TEXT_MAX];
    size_t n;
    int broken; /* a conversion could not be read: the rest of the format is literal */
};

static void text_putc(struct text *t, char c, size_t limit)
{
    if (t->n + 1 < limit)
        t->buf[t->n++] = c;
}

#define CONV_ARG(type)                                                                             \
    do {                                                                                           \
        type v_ = va_arg(*ap, type);                                                               \
        if (nstar == 0)                                                                            \
            w = snprintf(dst, room, spec, v_);                                                     \
        else if (nstar == 1)                                                                       \
            w = snprintf(dst, room, spec, star[0], v_);                                            \
        else                                                                                       \
            w = snprintf(dst, room, spec, star[0], star[1], v_);                                   \
    } while (0)

/* Expands the conversion at p ('%') into t, taking its arguments from ap;
 * returns the format after it. The format attribute has checked the types at
 * compile time; a conversion this does not know (%n, %ls) stops expansion
 * rather than guess how many arguments it takes. */
static const char *expand_conv(struct text *t, size_t limit, const char *p, va_list *ap)
{
    char spec[24];
    size_t k = 0;
    int star[2], nstar = 0;
    char len0 = 0, len1 = 0;

    spec[k++] = *p++;
    if (*p == '%') {
        text_putc(t, '%', limit);
        return p + 1;
    }
    while (*p && strchr("-+ #0", *p) && k < 8)
        spec[k++] = *p++;
    if (*p == '*') {
        star[nstar++] = va_arg(*ap, int);
        spec[k++] = *p++;
    } else {
        while (*p >= '0' && *p <= '9' && k < 12)
            spec[k++] = *p++;
    }
    if (*p == '.') {
        spec[k++] = *p++;
        if (*p == '*') {
            star[nstar++] = va_arg(*ap, int);
            spec[k++] = *p++;
        } else {
            while (*p >= '0' && *p <= '9' && k < 18)
                spec[k++] = *p++;
        }
    }
    if (*p && strchr("hlzjtL", *p)) {
        len0 = *p;
        spec[k++] = *p++;
        if ((len0 == 'h' || len0 == 'l') && *p == len0) {
            len1 = *p;
            spec[k++] = *p++;
        }
    }
    char conv = *p;
    if (!conv || k > sizeof(spec) - 2) {
        t->broken = 1;
        return p;
    }
    spec[k++] = *p++;
    spec[k] = '\0';

    char *dst = t->buf + t->n;
    size_t room = limit > t->n ? limit - t->n : 0;
    int w = 0;
    int is_long = len0 == 'l' && !len1, is_llong = len0 == 'l' && len1;
    switch (conv) {
    case 'd':
    case 'i':
        if (is_llong)
            CONV_ARG(long long);
        else if (is_long)
            CONV_ARG(long);
        else if (len0 == 'z')
            CONV_ARG(ssize_t);
        else if (len0 == 'j')
            CONV_ARG(intmax_t);
        else if (len0 == 't')
            CONV_ARG(ptrdiff_t);
        else if (len0 == 'L')
            t->broken = 1;
        else
            CONV_ARG(int);
        break;
    case 'u':
    case 'o':
    case 'x':
    case 'X':
        if (is_llong)
            CONV_ARG(unsigned long long);
        else if (is_long)
            CONV_ARG(unsigned long);
        else if (len0 == 'z')
            CONV_ARG(size_t);
        else if (len0 == 'j')
            CONV_ARG(uintmax_t);
        else if (len0 == 't')
            CONV_ARG(ptrdiff_t);
        else if (len0 == 'L')
            t->broken = 1;
        else
            CONV_ARG(unsigned);
        break;
    case 'c':
        if (len0)
            t->broken = 1;
        else
            CONV_ARG(int);
        break;
    case 's':
        if (len0) {
            t->broken = 1;
        } else {
            const char *s = va_arg(*ap, const char *);
            if (!s)
                s = "(null)";
            if (nstar == 0)
                w = snprintf(dst, room, spec, s);
            else if (nstar == 1)
                w = snprintf(dst, room, spec, star[0], s);
            else
                w = snprintf(dst, room, spec, star[0], star[1], s);
        }
        break;
    case 'p':
        CONV_ARG(void *);
        break;
    case 'f':
    case 'F':
    case 'e':
    case 'E':
    case 'g':
    case 'G':
    case 'a':
    case 'A':
        if (len0 == 'L')
            CONV_ARG(long double);
        else if (len0 && len0 != 'l')
            t->broken = 1;
        else
            CONV_ARG(double);
        break;
    default:
        t->broken = 1;
    }
    if (w > 0)
        t->n += (size_t)w < room ? (size_t)w : (room ? room - 1 : 0);
    return p;
}

/* Expands fmt[from, to) into t, NUL-terminated and at most limit bytes in
 * all; returns where the expansion starts. */
static const char *expand(struct text *t, size_t limit, const char *from, const char *to,
                          va_list *ap)
{
    const char *start = t->buf + t->n;
    if (limit > sizeof(t->buf))
        limit = sizeof(t->buf);
    const char *p = from;
    while (p < to) {
        if (*p == '%' && !t->broken)
            p = expand_conv(t, limit, p, ap);
        else
            text_putc(t, *p++, limit);
    }
    if (t->n < sizeof(t->buf))
        t->buf[t->n++] = '\0';
    else
        t->buf[sizeof(t->buf) - 1] = '\0';
    return start;
}

void shoal_log_write(shoal_log_level_t level, const char *module, const char *fmt, ...)
{
    struct text t;
    struct {
        const char *key;
        size_t klen;
        const char *val;
    } f[MAX_FIELDS];
    int nf = 0;
    char line[LOG_LINE_MAX];
    struct timespec ts;
    struct tm tm;
    char tbuf[64];
    va_list ap;

    if (level < shoal_log_min_level || level >= SHOAL_LOG_OFF)
        return;

    /* The message runs up to the first " key=" of the format; each field's
     * value up to the next. */
    t.n = 0;
    t.broken = 0;
    const char *p = fmt;
    while (*p && !field_key_len(p))
        p++;
    va_start(ap, fmt);
    const char *msg = expand(&t, LOG_MSG_MAX, fmt, p, &ap);
    while (*p && nf < MAX_FIELDS) {
        size_t klen = field_key_len(p);
        const char *key = p + 1, *v = key + klen + 1, *e = v;
        while (*e && !field_key_len(e))
            e++;
        p = e;
        if (e - v >= 2 && *v == '"' && e[-1] == '"') {
            v++;
            e--;
        }
        f[nf].key = key;
        f[nf].klen = klen;
        f[nf].val = expand(&t, sizeof(t.buf), v, e, &ap);
        nf++;
    }
    va_end(ap);

    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    strftime(tbuf, sizeof(tbuf), "%Y-%m-%dT%H:%M:%S", &tm);
    char when[80];
    snprintf(when, sizeof(when), "%s.%03ldZ", tbuf, ts.tv_nsec / 1000000);

    /* Room is kept for the closing '}' and the newline. The timestamp needs
     * no quotes in logfmt; the message always gets them, as it always had. */
    struct out o = {line, 0, sizeof(line) - 2};
    if (log_json) {
        put(&o, "{\"ts\":", 6);
        put_quoted(&o, when);
    } else {
        put(&o, "ts=", 3);
        put(&o, when, strlen(when));
    }
    put_field(&o, "level", 5, level_names[level], 0);
    put_field(&o, "proc", 4, log_proc, 0);
    put_field(&o, "module", 6, module ? module : "", 0);
    put_field(&o, "msg", 3, msg, 1);
    for (int i = 0; i < nf; i++)
        put_field(&o, f[i].key, f[i].klen, f[i].val, 0);
    if (log_json)
        line[o.n++] = '}';
    line[o.n++] = '\n';
    ssize_t w = write(STDERR_FILENO, line, o.n);
    (void)w;
}
