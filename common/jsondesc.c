/*
 * JSON values in error messages (see jsondesc.h).
 *
 * A quoted value is cut by code points, not bytes, so a cut never splits a
 * character. The worst case of valid UTF-8 (40 control characters at six
 * bytes each) fits the buffer; the byte bound in the loop only matters for
 * input that is not UTF-8, whose continuation bytes count no code points.
 */
#include "common/jsondesc.h"

#include <stdio.h>
#include <string.h>

#define QUOTE_CP 40
#define QUOTE_LEN SHOAL_JSONDESC_QUOTE_LEN

const char *shoal_jsondesc_quote(char out[QUOTE_LEN], const char *s, size_t len)
{
    size_t o = 0, cp = 0;

    out[o++] = '"';
    for (size_t i = 0; i < len && o < QUOTE_LEN - 12; i++) {
        unsigned char c = (unsigned char)s[i];

        if ((c & 0xC0) != 0x80 && cp++ == QUOTE_CP) {
            memcpy(out + o, "...", 3);
            o += 3;
            break;
        }
        if (c == '"' || c == '\\') {
            out[o++] = '\\';
            out[o++] = (char)c;
        } else if (c == '\n') {
            out[o++] = '\\';
            out[o++] = 'n';
        } else if (c == '\t') {
            out[o++] = '\\';
            out[o++] = 't';
        } else if (c < 0x20 || c == 0x7f) {
            o += (size_t)snprintf(out + o, QUOTE_LEN - o, "\\u%04x", c);
        } else {
            out[o++] = (char)c;
        }
    }
    out[o++] = '"';
    out[o] = '\0';
    return out;
}

const char *shoal_jsondesc_type(const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT:
        return "an object";
    case JSON_ARRAY:
        return "an array";
    case JSON_STRING:
        return "a string";
    case JSON_INTEGER:
        return "an integer";
    case JSON_REAL:
        return "a number";
    case JSON_TRUE:
    case JSON_FALSE:
        return "a boolean";
    case JSON_NULL:
        return "null";
    }
    return "an unknown value";
}
