#include "stream_sink.h"

#include "config.h"
#include "scan.h"
#include "stream_writer.h"
#include "transport.h"

#include <string.h>

typedef struct StreamSink {
    SaveSink base;
    unsigned n;
    VStream **streams;
    StreamWriter **writers;
    bool validate_uuid;
    bool zero_copy; /* the final pass: the VM is paused */
} StreamSink;

typedef struct StreamWorker {
    StreamSink *ss;
    StreamWriter *w;
    uint64_t data0, zero0;
} StreamWorker;

static void *worker_new(void *sink, unsigned index, GError **error)
{
    StreamSink *ss = sink;
    StreamWorker *w = g_new0(StreamWorker, 1);
    w->ss = ss;
    w->w = ss->writers[index % ss->n];
    stream_writer_set_zero_copy(w->w, ss->zero_copy);
    w->data0 = stream_writer_data_pages(w->w);
    w->zero0 = stream_writer_zero_pages(w->w);
    return w;
}

static bool chunk(void *worker, const ScanChunk *c, uint64_t *bytes, GError **error)
{
    StreamWorker *w = worker;
    const VmsnapRamBlock *b = &w->ss->base.vm->blocks[c->block];
    uint64_t before = stream_writer_bytes(w->w);
    if (!stream_writer_chunk(w->w, c->block, c->first, (uint32_t)c->count, c->sel, c->zero,
                             b->host + c->first * b->page_size, error))
        return false;
    uint64_t after = stream_writer_bytes(w->w);
    *bytes = after - before;
    __atomic_fetch_add(&w->ss->base.progress->written_bytes, after - before, __ATOMIC_RELAXED);
    return true;
}

static bool worker_finish(void *worker, GError **error)
{
    StreamWorker *w = worker;
    uint64_t before = stream_writer_bytes(w->w);
    bool ok = stream_writer_flush_pages(w->w, error);
    VmsnapProgress *p = w->ss->base.progress;
    __atomic_fetch_add(&p->written_bytes, stream_writer_bytes(w->w) - before, __ATOMIC_RELAXED);
    __atomic_fetch_add(&p->normal_pages, stream_writer_data_pages(w->w) - w->data0,
                       __ATOMIC_RELAXED);
    __atomic_fetch_add(&p->zero_pages, stream_writer_zero_pages(w->w) - w->zero0, __ATOMIC_RELAXED);
    return ok;
}

static void worker_free(void *worker)
{
    g_free(worker);
}

static const ScanSinkOps stream_scan_ops = { worker_new, chunk, worker_finish, worker_free };

static uint64_t total_bytes(const StreamSink *ss)
{
    uint64_t n = 0;
    for (unsigned i = 0; i < ss->n; i++)
        n += stream_writer_bytes(ss->writers[i]);
    return n;
}

static bool ss_begin(SaveSink *s, GError **error)
{
    StreamSink *ss = (StreamSink *)s;
    StreamHeader h = {
        .version = STREAM_VERSION,
        .flags = (ss->validate_uuid ? STREAM_FLAG_VALIDATE_UUID : 0) |
                 (s->vm->running ? STREAM_FLAG_LIVE : 0),
        .channels = ss->n,
        .page_size = FORMAT_PAGE_SIZE,
        .writer_version =
            (VMSNAP_VERSION_MAJOR << 16) | (VMSNAP_VERSION_MINOR << 8) | VMSNAP_VERSION_MICRO,
    };
    memcpy(h.vm_uuid, s->vm->uuid, 16);
    for (unsigned i = 0; i < 4; i++) {
        guint32 r = g_random_int();
        memcpy(h.session + 4 * i, &r, 4);
    }
    g_autofree FormatBlock *blocks = g_new0(FormatBlock, s->vm->n_blocks);
    for (unsigned i = 0; i < s->vm->n_blocks; i++) {
        const VmsnapRamBlock *r = &s->vm->blocks[i];
        g_strlcpy(blocks[i].name, r->name, sizeof(blocks[i].name));
        blocks[i].gpa = r->gpa;
        blocks[i].size = r->size;
        blocks[i].page_size = r->page_size;
    }
    if (!stream_writer_header(ss->writers[0], &h, error) ||
        !stream_writer_config(ss->writers[0], s->vm->config_version, s->vm->config, error) ||
        !stream_writer_ram_blocks(ss->writers[0], blocks, s->vm->n_blocks, error))
        return false;
    for (unsigned i = 1; i < ss->n; i++)
        if (!stream_writer_channel_header(ss->writers[i], h.session, error))
            return false;
    return true;
}

