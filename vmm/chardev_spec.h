/* The text form of a serial backend (--serial), parsed apart from opening it so
 * that the CLI can check it early and the unit tests can check it without fds. */
#pragma once

#include <glib.h>
#include <stdbool.h>

typedef enum {
    CHARDEV_STDIO, /* output to stdout, input from stdin */
    CHARDEV_FILE,  /* output to PATH (created or truncated); input from INPATH, if given */
    CHARDEV_UNIX,  /* a listening unix socket, one client at a time, both directions */
    CHARDEV_NONE,  /* output discarded, no input */
} ChardevKind;

typedef struct ChardevSpec {
    ChardevKind kind;
    char *path;  /* FILE: output file; UNIX: socket path; else NULL */
    char *input; /* FILE: input file or FIFO, or NULL; else NULL */
} ChardevSpec;

/*
 * Parses "stdio", "file:PATH[,input=INPATH]", "unix:PATH" or "none" (NULL means
 * "stdio"). In PATH and INPATH a doubled comma ",," stands for one comma. Returns
 * false with a G_IO_ERROR_INVALID_ARGUMENT error that starts with `option` (e.g.
 * "--serial") and names the bad part of the text; *out is then cleared.
 */
bool chardev_spec_parse(const char *text, const char *option, ChardevSpec *out, GError **error);

void chardev_spec_clear(ChardevSpec *spec);
