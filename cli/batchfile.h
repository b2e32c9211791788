/*
 * OpenAI Batch files at the CLI: an input file made into the job text that
 * `shoal submit --openai-batch` produces, and a finished job's answers read
 * back one line per item for `shoal results --format openai-batch|jsonl`. The
 * conversion and the line shape are common/oaibatch.h's; this module adds the
 * models file and the database. Not thread-safe (one pg handle).
 */
#ifndef SHOAL_CLI_BATCHFILE_H
#define SHOAL_CLI_BATCHFILE_H

#include <stddef.h>
#include <stdio.h>

#include "common/err.h"
#include "common/models.h"
#include "common/oaibatch.h"
#include "common/pg.h"

/* The job (JSON text, caller frees with free()) for the Batch input file
 * text of len bytes, its models mapped through models. NULL with the reason,
 * naming the line, in errbuf. *out_len gets the length. */
char *shoal_batchfile_job_text(const char *text, size_t len, const shoal_models_t *models,
                               const shoal_oaibatch_opts_t *opts, size_t *out_len, char *errbuf,
                               size_t errlen);

/* Writes job_id's items to out in item order, one line each, inside one
 * read-only snapshot and a page of tasks in memory at a time. format
 * "openai-batch": the OpenAI Batch output line (shoal_oaibatch_output_line),
 * the model as the models file names it at the provider when models has the
 * alias (else the alias); "jsonl": {"id", "status", "output", "model",
 * "tokens_in", "tokens_out", "error"} with shoal's own names. Items of a
 * chunk answered in one call (context mode) each show that answer. An item
 * without an answer gets an error from its task: its status and the last
 * call's outcome. SHOAL_ERR_INVALID for another format; database and write
 * errors as they come. */
shoal_err_t shoal_batchfile_write(shoal_pg_t *pg, const char *job_id, const char *format,
                                  const shoal_models_t *models, FILE *out, char *errbuf,
                                  size_t errlen);

#endif
