/* The migration stream's wire format (docs/PROTOCOL.md): headers, records, payloads. */
#include "stream_format.h"

#include "internal.h"
#include "xxh.h"

#include <inttypes.h>
#include <stdarg.h>
#include <vmsnap/fields.h>
#include <xxhash.h>

/* Stream and channel headers (PROTOCOL.md 1.1, 1.2). */
enum {
    SH_MAGIC = 0,
    SH_VERSION = 8,
    SH_FLAGS = 12,
    SH_CHANNELS = 16,
    SH_PAGE_SIZE = 20,
    SH_VM_UUID = 24,
    SH_SESSION = 40,
    SH_WRITER_VERSION = 56,
    SH_CHECKSUM = 60,
    CH_MAGIC = 0,
    CH_VERSION = 8,
    CH_INDEX = 12,
    CH_SESSION = 16,
    CH_RESERVED = 32,
    CH_RESERVED_SIZE = 28,
    CH_CHECKSUM = 60,
};
_Static_assert(SH_CHECKSUM + 4 == STREAM_HEADER_SIZE, "stream header size");
_Static_assert(SH_SESSION + 16 == SH_WRITER_VERSION, "session is 16 bytes");
_Static_assert(CH_RESERVED + CH_RESERVED_SIZE == CH_CHECKSUM, "channel header reserved bytes");

/* Record header (PROTOCOL.md 2). */
enum {
    RH_TYPE = 0,
    RH_SEQ = 4,
    RH_LENGTH = 8,
    RH_RESERVED = 12,
    RH_CHECKSUM = 16,
};
_Static_assert(RH_CHECKSUM + 8 == STREAM_RECORD_HEADER, "record header size");

/* Payloads (PROTOCOL.md 3). */
enum {
    PG_BLOCK = 0,
    PG_NPAGES = 4,
    PG_FIRST = 8,
    PG_BITMAPS = 16,
    SY_PASS = 0,
    SY_FLAGS = 4,
    SY_DIRTY = 8,
    SY_SIZE = 16,
    EN_FLAGS = 0,
    EN_RESERVED = 4,
    EN_RECORDS = 8,
    EN_CHAIN = 16,
    EN_SIZE = 24,
    DV_INSTANCE = 0,
    DV_VERSION = 4,
    DV_NAME = 8,
    DV_NAME_SIZE = 24,
    CF_VERSION = 0,
    CF_RESERVED = 4,
};
_Static_assert(DV_NAME + DV_NAME_SIZE == STREAM_DEVICE_PREFIX, "device prefix size");
_Static_assert(DV_NAME_SIZE == FORMAT_SECTION_NAME_MAX + 1, "device name field");
_Static_assert(CF_RESERVED + 4 == STREAM_CONFIG_PREFIX, "config prefix size");

#define STREAM_FLAGS_KNOWN (STREAM_FLAG_VALIDATE_UUID | STREAM_FLAG_LIVE)

const char *stream_record_name(uint32_t type)
{
    switch ((StreamRecordType)type) {
    case STREAM_REC_CONFIG:
        return "CONFIG";
    case STREAM_REC_RAM_BLOCKS:
        return "RAM_BLOCKS";
    case STREAM_REC_PAGES:
        return "PAGES";
    case STREAM_REC_SYNC:
        return "SYNC";
    case STREAM_REC_DEVICE:
        return "DEVICE";
    case STREAM_REC_END:
        return "END";
    }
    return "unknown";
}

bool stream_record_error(GError **error, int code, const char *what, uint32_t channel, uint32_t seq,
                         uint32_t type, uint64_t offset, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    g_autofree char *msg = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    const char *name = stream_record_name(type);
    g_autofree char *tn =
        strcmp(name, "unknown") == 0 ? g_strdup_printf("unknown type %u", type) : g_strdup(name);
    g_set_error(error, FORMAT_ERROR, code,
                "%s: channel %u, record %u (%s) at offset %" PRIu64 ": %s", what, channel, seq, tn,
                offset, msg);
    return false;
}

static bool G_GNUC_PRINTF(5, 6)
    header_error(GError **error, int code, const char *what, const char *kind, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    g_autofree char *msg = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    g_set_error(error, FORMAT_ERROR, code, "%s: %s: %s", what, kind, msg);
    return false;
}

