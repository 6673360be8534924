/* The vmsnap command: subcommands and their option parsing. */
#pragma once

#include "machine.h"

#include <glib.h>

typedef struct CliCommand {
    const char *name;
    const char *summary;
    int (*run)(int argc, char **argv);
} CliCommand;

/* Exit code for bad command-line usage (all subcommands). */
#define CLI_EXIT_USAGE 1

/* Parses `vmsnap run` options (argv[0] is "run") into cfg. Returns false with an
 * error naming the option on bad input. cfg must be zeroed; clear it with
 * machine_config_clear(). */
bool cli_run_parse(int argc, char **argv, MachineConfig *cfg, GError **error);

int cli_run(int argc, char **argv);
int cli_save(int argc, char **argv);
