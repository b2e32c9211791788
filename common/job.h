/*
 * Jobs: a job message decoded, validated, with its defaults filled in and
 * cut into chunks, read through getters.
 *
 * A job is the user-facing message on the jobs topic; schemas/job.schema.json
 * is its contract and shoal_job_check_schema() (common/jobcheck.h) enforces
 * exactly that schema with common/jsonschema. shoal_job_parse() adds what a
 * schema cannot say: unique item ids, models that exist, an output.schema the
 * worker can enforce, items small enough to fit a chunk. A parsed job
 * is read-only apart from shoal_job_set_id(); use it from one thread at a
 * time. Its tasks are built by common/taskmsg.h.
 *
 * Every error is one line of lower-case text naming the JSON path of the bad
 * field and what was expected, e.g.
 *   items[2].input: expected a string, got an integer
 * fit to show to the user who submitted the job.
 */
#ifndef SHOAL_COMMON_JOB_H
#define SHOAL_COMMON_JOB_H

#include <stddef.h>

#include <jansson.h>

#include "common/err.h"
/* decoding, the schema check and shoal_job_id_valid(), which callers of the
 * job API have always found here */
#include "common/jobcheck.h"
#include "common/models.h"

typedef struct shoal_job shoal_job_t;

/* Decodes and validates one job message and fills in defaults. Rejects a
 * message longer than max_bytes (0: no limit), bad JSON, schema violations,
 * repeated item ids, models missing from models (skipped when models is NULL),
 * an output.schema common/jsonschema cannot compile and items too large for
 * chunking.max_tokens. Returns NULL with the reason in
 * errbuf ("out of memory" when that is the reason). Caller destroys. */
shoal_job_t *shoal_job_parse(const char *buf, size_t len, size_t max_bytes,
                             const shoal_models_t *models, char *errbuf, size_t errlen);

/* shoal_job_parse for a job document shoal_job_parse has accepted before
 * and the scheduler kept (a stored job or part): decoded, defaults filled
 * in and chunks planned as shoal_job_parse does, without judging again what
 * it judged then (the schema, item ids, models, output.schema), which took
 * most of the time of rebuilding a part of 20,000 items. A text that no
 * longer decodes, is not an object or cannot be planned is still refused,
 * NULL with the reason in errbuf. Caller destroys. */
shoal_job_t *shoal_job_parse_stored(const char *buf, size_t len, char *errbuf, size_t errlen);

/* shoal_job_parse_stored for a stored part of a job sent in parts, from the
 * header's document (borrowed; its "parts" and "items" are left out) and
 * items[0..len), the text of the part's items array without its brackets.
 * When every item is a plain {"id", "input"} pair of strings without \u
 * escapes and the job does not group its items, the items are kept as text
 * (copied) and decoded only if the job's document is read (shoal_job_json):
 * task messages are written from the text (common/taskmsg.h). Otherwise
 * NULL with *unsure set (the caller rebuilds the job with
 * shoal_job_parse_stored); NULL with *unsure 0 and the reason in errbuf
 * when the items cannot be planned or memory ran out. Caller destroys. */
shoal_job_t *shoal_job_parse_stored_part(const json_t *header, const char *items, size_t len,
                                         int *unsure, char *errbuf, size_t errlen);

/* shoal_job_parse for the job a part of a job sent in parts makes: the
 * header's document (borrowed; its "parts" and "items" are left out) with
 * items[0..len) as its items. When every item is a plain {"id", "input"}
 * pair (as for shoal_job_parse_stored_part) and the job passes every check
 * shoal_job_parse makes (judged on the items' text and on the header with
 * the first item, which is what the schema sees of such items), the job
 * keeps its items as text. Anything else, a failing check included, gives
 * NULL with *unsure set: the caller parses the whole text with
 * shoal_job_parse, which words the reason. NULL with *unsure 0 when out of
 * memory. Caller destroys. */
shoal_job_t *shoal_job_parse_part(const json_t *header, const char *items, size_t len,
                                  const shoal_models_t *models, int *unsure, char *errbuf,
                                  size_t errlen);

void shoal_job_destroy(shoal_job_t *job); /* NULL is ok */

/* Getters. Strings and json_t are borrowed until shoal_job_destroy(), except
 * that shoal_job_set_id() invalidates the previous shoal_job_id() string.
 * Fields with a default return it when the job left them out. */
const char *shoal_job_id(const shoal_job_t *job); /* NULL when the job has none */
const char *shoal_job_tenant(const shoal_job_t *job);
const char *shoal_job_priority(const shoal_job_t *job); /* "high", "normal", "low" */
const char *shoal_job_model(const shoal_job_t *job);
const char *shoal_job_merge(const shoal_job_t *job);         /* "concat", "json_array", "jsonl" */
const char *shoal_job_output_format(const shoal_job_t *job); /* "text", "json" */
/* The job's answer_mode: "context" (the default: a chunk's items make one answer) or "batch" (one
 * answer per item, several items per call; see common/itembatch.h). */