static uint32_t header_checksum(const uint8_t *in)
{
    return (uint32_t)XXH3_64bits(in, SH_CHECKSUM);
}

/* ---- stream header ---- */

void stream_header_encode(const StreamHeader *h, uint8_t out[STREAM_HEADER_SIZE])
{
    memset(out, 0, STREAM_HEADER_SIZE);
    memcpy(out + SH_MAGIC, STREAM_MAGIC, 8);
    le32_store(out + SH_VERSION, h->version);
    le32_store(out + SH_FLAGS, h->flags);
    le32_store(out + SH_CHANNELS, h->channels);
    le32_store(out + SH_PAGE_SIZE, h->page_size);
    memcpy(out + SH_VM_UUID, h->vm_uuid, 16);
    memcpy(out + SH_SESSION, h->session, 16);
    le32_store(out + SH_WRITER_VERSION, h->writer_version);
    le32_store(out + SH_CHECKSUM, header_checksum(out));
}

bool stream_header_decode(const uint8_t in[STREAM_HEADER_SIZE], const char *what, StreamHeader *h,
                          GError **error)
{
    const char *k = "stream header";
    memset(h, 0, sizeof(*h));
    if (memcmp(in + SH_MAGIC, STREAM_MAGIC, 8) != 0) {
        if (memcmp(in + SH_MAGIC, STREAM_CHANNEL_MAGIC, 8) == 0) {
            return header_error(error, FORMAT_ERROR_NOT_SNAPSHOT, what, k,
                                "this is an extra channel (channel header), not a main channel");
        }
        return header_error(error, FORMAT_ERROR_NOT_SNAPSHOT, what, k,
                            "not a vmsnap stream (bad magic at offset 0)");
    }
    uint32_t sum = le32_load(in + SH_CHECKSUM);
    if (sum != header_checksum(in)) {
        return header_error(error, FORMAT_ERROR_CORRUPT, what, k,
                            "checksum at offset %u is 0x%08x, the header's bytes give 0x%08x",
                            SH_CHECKSUM, sum, header_checksum(in));
    }
    h->version = le32_load(in + SH_VERSION);
    h->flags = le32_load(in + SH_FLAGS);
    h->channels = le32_load(in + SH_CHANNELS);
    h->page_size = le32_load(in + SH_PAGE_SIZE);
    memcpy(h->vm_uuid, in + SH_VM_UUID, 16);
    memcpy(h->session, in + SH_SESSION, 16);
    h->writer_version = le32_load(in + SH_WRITER_VERSION);
    if (h->version != STREAM_VERSION) {
        return header_error(
            error, h->version > STREAM_VERSION ? FORMAT_ERROR_UNSUPPORTED : FORMAT_ERROR_CORRUPT,
            what, k, "version %u at offset %u, this vmsnap reads version %u", h->version,
            SH_VERSION, STREAM_VERSION);
    }
    if (h->flags & ~STREAM_FLAGS_KNOWN) {
        return header_error(error, FORMAT_ERROR_UNSUPPORTED, what, k,
                            "unknown flags 0x%x at offset %u", h->flags & ~STREAM_FLAGS_KNOWN,
                            SH_FLAGS);
    }
    if (h->channels < 1 || h->channels > STREAM_MAX_CHANNELS) {
        return header_error(error, FORMAT_ERROR_CORRUPT, what, k,
                            "channels at offset %u is %u, expected 1 to %u", SH_CHANNELS,
                            h->channels, STREAM_MAX_CHANNELS);
    }
    if (h->page_size != FORMAT_PAGE_SIZE) {
        return header_error(error, FORMAT_ERROR_UNSUPPORTED, what, k,
                            "page_size at offset %u is %u, expected %u", SH_PAGE_SIZE, h->page_size,
                            FORMAT_PAGE_SIZE);
    }
    return true;
}

/* ---- channel header ---- */

void stream_channel_header_encode(uint32_t index, const uint8_t session[16],
                                  uint8_t out[STREAM_HEADER_SIZE])
{
    memset(out, 0, STREAM_HEADER_SIZE);
    memcpy(out + CH_MAGIC, STREAM_CHANNEL_MAGIC, 8);
    le32_store(out + CH_VERSION, STREAM_VERSION);
    le32_store(out + CH_INDEX, index);
    memcpy(out + CH_SESSION, session, 16);
    le32_store(out + CH_CHECKSUM, header_checksum(out));
}

