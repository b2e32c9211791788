/*
 * shoal: the command-line entry point. Dispatches to the subcommands in
 * cli/commands.c and cli/dev.c.
 */
#include <stdio.h>
#include <string.h>

#include "cli/commands.h"
#include "cli/stats.h"

static const struct {
    const char *name;
    int (*fn)(int argc, char **argv);
    const char *help;
} commands[] = {
    {"submit", shoal_cmd_submit, "check a job file and produce it to the jobs topic"},
    {"status", shoal_cmd_status, "show a job's progress (--follow to watch it live)"},
    {"results", shoal_cmd_results, "print a finished job's merged output"},
    {"estimate", shoal_cmd_estimate, "estimate a job file's calls, tokens, cost and duration"},
    {"cancel", shoal_cmd_cancel, "cancel a running job (no call of it starts after)"},
    {"resume", shoal_cmd_resume, "run a partial or failed job's failed tasks again"},
    {"stats", shoal_cmd_stats, "jobs, calls, tokens, cost and 429s per tenant and model"},
    {"top", shoal_cmd_top, "a live view of the fleet: workers, models, throughput, queue, jobs"},
    {"migrate", shoal_cmd_migrate, "create or update the database schema"},
    {"dev", shoal_cmd_dev, "run the whole fleet on this machine (--demo runs a sample job)"},
};

static void usage(FILE *out)
{
    fprintf(out, "usage: shoal COMMAND [options]\n\nRuns large LLM generation jobs on a fleet "
                 "of workers.\n\ncommands:\n");
    for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
        fprintf(out, "  %-8s %s\n", commands[i].name, commands[i].help);
    fprintf(out, "\n`shoal COMMAND --help` describes each command. Connection settings come from\n"
                 "flags, then SHOAL_* environment variables, then the file `shoal dev` writes\n"
                 "($SHOAL_HOME/dev.env, default ~/.shoal/dev.env).\n\n"
                 "exit codes: 0 ok, 1 error, 2 usage, invalid job, or a job that cannot be\n"
                 "cancelled or resumed, 3 job ended partial, failed, rejected or cancelled, 4 no\n"
                 "such job, 5 job not finished yet\n");
}

int main(int argc, char **argv)
{
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") ||
        !strcmp(argv[1], "help")) {
        usage(stdout);
        return argc < 2 ? SHOAL_EXIT_USAGE : SHOAL_EXIT_OK;
    }
    for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
        if (!strcmp(argv[1], commands[i].name))
            return commands[i].fn(argc - 1, argv + 1);
    fprintf(stderr, "shoal: unknown command \"%s\" (see shoal --help)\n", argv[1]);
    return SHOAL_EXIT_USAGE;
}