const char *shoal_job_mode(const shoal_job_t *job);
int shoal_job_max_attempts(const shoal_job_t *job);
long shoal_job_timeout_ms(const shoal_job_t *job);
size_t shoal_job_n_items(const shoal_job_t *job);
double shoal_job_budget_usd(const shoal_job_t *job);        /* 0 when the job sets none */
const char *shoal_job_on_truncated(const shoal_job_t *job); /* "retry", "fail" */
long shoal_job_deadline_s(const shoal_job_t *job);          /* 0 when the job sets none */

/* When the job counts as submitted, in seconds since the epoch: deadline_s
 * counts from it. shoal_job_parse() sets the time of parsing; the scheduler
 * sets the time it first recorded the job, so a job published again after a
 * restart keeps its deadline. */
void shoal_job_set_submitted(shoal_job_t *job, long long unix_s);

/* The submission time plus deadline_s: after it no call of the job's tasks
 * starts. 0 when the job has no deadline_s. */
long long shoal_job_deadline_unix(const shoal_job_t *job);
size_t shoal_job_n_chunks(const shoal_job_t *job);
/* Sum of the chunks' estimates (see shoal_chunk_estimate): the prompt tokens
 * the whole job is expected to send, for cost estimates and budgets. */
long shoal_job_est_tokens(const shoal_job_t *job);

/* The decoded document with defaults filled in and integral numbers such as
 * 5.0 stored as integers. It still satisfies the schema. A job rebuilt from
 * a stored part's text (shoal_job_parse_stored_part) decodes its items on
 * the first call: NULL when that ran out of memory. */
const json_t *shoal_job_json(const shoal_job_t *job);

/* json_object_get(shoal_job_json(job), key), borrowed, without decoding the
 * items of a job rebuilt from text unless key is "items". */
const json_t *shoal_job_field(const shoal_job_t *job, const char *key);

/* A string of an item as written in the JSON text the job was rebuilt from:
 * its body between the quotes, escapes (never \u) as written. */
typedef struct {
    const char *body;
    size_t len;
    int escaped; /* body holds escapes: undo them (shoal_jsonlex_unescape) */
} shoal_job_text_t;

/* For a job whose items are still text (shoal_job_parse_stored_part, and
 * shoal_job_json not called since): item i's id and input, borrowed until
 * the job changes, and 1. 0 for any other job or i: read its items from
 * the document. */
int shoal_job_item_text(const shoal_job_t *job, size_t i, shoal_job_text_t *id,
                        shoal_job_text_t *input);

/* Sets the job id (copied), e.g. one the scheduler generated for a job that
 * came without. SHOAL_ERR_INVALID if id breaks the schema's job_id rule,
 * SHOAL_ERR_NOMEM if the copy fails; the job keeps its old id on error. */
shoal_err_t shoal_job_set_id(shoal_job_t *job, const char *id);

/* Whether the message itself set priority (else it is the default,
 * "normal", which a tenant's plan may replace: shoal_job_set_priority). */
int shoal_job_priority_given(const shoal_job_t *job);

/* Sets the priority ("high", "normal" or "low"); SHOAL_ERR_INVALID for any
 * other value, SHOAL_ERR_NOMEM when out of memory. Invalidates the previous
 * shoal_job_priority() string. */
shoal_err_t shoal_job_set_priority(shoal_job_t *job, const char *priority);

/* A new object with every setting of the job except its prompt text (no
 * system, prompt_template or item inputs): tenant, priority, model,
 * fallback_models, chunking, output, merge, max_attempts, timeout_ms,
 * deadline_s, budget_usd, store_inputs and answer_mode (each only when set) and n_items.
 * shoal.jobs.settings stores this, never prompts. Caller owns the reference; NULL when out of
 * memory. */
json_t *shoal_job_settings(const shoal_job_t *job);

/* Sets a deep copy of the job's top-level field key in obj under the same key
 * (replacing what obj had there); nothing when the job has no such field.
 * 0, or -1 when out of memory. */
int shoal_job_copy_field(const shoal_job_t *job, const char *key, json_t *obj);

/* Items [*first, *end) of the job's items array make up chunk (0-based);
 * both are n_items when chunk is out of range. */
void shoal_job_chunk_range(const shoal_job_t *job, size_t chunk, size_t *first, size_t *end);

/* The chunk's prompt-token estimate (see shoal_chunk_estimate); 0 when chunk
 * is out of range. */
long shoal_job_chunk_est_tokens(const shoal_job_t *job, size_t chunk);

#endif
