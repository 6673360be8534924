/* One channel of the migration stream: reading, validating and applying its records
 * (docs/PROTOCOL.md sections 2 to 4). */
#include "receiver_internal.h"

#include "scan.h"

#include <inttypes.h>
#include <string.h>

Channel *channel_new(Receiver *r, uint32_t index, VStream *s, uint64_t offset)
{
    Channel *ch = g_new0(Channel, 1);
    ch->r = r;
    ch->index = index;
    ch->s = s;
    ch->offset = offset;
    ch->chain = stream_chain_new();
    ch->phase = index == 0 ? PHASE_CONFIG : PHASE_PASSES;
    return ch;
}

void channel_free(Channel *ch)
{
    if (!ch)
        return;
    vstream_free(ch->s);
    stream_chain_free(ch->chain);
    g_free(ch->buf);
    g_free(ch);
}

static const char *ch_what(const Channel *ch)
{
    return ch->s->name;
}

static bool G_GNUC_PRINTF(4, 5)
    rec_error(Channel *ch, const StreamRecordHeader *h, GError **error, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    g_autofree char *msg = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    return stream_record_error(error, FORMAT_ERROR_CORRUPT, ch_what(ch), ch->index, h->seq, h->type,
                               ch->offset, "%s", msg);
}

/* Prefixes an error (from a payload decoder, a hook or the stream) with the record,
 * keeping its domain and code (I/O errors, the destination's refusal). */
static bool rec_wrap(Channel *ch, const StreamRecordHeader *h, GError *local, GError **error)
{
    g_autoptr(GError) named = NULL;
    stream_record_error(&named, FORMAT_ERROR_CORRUPT, ch_what(ch), ch->index, h->seq, h->type,
                        ch->offset, "%s", local->message);
    g_set_error_literal(error, local->domain, local->code, named->message);
    g_error_free(local);
    return false;
}

static bool read_raw(Channel *ch, void *buf, size_t len, bool *eof, GError **error)
{
    GError *local = NULL;
    *eof = false;
    if (!vstream_read_all(ch->s, buf, len, NULL, &local)) {
        *eof = g_error_matches(local, G_IO_ERROR, G_IO_ERROR_BROKEN_PIPE);
        g_propagate_error(error, local);
        return false;
    }
    __atomic_fetch_add(&ch->r->bytes, len, __ATOMIC_RELAXED);
    return true;
}

static bool truncated(Channel *ch, GError **error, const char *fmt, ...) G_GNUC_PRINTF(3, 4);
static bool truncated(Channel *ch, GError **error, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    g_autofree char *where = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    g_set_error(error, FORMAT_ERROR, FORMAT_ERROR_TRUNCATED,
                "%s: channel %u: truncated: the stream ended %s after %" PRIu64 " bytes",
                ch_what(ch), ch->index, where, MAX(ch->s->read, ch->offset));
    return false;
}

bool channel_read(Channel *ch, void *buf, size_t len, const char *where, GError **error)
{
    bool eof;
    GError *local = NULL;
    if (read_raw(ch, buf, len, &eof, &local)) {
        ch->offset += len;
        return true;
    }
    if (eof) {
        g_error_free(local);
        return truncated(ch, error, "in %s", where);
    }
    g_propagate_prefixed_error(error, local, "channel %u, reading %s: ", ch->index, where);
    return false;
}

/* ---- order rules (PROTOCOL.md 3 and 4), checked before the payload is read ---- */

