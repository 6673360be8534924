/*
 * Test helper: builds migration streams record by record (docs/PROTOCOL.md), with
 * every sequence number, checksum and END chain right unless a test breaks one on
 * purpose, so that each refusal rule can be reached on its own. Shared by
 * tests/unit/test-stream.c and the stream fuzzer's corpus generator.
 */
#pragma once

#include "stream_format.h"

typedef struct SbRecord {
    uint32_t type;
    GByteArray *payload;
    bool auto_end; /* END: records and chain filled in when assembled */
    uint32_t end_flags;
    uint64_t offset; /* set by sb_assemble: the record's offset in the channel */
} SbRecord;

typedef struct SbChannel {
    uint32_t index;  /* 0: main (stream header), else a channel header */
    StreamHeader h;  /* main: the stream header; extra: its session is used */
    GPtrArray *recs; /* SbRecord */
} SbChannel;

SbChannel *sb_new(uint32_t index, const StreamHeader *h);
void sb_free(SbChannel *c);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(SbChannel, sb_free)

/* A header with channels = n, a fixed uuid and session. */
StreamHeader sb_header(uint32_t channels);

SbRecord *sb_add(SbChannel *c, uint32_t type, const void *payload, size_t len);
void sb_config(SbChannel *c, uint32_t version);
/* The test's two blocks: "ram-below-4g" at 0 (64 pages), "ram-above-4g" at 4 GiB
 * (16 pages). */
void sb_ram_blocks(SbChannel *c);
void sb_sync(SbChannel *c, uint32_t pass, bool final);
void sb_device(SbChannel *c, const char *name, uint32_t instance, uint32_t version);
void sb_end(SbChannel *c, uint32_t flags);

/* A PAGES record: bit i of sent/zero (up to 64 pages) for pages first+i; data pages
 * are filled with sb_page_byte(block, page, pass). */
void sb_pages(SbChannel *c, uint32_t block, uint64_t first, uint32_t npages, uint64_t sent,
              uint64_t zero, uint32_t pass);
static inline uint8_t sb_page_byte(uint32_t block, uint64_t page, uint32_t pass)
{
    return (uint8_t)(1 + block * 37 + page * 7 + pass * 101);
}

/* The channel's bytes: header, then every record with seq = its index. */
GBytes *sb_assemble(SbChannel *c);

/* A complete valid single-channel stream: CONFIG, RAM_BLOCKS, two passes, two
 * DEVICE records, END(SOURCE_RUNNING). */
SbChannel *sb_good(void);

#define SB_BLOCKS 2
extern const FormatBlock sb_blocks[SB_BLOCKS];