bool stream_channel_header_decode(const uint8_t in[STREAM_HEADER_SIZE], const char *what,
                                  uint32_t *index, uint8_t session[16], GError **error)
{
    const char *k = "channel header";
    *index = 0;
    memset(session, 0, 16);
    if (memcmp(in + CH_MAGIC, STREAM_CHANNEL_MAGIC, 8) != 0) {
        if (memcmp(in + CH_MAGIC, STREAM_MAGIC, 8) == 0) {
            return header_error(error, FORMAT_ERROR_NOT_SNAPSHOT, what, k,
                                "this is a main channel (stream header), not an extra channel");
        }
        return header_error(error, FORMAT_ERROR_NOT_SNAPSHOT, what, k,
                            "not a vmsnap stream channel (bad magic at offset 0)");
    }
    uint32_t sum = le32_load(in + CH_CHECKSUM);
    if (sum != header_checksum(in)) {
        return header_error(error, FORMAT_ERROR_CORRUPT, what, k,
                            "checksum at offset %u is 0x%08x, the header's bytes give 0x%08x",
                            CH_CHECKSUM, sum, header_checksum(in));
    }
    uint32_t version = le32_load(in + CH_VERSION);
    if (version != STREAM_VERSION) {
        return header_error(
            error, version > STREAM_VERSION ? FORMAT_ERROR_UNSUPPORTED : FORMAT_ERROR_CORRUPT, what,
            k, "version %u at offset %u, this vmsnap reads version %u", version, CH_VERSION,
            STREAM_VERSION);
    }
    uint32_t idx = le32_load(in + CH_INDEX);
    if (idx < 1 || idx >= STREAM_MAX_CHANNELS) {
        return header_error(error, FORMAT_ERROR_CORRUPT, what, k,
                            "index at offset %u is %u, expected 1 to %u", CH_INDEX, idx,
                            STREAM_MAX_CHANNELS - 1);
    }
    for (unsigned i = 0; i < CH_RESERVED_SIZE; i++) {
        if (in[CH_RESERVED + i] != 0) {
            return header_error(error, FORMAT_ERROR_CORRUPT, what, k,
                                "reserved byte at offset %u is not zero", CH_RESERVED + i);
        }
    }
    *index = idx;
    memcpy(session, in + CH_SESSION, 16);
    return true;
}

/* ---- record header and checksum ---- */

uint64_t stream_record_seed(uint32_t type, uint32_t seq)
{
    return (uint64_t)type << 32 | seq;
}

void stream_record_header_store(uint32_t type, uint32_t seq, uint32_t length, uint64_t checksum,
                                uint8_t out[STREAM_RECORD_HEADER])
{
    g_assert(length <= STREAM_MAX_PAYLOAD);
    le32_store(out + RH_TYPE, type);
    le32_store(out + RH_SEQ, seq);
    le32_store(out + RH_LENGTH, length);
    le32_store(out + RH_RESERVED, 0);
    le64_store(out + RH_CHECKSUM, checksum);
}

void stream_record_header_make(uint32_t type, uint32_t seq, const struct iovec *payload, int iovcnt,
                               uint8_t out[STREAM_RECORD_HEADER])
{
    size_t len = 0;
    uint64_t sum;
    if (iovcnt == 1) {
        len = payload[0].iov_len;
        sum = vs_xxh3_seed(payload[0].iov_base, len, stream_record_seed(type, seq));
    } else {
        VsXxh3 *st = vs_xxh3_new();
        vs_xxh3_reset_seed(st, stream_record_seed(type, seq));
        for (int i = 0; i < iovcnt; i++) {
            vs_xxh3_update(st, payload[i].iov_base, payload[i].iov_len);
            len += payload[i].iov_len;
        }
        sum = vs_xxh3_digest(st);
        vs_xxh3_free(st);
    }
    g_assert(len <= STREAM_MAX_PAYLOAD);
    stream_record_header_store(type, seq, (uint32_t)len, sum, out);
}

