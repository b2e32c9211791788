/*
 * Task messages: the one place that builds, parses and validates the message
 * a scheduler sends a worker for one chunk of a job. schemas/task.schema.json
 * is the contract; this module is its code, used by both sides.
 *
 * Versioning: every message built carries "v" (SHOAL_TASKMSG_VERSION, or
 * SHOAL_TASKMSG_VERSION_MAX when it needs that, see below). A
 * message without "v" is version 1 (messages queued before the field
 * existed); a newer version is refused with a reason that says to upgrade the
 * worker. Within a version, fields may only be added: the parser ignores
 * fields it does not know, so an older worker reads a newer scheduler's
 * version-1 messages. A change an older worker must not misread gets a new
 * version.
 *
 * Defaults (max_attempts, timeout_ms, output format and on_truncated) are the
 * job's (common/job.c) and travel in every message; the parser has none of
 * its own and refuses a message without them, except for fields added within
 * version 1 (output.on_truncated: "retry"; deadline_s and deadline_unix: no
 * deadline), which older schedulers' messages lack. All functions are
 * thread-safe.
 */
#ifndef SHOAL_COMMON_TASKMSG_H
#define SHOAL_COMMON_TASKMSG_H

#include <stddef.h>

#include <jansson.h>

#include "common/err.h"
#include "common/job.h"

/* The newest version this code builds and parses. A task is built as
 * version 1, readable by every worker, unless it needs what only version 2
 * has: an item that carries its own request (items[].body), which a
 * version-1 worker would answer from the template instead, or "mode":
 * "batch" (see common/itembatch.h) with sub-task ids, which it would answer
 * as one text. An older worker refuses such a message rather than misread it. */
#define SHOAL_TASKMSG_VERSION 1
#define SHOAL_TASKMSG_VERSION_MAX 2

/* The deepest split: a sub-task's level (see shoal_taskmsg_subtask_id). Each
 * split leaves at least one item behind, and a task holds at most 1000. */
#define SHOAL_TASKMSG_SPLIT_MAX 1000

/* Room for a task_id and its NUL: a job_id of up to 200 characters, ':', six
 * digits and for a sub-task '.' and up to four digits. */
#define SHOAL_TASKMSG_ID_MAX 213

/* A parsed task message. Strings and json_t are borrowed from the document
 * shoal_taskmsg_parse() returns and live as long as it does. */
typedef struct {
    int version;         /* 1 when the message has no "v" */
    const char *task_id; /* "<job_id>:<chunk as 6 digits>", for a sub-task ".<level>" after */
    const char *job_id;
    const char *tenant;
    const char *priority; /* "high", "normal", "low" */
    const char *model;
    long chunk; /* 0-based, less than n_chunks */
    long n_chunks;
    const json_t *fallback_models; /* array of non-empty strings, maybe empty */
    const char *system;            /* NULL when absent */
    const char *prompt_template;   /* contains {{input}} */
    const json_t *items;           /* 1..1000 objects with string "id" and "input" */
    size_t n_items;
    const char *output_format;   /* "text" or "json" */
    const json_t *output_schema; /* an object, or NULL */
    const char *on_truncated;    /* "retry" or "fail"; "retry" when the message has none */
    long max_attempts;           /* 1..20 */
    long timeout_ms;             /* 100..600000 */
    long est_tokens;             /* >= 0 */
    long deadline_s;             /* the job's deadline_s; 0 when it has none */
    long long deadline_unix;     /* no call starts after it (epoch seconds); 0 when none */
    const json_t *body;          /* the one item's own request (items[0].body), or NULL */
    const char *mode;            /* "context" or "batch"; "context" before version 2 */
    long split_level;            /* 0 for a chunk's task, 1.. for a sub-task split off it */
    const char *cache_key;       /* 64 hex digits (common/cachekey.h); NULL when absent */
} shoal_taskmsg_t;

/* Writes "<job_id>:<chunk as 6 digits>" to buf: the task_id of that chunk.
 * SHOAL_ERR_INVALID when job_id breaks the job_id rule or chunk is over
 * 999999, SHOAL_ERR_LIMIT when buf is too small (SHOAL_TASKMSG_ID_MAX is
 * always enough). */
shoal_err_t shoal_taskmsg_task_id(const char *job_id, size_t chunk, char *buf, size_t len);

/* The task message of one chunk of job (0-based), with "v" set, and when the
 * job has deadline_s, deadline_unix from its submission time (see
 * shoal_job_set_submitted). String values
 * are shared with the job's document, so treat the result as read-only. Needs
 * a job id (see shoal_job_set_id). Caller owns the reference; NULL with the
 * reason in errbuf (an out-of-range chunk, no job id, "out of memory"). */
json_t *shoal_taskmsg_build(const shoal_job_t *job, size_t chunk, char *errbuf, size_t errlen);

