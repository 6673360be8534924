/*
 * Saving a VM to a mapped-RAM snapshot file (docs/FORMAT.md).
 *
 * The caller pauses the VM first (its pages and device state must not change
 * while they are written). Pages are written with O_DIRECT straight from guest
 * memory by `threads` parallel writers using libaio; zero pages are left as holes;
 * every written page is checksummed; the file becomes "complete" only after all
 * data is durable.
 */
#pragma once

#include <vmsnap/vm.h>

G_BEGIN_DECLS

/* Live counters, updated by the writer threads; read them from any thread. */
typedef struct VmsnapProgress {
    uint64_t ram_bytes;     /* total guest RAM (set at start) */
    uint64_t scanned_pages; /* pages examined so far */
    uint64_t normal_pages;  /* non-zero pages written */
    uint64_t zero_pages;    /* zero pages skipped */
    uint64_t written_bytes; /* page bytes completed on disk */
} VmsnapProgress;

typedef struct VmsnapSaveOptions {
    uint32_t struct_size;     /* sizeof(VmsnapSaveOptions) */
    unsigned threads;         /* parallel writers; 0 = number of online CPUs */
    uint64_t offset;          /* where the snapshot starts in the file (bytes before are kept) */
    bool in_place;            /* vmsnap_save_path: write PATH itself even at offset 0 */
    bool no_checksums;        /* benchmarks only: store zero checksums (such files fail
                               * page verification) */
    bool buffered;            /* force buffered page writes instead of O_DIRECT */
    VmsnapProgress *progress; /* optional; fields updated with atomic adds */
    const int *cancel;        /* optional; the save stops when it becomes non-zero */
} VmsnapSaveOptions;

typedef struct VmsnapSaveStats {
    uint64_t ram_bytes;
    uint64_t total_pages;
    uint64_t normal_pages;
    uint64_t zero_pages;
    uint64_t written_bytes; /* page bytes */
    uint64_t metadata_bytes;
    uint64_t pages_ns;    /* scanning and writing pages */
    uint64_t metadata_ns; /* device state and metadata */
    uint64_t sync_ns;     /* fdatasync + commit */
    uint64_t total_ns;
    unsigned threads;
    bool direct_io; /* false when the filesystem refused O_DIRECT */
} VmsnapSaveStats;

/*
 * Saves to the file `path`. By default the snapshot replaces `path` atomically
 * (written as PATH.partial, synced, renamed). With an offset or opt->in_place, PATH
 * itself is written (created if missing) after its first `offset` bytes, which are kept.
 * Returns true on success; false with an error naming the file and the failing
 * step; on failure no complete-looking snapshot is left behind.
 */
bool vmsnap_save_path(const VmsnapVm *vm, const char *path, const VmsnapSaveOptions *opt,
                      VmsnapSaveStats *stats, GError **error);

/* Same, into an open regular file (written in place from opt->offset). The fd is
 * not closed. */
bool vmsnap_save_fd(const VmsnapVm *vm, int fd, const VmsnapSaveOptions *opt,
                    VmsnapSaveStats *stats, GError **error);

G_END_DECLS
