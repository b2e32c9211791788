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

/* The most placeholders ({{input}} and {{ids}} together) a template may use:
 * each {{input}} repeats every item's input, so the prompt and its cost grow
 * with their number. shoal_job_parse() rejects a job beyond it. */
#define SHOAL_RENDER_MAX_PLACEHOLDERS 16

/* Counts the placeholders shoal_render_prompt() replaces in tmpl: uses of
 * {{input}} into *n_input and of {{ids}} into *n_ids (either may be NULL).
 * Returns their sum; 0 for a NULL tmpl. Anything else in braces is text. */
size_t shoal_render_placeholders(const char *tmpl, size_t *n_input, size_t *n_ids);

/* Renders one chunk's prompt: every {{input}} in tmpl becomes the items'
 * input (one item: its input verbatim; several: each as "[<id>]\n<input>",
 * separated by "\n\n") and every {{ids}} the ids joined by ", ". Inputs are
 * copied as they are, never scanned for placeholders. items is an array of
 * objects with string "id" and "input" (a task's "items"). Returns a
 * NUL-terminated string the caller frees with free(), its length in *len_out
 * (may be NULL); NULL when items is malformed, tmpl has more than
 * SHOAL_RENDER_MAX_PLACEHOLDERS placeholders, memory runs out or the result
 * would exceed SHOAL_RENDER_MAX bytes. */
char *shoal_render_prompt(const char *tmpl, const json_t *items, size_t *len_out);

#endif
