/*
 * Opening, checking and restoring mapped-RAM snapshots (docs/FORMAT.md).
 *
 * vmsnap_snapshot_open() validates everything but the pages (header, commit
 * state, every metadata checksum, every offset and size) before anything is
 * restored. Page checksums are checked by copy restore as pages arrive, and by
 * vmsnap_snapshot_verify_pages() (verify, or map restore with --verify).
 */
#pragma once

#include <vmsnap/snapshot.h>

G_BEGIN_DECLS

typedef struct VmsnapSnapshot VmsnapSnapshot;

typedef enum {
    VMSNAP_OPEN_ALLOW_PARTIAL = 1 << 0,     /* inspect/verify: open an incomplete file */
    VMSNAP_OPEN_NO_PAGE_CHECKSUMS = 1 << 1, /* check the checksum tables, then drop them */
} VmsnapOpenFlags;

/* Opens and validates the snapshot at `offset` in `path`. Returns NULL with an error
 * naming the file and the offset, section or field at fault. */
VmsnapSnapshot *vmsnap_snapshot_open(const char *path, uint64_t offset, unsigned flags,
                                     GError **error);
/* Same on an open fd (dup'ed; the caller keeps its fd). `what` names it in errors. */
VmsnapSnapshot *vmsnap_snapshot_open_fd(int fd, uint64_t offset, const char *what, unsigned flags,
                                        GError **error);
void vmsnap_snapshot_close(VmsnapSnapshot *s);

/* True when the header says the save completed. */
bool vmsnap_snapshot_complete(const VmsnapSnapshot *s);
/* The CONFIG payload (fields) and its version; NULL for a partial file. */
GBytes *vmsnap_snapshot_config(const VmsnapSnapshot *s, uint32_t *version);
/* The file name used in messages. */
const char *vmsnap_snapshot_name(const VmsnapSnapshot *s);

/*
 * Map restore: replaces each VMM block's memory (matched by name; gpa and size must
 * be equal) with a private copy-on-write mapping of its page area, at the same
 * address. Sets backing_fd. Constant time in the RAM size. Returns false with an
 * error naming the block and field that differ.
 */
bool vmsnap_snapshot_map(VmsnapSnapshot *s, VmsnapRamBlock *blocks, unsigned n_blocks,
                         GError **error);

/*
 * Copy restore: reads every present page with O_DIRECT (parallel, libaio) into the
 * VMM's blocks, which must be zero-filled (fresh memory), checking each page's
 * checksum as it arrives. threads 0 = number of CPUs. Returns false with an error
 * naming the block, page and file offset of the first bad page.
 */
bool vmsnap_snapshot_copy(VmsnapSnapshot *s, const VmsnapRamBlock *blocks, unsigned n_blocks,
                          unsigned threads, VmsnapProgress *progress, GError **error);

/*
 * Loads every DEVICE section into the device with the same name and instance, in
 * the order of `devices`. Refuses a section version outside the device's
 * [min_version, version] (naming both), a device without a section, and a
 * section without a device. Devices whose name is in `skip` (NULL-terminated,
 * may be NULL) are left alone (negative tests).
 */
bool vmsnap_snapshot_load_devices(VmsnapSnapshot *s, const VmsnapDevice *devices,
                                  unsigned n_devices, const char *const *skip, GError **error);

/* One DEVICE section, from a file or a stream. */
typedef struct VmsnapSectionPayload {
    const char *name;
    uint32_t instance;
    uint32_t version;
    GBytes *fields;
} VmsnapSectionPayload;

/* The same rules as vmsnap_snapshot_load_devices(), for sections from any source;
 * `what` names the source in errors. */
bool vmsnap_load_device_sections(const char *what, const VmsnapSectionPayload *sections,
                                 unsigned n_sections, const VmsnapDevice *devices,
                                 unsigned n_devices, const char *const *skip, GError **error);

/* A page that failed verification. */
typedef void (*VmsnapBadPageFn)(void *opaque, const char *block, uint64_t page,
                                uint64_t file_offset, const char *reason);

/*
 * Reads every page area: present pages must match their checksum, absent pages
 * must read as zero (holes are skipped with SEEK_DATA). Calls `bad` for each bad
 * page and counts them in *n_bad. Returns false only on an I/O error.
 */
bool vmsnap_snapshot_verify_pages(VmsnapSnapshot *s, unsigned threads, VmsnapBadPageFn bad,
                                  void *opaque, uint64_t *n_bad, GError **error);

G_DEFINE_AUTOPTR_CLEANUP_FUNC(VmsnapSnapshot, vmsnap_snapshot_close)

G_END_DECLS
