/*
 * Prompt rendering (see render.h). Two passes over the template: the first
 * counts, so the output is allocated once at its exact size and the cap is
 * enforced before any memory is taken; the second writes.
 */
#include "common/render.h"

#include <stdlib.h>
#include <string.h>

/* Output of one rendering pass: counts when buf is NULL, writes otherwise. */
struct sink {
    char *buf;
    size_t len;
    int over;
};

static void put(struct sink *s, const char *data, size_t n)
{
    if (s->over || n > SHOAL_RENDER_MAX - s->len) {
        s->over = 1;
        return;
    }
    if (s->buf)
        memcpy(s->buf + s->len, data, n);
    s->len += n;
}

static void put_inputs(struct sink *s, const json_t *items)
{
    size_t n = json_array_size(items);

    for (size_t i = 0; i < n; i++) {
        const json_t *item = json_array_get(items, i);
        const json_t *id = json_object_get(item, "id"), *in = json_object_get(item, "input");

        if (n > 1) {
            put(s, i ? "\n\n[" : "[", i ? 3 : 1);
            put(s, json_string_value(id), json_string_length(id));
            put(s, "]\n", 2);
        }
        put(s, json_string_value(in), json_string_length(in));
    }
}

static void put_ids(struct sink *s, const json_t *items)
{
    for (size_t i = 0; i < json_array_size(items); i++) {
        const json_t *id = json_object_get(json_array_get(items, i), "id");

        if (i)
            put(s, ", ", 2);
        put(s, json_string_value(id), json_string_length(id));
    }
}

static void render_pass(struct sink *s, const char *tmpl, const json_t *items)
{
    const char *p = tmpl;

    while (*p && !s->over) {
        const char *brace = strstr(p, "{{");

        if (!brace) {
            put(s, p, strlen(p));
            break;
        }
        put(s, p, (size_t)(brace - p));
        if (strncmp(brace, "{{input}}", 9) == 0) {
            put_inputs(s, items);
            p = brace + 9;
        } else if (strncmp(brace, "{{ids}}", 7) == 0) {
            put_ids(s, items);
            p = brace + 7;
        } else {
            put(s, brace, 1);
            p = brace + 1;
        }
    }
}

char *shoal_render_prompt(const char *tmpl, const json_t *items, size_t *len_out)
{
    struct sink s = {NULL, 0, 0};

    if (len_out)
        *len_out = 0;
    if (!tmpl || !json_is_array(items))
        return NULL;
    for (size_t i = 0; i < json_array_size(items); i++) {
        const json_t *item = json_array_get(items, i);

        if (!json_is_string(json_object_get(item, "id")) ||
            !json_is_string(json_object_get(item, "input")))
            return NULL;
    }
    render_pass(&s, tmpl, items);
    if (s.over)
        return NULL;
    if (!(s.buf = malloc(s.len + 1)))
        return NULL;
    s.len = 0;
    render_pass(&s, tmpl, items);
    s.buf[s.len] = '\0';
    if (len_out)
        *len_out = s.len;
    return s.buf;
}
