/*
 * Mutation testing of readers that must agree with a reference: a check
 * function says whether its reader took a text (after failing the test
 * itself when the reader and the reference disagree); these helpers feed it
 * hand-written texts and random mutations of a real one.
 */
#ifndef SHOAL_TESTS_SUPPORT_MUTATE_H
#define SHOAL_TESTS_SUPPORT_MUTATE_H

#include <stddef.h>

/* 1 when the reader under test took text (len bytes), else 0. */
typedef int (*mutate_check_fn)(const char *text, size_t len);

/* Fails the test unless check(text) returns taken (1 or 0). */
void mutate_expect(mutate_check_fn check, const char *text, int taken);

/* Runs check on `rounds` mutations of base (one to three byte changes,
 * cuts and insertions of JSON-ish bytes, seeded); returns how many it took. */
long mutate_count(mutate_check_fn check, const char *base, int rounds, unsigned seed);

#endif
