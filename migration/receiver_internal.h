/* The receiver's shared state (migration/receiver*.c only). */
#pragma once

#include "fresh_fill.h"
#include "receiver.h"
#include "stream_format.h"

/* Where a channel is in its record sequence (PROTOCOL.md 3). */
typedef enum {
    PHASE_CONFIG,     /* main: CONFIG comes first */
    PHASE_RAM_BLOCKS, /* main: then RAM_BLOCKS */
    PHASE_PASSES,     /* PAGES and SYNC */
    PHASE_DEVICES,    /* after the FINAL SYNC: DEVICE (main) and END */
    PHASE_DONE,       /* after END */
} ChannelPhase;

typedef struct Channel {
    Receiver *r;
    uint32_t index;  /* 0 = main */
    VStream *s;      /* owned */
    uint64_t offset; /* bytes of this channel consumed so far */
    uint32_t seq;    /* next expected sequence number */
    StreamChain *chain;
    ChannelPhase phase;
    uint32_t synced; /* SYNC records delivered (r->lock when others may look) */
    bool final;      /* its FINAL SYNC was delivered */
    uint8_t *buf;    /* payload buffer, reused */
    size_t cap;
    GThread *thread;
    bool done; /* its thread is about to return (r->lock) */
} Channel;

struct Receiver {
    gint refs;           /* the caller's, plus one per running channel thread */
    VmsnapRamBlock *dst; /* the destination's blocks (host pointers) */
    unsigned n_dst;
    bool own_blocks;    /* receiver_new got no blocks: they are mmaps of ours */
    bool zeroed;        /* dst read as zero before the run (receiver_assume_zeroed) */
    uint64_t **written; /* zeroed: per stream block, a bit per page written with data */
    FreshFill *fill;    /* zeroed: pages not yet written are filled with UFFDIO_COPY */
    ReceiverHooks hooks;
    bool ran;

    StreamHeader header;
    FormatBlock *blocks; /* the stream's RAM_BLOCKS table */
    unsigned n_blocks;
    unsigned *map; /* stream block -> index in dst */
    GBytes *config;
    uint32_t config_version;
    GArray *devices; /* ReceivedSection */
    uint64_t device_bytes;
    bool source_running;
    uint64_t end_us; /* the main channel's END was checked */

    Channel *ch[STREAM_MAX_CHANNELS];
    unsigned n_channels;
    bool threaded; /* channels > 1: one thread per channel */

    GMutex lock; /* the fields below, and synced/final of every channel */
    GCond cond;
    bool failed;
    GError *error;    /* the first error of any channel thread */
    unsigned running; /* channel threads not finished */
    GRWLock apply;    /* readers: applying pages; writer: a failed run waits them out */

    uint64_t bytes; /* atomic */
    uint64_t pages; /* atomic */
};

Channel *channel_new(Receiver *r, uint32_t index, VStream *s, uint64_t offset);
void channel_free(Channel *ch);

/* Reads and handles records until the main channel's RAM_BLOCKS (setup=true, main
 * only) or until END and the end of the stream after it. False with an error naming
 * the record; false with no error when another channel failed first. */
bool channel_run(Channel *ch, bool setup, GError **error);
/* On a live stream (STREAM_FLAG_LIVE), before its passes: makes the record buffer fit
 * the largest PAGES record (1024 pages, or a smaller RAM block's pages) and touches
 * it: the final pass sends such records. Grown only when the first such
 * record came, that fresh memory was faulted in while the source was paused (~0.5
 * GB/s on a host that takes free memory back): 4 GiB guest, 3 runs each, final pass
 * 6.0-7.7 ms instead of 1.2-1.8, for ~4 MB. */
void channel_reserve_final(Channel *ch);

/* Reads exactly len bytes of the channel; EOF is reported as truncation naming
 * `where` (a phrase such as "the stream header"). */
bool channel_read(Channel *ch, void *buf, size_t len, const char *where, GError **error);

/* Allocates (own_blocks) or matches the destination's blocks against the stream's
 * table; fills r->map. Errors name the block and both values. On zeroed memory it
 * also opens r->fill (fresh_fill.h) when userfaultfd allows; receiver_run closes it. */
bool receiver_match_blocks(Receiver *r, GError **error);