static bool check_order(Channel *ch, const StreamRecordHeader *h, GError **error)
{
    const bool main = ch->index == 0;
    const char *type = stream_record_name(h->type);
    switch ((StreamRecordType)h->type) {
    case STREAM_REC_CONFIG:
    case STREAM_REC_RAM_BLOCKS:
    case STREAM_REC_DEVICE:
        if (!main)
            return rec_error(ch, h, error, "%s records belong on the main channel only", type);
        break;
    case STREAM_REC_PAGES:
    case STREAM_REC_SYNC:
    case STREAM_REC_END:
        break;
    }
    if (ch->phase == PHASE_CONFIG && h->type != STREAM_REC_CONFIG)
        return rec_error(ch, h, error, "out of order: the stream must start with CONFIG");
    if (ch->phase != PHASE_CONFIG && h->type == STREAM_REC_CONFIG)
        return rec_error(ch, h, error, "a second CONFIG");
    if (ch->phase == PHASE_RAM_BLOCKS && h->type != STREAM_REC_RAM_BLOCKS)
        return rec_error(ch, h, error, "out of order: RAM_BLOCKS must follow CONFIG");
    if (ch->phase >= PHASE_PASSES && h->type == STREAM_REC_RAM_BLOCKS)
        return rec_error(ch, h, error, "a second RAM_BLOCKS");
    if (ch->phase == PHASE_PASSES && (h->type == STREAM_REC_DEVICE || h->type == STREAM_REC_END))
        return rec_error(ch, h, error, "out of order: %s before the FINAL SYNC", type);
    if (ch->phase == PHASE_DEVICES && (h->type == STREAM_REC_PAGES || h->type == STREAM_REC_SYNC))
        return rec_error(ch, h, error, "out of order: %s after the FINAL SYNC (pass %u)", type,
                         ch->synced);
    return true;
}

/* ---- records ---- */

static bool handle_config(Channel *ch, const StreamRecordHeader *h, GError **error)
{
    Receiver *r = ch->r;
    GError *local = NULL;
    uint32_t version;
    if (!stream_config_decode(ch->buf, h->length, &version, &local))
        return rec_wrap(ch, h, local, error);
    r->config = g_bytes_new(ch->buf + STREAM_CONFIG_PREFIX, h->length - STREAM_CONFIG_PREFIX);
    r->config_version = version;
    if (r->hooks.config &&
        !r->hooks.config(r->hooks.opaque, r->config, version, r->header.vm_uuid,
                         (r->header.flags & STREAM_FLAG_VALIDATE_UUID) != 0, &local)) {
        if (!local)
            local = g_error_new(G_IO_ERROR, G_IO_ERROR_FAILED, "refused by the destination");
        return rec_wrap(ch, h, local, error);
    }
    ch->phase = PHASE_RAM_BLOCKS;
    return true;
}

void channel_reserve_final(Channel *ch)
{
    if (!(ch->r->header.flags & STREAM_FLAG_LIVE))
        return;
    /* The largest PAGES record this stream can carry: tiny test streams stay tiny. */
    uint64_t span = 0;
    for (unsigned i = 0; i < ch->r->n_blocks; i++)
        span = MAX(span, ch->r->blocks[i].size / FORMAT_PAGE_SIZE);
    span = MIN(span, (uint64_t)STREAM_MAX_BATCH);
    size_t need = (size_t)span * FORMAT_PAGE_SIZE + stream_pages_prefix((uint32_t)span);
    if (!span || ch->cap >= need)
        return;
    g_free(ch->buf);
    ch->cap = need;
    ch->buf = g_malloc(need);
    memset(ch->buf, 0, need);
}

static bool handle_ram_blocks(Channel *ch, const StreamRecordHeader *h, GError **error)
{
    Receiver *r = ch->r;
    GError *local = NULL;
    if (!stream_ram_blocks_decode(ch->buf, h->length, &r->blocks, &r->n_blocks, &local) ||
        !receiver_match_blocks(r, &local))
        return rec_wrap(ch, h, local, error);
    ch->phase = PHASE_PASSES;
    channel_reserve_final(ch);
    return true;
}

static uint32_t min_synced(Receiver *r)
{
    uint32_t m = UINT32_MAX;
    for (unsigned i = 0; i < r->n_channels; i++)
        m = MIN(m, r->ch[i]->synced);
    return m;
}

/* PROTOCOL.md 3.2: pages of pass k+1 wait until every channel delivered SYNC(k).
 * Returns false when the run failed (with an error if this channel found why). */
static bool barrier(Channel *ch, const StreamRecordHeader *h, GError **error)
{
    Receiver *r = ch->r;
    if (!r->threaded || ch->synced == 0)
        return true;
    bool ok = true;
    g_mutex_lock(&r->lock);
    while (!r->failed && min_synced(r) < ch->synced) {
        for (unsigned i = 0; i < r->n_channels && ok; i++) {
            const Channel *o = r->ch[i];
            if (o->final && o->synced < ch->synced)
                ok = rec_error(ch, h, error,
                               "pages of pass %u, but channel %u ended its passes with pass %u",
                               ch->synced + 1, o->index, o->synced);
        }
        if (!ok)
            break;
        g_cond_wait(&r->cond, &r->lock);
    }
    ok = ok && !r->failed;
    g_mutex_unlock(&r->lock);
    return ok;
}

