/*
 * Prompt rendering: a task's prompt_template filled in with its items. The
 * worker renders each task once when it takes the message; the scheduler
 * never renders (it only estimates, see common/chunk.h). Stateless and
 * thread-safe.
 */
#ifndef SHOAL_COMMON_RENDER_H
#define SHOAL_COMMON_RENDER_H

#include <stddef.h>

#include <jansson.h>

/* The most bytes shoal_render_prompt() produces. */
#define SHOAL_RENDER_MAX ((size_t)64 << 20)

/* Renders one chunk's prompt: every {{input}} in tmpl becomes the items'
 * input (one item: its input verbatim; several: each as "[<id>]\n<input>",
 * separated by "\n\n") and every {{ids}} the ids joined by ", ". Inputs are
 * copied as they are, never scanned for placeholders. items is an array of
 * objects with string "id" and "input" (a task's "items"). Returns a
 * NUL-terminated string the caller frees with free(), its length in *len_out
 * (may be NULL); NULL when items is malformed, memory runs out or the result
 * would exceed SHOAL_RENDER_MAX bytes. */
char *shoal_render_prompt(const char *tmpl, const json_t *items, size_t *len_out);

#endif
