/*
 * Strict log line readers (see logparse.h). Values are collected as jansson
 * strings, which also checks they are valid UTF-8.
 */
#include "tests/support/logparse.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tests/support/check.h"

static int key_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
           c == '.' || c == '-';
}

/* Appends code point cp (BMP, no surrogates) as UTF-8. */
static size_t put_utf8(char *out, unsigned cp)
{
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (char)(0xc0 | (cp >> 6));
        out[1] = (char)(0x80 | (cp & 0x3f));
        return 2;
    }
    out[0] = (char)(0xe0 | (cp >> 12));
    out[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
    out[2] = (char)(0x80 | (cp & 0x3f));
    return 3;
}

#define FAIL_AT(...)                                                                               \
    do {                                                                                           \
        snprintf(why, whylen, __VA_ARGS__);                                                        \
        goto fail;                                                                                 \
    } while (0)

json_t *logparse_logfmt(const char *line, size_t len, char *why, size_t whylen)
{
    json_t *obj = json_object();
    char *val = malloc(len + 1);
    size_t i = 0;

    if (!obj || !val)
        FAIL_AT("out of memory");
    if (len == 0)
        FAIL_AT("empty line");
    while (i < len) {
        if (i > 0) {
            if (line[i] != ' ')
                FAIL_AT("column %zu: expected a space between pairs", i);
            i++;
        }
        size_t k = i;
        while (i < len && key_char(line[i]))
            i++;
        if (i == k)
            FAIL_AT("column %zu: expected a key", i);
        if (i >= len || line[i] != '=')
            FAIL_AT("column %zu: expected '=' after the key", i);
        char key[128];
        snprintf(key, sizeof(key), "%.*s", (int)(i - k), line + k);
        i++;
        size_t n = 0;
        if (i < len && line[i] == '"') {
            i++;
            for (;;) {
                if (i >= len)
                    FAIL_AT("key %s: quoted value not closed", key);
                unsigned char c = (unsigned char)line[i];
                if (c == '"')
                    break;
                if (c < 0x20 || c == 0x7f)
                    FAIL_AT("key %s: raw control byte 0x%02x in a quoted value", key, c);
                if (c != '\\') {
                    val[n++] = (char)c;
                    i++;
                    continue;
                }
                if (i + 1 >= len)
                    FAIL_AT("key %s: escape at the end of the line", key);
                char e = line[i + 1];
                i += 2;
                if (e == '"' || e == '\\')
                    val[n++] = e;
                else if (e == 'n')
                    val[n++] = '\n';
                else if (e == 'r')
                    val[n++] = '\r';
                else if (e == 't')
                    val[n++] = '\t';
                else if (e == 'u') {
                    char hex[5] = {0};
                    for (int d = 0; d < 4; d++) {
                        if (i >= len || !isxdigit((unsigned char)line[i]))
                            FAIL_AT("key %s: bad \\u escape", key);
                        hex[d] = line[i++];
                    }
                    unsigned cp = (unsigned)strtoul(hex, NULL, 16);
                    if (cp >= 0xd800 && cp <= 0xdfff)
                        FAIL_AT("key %s: surrogate in a \\u escape", key);
                    n += put_utf8(val + n, cp);
                } else {
                    FAIL_AT("key %s: unknown escape \\%c", key, e);
                }
            }
            i++; /* the closing quote */
            if (i < len && line[i] != ' ')
                FAIL_AT("key %s: text right after a quoted value", key);
        } else {
            while (i < len && line[i] != ' ') {
                unsigned char c = (unsigned char)line[i];
                if (c < 0x20 || c == 0x7f || c == '"' || c == '=' || c == '\\')
                    FAIL_AT("key %s: byte 0x%02x in a bare value", key, c);
                val[n++] = (char)c;
                i++;
            }
            if (n == 0)
                FAIL_AT("key %s: empty bare value", key);
        }
        if (json_object_get(obj, key))
            FAIL_AT("key %s given twice", key);
        json_t *s = json_stringn(val, n);
        if (!s)
            FAIL_AT("key %s: value is not UTF-8", key);
        json_object_set_new(obj, key, s);
    }
    free(val);
    return obj;
fail:
    free(val);
    json_decref(obj);
    return NULL;
}

json_t *logparse_json(const char *line, size_t len, char *why, size_t whylen)
{
    json_error_t jerr;
    json_t *obj = json_loadb(line, len, JSON_REJECT_DUPLICATES, &jerr);
    const char *key;
    json_t *v;

    if (!obj)
        FAIL_AT("not JSON: %s at column %d", jerr.text, jerr.column);
    if (!json_is_object(obj))
        FAIL_AT("not a JSON object");
    json_object_foreach(obj, key, v)
    {
        if (!json_is_string(v))
            FAIL_AT("member %s is not a string", key);
    }
    return obj;
fail:
    json_decref(obj);
    return NULL;
}

json_t *logparse_lines(const char *text, int json, const char *origin)
{
    static const char *const required[] = {"ts", "level", "proc", "module", "msg"};
    json_t *all = json_array();
    const char *p = text;
    int lineno = 0;

    assert_true(all != NULL);
    while (*p) {
        const char *nl = strchr(p, '\n');
        lineno++;
        if (!nl)
            test_fail("%s line %d does not end in a newline: %s", origin, lineno, p);
        char why[256];
        size_t len = (size_t)(nl - p);
        json_t *o = json ? logparse_json(p, len, why, sizeof(why))
                         : logparse_logfmt(p, len, why, sizeof(why));
        if (!o)
            test_fail("%s line %d does not parse (%s): %.*s", origin, lineno, why, (int)len, p);
        for (size_t i = 0; i < sizeof(required) / sizeof(required[0]); i++)
            if (!json_is_string(json_object_get(o, required[i])))
                test_fail("%s line %d has no %s: %.*s", origin, lineno, required[i], (int)len, p);
        json_array_append_new(all, o);
        p = nl + 1;
    }
    return all;
}
