/*
 * Log line formatting. A line is built in a stack buffer and written with a
 * single write(2) so lines from several threads never interleave. Lines longer
 * than the buffer are cut, never split.
 */
#include "common/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

shoal_log_level_t shoal_log_min_level = SHOAL_LOG_INFO;
static const char *log_proc = "shoal";
static int log_json;

static const char *level_names[] = {"debug", "info", "warn", "error", "off"};

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

/* Appends s to buf as JSON string content (without quotes). Bytes that are
 * not UTF-8, such as a character cut by a truncated message, become U+FFFD so
 * the line stays valid JSON. */
static size_t json_escape(char *buf, size_t cap, size_t n, const char *s)
{
    while (*s && n + 7 < cap) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') {
            buf[n++] = '\\';
            buf[n++] = (char)c;
        } else if (c < 0x20) {
            n += (size_t)snprintf(buf + n, cap - n, "\\u%04x", c);
        } else if (c < 0x80) {
            buf[n++] = (char)c;
        } else {
            size_t len = utf8_seq_len((const unsigned char *)s);
            if (len == 0) {
                memcpy(buf + n, "\\ufffd", 6);
                n += 6;
            } else {
                memcpy(buf + n, s, len);
                n += len;
                s += len - 1;
            }
        }
        s++;
    }
    return n;
}

/* True at " key=". */
static int field_start(const char *p)
{
    if (*p++ != ' ')
        return 0;
    const char *k = p;
    while ((*p >= 'a' && *p <= 'z') || *p == '_' || (*p >= '0' && *p <= '9'))
        p++;
    return p > k && *p == '=';
}

/* Appends `key=value key="quoted value" ...` as JSON members. Anything that
 * does not parse as a field ends up in a "rest" member, so nothing is lost. */
static size_t json_fields(char *buf, size_t cap, size_t n, char *f)
{
    while (*f && n + 16 < cap) {
        while (*f == ' ')
            f++;
        char *k = f;
        while ((*f >= 'a' && *f <= 'z') || *f == '_' || (*f >= '0' && *f <= '9'))
            f++;
        if (f == k || *f != '=') {
            n += (size_t)snprintf(buf + n, cap - n, ",\"rest\":\"");
            n = json_escape(buf, cap - 2, n, k);
            buf[n++] = '"';
            break;
        }
        *f++ = '\0';
        char *v = f;
        if (*f == '"') {
            /* A quoted value ends at the quote that ends the line or is
             * followed by the next field, so values may hold quotes. */
            v = ++f;
            while (*f && !(*f == '"' && (!f[1] || field_start(f + 1))))
                f++;
        } else {
            while (*f && *f != ' ')
                f++;
        }
        char end = *f;
        *f = '\0';
        n += (size_t)snprintf(buf + n, cap - n, ",\"%s\":\"", k);
        if (n + 8 >= cap)
            break;
        n = json_escape(buf, cap - 2, n, v);
        buf[n++] = '"';
        if (end)
            f++;
    }
    return n;
}

void shoal_log_write(shoal_log_level_t level, const char *module, const char *fmt, ...)
{
    char msg[2048], line[4096];
    struct timespec ts;
    struct tm tm;
    char tbuf[40];
    va_list ap;
    size_t n;

    if (level < shoal_log_min_level || level >= SHOAL_LOG_OFF)
        return;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);

    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    strftime(tbuf, sizeof(tbuf), "%Y-%m-%dT%H:%M:%S", &tm);

    /* The message runs up to the first " key=" field. */
    const char *fields = NULL;
    for (const char *p = msg; (p = strchr(p, ' ')) != NULL; p++) {
        if (field_start(p)) {
            fields = p;
            break;
        }
    }

    if (log_json) {
        n = (size_t)snprintf(line, sizeof(line),
                             "{\"ts\":\"%s.%03ldZ\",\"level\":\"%s\",\"proc\":\"%s\","
                             "\"module\":\"%s\",\"msg\":\"",
                             tbuf, ts.tv_nsec / 1000000, level_names[level], log_proc, module);
        if (n >= sizeof(line))
            n = sizeof(line) - 1;
        if (fields)
            *(char *)fields = '\0';
        n = json_escape(line, sizeof(line) - 3, n, msg);
        line[n++] = '"';
        if (fields)
            n = json_fields(line, sizeof(line) - 3, n, (char *)fields + 1);
        line[n++] = '}';
    } else {
        int mlen = fields ? (int)(fields - msg) : (int)strlen(msg);
        n = (size_t)snprintf(line, sizeof(line),
                             "ts=%s.%03ldZ level=%s proc=%s module=%s msg=\"%.*s\"%s", tbuf,
                             ts.tv_nsec / 1000000, level_names[level], log_proc, module, mlen, msg,
                             fields ? fields : "");
        if (n >= sizeof(line) - 1)
            n = sizeof(line) - 2;
        /* One event, one line: a newline inside a message (libpq's have
         * them) would otherwise start a line without ts= and level=. */
        for (size_t i = 0; i < n; i++)
            if ((unsigned char)line[i] < 0x20)
                line[i] = ' ';
    }
    line[n++] = '\n';
    ssize_t w = write(STDERR_FILENO, line, n);
    (void)w;
}
