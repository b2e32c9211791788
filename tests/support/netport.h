/*
 * Loopback ports for servers a test starts itself: one free now, and waiting
 * until a server listens on one. Fails the test (tests/support/check.h)
 * instead of returning an error.
 */
#ifndef SHOAL_TESTS_SUPPORT_NETPORT_H
#define SHOAL_TESTS_SUPPORT_NETPORT_H

/* A port of 127.0.0.1 that nothing listens on now (the kernel's pick,
 * released at once). */
int netport_free(void);

/* Waits until a connection to 127.0.0.1:port is accepted; fails the test
 * after timeout_s, naming what (the server) and where to look (its log). */
void netport_wait_listening(int port, double timeout_s, const char *what, const char *log);

#endif
