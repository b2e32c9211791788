/*
 * shoal stats (cli/stats.c): what the fleet did per tenant and model over a
 * time range, from PostgreSQL.
 */
#ifndef SHOAL_CLI_STATS_H
#define SHOAL_CLI_STATS_H

/* Takes the arguments after "stats"; returns the exit code (commands.h). */
int shoal_cmd_stats(int argc, char **argv);

#endif
