/* Character backends for the serial port (docs/CLI.md, --serial):
 *   stdio                      output to stdout, input from stdin
 *   file:PATH[,input=INPATH]   output to PATH (truncated), input from INPATH (file or FIFO)
 *   unix:PATH                  listening socket (0600), one client at a time, both ways;
 *                              output while no client is connected is dropped
 *   none                       output discarded, no input
 *
 * Output is written by vCPU threads (chardev_write). Input runs on the default
 * GMainContext (the machine's main loop): the frontend (the UART) says how many bytes
 * it can take now; the backend reads only that many, so guest input is never dropped,
 * and stops watching its fd until the frontend calls chardev_kick() (any thread).
 */
#pragma once

#include "chardev_spec.h"

#include <gio/gio.h> /* G_IO_ERROR */
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>
#include <termios.h>

#define CHARDEV_PENDING 16

/* How many bytes the frontend takes now (0: none; it will kick when that changes). */
typedef size_t (*ChardevCanReceive)(void *opaque);
/* Hands over bytes; returns how many were taken (the rest is offered again later). */
typedef size_t (*ChardevReceive)(void *opaque, const uint8_t *buf, size_t len);

typedef struct Chardev {
    ChardevSpec spec;
    char *spec_text;

    GMutex out_lock; /* out_fd (a unix client comes and goes) */
    int out_fd;      /* -1: output discarded */
    bool close_out;
    bool out_stalled; /* a unix client did not read for 1 s: drop output, do not wait */

    int in_fd; /* stdin, INPATH or the unix client; -1: no input now */
    bool close_in;
    bool in_socket; /* in_fd is the unix client (also out_fd) */
    int listen_fd;
    char *sock_path;
    dev_t sock_dev;
    ino_t sock_ino;

    bool tty_raw; /* stdin was put in raw mode: restore saved_tio on close */
    struct termios saved_tio;

    /* input machinery (main loop) */
    int kick_fd; /* eventfd */
    guint kick_src, in_src, listen_src;
    uint8_t pending[CHARDEV_PENDING]; /* read from the backend, not yet taken */
    size_t pending_off, pending_len;
    ChardevCanReceive can_receive;
    ChardevReceive receive;
    void *opaque;
    uint64_t rx_bytes, connections; /* statistics (tests, diagnostics) */
} Chardev;

typedef enum {
    CHARDEV_OPEN_NO_STDIN = 1 << 0, /* stdin carries something else: stdio is output only */
} ChardevOpenFlags;

/* Parses `spec` (chardev_spec_parse(); NULL = "stdio") and opens the backend: the
 * output file, the input file or FIFO (non-blocking), the listening socket (a stale
 * socket at PATH is replaced; any other file there is refused). Returns false with
 * an error that starts with "--serial: " and names the spec or the file. */
bool chardev_open(Chardev *cd, const char *spec, unsigned flags, GError **error);

/* Starts input on the default main context, delivering to the frontend. */
void chardev_attach(Chardev *cd, ChardevCanReceive can_receive, ChardevReceive receive,
                    void *opaque);

/* Thread-safe: the frontend has room again (or may have); re-evaluate input. */
void chardev_kick(Chardev *cd);

/* Writes everything (retrying short writes); output errors are dropped. A unix
 * client whose socket stays full for 1 s loses output from then on until it reads
 * again (one wait, not one per byte). Thread-safe. */
void chardev_write(Chardev *cd, const uint8_t *buf, size_t len);

/* Stops input, restores the terminal, closes and removes what it opened. */
void chardev_close(Chardev *cd);
