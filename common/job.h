/*
 * Jobs: decoding, validation, defaults, chunking into tasks, prompt rendering.
 *
 * A job is the user-facing message on the jobs topic; schemas/job.schema.json
 * is its contract and shoal_job_check_schema() enforces exactly that schema
 * with common/jsonschema (the corpus test compares it with a second validator
 * on every file in tests/data/jobs/). shoal_job_parse() adds what a schema
 * cannot say: unique item ids, models that exist, an output.schema the worker
 * can enforce, items small enough to fit a chunk. A parsed job is read-only
 * apart from shoal_job_set_id(); use it from one thread at a time.
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
#include "common/models.h"

/* Containers nested deeper than this are refused while decoding, so code
 * that walks a job (or its output schema) recursively has a bounded depth. */
#define SHOAL_JOB_MAX_DEPTH 64

/* The most bytes shoal_job_render() produces. */
#define SHOAL_JOB_RENDER_MAX ((size_t)64 << 20)

typedef struct shoal_job shoal_job_t;

/* Decodes JSON text the way jobs are decoded: strict UTF-8, any top-level
 * value, duplicate keys and \u0000 refused, at most SHOAL_JOB_MAX_DEPTH levels.
 * Returns a new reference, or NULL with the line and column in errbuf. */
json_t *shoal_job_decode(const char *buf, size_t len, char *errbuf, size_t errlen);

/* Checks doc against the job schema and nothing else. SHOAL_OK or
 * SHOAL_ERR_INVALID with the first violation in errbuf (SHOAL_ERR_NOMEM when
 * compiling the schema on first use ran out of memory). doc is not changed.
 * Thread-safe. */
shoal_err_t shoal_job_check_schema(const json_t *doc, char *errbuf, size_t errlen);

/* Decodes and validates one job message and fills in defaults. Rejects a
 * message longer than max_bytes (0: no limit), bad JSON, schema violations,
 * repeated item ids, models missing from models (skipped when models is NULL),
 * an output.schema shoal_jsonschema cannot compile ("output.schema: cannot be
 * enforced: <why>") and items too large for chunking.max_tokens. Returns NULL with the reason in
 * errbuf ("out of memory" when that is the reason). Caller destroys. */
shoal_job_t *shoal_job_parse(const char *buf, size_t len, size_t max_bytes,
                             const shoal_models_t *models, char *errbuf, size_t errlen);

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
int shoal_job_max_attempts(const shoal_job_t *job);
long shoal_job_timeout_ms(const shoal_job_t *job);
size_t shoal_job_n_items(const shoal_job_t *job);
double shoal_job_budget_usd(const shoal_job_t *job); /* 0 when the job sets none */
size_t shoal_job_n_chunks(const shoal_job_t *job);
/* Sum of the chunks' estimates (see shoal_chunk_estimate): the prompt tokens
 * the whole job is expected to send, for cost estimates and budgets. */
long shoal_job_est_tokens(const shoal_job_t *job);

/* The decoded document with defaults filled in and integral numbers such as
 * 5.0 stored as integers. It still satisfies the schema. */
const json_t *shoal_job_json(const shoal_job_t *job);

/* True when id obeys the job_id rule of the schema (1..200 of [A-Za-z0-9._:-]). */
int shoal_job_id_valid(const char *id);

/* Sets the job id (copied), e.g. one the scheduler generated for a job that
 * came without. SHOAL_ERR_INVALID if id breaks the schema's job_id rule,
 * SHOAL_ERR_NOMEM if the copy fails; the job keeps its old id on error. */
shoal_err_t shoal_job_set_id(shoal_job_t *job, const char *id);

/* A new object with every setting of the job except its prompt text (no
 * system, prompt_template or item inputs): tenant, priority, model,
 * fallback_models, chunking, output, merge, max_attempts, timeout_ms,
 * budget_usd (only when set) and n_items. The database stores this, never
 * prompts. Caller owns the reference; NULL when out of memory. */
json_t *shoal_job_settings(const shoal_job_t *job);

/* A new array of task objects (schemas/task.schema.json) in chunk order:
 * task_id "<job_id>:<chunk as 6 digits>", job_id, chunk, n_chunks, tenant,
 * priority, model, fallback_models, system (when set), prompt_template,
 * items [{id, input}], output, max_attempts, timeout_ms, est_tokens. String
 * values are shared with the job's document: treat them as read-only. Needs a
 * job id (see shoal_job_set_id). Caller owns the reference; NULL with the
 * reason in errbuf. */
json_t *shoal_job_tasks(const shoal_job_t *job, char *errbuf, size_t errlen);

/* Renders one chunk's prompt: every {{input}} in tmpl becomes the items'
 * input (one item: its input verbatim; several: each as "[<id>]\n<input>",
 * separated by "\n\n") and every {{ids}} the ids joined by ", ". Inputs are
 * copied as they are, never scanned for placeholders. items is an array of
 * objects with string "id" and "input" (a task's "items"). Returns a
 * NUL-terminated string the caller frees with free(), its length in *len_out
 * (may be NULL); NULL when items is malformed, memory runs out or the result
 * would exceed SHOAL_JOB_RENDER_MAX bytes. */
char *shoal_job_render(const char *tmpl, const json_t *items, size_t *len_out);

#endif
