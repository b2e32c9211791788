/*
 * Composite row literals (see pgrow.h).
 */
#include "common/pgrow.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

void shoal_pgrow_init(shoal_pgrow_t *r, size_t max)
{
    shoal_jsontext_init(&r->text, max);
    r->fields = 0;
}

void shoal_pgrow_free(shoal_pgrow_t *r)
{
    shoal_jsontext_free(&r->text);
}

char *shoal_pgrow_detach(shoal_pgrow_t *r, size_t *len)
{
    r->fields = 0;
    return shoal_jsontext_detach(&r->text, len);
}

void shoal_pgrow_open(shoal_pgrow_t *r)
{
    shoal_jsontext_raw(&r->text, "\"(", 2);
    r->fields = 0;
}

void shoal_pgrow_close(shoal_pgrow_t *r)
{
    shoal_jsontext_raw(&r->text, ")\"", 2);
}

static void sep(shoal_pgrow_t *r)
{
    if (r->fields++ > 0)
        shoal_jsontext_raw(&r->text, ",", 1);
}

void shoal_pgrow_null(shoal_pgrow_t *r)
{
    sep(r);
}

/* Inside the array element a record field's quote is \" and its escaped
 * backslash or quote (\\ and \") becomes \\\\ and \\\". */
void shoal_pgrow_strn(shoal_pgrow_t *r, const char *s, size_t n)
{
    sep(r);
    shoal_jsontext_raw(&r->text, "\\\"", 2);
    size_t from = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] != '\\' && s[i] != '"')
            continue;
        shoal_jsontext_raw(&r->text, s + from, i - from);
        shoal_jsontext_raw(&r->text, s[i] == '\\' ? "\\\\\\\\" : "\\\\\\\"", 4);
        from = i + 1;
    }
    shoal_jsontext_raw(&r->text, s + from, n - from);
    shoal_jsontext_raw(&r->text, "\\\"", 2);
}

void shoal_pgrow_str(shoal_pgrow_t *r, const char *s)
{
    if (!s)
        shoal_pgrow_null(r);
    else
        shoal_pgrow_strn(r, s, strlen(s));
}

void shoal_pgrow_int(shoal_pgrow_t *r, long long v)
{
    sep(r);
    shoal_jsontext_int(&r->text, v);
}

void shoal_pgrow_fixed(shoal_pgrow_t *r, double v, int decimals)
{
    sep(r);
    if (isfinite(v))
        shoal_jsontext_fixed(&r->text, v, decimals);
}

void shoal_pgrow_real(shoal_pgrow_t *r, double v)
{
    sep(r);
    if (isfinite(v))
        shoal_jsontext_real(&r->text, v);
}

char *shoal_pgrow_array(char *const *rows, const size_t *lens, size_t n)
{
    size_t total = 3;
    for (size_t i = 0; i < n; i++)
        total += lens[i] + 1;
    char *out = malloc(total), *o = out;
    if (!out)
        return NULL;
    *o++ = '{';
    for (size_t i = 0; i < n; i++) {
        if (i > 0)
            *o++ = ',';
        memcpy(o, rows[i], lens[i]);
        o += lens[i];
    }
    *o++ = '}';
    *o = '\0';
    return out;
}

void shoal_pgrow_fields_free(char **fields, int n)
{
    for (int i = 0; i < n; i++) {
        free(fields[i]);
        fields[i] = NULL;
    }
}

/* The element's text without its quotes and array-level escapes. */
static char *unquote_element(const char *row, size_t len)
{
    if (len < 2 || row[0] != '"' || row[len - 1] != '"')
        return NULL;
    char *out = malloc(len), *o = out;
    if (!out)
        return NULL;
    for (size_t i = 1; i < len - 1; i++) {
        if (row[i] == '\\' && i + 1 < len - 1)
            i++;
        *o++ = row[i];
    }
    *o = '\0';
    return out;
}

int shoal_pgrow_fields(const char *row, size_t len, char **fields, int max)
{
    char *rec = unquote_element(row, len);
    size_t n = rec ? strlen(rec) : 0;
    if (!rec || n < 2 || rec[0] != '(' || rec[n - 1] != ')') {
        free(rec);
        return -1;
    }
    char *buf = malloc(n);
    int count = 0;
    const char *p = rec + 1, *end = rec + n - 1;
    for (;;) {
        if (!buf)
            break;
        char *o = buf;
        int quoted = 0, any = 0;
        while (p < end && *p != ',') {
            if (*p == '"') {
                if (quoted && p + 1 < end && p[1] == '"') {
                    *o++ = '"'; /* "" inside quotes */
                    p += 2;
                    continue;
                }
                quoted = !quoted;
                any = 1;
                p++;
            } else if (*p == '\\' && p + 1 < end) {
                *o++ = p[1];
                any = 1;
                p += 2;
            } else {
                *o++ = *p++;
                any = 1;
            }
            if (quoted)
                while (p < end && *p != '"' && *p != '\\')
                    *o++ = *p++;
        }
        *o = '\0';
        if (count < max) {
            fields[count] = any ? strdup(buf) : NULL;
            if (any && !fields[count]) {
                shoal_pgrow_fields_free(fields, count);
                count = -1;
                break;
            }
        }
        count++;
        if (p >= end)
            break;
        p++; /* the comma */
    }
    free(buf);
    free(rec);
    if (!buf && count >= 0) {
        shoal_pgrow_fields_free(fields, count < max ? count : max);
        return -1;
    }
    return count;
}