/* What common/cachekey.h's shoal_cachekey_task reads of chunk's message
 * (model, system, prompt_template, items, output and mode), with the job's
 * values shared: the key comes out as from shoal_taskmsg_build's message
 * without building it (the scheduler writes the message once, as text, to
 * publish it). Read-only; caller owns the reference; NULL when out of
 * memory. */
json_t *shoal_taskmsg_key_view(const shoal_job_t *job, size_t chunk);

/* Task messages written as text straight from a job: the bytes
 * json_dumps(JSON_COMPACT) makes of shoal_taskmsg_build's message, numbered
 * as asked and with a cache key when one is given, without building the
 * message. What every message of the job shares is written once, by
 * shoal_taskmsg_writer_new; each message reuses one buffer. The job must
 * outlive the writer and not change under it (its submission time and id
 * included). One thread at a time. */
typedef struct shoal_taskmsg_writer shoal_taskmsg_writer_t;

/* A writer for job's chunks as chunks of a job of n_chunks (the whole job's
 * count: a job that is one part of a job sent in parts numbers its chunks
 * after the earlier parts', see shoal_taskmsg_writer_text). Needs a job id.
 * Caller destroys; NULL with the reason in errbuf (no job id, "out of
 * memory"). */
shoal_taskmsg_writer_t *shoal_taskmsg_writer_new(const shoal_job_t *job, long n_chunks,
                                                 char *errbuf, size_t errlen);

void shoal_taskmsg_writer_destroy(shoal_taskmsg_writer_t *w); /* NULL is ok */

/* The message of the job's chunk (0-based in the job) as chunk number
 * (0-based in the whole job: task_id, chunk), with "cache_key": cache_key
 * last when cache_key is not NULL. The text (NUL-terminated, *len bytes) is
 * borrowed until the next call on w. NULL with the reason in errbuf: an
 * out-of-range chunk or number, "out of memory" (or a message over 256 MiB). */
const char *shoal_taskmsg_writer_text(shoal_taskmsg_writer_t *w, size_t chunk, long number,
                                      const char *cache_key, size_t *len, char *errbuf,
                                      size_t errlen);

/* Decodes and validates a task message into *out. Returns the owned document
 * the fields of *out point into (caller decrefs it; *out is valid until
 * then), or NULL with the reason naming the bad field in errbuf, e.g.
 *   task.max_attempts: expected an integer from 1 to 20, got 0
 * On failure *out is zeroed except out->version, which holds the message's
 * version when one could be read (so a caller can tell a message from a newer
 * scheduler apart from a broken one). */
json_t *shoal_taskmsg_parse(const void *value, size_t len, shoal_taskmsg_t *out, char *errbuf,
                            size_t errlen);

/* Extracts just task_id and job_id from a message, typically one that
 * shoal_taskmsg_parse() refused, so the task can be recorded as failed
 * rather than strand its job. Returns 1 when the message is a JSON object
 * whose job_id obeys the job_id rule and whose task_id is that job_id, ':'
 * and six digits, and both fit their buffers; 0 otherwise, with both buffers
 * set to "" (when their size is not 0). */
int shoal_taskmsg_ids(const void *value, size_t len, char *task_id, size_t task_id_len,
                      char *job_id, size_t job_id_len);

/* Writes the id of the sub-task split off task_id at split level `level`
 * (1..SHOAL_TASKMSG_SPLIT_MAX): the chunk's task_id, '.' and level, e.g.
 * "j1:000004.2". task_id may be the chunk's or a sub-task's (its level is
 * replaced). Ids are deterministic, so a redelivered task splits into the
 * same sub-task. SHOAL_ERR_INVALID for a malformed task_id, SHOAL_ERR_LIMIT
 * for a level out of range or a small buf (SHOAL_TASKMSG_ID_MAX is enough). */
shoal_err_t shoal_taskmsg_subtask_id(const char *task_id, long level, char *buf, size_t len);

/* The message of a sub-task carrying some of a batch task's items: msg (the
 * parent's whole message, as parsed) with task_id, version 2, the items whose
 * keep[i] is nonzero (keep has one entry per item of msg, in order) and
 * est_tokens scaled down to them. Values are shared with msg. Caller owns the
 * reference; NULL with the reason (no item kept, "out of memory"). */
json_t *shoal_taskmsg_build_subtask(const json_t *msg, const char *task_id,
                                    const unsigned char *keep, char *errbuf, size_t errlen);

/* A task message's item made of a job's item src: its id and input, and its
 * model and body when it has them (values shared). Caller owns; NULL when
 * out of memory. */
json_t *shoal_taskmsg_item(const json_t *src);

/* A new array of every chunk's task message, in chunk order, as
 * shoal_taskmsg_build() makes them. Needs a job id (see shoal_job_set_id).
 * Caller owns the reference; NULL with the reason in errbuf. */
json_t *shoal_taskmsg_build_all(const shoal_job_t *job, char *errbuf, size_t errlen);

#endif
