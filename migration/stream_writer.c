/* Writing one channel of a migration stream (docs/PROTOCOL.md). */
#include "stream_writer.h"

#include "scan.h"
#include "xxh.h"

#include <string.h>

/* Pages per PAGES record in a live pass (a divisor of 64): the copy buffer, 128 KiB,
 * stays in L2 until the checksum and the socket write have read it. Measured with a
 * 1 GiB guest dirtying at full speed (bench/migration.py): with 1024-page records
 * the copies ran at ~1.4 GB/s instead of ~12 and the migration did not converge;
 * 32 pages: 2.4-2.9 s; 64: 9-41 s; 8 and 16 were not better than 32. */
#define STREAM_COPY_PAGES 32u

struct StreamWriter {
    VStream *s;
    uint32_t channel;
    uint32_t page_size;
    uint32_t seq;
    StreamChain *chain;
    VsXxh3 *hash; /* stream_writer_chunk(): checksum while copying */
    uint64_t bytes;
    uint64_t data_pages, zero_pages;
    bool zero_copy;
    /* The pending PAGES record: pages [first, first + npages) of block. */
    bool pending;
    uint32_t block;
    uint64_t first;
    uint32_t npages;
    uint64_t sent[STREAM_MAX_BATCH / 64];
    uint64_t zero[STREAM_MAX_BATCH / 64];
    uint32_t ndata;
    uint8_t *copy;                      /* copy mode: ndata pages, in order */
    uint8_t *chunk_copy;                /* stream_writer_chunk(): STREAM_COPY_PAGES */
    const void *refs[STREAM_MAX_BATCH]; /* zero-copy mode */
    struct iovec iov[STREAM_MAX_BATCH + 2];
};

StreamWriter *stream_writer_new(VStream *s, uint32_t channel, uint32_t page_size)
{
    StreamWriter *w = g_new0(StreamWriter, 1);
    w->s = s;
    w->channel = channel;
    w->page_size = page_size ? page_size : FORMAT_PAGE_SIZE;
    w->chain = stream_chain_new();
    w->hash = vs_xxh3_new();
    return w;
}

void stream_writer_free(StreamWriter *w)
{
    if (!w)
        return;
    stream_chain_free(w->chain);
    vs_xxh3_free(w->hash);
    g_free(w->copy);
    g_free(w->chunk_copy);
    g_free(w);
}

void stream_writer_set_zero_copy(StreamWriter *w, bool zero_copy)
{
    w->zero_copy = zero_copy;
}

uint64_t stream_writer_bytes(const StreamWriter *w)
{
    return w->bytes;
}

uint64_t stream_writer_records(const StreamWriter *w)
{
    return w->seq;
}

uint64_t stream_writer_data_pages(const StreamWriter *w)
{
    return w->data_pages;
}

uint64_t stream_writer_zero_pages(const StreamWriter *w)
{
    return w->zero_pages;
}

static bool write_iov(StreamWriter *w, struct iovec *iov, int n, GError **error)
{
    if (!vstream_writev_all(w->s, iov, n, error))
        return false;
    for (int i = 0; i < n; i++)
        w->bytes += iov[i].iov_len;
    return true;
}

bool stream_writer_header(StreamWriter *w, const StreamHeader *h, GError **error)
{
    uint8_t buf[STREAM_HEADER_SIZE];
    stream_header_encode(h, buf);
    struct iovec iov = { buf, sizeof(buf) };
    if (!write_iov(w, &iov, 1, error)) {
        g_prefix_error(error, "writing the stream header: ");
        return false;
    }
    return true;
}

bool stream_writer_channel_header(StreamWriter *w, const uint8_t session[16], GError **error)
{
    uint8_t buf[STREAM_HEADER_SIZE];
    stream_channel_header_encode(w->channel, session, buf);
    struct iovec iov = { buf, sizeof(buf) };
    if (!write_iov(w, &iov, 1, error)) {
        g_prefix_error(error, "writing the header of channel %u: ", w->channel);
        return false;
    }
    return true;
}

