/*
 * Batch mode (a job's "mode": "batch"): one call answers several items, each
 * item's answer is a result of its own. This module is the wire format of
 * that exchange, shared by the worker (which asks and reads the answers), the
 * scheduler's estimate (which counts the instruction) and the provider
 * simulator (which answers it):
 *
 * - the prompt is the chunk's rendered prompt followed by
 *   SHOAL_ITEMBATCH_INSTRUCTION and the item ids as one JSON array on the
 *   last line, after SHOAL_ITEMBATCH_IDS_MARK;
 * - the answer is one JSON object whose keys are item ids and whose values
 *   are the items' answers (optionally inside a ```json fence).
 *
 * An item is answered when its key is present, its value is not null and,
 * for JSON output, the value matches the output schema when there is one; a
 * string value is the answer's text as it is, any other value its compact
 * JSON. Everything else about an item makes it missing: the worker splits the
 * missing items off into a sub-task (common/taskmsg.h). Stateless and
 * thread-safe.
 */
#ifndef SHOAL_COMMON_ITEMBATCH_H
#define SHOAL_COMMON_ITEMBATCH_H

#include <stddef.h>

#include <jansson.h>

#include "common/jsonschema.h"

#define SHOAL_ITEMBATCH_INSTRUCTION                                                                \
    "Answer each item above on its own. Reply with only one JSON object: one member per item, "    \
    "its key the item's id and its value your answer for that item."
#define SHOAL_ITEMBATCH_IDS_MARK "Item ids: "

/* The instruction's tokens (common/tokens.h), mark included: what batch mode
 * adds to every chunk's prompt besides the ids. */
long shoal_itembatch_instruction_tokens(void);

/* The prompt of a batch call: rendered (the chunk's prompt, NUL-terminated),
 * a blank line, the instruction and the ids of items (a task's "items")
 * after the mark. Caller frees; *len_out (may be NULL) gets the length. NULL
 * when memory runs out or items is malformed. */
char *shoal_itembatch_prompt(const char *rendered, const json_t *items, size_t *len_out);

/* The ids a batch prompt asks for: a new array of strings read from the last
 * line starting with the mark, or NULL when the prompt has none (not a batch
 * call). Caller owns. */
json_t *shoal_itembatch_prompt_ids(const char *prompt);

/* Reads answer for the n items of items (a task's "items"). outputs (n
 * entries) receives for each item its answer (caller frees each) or NULL when
 * it is missing. want_json: the job wants JSON output; schema (may be NULL)
 * each answer must match. Returns how many items are answered; when some are
 * missing, why (the first reason, or why the whole answer is unusable) is in
 * errbuf. Out of memory counts as missing. */
size_t shoal_itembatch_parse(const char *answer, const json_t *items, int want_json,
                             const shoal_jsonschema_t *schema, char **outputs, char *errbuf,
                             size_t errlen);

#endif
