/*
 * Where the CLI finds the fleet. `shoal dev` writes its connection settings
 * as export lines to $SHOAL_HOME/dev.env (default ~/.shoal/dev.env); every
 * other command loads that file first, without overriding variables already
 * set, so flags > environment > dev.env > defaults.
 */
#ifndef SHOAL_CLI_CLIENV_H
#define SHOAL_CLI_CLIENV_H

#include <stddef.h>

/* Path of the dev.env file into buf. */
void shoal_clienv_path(char *buf, size_t len);

/* Loads dev.env if it exists. Returns the number of variables set. */
int shoal_clienv_load(void);

#endif
