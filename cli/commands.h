/*
 * The shoal CLI's subcommands. Each takes the arguments after its name and
 * returns the process exit code:
 *   0 success (for status/results: the job completed, or is running without --follow)
 *   1 an operational error (Kafka or PostgreSQL unreachable, unreadable file)
 *   2 bad usage or an invalid job file
 *   2 also: the job cannot be cancelled or resumed as it stands (cancel, resume), or
 *     submit --wait found another job with other content under the job_id (ignored)
 *   3 the job ended partial, failed, rejected or cancelled
 *   4 no such job
 *   5 the job has not finished yet (results)
 */
#ifndef SHOAL_CLI_COMMANDS_H
#define SHOAL_CLI_COMMANDS_H

enum {
    SHOAL_EXIT_OK = 0,
    SHOAL_EXIT_ERROR = 1,
    SHOAL_EXIT_USAGE = 2,
    SHOAL_EXIT_JOB_FAILED = 3,
    SHOAL_EXIT_NOT_FOUND = 4,
    SHOAL_EXIT_NOT_DONE = 5,
};

int shoal_cmd_submit(int argc, char **argv);
int shoal_cmd_status(int argc, char **argv);
int shoal_cmd_results(int argc, char **argv);
int shoal_cmd_estimate(int argc, char **argv);
int shoal_cmd_migrate(int argc, char **argv);
int shoal_cmd_cancel(int argc, char **argv);
int shoal_cmd_resume(int argc, char **argv);
int shoal_cmd_dev(int argc, char **argv);
/* cli/top.c: the live fleet view (--once: one frame). */
int shoal_cmd_top(int argc, char **argv);

/* Follows a job until it ends (used by submit --wait and dev --demo).
 * Prints progress to out; returns an exit code as above. */
struct shoal_pg;
int shoal_cmd_follow(struct shoal_pg *pg, const char *job_id, long interval_ms,
                     long appear_timeout_ms, int quiet);

#endif