static bool ss_pass(SaveSink *s, uint64_t *const *select, uint32_t pass, bool final,
                    uint64_t dirty_left, GError **error)
{
    StreamSink *ss = (StreamSink *)s;
    ss->zero_copy = final;
    uint64_t before = total_bytes(ss);
    ScanJob job = {
        .blocks = s->vm->blocks,
        .n_blocks = s->vm->n_blocks,
        .select = select,
        .threads = ss->n,
        .ops = &stream_scan_ops,
        .sink = ss,
        .progress = s->progress,
        .cancel = s->cancel,
        .max_bandwidth = s->max_bandwidth,
        .delay_us = s->delay_us,
        .first_here = final,
        .rearm = s->rearm,
        .rearm_opaque = s->rearm_opaque,
    };
    if (!scan_run(&job, error))
        return false;
    /* Every channel closes the pass, so the receiver can hold pass n+1 back until
     * all of pass n has landed (PROTOCOL.md section 3.2). */
    for (unsigned i = 0; i < ss->n; i++)
        if (!stream_writer_sync(ss->writers[i], pass, final ? STREAM_SYNC_FINAL : 0, dirty_left,
                                error))
            return false;
    uint64_t sent = total_bytes(ss) - before;
    __atomic_fetch_add(&s->bytes, sent, __ATOMIC_RELAXED);
    return true;
}

static bool ss_finish(SaveSink *s, const DevicePayload *devices, unsigned n_devices,
                      bool source_running, GError **error)
{
    StreamSink *ss = (StreamSink *)s;
    for (unsigned i = 0; i < n_devices; i++) {
        gsize len;
        const void *data = g_bytes_get_data(devices[i].fields, &len);
        if (!stream_writer_device(ss->writers[0], devices[i].name, devices[i].instance,
                                  devices[i].version, data, len, error))
            return false;
    }
    /* Extra channels end first: the main channel's END is the last record. */
    for (unsigned i = ss->n; i-- > 0;) {
        uint32_t flags = i == 0 && source_running ? STREAM_END_SOURCE_RUNNING : 0;
        if (!stream_writer_end(ss->writers[i], flags, error) ||
            !transport_stream_finish(ss->streams[i], error))
            return false;
    }
    return true;
}

static void ss_abort(SaveSink *s)
{
}

static void ss_free(SaveSink *s)
{
    StreamSink *ss = (StreamSink *)s;
    for (unsigned i = 0; i < ss->n; i++) {
        if (ss->writers[i])
            stream_writer_free(ss->writers[i]);
        if (ss->streams[i])
            vstream_free(ss->streams[i]);
    }
    g_free(ss->writers);
    g_free(ss->streams);
    g_free(ss);
}

static const SaveSinkOps stream_sink_ops = { ss_begin, ss_pass, ss_finish, ss_abort, ss_free };

SaveSink *stream_sink_new(const VmsnapVm *vm, VStream **channels, unsigned n_channels,
                          bool validate_uuid, GError **error)
{
    StreamSink *ss = g_new0(StreamSink, 1);
    ss->base.ops = &stream_sink_ops;
    ss->base.vm = vm;
    ss->n = n_channels;
    ss->validate_uuid = validate_uuid;
    ss->streams = g_new0(VStream *, n_channels);
    ss->writers = g_new0(StreamWriter *, n_channels);
    for (unsigned i = 0; i < n_channels; i++) {
        ss->streams[i] = channels[i];
        ss->writers[i] = stream_writer_new(channels[i], i, FORMAT_PAGE_SIZE);
    }
    return &ss->base;
}
