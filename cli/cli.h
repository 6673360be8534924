/* The vmsnap command: subcommands and their option parsing. */
#pragma once

#include "machine.h"
#include "migration.h"

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
int cli_restore(int argc, char **argv);
int cli_save(int argc, char **argv);
int cli_migrate(int argc, char **argv);
int cli_convert(int argc, char **argv);
int cli_inspect(int argc, char **argv);
int cli_verify(int argc, char **argv);

/* Parses a snapshot argument "FILE[,offset=N]" (an optional "file:" prefix is
 * accepted; N is decimal, 0x-hex or a size such as 1M). Returns false with an error
 * quoting the argument. */
bool cli_parse_snapshot_arg(const char *arg, char **path, uint64_t *offset, GError **error);

/* The canonical text form of a binary (RFC 4122 byte order) UUID; g_free it. */
char *cli_uuid_string(const uint8_t uuid[16]);

/* "map" / "copy" (NULL: map). */
bool cli_parse_restore_mode(const char *text, RestoreMode *mode, GError **error);