bool stream_record_header_decode(const uint8_t in[STREAM_RECORD_HEADER], const char *what,
                                 uint32_t channel, uint64_t offset, StreamRecordHeader *h,
                                 GError **error)
{
    h->type = le32_load(in + RH_TYPE);
    h->seq = le32_load(in + RH_SEQ);
    h->length = le32_load(in + RH_LENGTH);
    h->checksum = le64_load(in + RH_CHECKSUM);
    uint32_t reserved = le32_load(in + RH_RESERVED);
    if (strcmp(stream_record_name(h->type), "unknown") == 0) {
        return stream_record_error(error, FORMAT_ERROR_CORRUPT, what, channel, h->seq, h->type,
                                   offset, "unknown record type %u", h->type);
    }
    if (reserved != 0) {
        return stream_record_error(error, FORMAT_ERROR_CORRUPT, what, channel, h->seq, h->type,
                                   offset, "reserved field is 0x%x, must be 0", reserved);
    }
    if (h->length > STREAM_MAX_PAYLOAD) {
        return stream_record_error(error, FORMAT_ERROR_CORRUPT, what, channel, h->seq, h->type,
                                   offset, "length %u is over the limit of %u bytes", h->length,
                                   STREAM_MAX_PAYLOAD);
    }
    return true;
}

bool stream_record_check(const StreamRecordHeader *h, const void *payload, const char *what,
                         uint32_t channel, uint64_t offset, GError **error)
{
    uint64_t sum = vs_xxh3_seed(payload, h->length, stream_record_seed(h->type, h->seq));
    if (sum != h->checksum) {
        return stream_record_error(error, FORMAT_ERROR_CORRUPT, what, channel, h->seq, h->type,
                                   offset,
                                   "bad checksum: the header says 0x%016" PRIx64
                                   ", the %u payload bytes give 0x%016" PRIx64,
                                   h->checksum, h->length, sum);
    }
    return true;
}

/* ---- END chain ---- */

struct StreamChain {
    XXH3_state_t *state;
    uint64_t records;
};

StreamChain *stream_chain_new(void)
{
    StreamChain *c = g_new0(StreamChain, 1);
    c->state = XXH3_createState();
    g_assert(c->state != NULL);
    XXH3_64bits_reset(c->state);
    return c;
}

void stream_chain_add(StreamChain *c, uint64_t record_checksum)
{
    uint8_t le[8];
    le64_store(le, record_checksum);
    XXH3_64bits_update(c->state, le, sizeof(le));
    c->records++;
}

uint64_t stream_chain_records(const StreamChain *c)
{
    return c->records;
}

uint64_t stream_chain_digest(const StreamChain *c)
{
    return XXH3_64bits_digest(c->state);
}

void stream_chain_free(StreamChain *c)
{
    if (c == NULL) {
        return;
    }
    XXH3_freeState(c->state);
    g_free(c);
}

/* ---- payloads ---- */

static bool G_GNUC_PRINTF(2, 3) payload_error(GError **error, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    g_autofree char *msg = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    g_set_error_literal(error, FORMAT_ERROR, FORMAT_ERROR_CORRUPT, msg);
    return false;
}

/* The fields after a prefix; the error names the payload offset. */
static bool fields_ok(const uint8_t *p, size_t len, size_t prefix, GError **error)
{
    GError *local = NULL;
    if (!vmsnap_fields_check(p + prefix, len - prefix, &local)) {
        payload_error(error, "fields after the %zu-byte prefix: %s", prefix, local->message);
        g_error_free(local);
        return false;
    }
    return true;
}

void stream_config_prefix_encode(uint32_t config_version, uint8_t out[STREAM_CONFIG_PREFIX])
{
    le32_store(out + CF_VERSION, config_version);
    le32_store(out + CF_RESERVED, 0);
}

bool stream_config_decode(const void *payload, size_t len, uint32_t *config_version, GError **error)
{
    const uint8_t *p = payload;
    *config_version = 0;
    if (len < STREAM_CONFIG_PREFIX) {
        return payload_error(error, "payload of %zu bytes is shorter than the %u-byte prefix", len,
                             STREAM_CONFIG_PREFIX);
    }
    uint32_t version = le32_load(p + CF_VERSION);
    if (version == 0) {
        return payload_error(error, "config_version is 0");
    }
    if (le32_load(p + CF_RESERVED) != 0) {
        return payload_error(error, "reserved field at payload offset %u is not zero", CF_RESERVED);
    }
    if (!fields_ok(p, len, STREAM_CONFIG_PREFIX, error)) {
        return false;
    }
    *config_version = version;
    return true;
}

