/*
 * The migration stream's wire format (docs/PROTOCOL.md): headers, record headers
 * and the PAGES payload. Pure encoding/decoding with every bound checked; no I/O.
 */
#pragma once

#include "format.h"

#include <sys/uio.h>

#define STREAM_MAGIC            "\x89VMSTRM\n"
#define STREAM_CHANNEL_MAGIC    "\x89VMSCHN\n"
#define STREAM_VERSION          1u
#define STREAM_HEADER_SIZE      64u
#define STREAM_RECORD_HEADER    24u
#define STREAM_MAX_PAYLOAD      ((16u << 20) + 4096u)
#define STREAM_MAX_CHANNELS     64u
#define STREAM_MAX_BATCH        1024u        /* pages per PAGES record */
#define STREAM_MAX_DEVICES      1024u        /* DEVICE records in a stream */
#define STREAM_MAX_DEVICE_BYTES (256u << 20) /* their payloads, all together */

#define STREAM_FLAG_VALIDATE_UUID (1u << 0)
#define STREAM_FLAG_LIVE          (1u << 1)
#define STREAM_SYNC_FINAL         (1u << 0)
#define STREAM_END_SOURCE_RUNNING (1u << 0)

/* On-wire record types. When adding one, also update stream_record_name() and
 * docs/PROTOCOL.md section 3. */
typedef enum {
    STREAM_REC_CONFIG = 1,
    STREAM_REC_RAM_BLOCKS = 2,
    STREAM_REC_PAGES = 3,
    STREAM_REC_SYNC = 4,
    STREAM_REC_DEVICE = 5,
    STREAM_REC_END = 6,
} StreamRecordType;

/* "CONFIG", "PAGES", ...; "unknown" for other values. */
const char *stream_record_name(uint32_t type);

/* Sets a FORMAT_ERROR `code` naming the record:
 * "<what>: channel C, record SEQ (TYPE) at offset O: <message>"; returns false. */
bool stream_record_error(GError **error, int code, const char *what, uint32_t channel, uint32_t seq,
                         uint32_t type, uint64_t offset, const char *fmt, ...) G_GNUC_PRINTF(8, 9);

typedef struct StreamHeader {
    uint32_t version;
    uint32_t flags;
    uint32_t channels;
    uint32_t page_size;
    uint8_t vm_uuid[16];
    uint8_t session[16];
    uint32_t writer_version;
} StreamHeader;

void stream_header_encode(const StreamHeader *h, uint8_t out[STREAM_HEADER_SIZE]);
/* Checks magic, checksum, version, flags, channels, page_size. `what` names the stream. */
bool stream_header_decode(const uint8_t in[STREAM_HEADER_SIZE], const char *what, StreamHeader *h,
                          GError **error);

void stream_channel_header_encode(uint32_t index, const uint8_t session[16],
                                  uint8_t out[STREAM_HEADER_SIZE]);
bool stream_channel_header_decode(const uint8_t in[STREAM_HEADER_SIZE], const char *what,
                                  uint32_t *index, uint8_t session[16], GError **error);

typedef struct StreamRecordHeader {
    uint32_t type;
    uint32_t seq;
    uint32_t length;
    uint64_t checksum;
} StreamRecordHeader;

/* Fills the header of a record whose payload is given as iovecs (the checksum is
 * computed over them, seeded with type and seq). */
void stream_record_header_make(uint32_t type, uint32_t seq, const struct iovec *payload, int iovcnt,
                               uint8_t out[STREAM_RECORD_HEADER]);
/* The checksum seed of record (type, seq), and the header of a record whose payload
 * checksum the caller computed itself (XXH3-64 with that seed, e.g. while copying). */
uint64_t stream_record_seed(uint32_t type, uint32_t seq);
void stream_record_header_store(uint32_t type, uint32_t seq, uint32_t length, uint64_t checksum,
                                uint8_t out[STREAM_RECORD_HEADER]);