static bool handle_pages(Channel *ch, const StreamRecordHeader *h, GError **error)
{
    Receiver *r = ch->r;
    GError *local = NULL;
    StreamPages pg;
    if (!stream_pages_decode(ch->buf, h->length, r->blocks, r->n_blocks, &pg, &local))
        return rec_wrap(ch, h, local, error);
    if (!barrier(ch, h, error))
        return false;
    const FormatBlock *b = &r->blocks[pg.block];
    uint8_t *host = r->dst[r->map[pg.block]].host;
    uint64_t *written = r->written ? r->written[pg.block] : NULL;
    size_t ps = b->page_size;
    const uint8_t *data = pg.data;
    uint64_t n = 0;

    g_rw_lock_reader_lock(&r->apply);
    bool stop = r->threaded && __atomic_load_n(&r->failed, __ATOMIC_ACQUIRE);
    /* A run of data pages never written before, adjacent in memory and in `data`:
     * one UFFDIO_COPY (fresh_fill.h). */
    uint8_t *run_dst = NULL;
    const uint8_t *run_src = NULL;
    size_t run_len = 0;
    GError *fill_error = NULL;
    for (uint32_t i = 0; i < pg.npages && !stop; i++) {
        if (!stream_bit(pg.sent, i))
            continue;
        uint64_t page = pg.first_page + i;
        uint8_t *dst = host + page * ps;
        bool zero = stream_bit(pg.zero, i);
        bool was_written = written && (__atomic_load_n(&written[page / 64], __ATOMIC_RELAXED) &
                                       (1ull << (page % 64)));
        bool fresh = r->fill && !was_written && !zero;
        if (run_len && !(fresh && run_dst + run_len == dst)) {
            stop = !fresh_fill_copy(r->fill, run_dst, run_src, run_len, &fill_error);
            run_len = 0;
        }
        if (fresh) {
            if (!run_len) {
                run_dst = dst;
                run_src = data;
            }
            run_len += ps;
            data += ps;
        } else if (zero) {
            /* Zeroed memory: a page never written still reads as zero, leave it
             * unmapped. Otherwise only write when needed: fresh memory costs nothing. */
            if ((!written || was_written) && !scan_page_is_zero(dst, ps))
                memset(dst, 0, ps);
        } else {
            memcpy(dst, data, ps);
            data += ps;
        }
        if (!zero && written) {
            /* Passes are ordered by SYNC barriers, so the channel that sees this page
             * next sees the bit; with threads, the atomic keeps neighbours' bits. */
            if (r->threaded)
                __atomic_fetch_or(&written[page / 64], 1ull << (page % 64), __ATOMIC_RELAXED);
            else
                written[page / 64] |= 1ull << (page % 64);
        }
        n++;
    }
    if (run_len && !stop)
        stop = !fresh_fill_copy(r->fill, run_dst, run_src, run_len, &fill_error);
    g_rw_lock_reader_unlock(&r->apply);
    __atomic_fetch_add(&r->pages, n, __ATOMIC_RELAXED);
    if (fill_error)
        return rec_wrap(ch, h, fill_error, error);
    return !stop;
}

