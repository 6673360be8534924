/*
 * A small byte-stream interface (DESIGN.md section 4): write, read, flush, close,
 * with a running byte count, over file descriptors (pipes, sockets, files) and
 * memory, plus test-only fault injection. The migration stream sender and
 * receiver use it; errors name the stream ("unix:/tmp/m.sock", "exec:zstd ...").
 *
 * A VStream is used by one thread at a time (the multi-channel sender gives each
 * channel its own stream).
 */
#pragma once

#include <gio/gio.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

typedef struct VStream VStream;

typedef struct VStreamOps {
    /* Transfer at most len bytes / iovcnt vectors; return bytes done, 0 at EOF (read),
     * or -errno. May be short. */
    ssize_t (*writev)(VStream *s, const struct iovec *iov, int iovcnt);
    ssize_t (*read)(VStream *s, void *buf, size_t len);
    /* Pushes buffered bytes down; 0 or -errno. */
    int (*flush)(VStream *s);
    /* Signals end of output to the peer (shutdown(SHUT_WR), close a pipe) without
     * freeing; 0 or -errno. */
    int (*close_write)(VStream *s);
    void (*free)(VStream *s);
    /* Optional: after EOF on read, why the peer stopped (e.g. a command's exit
     * status), as a new string, or NULL. Appended to the truncation error. */
    char *(*eof_detail)(VStream *s);
} VStreamOps;

struct VStream {
    const VStreamOps *ops;
    char *name;
    uint64_t written; /* bytes written so far */
    uint64_t read;    /* bytes read so far */
};

/* Writes everything (retrying short writes and EINTR). False with an error naming the
 * stream and the byte offset. */
bool vstream_write_all(VStream *s, const void *buf, size_t len, GError **error);
bool vstream_writev_all(VStream *s, struct iovec *iov, int iovcnt, GError **error);

/* Reads exactly len bytes. At EOF before len bytes: false with G_IO_ERROR_BROKEN_PIPE
 * ("<name>: unexpected end of stream after N bytes"); *eof_clean is set when EOF came
 * before the first byte (a clean end), if eof_clean is not NULL. */
bool vstream_read_all(VStream *s, void *buf, size_t len, bool *eof_clean, GError **error);

bool vstream_flush(VStream *s, GError **error);
bool vstream_close_write(VStream *s, GError **error);
void vstream_free(VStream *s);

/* A stream over fd (socket, pipe or file). own: close fd on free. */
VStream *vstream_fd_new(int fd, bool own, const char *name);

/* Writes append to `out` (not owned); reads consume `in` (not owned, may be NULL). */
VStream *vstream_mem_new(GByteArray *out, GBytes *in, const char *name);

/* A stream that first returns the bytes of `prefix` (already read from `inner`, e.g.
 * to peek at a header), then reads `inner` (owned). Writes go to `inner`. */
VStream *vstream_prefix_new(VStream *inner, GBytes *prefix);

/* Test-only fault layer: the `nth` call (1-based) of the given kind fails: with
 * -errno (ENOSPC, EIO, ECONNRESET...), or, with short=true, transfers half and then
 * every later call fails with EPIPE. Calls before pass through to `inner` (owned). */
typedef enum { VSTREAM_FAULT_WRITE, VSTREAM_FAULT_READ } VStreamFaultKind;
VStream *vstream_fault_new(VStream *inner, VStreamFaultKind kind, unsigned nth, int err,
                           bool short_transfer);