/* Decodes and bounds the header (type known, reserved 0, length <= max). */
bool stream_record_header_decode(const uint8_t in[STREAM_RECORD_HEADER], const char *what,
                                 uint32_t channel, uint64_t offset, StreamRecordHeader *h,
                                 GError **error);
/* Verifies the payload checksum. */
bool stream_record_check(const StreamRecordHeader *h, const void *payload, const char *what,
                         uint32_t channel, uint64_t offset, GError **error);

/* The END chain: XXH3-64 over the checksums of a channel's records, each as a
 * little-endian u64, in order. */
typedef struct StreamChain StreamChain;
StreamChain *stream_chain_new(void);
void stream_chain_add(StreamChain *c, uint64_t record_checksum);
uint64_t stream_chain_records(const StreamChain *c);
uint64_t stream_chain_digest(const StreamChain *c);
void stream_chain_free(StreamChain *c);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(StreamChain, stream_chain_free)

/* The payload decoders below return FORMAT_ERROR_CORRUPT errors that describe the
 * payload only; the caller prefixes them with the record (stream_record_error). */

/* CONFIG payload prefix: u32 config_version, u32 reserved. */
#define STREAM_CONFIG_PREFIX 8u
void stream_config_prefix_encode(uint32_t config_version, uint8_t out[STREAM_CONFIG_PREFIX]);
/* Checks the prefix and that the fields after it are well formed. */
bool stream_config_decode(const void *payload, size_t len, uint32_t *config_version,
                          GError **error);

/* RAM_BLOCKS payload: the FORMAT.md 4.1 table (all its rules) with every
 * pages_offset 0. *blocks is g_malloc'ed. */
bool stream_ram_blocks_decode(const void *payload, size_t len, FormatBlock **blocks,
                              unsigned *n_blocks, GError **error);

/* PAGES payload: a view into a received payload, validated against the block table. */
typedef struct StreamPages {
    uint32_t block;
    uint32_t npages;
    uint64_t first_page;
    const uint8_t *sent; /* W little-endian u64 words */
    const uint8_t *zero;
    const uint8_t *data; /* ndata pages */
    uint32_t ndata;
} StreamPages;

/* Size of the fixed part (before data) for npages. */
size_t stream_pages_prefix(uint32_t npages);
/* Encodes the fixed part; sent/zero are W host-order words. */
void stream_pages_prefix_encode(uint32_t block, uint32_t npages, uint64_t first_page,
                                const uint64_t *sent, const uint64_t *zero, uint8_t *out);
/* Checks every rule of PROTOCOL.md 3.1 against the stream's block table. */
bool stream_pages_decode(const void *payload, size_t len, const FormatBlock *blocks,
                         unsigned n_blocks, StreamPages *out, GError **error);
static inline bool stream_bit(const uint8_t *words, uint32_t i)
{
    return (words[i / 8] >> (i % 8)) & 1; /* LE words == LE byte order of bits */
}

typedef struct StreamSync {
    uint32_t pass;
    uint32_t flags;
    uint64_t dirty_pages;
} StreamSync;
void stream_sync_encode(const StreamSync *s, uint8_t out[16]);
bool stream_sync_decode(const void *payload, size_t len, StreamSync *s, GError **error);

typedef struct StreamEnd {
    uint32_t flags;
    uint64_t records;
    uint64_t chain;
} StreamEnd;
void stream_end_encode(const StreamEnd *e, uint8_t out[24]);
bool stream_end_decode(const void *payload, size_t len, StreamEnd *e, GError **error);

/* DEVICE payload prefix: instance, version, name[24]. The decoder checks the name
 * (1 to 23 characters of [A-Za-z0-9_.-], NUL-padded) and that the fields after the
 * prefix are well formed. */
#define STREAM_DEVICE_PREFIX 32u
void stream_device_prefix_encode(uint32_t instance, uint32_t version, const char *name,
                                 uint8_t out[STREAM_DEVICE_PREFIX]);
bool stream_device_prefix_decode(const void *payload, size_t len, uint32_t *instance,
                                 uint32_t *version, char name[FORMAT_SECTION_NAME_MAX + 1],
                                 GError **error);
