/*
 * Job checks: decoding a job message, checking it against
 * schemas/job.schema.json, and the checks a schema cannot express. These are
 * the pieces of shoal_job_parse() (common/job.h) that judge a message without
 * changing it. Their only state is the job schema, compiled by common/jsonschema
 * on first use and kept; they are safe from any thread, except that they use
 * jansson's allocator as set at the time of the call.
 *
 * Every problem is one line of lower-case text naming the JSON path of the
 * bad field and what was expected, e.g.
 *   items[2].input: expected a string, got an integer
 * fit to show to the user who submitted the job; a job with several problems
 * gets them all, one per line. The shoal_job_ names of the
 * first three functions predate this module and are kept for their callers.
 */
#ifndef SHOAL_COMMON_JOBCHECK_H
#define SHOAL_COMMON_JOBCHECK_H

#include <stddef.h>

#include <jansson.h>

#include "common/err.h"
#include "common/jsondesc.h"
#include "common/models.h"

/* Containers nested deeper than this are refused while decoding, so code
 * that walks a job (or its output schema) recursively has a bounded depth. */
#define SHOAL_JOB_MAX_DEPTH 64

/* At most this many problems of one job are reported (then a line saying
 * there are more). */
#define SHOAL_JOBCHECK_MAX_ERRORS 20

/* Size of the buffer shoal_jobcheck_quote() writes. */
#define SHOAL_JOBCHECK_QUOTE_LEN SHOAL_JSONDESC_QUOTE_LEN

/* Decodes JSON text the way jobs are decoded: strict UTF-8, any top-level
 * value, duplicate keys and \u0000 refused, at most SHOAL_JOB_MAX_DEPTH levels.
 * Returns a new reference, or NULL with the line and column in errbuf. */
json_t *shoal_job_decode(const char *buf, size_t len, char *errbuf, size_t errlen);

/* Checks doc against the job schema and nothing else, with common/jsonschema.
 * SHOAL_OK or SHOAL_ERR_INVALID with every violation in errbuf, one per
 * line (up to SHOAL_JOBCHECK_MAX_ERRORS; a single violation reads as before)
 * (SHOAL_ERR_NOMEM when compiling the schema on first use ran out of memory).
 * doc is not changed. */
shoal_err_t shoal_job_check_schema(const json_t *doc, char *errbuf, size_t errlen);

/* True when id obeys the job_id rule of the schema (1..200 of [A-Za-z0-9._:-]). */
int shoal_job_id_valid(const char *id);

/* What a schema cannot say about a job that passed shoal_job_check_schema():
 * item ids are unique, model, fallback_models and items' own models are in
 * models (skipped when models is NULL), items with their own model or body
 * only in a job of one item per chunk, and output.schema is one shoal_jsonschema can compile, so
 * the worker can enforce it ("output.schema: cannot be enforced: <why>").
 * SHOAL_OK, SHOAL_ERR_INVALID naming every problem (one per line), or
 * SHOAL_ERR_NOMEM.
 * doc is not changed. */
shoal_err_t shoal_jobcheck_semantics(const json_t *doc, const shoal_models_t *models, char *errbuf,
                                     size_t errlen);

/* 1 when an item {"id": id (id_len bytes), "input": a string of input_len
 * bytes} certainly passes the schema's item rule ($defs/item): the id
 * within the key rule, the input within its length (lengths in bytes bound
 * lengths in code points from above); 0 when unsure. */
int shoal_jobcheck_plain_item(const char *id, size_t id_len, size_t input_len);

/* Item i's id (*len bytes), or NULL when it has none. */
typedef const char *(*shoal_jobcheck_id_fn)(void *arg, size_t i, size_t *len);

/* Whether an item id of items 0..n-1 repeats, in one pass with a hash
 * table: 1 with *repeat the first item (in job order) whose id an earlier
 * one has and *original the earliest with it, 0 when none does, -1 when out
 * of memory. */
int shoal_jobcheck_first_repeat(size_t n, shoal_jobcheck_id_fn id_of, void *arg, size_t *repeat,
                                size_t *original);

/* shoal_jsondesc_quote() (common/jsondesc.h) under its older name, kept for
 * the callers that still use it; new code calls shoal_jsondesc_quote(). */
const char *shoal_jobcheck_quote(char out[SHOAL_JOBCHECK_QUOTE_LEN], const char *s, size_t len);

#endif
