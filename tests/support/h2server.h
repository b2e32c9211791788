/*
 * A model server over https and HTTP/2 for tests and benchmarks: nghttpd
 * (Debian package nghttp2-server; it speaks nothing but HTTP/2) answering
 * every POST to /v1/chat/completions with one chat completion whose content
 * is H2SERVER_CONTENT, over TLS with a certificate for 127.0.0.1 made for
 * the run and signed by no CA of the system's (the certificate is its own
 * CA: a model trusts it through ca_file). Fails the test
 * (tests/support/check.h) instead of returning an error.
 */
#ifndef SHOAL_TESTS_SUPPORT_H2SERVER_H
#define SHOAL_TESTS_SUPPORT_H2SERVER_H

#define H2SERVER_CONTENT "over h2"

typedef struct h2server h2server_t;

/* Makes the certificate and the answer in a new folder under /tmp and
 * starts nghttpd on a free port of 127.0.0.1; returns once it listens. */
h2server_t *h2server_start(void);

int h2server_port(const h2server_t *s);
int h2server_pid(const h2server_t *s);

/* The certificate's PEM file: what a model's ca_file names. */
const char *h2server_ca_file(const h2server_t *s);

/* Established connections from clients of this machine to the server now. */
long h2server_connections(const h2server_t *s);

/* Stops nghttpd and removes the folder. NULL is ok. */
void h2server_stop(h2server_t *s);

#endif