bool stream_ram_blocks_decode(const void *payload, size_t len, FormatBlock **blocks,
                              unsigned *n_blocks, GError **error)
{
    /* Offsets in the table's errors are payload offsets (table_offset 0). */
    if (!format_ram_blocks_decode(payload, len, 0, blocks, n_blocks, error)) {
        return false;
    }
    for (unsigned i = 0; i < *n_blocks; i++) {
        if ((*blocks)[i].pages_offset != 0) {
            payload_error(error, "RAM block %u '%s': pages_offset is %" PRIu64 ", must be 0", i,
                          (*blocks)[i].name, (*blocks)[i].pages_offset);
            g_clear_pointer(blocks, g_free);
            *n_blocks = 0;
            return false;
        }
    }
    return true;
}

size_t stream_pages_prefix(uint32_t npages)
{
    return PG_BITMAPS + 16 * (size_t)format_bitmap_words(npages);
}

void stream_pages_prefix_encode(uint32_t block, uint32_t npages, uint64_t first_page,
                                const uint64_t *sent, const uint64_t *zero, uint8_t *out)
{
    size_t words = format_bitmap_words(npages);
    le32_store(out + PG_BLOCK, block);
    le32_store(out + PG_NPAGES, npages);
    le64_store(out + PG_FIRST, first_page);
    for (size_t i = 0; i < words; i++) {
        le64_store(out + PG_BITMAPS + 8 * i, sent[i]);
        le64_store(out + PG_BITMAPS + 8 * (words + i), zero[i]);
    }
}

bool stream_pages_decode(const void *payload, size_t len, const FormatBlock *blocks,
                         unsigned n_blocks, StreamPages *out, GError **error)
{
    const uint8_t *p = payload;
    memset(out, 0, sizeof(*out));
    if (len < PG_BITMAPS) {
        return payload_error(error, "payload of %zu bytes is shorter than the %u-byte head", len,
                             PG_BITMAPS);
    }
    uint32_t block = le32_load(p + PG_BLOCK);
    uint32_t npages = le32_load(p + PG_NPAGES);
    uint64_t first = le64_load(p + PG_FIRST);
    if (block >= n_blocks) {
        return payload_error(error, "block %u is outside the RAM_BLOCKS table (%u blocks)", block,
                             n_blocks);
    }
    const FormatBlock *b = &blocks[block];
    if (npages < 1 || npages > STREAM_MAX_BATCH) {
        return payload_error(error, "npages is %u, expected 1 to %u", npages, STREAM_MAX_BATCH);
    }
    uint64_t pages = format_block_pages(b);
    if (first > pages || npages > pages - first) {
        return payload_error(error,
                             "pages [%" PRIu64 ", %" PRIu64 ") are outside block %u '%s' "
                             "(%" PRIu64 " pages)",
                             first, first + npages, block, b->name, pages);
    }
    size_t words = format_bitmap_words(npages);
    size_t prefix = stream_pages_prefix(npages);
    if (len < prefix) {
        return payload_error(error,
                             "payload of %zu bytes is shorter than the %zu-byte prefix "
                             "for %u pages",
                             len, prefix, npages);
    }
    const uint8_t *sent = p + PG_BITMAPS;
    const uint8_t *zero = sent + 8 * words;
    uint64_t ndata = 0;
    for (size_t i = 0; i < words; i++) {
        uint64_t s = le64_load(sent + 8 * i), z = le64_load(zero + 8 * i);
        uint64_t valid =
            i + 1 < words || npages % 64 == 0 ? UINT64_MAX : (1ull << (npages % 64)) - 1;
        if ((s | z) & ~valid) {
            return payload_error(error, "%s bitmap has bits set past npages %u",
                                 s & ~valid ? "sent" : "zero", npages);
        }
        if (z & ~s) {
            return payload_error(error, "page %" PRIu64 " is in the zero bitmap but not sent",
                                 first + 64 * i + (uint64_t)__builtin_ctzll(z & ~s));
        }
        ndata += (uint64_t)__builtin_popcountll(s & ~z);
    }
    uint64_t expect = prefix + ndata * b->page_size;
    if (len != expect) {
        return payload_error(error, "payload is %zu bytes, %" PRIu64 " data pages need %" PRIu64,
                             len, ndata, expect);
    }
    out->block = block;
    out->npages = npages;
    out->first_page = first;
    out->sent = sent;
    out->zero = zero;
    out->data = p + prefix;
    out->ndata = (uint32_t)ndata;
    return true;
}

