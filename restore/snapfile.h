/* The opened snapshot (internal view of VmsnapSnapshot). */
#pragma once

#include "format.h"

#include <gio/gio.h>

#include <vmsnap/restore.h>

struct VmsnapSnapshot {
    int fd; /* buffered, read-only */
    char *what;
    uint64_t base;
    FormatSnapshot *fmt;
};

/* FormatReadFn over the snapshot's fd (pread; a short read is "truncated"). */
bool snapfile_read(void *opaque, uint64_t offset, void *buf, size_t len, GError **error);

/* Reopens the file with O_DIRECT for reading; -1 (buffered) if unsupported. */
int snapfile_open_direct(const VmsnapSnapshot *s);

/* The snapshot block matching a VMM block (same name, gpa, size), or NULL with an error. */
const FormatBlock *snapfile_match_block(const VmsnapSnapshot *s, const VmsnapRamBlock *rb,
                                        GError **error);

/* Every snapshot block has a VMM block of the same name and vice versa. */
bool snapfile_check_blocks(const VmsnapSnapshot *s, const VmsnapRamBlock *blocks, unsigned n,
                           GError **error);
