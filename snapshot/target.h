/* Where a snapshot is written: a path (replaced atomically) or an open file,
 * with a buffered fd for the header and metadata and an O_DIRECT fd for pages. */
#pragma once

#include <gio/gio.h>
#include <stdbool.h>
#include <stdint.h>

typedef struct SaveTarget {
    char *what;     /* the file named in errors */
    char *path;     /* final path, NULL for fd targets */
    char *tmp_path; /* PATH.partial while writing (path targets without offset) */
    int meta_fd;    /* buffered: header, metadata, fdatasync */
    int page_fd;    /* O_DIRECT when direct, else == meta_fd */
    bool own_meta_fd;
    bool direct;
    uint64_t base; /* offset of the snapshot in the file */
} SaveTarget;

/* Opens `path` for a snapshot at `offset`. Not in place: a new PATH.partial that
 * commit renames over PATH. In place: PATH itself (created if missing), written
 * after its first `offset` bytes. `buffered` skips O_DIRECT. If the filesystem
 * refuses O_DIRECT, pages are written buffered and target->direct is false. */
bool save_target_open_path(SaveTarget *t, const char *path, uint64_t offset, bool in_place,
                           bool buffered, GError **error);

/* Uses an open regular file (not closed by the target). */
bool save_target_open_fd(SaveTarget *t, int fd, uint64_t offset, bool buffered, GError **error);

/* True when the target is the same file as fd (st_dev/st_ino). */
bool save_target_is_file(const SaveTarget *t, int fd);

/* Buffered write of all `len` bytes at absolute offset. */
bool save_target_pwrite(SaveTarget *t, const void *buf, size_t len, uint64_t offset,
                        const char *what, GError **error);

/* fdatasync of the file (both fds share it). */
bool save_target_sync(SaveTarget *t, GError **error);

/* After the complete header is durable: renames PATH.partial to PATH and syncs the
 * directory (path targets); truncates the file to `end`. */
bool save_target_commit(SaveTarget *t, uint64_t end, GError **error);

/* On failure: removes PATH.partial; in-place targets keep their (partial) header. */
void save_target_abort(SaveTarget *t);

void save_target_close(SaveTarget *t);