/* Writes a record whose header hdr carries checksum sum; iov[1..n] is the payload. */
static bool emit_record(StreamWriter *w, uint32_t type, uint8_t *hdr, uint64_t sum,
                        struct iovec *iov, int n, GError **error)
{
    iov[0] = (struct iovec){ hdr, STREAM_RECORD_HEADER };
    if (!write_iov(w, iov, n + 1, error)) {
        g_prefix_error(error, "record %u (%s) on channel %u: ", w->seq, stream_record_name(type),
                       w->channel);
        return false;
    }
    stream_chain_add(w->chain, sum);
    w->seq++;
    return true;
}

/* Writes a record; iov[0] is free for the record header, the payload is iov[1..n]. */
static bool send_record(StreamWriter *w, uint32_t type, struct iovec *iov, int n, GError **error)
{
    size_t len = 0;
    for (int i = 1; i <= n; i++)
        len += iov[i].iov_len;
    if (len > STREAM_MAX_PAYLOAD) {
        g_set_error(error, FORMAT_ERROR, FORMAT_ERROR_INVALID,
                    "%s: record %u (%s) on channel %u: payload of %zu bytes is over the limit "
                    "of %u",
                    w->s->name, w->seq, stream_record_name(type), w->channel, len,
                    STREAM_MAX_PAYLOAD);
        return false;
    }
    uint8_t hdr[STREAM_RECORD_HEADER];
    stream_record_header_make(type, w->seq, iov + 1, n, hdr);
    uint64_t sum;
    memcpy(&sum, hdr + 16, 8);
    return emit_record(w, type, hdr, GUINT64_FROM_LE(sum), iov, n, error);
}

/* Appends a page to the vectors after the prefix (iov[1]); pages adjacent in memory
 * go out as one vector. */
static void iov_add_page(struct iovec *iov, int *n, const void *page, size_t ps)
{
    if (*n > 2 &&
        (const uint8_t *)iov[*n - 1].iov_base + iov[*n - 1].iov_len == (const uint8_t *)page)
        iov[*n - 1].iov_len += ps;
    else
        iov[(*n)++] = (struct iovec){ (void *)page, ps };
}

bool stream_writer_flush_pages(StreamWriter *w, GError **error)
{
    if (!w->pending)
        return true;
    uint8_t prefix[16 + 16 * (STREAM_MAX_BATCH / 64)];
    stream_pages_prefix_encode(w->block, w->npages, w->first, w->sent, w->zero, prefix);
    struct iovec *iov = w->iov;
    int n = 1;
    iov[n++] = (struct iovec){ prefix, stream_pages_prefix(w->npages) };
    size_t ps = w->page_size;
    if (!w->zero_copy && w->ndata) {
        iov[n++] = (struct iovec){ w->copy, (size_t)w->ndata * ps };
    } else {
        for (uint32_t i = 0; i < w->ndata; i++)
            iov_add_page(iov, &n, w->refs[i], ps);
    }
    w->pending = false;
    return send_record(w, STREAM_REC_PAGES, iov, n - 1, error);
}

bool stream_writer_page(StreamWriter *w, uint32_t block, uint64_t page, const void *data,
                        GError **error)
{
    if (w->pending &&
        (block != w->block || page < w->first + w->npages || page - w->first >= STREAM_MAX_BATCH)) {
        if (!stream_writer_flush_pages(w, error))
            return false;
    }
    if (!w->pending) {
        w->pending = true;
        w->block = block;
        w->first = page;
        w->npages = 0;
        w->ndata = 0;
        memset(w->sent, 0, sizeof(w->sent));
        memset(w->zero, 0, sizeof(w->zero));
    }
    uint32_t i = (uint32_t)(page - w->first);
    w->npages = i + 1;
    w->sent[i / 64] |= 1ull << (i % 64);
    size_t ps = w->page_size;
    if (w->zero_copy) {
        if (scan_page_is_zero(data, ps)) {
            w->zero[i / 64] |= 1ull << (i % 64);
            w->zero_pages++;
        } else {
            w->refs[w->ndata++] = data;
            w->data_pages++;
        }
        return true;
    }
    /* Test in place and copy only data pages. A live guest may write the page
     * meanwhile: the dirty log then has it sent again in the next pass, so a zero
     * verdict or a torn copy is never final. */
    if (scan_page_is_zero(data, ps)) {
        w->zero[i / 64] |= 1ull << (i % 64);
        w->zero_pages++;
        return true;
    }
    if (!w->copy)
        w->copy = g_malloc((size_t)STREAM_MAX_BATCH * ps);
    memcpy(w->copy + (size_t)w->ndata * ps, data, ps);
    w->ndata++;
    w->data_pages++;
    return true;
}

