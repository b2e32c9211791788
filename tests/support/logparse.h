/*
 * Strict readers of shoal's log lines, for tests that check every line a
 * process wrote: logfmt as common parsers read it (go-logfmt's grammar, with
 * no leniency) and JSON lines read by jansson. Anything a log shipper could
 * misread is an error.
 */
#ifndef SHOAL_TESTS_SUPPORT_LOGPARSE_H
#define SHOAL_TESTS_SUPPORT_LOGPARSE_H

#include <jansson.h>
#include <stddef.h>

/* One logfmt line (without its newline): key=value pairs split by single
 * spaces; keys of letters, digits, '_', '.', '-'; values bare (printable
 * ASCII or UTF-8, no '"', '=', '\\') or quoted with only \" \\ \n \r \t and
 * \uXXXX escapes inside and no raw control bytes. Returns an object of key ->
 * unescaped value (caller decrefs), or NULL with the reason in why. A key
 * given twice is an error. */
json_t *logparse_logfmt(const char *line, size_t len, char *why, size_t whylen);

/* One JSON line: an object whose members are all strings (caller decrefs),
 * or NULL with the reason in why. */
json_t *logparse_json(const char *line, size_t len, char *why, size_t whylen);

/* Parses every line of text (each must end in a newline) as logfmt or JSON
 * and checks each has ts, level, proc, module and msg; fails the test naming
 * origin and the line otherwise. Returns the lines as an array of objects
 * (caller decrefs). */
json_t *logparse_lines(const char *text, int json, const char *origin);

#endif