static bool handle_sync(Channel *ch, const StreamRecordHeader *h, GError **error)
{
    Receiver *r = ch->r;
    GError *local = NULL;
    StreamSync s;
    if (!stream_sync_decode(ch->buf, h->length, &s, &local))
        return rec_wrap(ch, h, local, error);
    if (s.pass != ch->synced + 1)
        return rec_error(ch, h, error, "SYNC of pass %u, expected pass %u", s.pass, ch->synced + 1);
    bool final = (s.flags & STREAM_SYNC_FINAL) != 0;
    bool ok = true;
    g_mutex_lock(&r->lock);
    /* Every channel ends its passes with the same FINAL pass. */
    for (unsigned i = 0; i < r->n_channels && ok; i++) {
        const Channel *o = r->ch[i];
        if (o == ch)
            continue;
        if (o->final && s.pass > o->synced)
            ok = rec_error(ch, h, error,
                           "SYNC of pass %u, but channel %u ended its passes with "
                           "pass %u",
                           s.pass, o->index, o->synced);
        else if (o->final && final && s.pass != o->synced)
            ok = rec_error(ch, h, error,
                           "FINAL SYNC of pass %u, but channel %u's FINAL SYNC "
                           "was pass %u",
                           s.pass, o->index, o->synced);
        else if (final && o->synced > s.pass)
            ok = rec_error(ch, h, error, "FINAL SYNC of pass %u, but channel %u is at pass %u",
                           s.pass, o->index, o->synced);
    }
    if (ok) {
        ch->synced = s.pass;
        ch->final = final;
        g_cond_broadcast(&r->cond);
    }
    g_mutex_unlock(&r->lock);
    if (ok && final)
        ch->phase = PHASE_DEVICES;
    return ok;
}

static bool handle_device(Channel *ch, const StreamRecordHeader *h, GError **error)
{
    Receiver *r = ch->r;
    GError *local = NULL;
    ReceivedSection sec = { 0 };
    if (!stream_device_prefix_decode(ch->buf, h->length, &sec.instance, &sec.version, sec.name,
                                     &local))
        return rec_wrap(ch, h, local, error);
    for (guint i = 0; i < r->devices->len; i++) {
        const ReceivedSection *o = &g_array_index(r->devices, ReceivedSection, i);
        if (!strcmp(o->name, sec.name) && o->instance == sec.instance)
            return rec_error(ch, h, error, "a second DEVICE '%s' instance %u", sec.name,
                             sec.instance);
    }
    size_t len = h->length - STREAM_DEVICE_PREFIX;
    if (r->devices->len >= STREAM_MAX_DEVICES)
        return rec_error(ch, h, error, "more than %u DEVICE records", STREAM_MAX_DEVICES);
    if (len > STREAM_MAX_DEVICE_BYTES - r->device_bytes)
        return rec_error(ch, h, error, "DEVICE payloads over %u bytes in all",
                         STREAM_MAX_DEVICE_BYTES);
    sec.fields = g_bytes_new(ch->buf + STREAM_DEVICE_PREFIX, len);
    r->device_bytes += len;
    g_array_append_val(r->devices, sec);
    return true;
}

/* After END: the peer closes the channel; any byte is refused. */
static bool check_eof(Channel *ch, GError **error)
{
    uint8_t hb[STREAM_RECORD_HEADER];
    bool clean = false;
    GError *local = NULL;
    if (vstream_read_all(ch->s, hb, sizeof(hb), &clean, &local)) {
        /* Named by its position: its own seq may be anything. */
        uint32_t type;
        memcpy(&type, hb, 4);
        StreamRecordHeader h = { .type = GUINT32_FROM_LE(type), .seq = ch->seq };
        return rec_error(ch, &h, error, "a record after END");
    }
    if (clean) {
        g_error_free(local);
        return true;
    }
    if (g_error_matches(local, G_IO_ERROR, G_IO_ERROR_BROKEN_PIPE)) {
        g_error_free(local);
        g_set_error(error, FORMAT_ERROR, FORMAT_ERROR_CORRUPT,
                    "%s: channel %u: %" PRIu64 " stray bytes after END (at offset %" PRIu64 ")",
                    ch_what(ch), ch->index, ch->s->read - ch->offset, ch->offset);
        return false;
    }
    g_propagate_prefixed_error(error, local, "channel %u, after END: ", ch->index);
    return false;
}