/* One PAGES record of pages [first, first + npages): sent/zero are its bitmap words,
 * base points at page `first`. */
static bool chunk_record(StreamWriter *w, uint32_t block, uint64_t first, uint32_t npages,
                         const uint64_t *sent, const uint64_t *zero, const uint8_t *base,
                         GError **error)
{
    size_t ps = w->page_size;
    uint8_t prefix[16 + 16 * (STREAM_MAX_BATCH / 64)];
    size_t plen = stream_pages_prefix(npages);
    stream_pages_prefix_encode(block, npages, first, sent, zero, prefix);
    vs_xxh3_reset_seed(w->hash, stream_record_seed(STREAM_REC_PAGES, w->seq));
    vs_xxh3_update(w->hash, prefix, plen);

    struct iovec *iov = w->iov;
    int n = 1;
    iov[n++] = (struct iovec){ prefix, plen };
    uint32_t ndata = 0, nzero = 0;
    for (uint32_t i = 0; i < npages; i++) {
        uint64_t bit = 1ull << (i % 64);
        if (!(sent[i / 64] & bit))
            continue;
        if (zero[i / 64] & bit) {
            nzero++;
            continue;
        }
        const uint8_t *page = base + (size_t)i * ps;
        if (w->zero_copy) {
            /* The VM is paused: hash and send the guest's page itself. */
            vs_xxh3_update(w->hash, page, ps);
            iov_add_page(iov, &n, page, ps);
        } else {
            /* A live page: copy it, then hash the copy while it is in L1. The guest
             * may write the page meanwhile: the dirty log has it sent again, so a torn
             * copy (or the scan's stale zero verdict) is never final. */
            uint8_t *copy = w->chunk_copy + (size_t)ndata * ps;
            memcpy(copy, page, ps);
            vs_xxh3_update(w->hash, copy, ps);
        }
        ndata++;
    }
    if (!w->zero_copy && ndata)
        iov[n++] = (struct iovec){ w->chunk_copy, (size_t)ndata * ps };
    uint64_t sum = vs_xxh3_digest(w->hash);
    uint8_t hdr[STREAM_RECORD_HEADER];
    stream_record_header_store(STREAM_REC_PAGES, w->seq, (uint32_t)(plen + (size_t)ndata * ps), sum,
                               hdr);
    w->data_pages += ndata;
    w->zero_pages += nzero;
    return emit_record(w, STREAM_REC_PAGES, hdr, sum, iov, n - 1, error);
}

static uint32_t bitmap_span(const uint64_t *words, uint32_t nwords)
{
    for (uint32_t i = nwords; i-- > 0;)
        if (words[i])
            return i * 64 + 64 - (uint32_t)__builtin_clzll(words[i]);
    return 0;
}

