/* Character backends for the serial port: stdio, file:PATH, none. */
#pragma once

#include <gio/gio.h> /* G_IO_ERROR */
#include <stdbool.h>
#include <stdint.h>

typedef struct Chardev {
    int out_fd;       /* -1: output discarded */
    bool close_out;
    char *spec;
} Chardev;

/* Parses "stdio", "file:PATH" (created or truncated) or "none". Returns false with
 * an error naming the spec. */
bool chardev_open(Chardev *cd, const char *spec, GError **error);

/* Writes everything (retrying short writes); output errors are dropped. */
void chardev_write(Chardev *cd, const uint8_t *buf, size_t len);

void chardev_close(Chardev *cd);
