/*
 * JSON Schema validation on jansson: compile a schema once, validate many
 * instances fast. The one validator the job checker and the worker share.
 *
 * Semantics are draft 2020-12's; a root "$schema" of draft-07 switches to
 * draft-07 rules where they differ ($ref overrides its siblings). Draft-07
 * spellings are accepted in either mode: "definitions", array-form "items"
 * with "additionalItems", and "dependencies".
 *
 * A schema is refused when compiling, never half-enforced: a keyword this
 * validator knows but does not implement (unevaluatedProperties,
 * unevaluatedItems, $dynamicRef, $recursiveRef...), a $ref to another
 * document, a $ref loop that never reaches into the instance, or a pattern
 * using regex syntax that common/regex.h does not support is a compile error
 * naming the schema location. Annotations (title, description, default,
 * examples, format, $comment, content*, ...) and keywords no draft defines
 * are ignored, as the specification says.
 *
 * Validation stops at the first violation (shoal_jsonschema_validate_all
 * goes on and reports each) and reports it as
 *   <instance path>: <what was expected>, got <what>
 * e.g. "items[2].input: expected a string, got an integer" (no path at the
 * top level). Validation allocates nothing (except one sort buffer for
 * uniqueItems on arrays of more than 32 entries), is bounded in depth and in
 * regex work, and is thread-safe on a compiled schema.
 */
#ifndef SHOAL_COMMON_JSONSCHEMA_H
#define SHOAL_COMMON_JSONSCHEMA_H

#include <stddef.h>

#include <jansson.h>

#include "common/err.h"

typedef struct shoal_jsonschema shoal_jsonschema_t;

/* Nesting of schema evaluation (each subschema or $ref followed counts one)
 * beyond which validation gives up with an error instead of recursing. */
#define SHOAL_JSONSCHEMA_MAX_DEPTH 512

/* Where the first violation was found, for callers that word some
 * violations their own way. */
typedef struct {
    char instance_path[256]; /* "items[2].input"; "" for the top level */
    char schema_path[256];   /* JSON pointer of the keyword: "/$defs/key/pattern" */
    const char *keyword;     /* "pattern", "required", ... (static); NULL when valid */
    const json_t *value;     /* the offending value, borrowed from the instance */
} shoal_jsonschema_error_t;

/* Compiles schema (copied; the caller keeps its reference). Returns an owned
 * schema, or NULL with the reason in errbuf, e.g.
 *   unsupported keyword "unevaluatedProperties" at /properties/a */
shoal_jsonschema_t *shoal_jsonschema_new(const json_t *schema, char *errbuf, size_t errlen);

void shoal_jsonschema_destroy(shoal_jsonschema_t *s); /* NULL is ok */

/* SHOAL_OK, or SHOAL_ERR_INVALID with the first violation in errbuf (which
 * may be NULL when only the verdict matters: then no message is formatted).
 * Also SHOAL_ERR_INVALID, saying so, when a pattern exceeds its step budget or
 * evaluation nests deeper than SHOAL_JSONSCHEMA_MAX_DEPTH. Thread-safe. */
shoal_err_t shoal_jsonschema_validate(const shoal_jsonschema_t *s, const json_t *instance,
                                      char *errbuf, size_t errlen);

/* As shoal_jsonschema_validate(), and fills *detail (may be NULL) with where
 * the violation is. */
shoal_err_t shoal_jsonschema_validate_ex(const shoal_jsonschema_t *s, const json_t *instance,
                                         shoal_jsonschema_error_t *detail, char *errbuf,
                                         size_t errlen);

/* Called by shoal_jsonschema_validate_all() for each violation: detail as
 * shoal_jsonschema_validate_ex() fills it, message as errbuf would hold it.
 * Both borrowed for the call only. */
typedef void (*shoal_jsonschema_each_fn)(void *arg, const shoal_jsonschema_error_t *detail,
                                         const char *message);

/* Validates as shoal_jsonschema_validate() does, but reports every violation
 * found to fn, up to max_errors (0 counts as 1): after a failed field of an
 * object or entry of an array the other fields and entries are still checked.
 * The verdict is the same as shoal_jsonschema_validate()'s. *n_errors (may be
 * NULL) counts the violations reported. Thread-safe. */
shoal_err_t shoal_jsonschema_validate_all(const shoal_jsonschema_t *s, const json_t *instance,
                                          size_t max_errors, shoal_jsonschema_each_fn fn, void *arg,
                                          size_t *n_errors);

#endif
