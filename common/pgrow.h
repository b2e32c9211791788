/*
 * Rows of a PostgreSQL composite type as the elements of an array literal
 * ('{"(a,b,...)","(c,d,...)"}'), the form in which the worker sends a batch
 * of call records and results (sql/023: shoal.attempt_row[] and
 * shoal.result_row[]). The server reads such an array with the types' own
 * input functions, for a third of what reading the same rows from JSON costs
 * it, and the text is shorter: fields go by position, not by name.
 *
 * A row is written field by field, in the type's column order, into a
 * shoal_jsontext_t buffer (its growth and size limit). Strings are quoted
 * and escaped twice over, for the record inside the array element; NULL
 * (and a NULL string) writes an empty field, which the server reads as SQL
 * NULL. Strings are copied as they are: a value the server refuses (bytes
 * that are not UTF-8) makes it refuse the statement, as it would any value.
 */
#ifndef SHOAL_COMMON_PGROW_H
#define SHOAL_COMMON_PGROW_H

#include <stddef.h>

#include "common/jsontext.h"

typedef struct {
    shoal_jsontext_t text;
    int fields; /* written so far in the open row */
} shoal_pgrow_t;

void shoal_pgrow_init(shoal_pgrow_t *r, size_t max);
void shoal_pgrow_free(shoal_pgrow_t *r);
/* The rows written (NUL-terminated, *len bytes), the caller's to free;
 * NULL when memory or max ran out on the way. */
char *shoal_pgrow_detach(shoal_pgrow_t *r, size_t *len);

/* '"(' and ')"' around one row's fields (one element of the array). */
void shoal_pgrow_open(shoal_pgrow_t *r);
void shoal_pgrow_close(shoal_pgrow_t *r);

void shoal_pgrow_null(shoal_pgrow_t *r);
void shoal_pgrow_str(shoal_pgrow_t *r, const char *s); /* NULL: SQL NULL */
void shoal_pgrow_strn(shoal_pgrow_t *r, const char *s, size_t n);
void shoal_pgrow_int(shoal_pgrow_t *r, long long v);
/* As shoal_jsontext_fixed and shoal_jsontext_real; a value that is not
 * finite is written NULL. */
void shoal_pgrow_fixed(shoal_pgrow_t *r, double v, int decimals);
void shoal_pgrow_real(shoal_pgrow_t *r, double v);

/* Array elements joined into one array literal: '{' e1 ',' e2 ... '}'.
 * NULL when out of memory; the caller frees. */
char *shoal_pgrow_array(char *const *rows, const size_t *lens, size_t n);

/* The fields of one row as written above (an array element, len bytes),
 * decoded: fields[i] is the field's text, or NULL for SQL NULL. At most
 * max fields are kept; returns how many there are (-1 when the text is not
 * a row, or out of memory: nothing is kept). Entries not kept are left as
 * they were, so for an array that started all NULL,
 * shoal_pgrow_fields_free(fields, max) is right whatever was returned. */
int shoal_pgrow_fields(const char *row, size_t len, char **fields, int max);
void shoal_pgrow_fields_free(char **fields, int n);

#endif
