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

enum placeholder { PH_NONE, PH_INPUT, PH_IDS };

/* The next placeholder at or after p: its start in *at (the end of tmpl when
 * there is none) and its kind. The one scanner both counting and rendering
 * use, so they never disagree on what a placeholder is. */
static enum placeholder next_placeholder(const char *p, const char **at)
{
    const char *brace;

    while ((brace = strstr(p, "{{")) != NULL) {
        if (strncmp(brace, "{{input}}", 9) == 0) {
            *at = brace;
            return PH_INPUT;
        }
        if (strncmp(brace, "{{ids}}", 7) == 0) {
            *at = brace;
            return PH_IDS;
        }
        p = brace + 1;
    }
    *at = p + strlen(p);
    return PH_NONE;
}

static void render_pass(struct sink *s, const char *tmpl, const json_t *items)
{
    const char *p = tmpl, *at;

    while (*p && !s->over) {
        enum placeholder ph = next_placeholder(p, &at);

        put(s, p, (size_t)(at - p));
        if (ph == PH_INPUT) {
            put_inputs(s, items);
            p = at + 9;
        } else if (ph == PH_IDS) {
            put_ids(s, items);
            p = at + 7;
        } else {
            break;
        }
    }
}

size_t shoal_render_placeholders(const char *tmpl, size_t *n_input, size_t *n_ids)
{
    size_t in = 0, ids = 0;
    const char *p = tmpl, *at;
    enum placeholder ph;

    while (p && (ph = next_placeholder(p, &at)) != PH_NONE) {
        if (ph == PH_INPUT) {
            in++;
            p = at + 9;
        } else {
            ids++;
            p = at + 7;
        }
    }
    if (n_input)
        *n_input = in;
    if (n_ids)
        *n_ids = ids;
    return in + ids;
}

char *shoal_render_prompt(const char *tmpl, const json_t *items, size_t *len_out)
{
    struct sink s = {NULL, 0, 0};

    if (len_out)
        *len_out = 0;
    if (!tmpl || !json_is_array(items) ||
        shoal_render_placeholders(tmpl, NULL, NULL) > SHOAL_RENDER_MAX_PLACEHOLDERS)
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
