/*
 * Writing one channel of a migration stream (docs/PROTOCOL.md): headers, records
 * with their sequence numbers and checksums, PAGES batching with zero detection,
 * and the END record with the record count and chain checksum. Used by the
 * live-migration sender and by `vmsnap convert`.
 *
 * One writer per channel; a writer is used by one thread at a time. Every function
 * returning bool fails with an error naming the stream and the record; after a
 * failure the writer must not be used further (the stream is in an unknown state).
 */
#pragma once

#include "stream.h"
#include "stream_format.h"

typedef struct StreamWriter StreamWriter;

/* A writer over `s` (not owned) for channel `channel` (0 = main) of a stream whose
 * pages are page_size bytes (STREAM header page_size; FORMAT_PAGE_SIZE in v1). */
StreamWriter *stream_writer_new(VStream *s, uint32_t channel, uint32_t page_size);
void stream_writer_free(StreamWriter *w);

/* The first bytes of a channel: the stream header (main channel) or a channel
 * header (extra channels, index = the writer's channel). */
bool stream_writer_header(StreamWriter *w, const StreamHeader *h, GError **error);
bool stream_writer_channel_header(StreamWriter *w, const uint8_t session[16], GError **error);

/* Writes one record whose payload is the concatenation of `payload` (n vectors,
 * at most STREAM_MAX_PAYLOAD bytes in all; n may be 0). Pending pages are sent
 * first. The iovecs are not modified. */
bool stream_writer_record(StreamWriter *w, uint32_t type, const struct iovec *payload, int n,
                          GError **error);

/* Typed records. */
bool stream_writer_config(StreamWriter *w, uint32_t config_version, GBytes *fields, GError **error);
/* pages_offset of the blocks is ignored (sent as 0). */
bool stream_writer_ram_blocks(StreamWriter *w, const FormatBlock *blocks, unsigned n_blocks,
                              GError **error);
bool stream_writer_device(StreamWriter *w, const char *name, uint32_t instance, uint32_t version,
                          const void *fields, size_t len, GError **error);
bool stream_writer_sync(StreamWriter *w, uint32_t pass, uint32_t flags, uint64_t dirty_pages,
                        GError **error);
/* The last record: sends pending pages, then END with the record count and chain,
 * then flushes the stream. */
bool stream_writer_end(StreamWriter *w, uint32_t flags, GError **error);

/*
 * Adds page `page` of stream block `block` (page_size bytes at `data`) to the
 * pending PAGES record; an all-zero page is sent as a zero page (no data). The
 * pending record is sent when the next page does not fit its span (another block,
 * a page before the last one added, or more than STREAM_MAX_BATCH pages from its
 * first page), and by every other record.
 *
 * By default the page's bytes are copied when added, so guest memory may change
 * afterwards (live migration). With stream_writer_set_zero_copy(w, true), only the
 * pointer is kept: the bytes must stay unchanged until the record is sent.
 */
bool stream_writer_page(StreamWriter *w, uint32_t block, uint64_t page, const void *data,
                        GError **error);
/* Sends pages [first, first + count) of block as one PAGES record (count at most
 * STREAM_MAX_BATCH): those set in sel, of which those set in zero as zero pages (the
 * caller's verdict). base points at page `first`. Copy mode copies each data page
 * and checksums the copy at once (one pass over the page in cache, not three);
 * zero-copy mode checksums and sends the pages in place. Sends any pending record
 * first. */
bool stream_writer_chunk(StreamWriter *w, uint32_t block, uint64_t first, uint32_t count,
                         const uint64_t *sel, const uint64_t *zero, const uint8_t *base,
                         GError **error);
/* Sends the pending PAGES record, if any. */
bool stream_writer_flush_pages(StreamWriter *w, GError **error);
void stream_writer_set_zero_copy(StreamWriter *w, bool zero_copy);

/* Bytes written (headers included), records written (END included), and pages
 * sent as data / as zero pages. */
uint64_t stream_writer_bytes(const StreamWriter *w);
uint64_t stream_writer_records(const StreamWriter *w);
uint64_t stream_writer_data_pages(const StreamWriter *w);
uint64_t stream_writer_zero_pages(const StreamWriter *w);

G_DEFINE_AUTOPTR_CLEANUP_FUNC(StreamWriter, stream_writer_free)
