/*
 * The migration stream receiver (docs/PROTOCOL.md): reads the main channel (and
 * extra multifd channels), validates every record, writes pages into the
 * destination's RAM and collects the configuration and device sections, which the
 * caller then loads. Hostile input never crashes it: every error names the channel,
 * record number, type and offset.
 */
#pragma once

#include "format.h"
#include "stream.h"

#include <vmsnap/vm.h>

typedef struct Receiver Receiver;

typedef struct ReceiverHooks {
    /* Called with the CONFIG payload (fields) before any page: the destination checks
     * that it can run this VM (memory, vCPUs, and the UUID when the stream asks for
     * validation). Return false with an error to refuse. */
    bool (*config)(void *opaque, GBytes *fields, uint32_t version, const uint8_t vm_uuid[16],
                   bool validate_uuid, GError **error);
    /* Supplies extra channels (multifd): blocks until the next connection arrives,
     * returns a stream (owned by the receiver) or NULL with an error. It should time
     * out: the receiver waits for all channels before the first page is applied.
     * Both hooks are called from the thread that runs receiver_run(), after the main
     * channel's RAM_BLOCKS. */
    VStream *(*accept_channel)(void *opaque, GError **error);
    void *opaque;
} ReceiverHooks;

/* `blocks` are the destination's RAM blocks (host pointers); each stream block must
 * match one by name, gpa and size, and each destination block must be in the stream.
 * With n_blocks 0, the receiver maps anonymous memory (MAP_NORESERVE) for each block
 * of the stream instead, freed by receiver_free() (`vmsnap convert`). The main stream
 * is owned by the receiver. hooks may be NULL (accept any config, one channel). */
Receiver *receiver_new(VStream *main, const VmsnapRamBlock *blocks, unsigned n_blocks,
                       const ReceiverHooks *hooks);

/* The caller promises that the destination blocks read as zero now (fresh or
 * discarded memory). The receiver then skips zero pages sent for pages it has not
 * written, instead of reading them (a read faults in a page-table entry per page).
 * Implied with n_blocks 0. Call before receiver_run(). */
void receiver_assume_zeroed(Receiver *r);

/* Runs to the END of every channel and the end of file after it (or the first
 * error). Page data lands directly in the blocks. Returns false with an error naming
 * the channel and record at fault. With several channels, one thread per channel
 * reads; a failed run waits up to a second for the other threads to stop, and then
 * returns even if one is still blocked in a read (that thread writes no more pages,
 * and exits and frees its stream when its read returns). */
bool receiver_run(Receiver *r, GError **error);

/* After a successful run: the sections, for loading. */
typedef struct ReceivedSection {
    char name[FORMAT_SECTION_NAME_MAX + 1];
    uint32_t instance;
    uint32_t version;
    GBytes *fields;
} ReceivedSection;
GBytes *receiver_config(const Receiver *r, uint32_t *version);
const ReceivedSection *receiver_devices(const Receiver *r, unsigned *n);
/* The destination's blocks (those given to receiver_new, or the receiver's own). */
const VmsnapRamBlock *receiver_ram_blocks(const Receiver *r, unsigned *n);
bool receiver_source_running(const Receiver *r);
/* When the main channel's END record was checked (monotonic us), 0 before. */
uint64_t receiver_end_us(const Receiver *r);
/* Statistics: passes seen, bytes and pages received (any thread, any time). */
uint32_t receiver_passes(const Receiver *r);
uint64_t receiver_bytes(const Receiver *r);
uint64_t receiver_pages(const Receiver *r);

void receiver_free(Receiver *r);