bool stream_writer_chunk(StreamWriter *w, uint32_t block, uint64_t first, uint32_t count,
                         const uint64_t *sel, const uint64_t *zero, const uint8_t *base,
                         GError **error)
{
    g_assert(count <= STREAM_MAX_BATCH);
    if (!stream_writer_flush_pages(w, error))
        return false;
    size_t ps = w->page_size;
    if (w->zero_copy) {
        uint32_t npages = bitmap_span(sel, (count + 63) / 64);
        return !npages || chunk_record(w, block, first, npages, sel, zero, base, error);
    }
    /* A live pass copies: one record per STREAM_COPY_PAGES pages, so that the copy is
     * still in L2 when it is hashed and handed to the kernel. */
    if (!w->chunk_copy)
        w->chunk_copy = g_malloc((size_t)STREAM_COPY_PAGES * ps);
    const uint64_t mask = (1ull << STREAM_COPY_PAGES) - 1;
    for (uint32_t a = 0; a < count; a += STREAM_COPY_PAGES) {
        uint64_t sent = (sel[a / 64] >> (a % 64)) & mask;
        uint64_t zw = (zero[a / 64] >> (a % 64)) & mask;
        uint32_t npages = bitmap_span(&sent, 1);
        if (npages &&
            !chunk_record(w, block, first + a, npages, &sent, &zw, base + (size_t)a * ps, error))
            return false;
    }
    return true;
}

bool stream_writer_record(StreamWriter *w, uint32_t type, const struct iovec *payload, int n,
                          GError **error)
{
    if (!stream_writer_flush_pages(w, error))
        return false;
    g_autofree struct iovec *iov = g_new(struct iovec, (size_t)n + 1);
    if (n > 0)
        memcpy(iov + 1, payload, sizeof(*iov) * (size_t)n);
    return send_record(w, type, iov, n, error);
}

bool stream_writer_config(StreamWriter *w, uint32_t config_version, GBytes *fields, GError **error)
{
    uint8_t prefix[STREAM_CONFIG_PREFIX];
    stream_config_prefix_encode(config_version, prefix);
    gsize len = 0;
    const void *data = fields ? g_bytes_get_data(fields, &len) : NULL;
    struct iovec iov[2] = { { prefix, sizeof(prefix) }, { (void *)data, len } };
    return stream_writer_record(w, STREAM_REC_CONFIG, iov, 2, error);
}

bool stream_writer_ram_blocks(StreamWriter *w, const FormatBlock *blocks, unsigned n_blocks,
                              GError **error)
{
    g_autofree FormatBlock *copy = g_memdup2(blocks, sizeof(*blocks) * n_blocks);
    for (unsigned i = 0; i < n_blocks; i++)
        copy[i].pages_offset = 0;
    g_autoptr(GBytes) table = format_ram_blocks_encode(copy, n_blocks);
    gsize len;
    const void *data = g_bytes_get_data(table, &len);
    struct iovec iov = { (void *)data, len };
    return stream_writer_record(w, STREAM_REC_RAM_BLOCKS, &iov, 1, error);
}

bool stream_writer_device(StreamWriter *w, const char *name, uint32_t instance, uint32_t version,
                          const void *fields, size_t len, GError **error)
{
    uint8_t prefix[STREAM_DEVICE_PREFIX];
    stream_device_prefix_encode(instance, version, name, prefix);
    struct iovec iov[2] = { { prefix, sizeof(prefix) }, { (void *)fields, len } };
    return stream_writer_record(w, STREAM_REC_DEVICE, iov, 2, error);
}

bool stream_writer_sync(StreamWriter *w, uint32_t pass, uint32_t flags, uint64_t dirty_pages,
                        GError **error)
{
    uint8_t buf[16];
    stream_sync_encode(&(StreamSync){ .pass = pass, .flags = flags, .dirty_pages = dirty_pages },
                       buf);
    struct iovec iov = { buf, sizeof(buf) };
    return stream_writer_record(w, STREAM_REC_SYNC, &iov, 1, error);
}

bool stream_writer_end(StreamWriter *w, uint32_t flags, GError **error)
{
    if (!stream_writer_flush_pages(w, error))
        return false;
    uint8_t buf[24];
    stream_end_encode(&(StreamEnd){ .flags = flags,
                                    .records = stream_chain_records(w->chain),
                                    .chain = stream_chain_digest(w->chain) },
                      buf);
    struct iovec iov = { buf, sizeof(buf) };
    return stream_writer_record(w, STREAM_REC_END, &iov, 1, error) && vstream_flush(w->s, error);
}