static bool handle_end(Channel *ch, const StreamRecordHeader *h, uint64_t checksum, GError **error)
{
    GError *local = NULL;
    StreamEnd e;
    if (!stream_end_decode(ch->buf, h->length, &e, &local))
        return rec_wrap(ch, h, local, error);
    uint64_t records = stream_chain_records(ch->chain);
    if (e.records != records)
        return rec_error(ch, h, error, "END counts %" PRIu64 " records, the channel had %" PRIu64,
                         e.records, records);
    uint64_t chain = stream_chain_digest(ch->chain);
    if (e.chain != chain)
        return rec_error(ch, h, error,
                         "END chain checksum 0x%016" PRIx64 ", the records give 0x%016" PRIx64,
                         e.chain, chain);
    if (ch->index == 0) {
        ch->r->source_running = (e.flags & STREAM_END_SOURCE_RUNNING) != 0;
        ch->r->end_us = (uint64_t)g_get_monotonic_time();
    } else if (e.flags) {
        return rec_error(ch, h, error, "END flags 0x%x on an extra channel (main channel only)",
                         e.flags);
    }
    stream_chain_add(ch->chain, checksum);
    ch->offset += STREAM_RECORD_HEADER + h->length;
    ch->seq++;
    ch->phase = PHASE_DONE;
    return check_eof(ch, error);
}

/* Reads the next record's header and payload into ch->buf, checked (sequence, order,
 * length, checksum). ch->offset stays at the record's first byte. */
static bool read_record(Channel *ch, StreamRecordHeader *h, GError **error)
{
    uint8_t hb[STREAM_RECORD_HEADER];
    bool eof;
    GError *local = NULL;
    uint64_t before = ch->s->read;
    if (!read_raw(ch, hb, sizeof(hb), &eof, &local)) {
        if (!eof) {
            g_propagate_prefixed_error(error, local, "channel %u, reading record %u: ", ch->index,
                                       ch->seq);
            return false;
        }
        g_error_free(local);
        if (ch->s->read == before)
            return truncated(ch, error, "before record %u (no END)", ch->seq);
        return truncated(ch, error, "in the header of record %u", ch->seq);
    }
    if (!stream_record_header_decode(hb, ch_what(ch), ch->index, ch->offset, h, error))
        return false;
    if (h->seq != ch->seq)
        return rec_error(ch, h, error,
                         "sequence number %u, expected %u (a record was lost or "
                         "repeated)",
                         h->seq, ch->seq);
    if (!check_order(ch, h, error))
        return false;
    if (h->length > ch->cap) {
        /* Bounded by STREAM_MAX_PAYLOAD (checked by the header decoder). */
        g_free(ch->buf);
        ch->cap = MAX(h->length, 64 * 1024u);
        ch->buf = g_malloc(ch->cap);
    }
    if (h->length && !read_raw(ch, ch->buf, h->length, &eof, &local)) {
        if (!eof)
            return rec_wrap(ch, h, local, error);
        g_error_free(local);
        return truncated(ch, error, "in record %u (%s)", h->seq, stream_record_name(h->type));
    }
    return stream_record_check(h, ch->buf, ch_what(ch), ch->index, ch->offset, error);
}

static bool failed_elsewhere(Channel *ch)
{
    return ch->r->threaded && __atomic_load_n(&ch->r->failed, __ATOMIC_ACQUIRE);
}

bool channel_run(Channel *ch, bool setup, GError **error)
{
    while (ch->phase != PHASE_DONE) {
        if (setup && ch->phase == PHASE_PASSES)
            return true;
        if (failed_elsewhere(ch))
            return false;
        StreamRecordHeader h;
        if (!read_record(ch, &h, error))
            return false;
        if (h.type == STREAM_REC_END) {
            if (!handle_end(ch, &h, h.checksum, error))
                return false;
            continue;
        }
        bool ok = false;
        switch ((StreamRecordType)h.type) {
        case STREAM_REC_CONFIG:
            ok = handle_config(ch, &h, error);
            break;
        case STREAM_REC_RAM_BLOCKS:
            ok = handle_ram_blocks(ch, &h, error);
            break;
        case STREAM_REC_PAGES:
            ok = handle_pages(ch, &h, error);
            break;
        case STREAM_REC_SYNC:
            ok = handle_sync(ch, &h, error);
            break;
        case STREAM_REC_DEVICE:
            ok = handle_device(ch, &h, error);
            break;
        case STREAM_REC_END:
            break;
        }
        if (!ok)
            return false;
        stream_chain_add(ch->chain, h.checksum);
        ch->offset += STREAM_RECORD_HEADER + h.length;
        ch->seq++;
    }
    return true;
}