void stream_sync_encode(const StreamSync *s, uint8_t out[16])
{
    le32_store(out + SY_PASS, s->pass);
    le32_store(out + SY_FLAGS, s->flags);
    le64_store(out + SY_DIRTY, s->dirty_pages);
}

bool stream_sync_decode(const void *payload, size_t len, StreamSync *s, GError **error)
{
    const uint8_t *p = payload;
    memset(s, 0, sizeof(*s));
    if (len != SY_SIZE) {
        return payload_error(error, "payload is %zu bytes, expected %u", len, SY_SIZE);
    }
    uint32_t pass = le32_load(p + SY_PASS), flags = le32_load(p + SY_FLAGS);
    if (pass == 0) {
        return payload_error(error, "pass is 0 (passes count from 1)");
    }
    if (flags & ~STREAM_SYNC_FINAL) {
        return payload_error(error, "unknown flags 0x%x", flags & ~STREAM_SYNC_FINAL);
    }
    s->pass = pass;
    s->flags = flags;
    s->dirty_pages = le64_load(p + SY_DIRTY);
    return true;
}

void stream_end_encode(const StreamEnd *e, uint8_t out[24])
{
    le32_store(out + EN_FLAGS, e->flags);
    le32_store(out + EN_RESERVED, 0);
    le64_store(out + EN_RECORDS, e->records);
    le64_store(out + EN_CHAIN, e->chain);
}

bool stream_end_decode(const void *payload, size_t len, StreamEnd *e, GError **error)
{
    const uint8_t *p = payload;
    memset(e, 0, sizeof(*e));
    if (len != EN_SIZE) {
        return payload_error(error, "payload is %zu bytes, expected %u", len, EN_SIZE);
    }
    uint32_t flags = le32_load(p + EN_FLAGS);
    if (flags & ~STREAM_END_SOURCE_RUNNING) {
        return payload_error(error, "unknown flags 0x%x", flags & ~STREAM_END_SOURCE_RUNNING);
    }
    if (le32_load(p + EN_RESERVED) != 0) {
        return payload_error(error, "reserved field at payload offset %u is not zero", EN_RESERVED);
    }
    e->flags = flags;
    e->records = le64_load(p + EN_RECORDS);
    e->chain = le64_load(p + EN_CHAIN);
    return true;
}

void stream_device_prefix_encode(uint32_t instance, uint32_t version, const char *name,
                                 uint8_t out[STREAM_DEVICE_PREFIX])
{
    le32_store(out + DV_INSTANCE, instance);
    le32_store(out + DV_VERSION, version);
    format_name_encode(out + DV_NAME, DV_NAME_SIZE, name);
}

bool stream_device_prefix_decode(const void *payload, size_t len, uint32_t *instance,
                                 uint32_t *version, char name[FORMAT_SECTION_NAME_MAX + 1],
                                 GError **error)
{
    const uint8_t *p = payload;
    *instance = *version = 0;
    name[0] = '\0';
    if (len < STREAM_DEVICE_PREFIX) {
        return payload_error(error, "payload of %zu bytes is shorter than the %u-byte prefix", len,
                             STREAM_DEVICE_PREFIX);
    }
    const char *why = NULL;
    if (!format_name_decode(p + DV_NAME, DV_NAME_SIZE, name, false, &why)) {
        name[0] = '\0';
        return payload_error(error, "device name at payload offset %u: %s", DV_NAME, why);
    }
    uint32_t v = le32_load(p + DV_VERSION);
    if (v == 0) {
        return payload_error(error, "device '%s': version is 0", name);
    }
    if (!fields_ok(p, len, STREAM_DEVICE_PREFIX, error)) {
        g_prefix_error(error, "device '%s' instance %u: ", name, le32_load(p + DV_INSTANCE));
        return false;
    }
    *instance = le32_load(p + DV_INSTANCE);
    *version = v;
    return true;
}
