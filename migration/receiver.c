/*
 * The migration stream receiver (docs/PROTOCOL.md): the main channel's header,
 * CONFIG and RAM_BLOCKS, then the extra channels, then one thread per channel when
 * there are several.
 *
 * A failed multi-channel run gives the other channels' threads a second to stop (they
 * check the failure between records), then returns even if one is still blocked
 * reading a silent peer: the Receiver is reference counted, such a thread keeps it
 * alive until its read returns, and it applies nothing after the failure (every page
 * write holds `apply` for reading and rechecks `failed`; the failing run takes
 * `apply` for writing once before it returns, so no write is in flight).
 */
#include "receiver_internal.h"

#include <errno.h>
#include <inttypes.h>
#include <string.h>
#include <sys/mman.h>

#define RECEIVER_STOP_WAIT_US (1 * G_USEC_PER_SEC)

Receiver *receiver_new(VStream *main, const VmsnapRamBlock *blocks, unsigned n_blocks,
                       const ReceiverHooks *hooks)
{
    Receiver *r = g_new0(Receiver, 1);
    r->refs = 1;
    if (n_blocks) {
        r->dst = g_memdup2(blocks, sizeof(*blocks) * n_blocks);
        r->n_dst = n_blocks;
    } else {
        r->own_blocks = true;
        r->zeroed = true;
    }
    if (hooks)
        r->hooks = *hooks;
    r->devices = g_array_new(FALSE, TRUE, sizeof(ReceivedSection));
    g_mutex_init(&r->lock);
    g_cond_init(&r->cond);
    g_rw_lock_init(&r->apply);
    r->ch[0] = channel_new(r, 0, main, 0);
    r->n_channels = 1;
    return r;
}

static void receiver_unref(Receiver *r)
{
    if (!g_atomic_int_dec_and_test(&r->refs))
        return;
    for (unsigned i = 0; i < STREAM_MAX_CHANNELS; i++) {
        if (r->ch[i] && r->ch[i]->thread)
            g_thread_unref(r->ch[i]->thread);
        channel_free(r->ch[i]);
    }
    for (guint i = 0; i < r->devices->len; i++)
        g_bytes_unref(g_array_index(r->devices, ReceivedSection, i).fields);
    g_array_unref(r->devices);
    fresh_fill_free(r->fill); /* receiver_run closed it, unless it never ran */
    if (r->own_blocks) {
        for (unsigned i = 0; i < r->n_dst; i++)
            if (r->dst[i].host)
                munmap(r->dst[i].host, r->dst[i].size);
    }
    for (unsigned i = 0; r->written && i < r->n_blocks; i++)
        g_free(r->written[i]);
    g_free(r->written);
    g_free(r->dst);
    g_free(r->blocks);
    g_free(r->map);
    g_clear_pointer(&r->config, g_bytes_unref);
    g_clear_error(&r->error);
    g_mutex_clear(&r->lock);
    g_cond_clear(&r->cond);
    g_rw_lock_clear(&r->apply);
    g_free(r);
}

void receiver_free(Receiver *r)
{
    if (r)
        receiver_unref(r);
}

void receiver_assume_zeroed(Receiver *r)
{
    r->zeroed = true;
}

static bool match_blocks(Receiver *r, GError **error)
{
    r->map = g_new0(unsigned, r->n_blocks);
    if (r->zeroed) {
        r->written = g_new0(uint64_t *, r->n_blocks);
        for (unsigned i = 0; i < r->n_blocks; i++) {
            uint64_t pages = r->blocks[i].size / r->blocks[i].page_size;
            r->written[i] = g_new0(uint64_t, (pages + 63) / 64);
        }
    }
    if (r->own_blocks) {
        /* Anonymous memory: untouched pages cost nothing and read as zero. */
        r->dst = g_new0(VmsnapRamBlock, r->n_blocks);
        r->n_dst = r->n_blocks;
        for (unsigned i = 0; i < r->n_blocks; i++) {
            const FormatBlock *b = &r->blocks[i];
            VmsnapRamBlock *d = &r->dst[i];
            g_strlcpy(d->name, b->name, sizeof(d->name));
            d->gpa = b->gpa;
            d->size = b->size;
            d->page_size = b->page_size;
            d->backing_fd = -1;
            void *p = mmap(NULL, b->size, PROT_READ | PROT_WRITE,
                           MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
            if (p != MAP_FAILED)
                (void)madvise(p, b->size, MADV_HUGEPAGE); /* as guest RAM: vmm/ram.c */
            if (p == MAP_FAILED) {
                int err = errno;
                g_set_error(error, G_IO_ERROR, g_io_error_from_errno(err),
                            "RAM block '%s': cannot map %" PRIu64 " bytes of memory: %s", b->name,
                            b->size, g_strerror(err));
                return false;
            }
            d->host = p;
            r->map[i] = i;
        }
        return true;
    }
    for (unsigned i = 0; i < r->n_blocks; i++) {
        const FormatBlock *b = &r->blocks[i];
        unsigned j = 0;
        while (j < r->n_dst && strcmp(r->dst[j].name, b->name) != 0)
            j++;
        if (j == r->n_dst) {
            g_set_error(error, G_IO_ERROR, G_IO_ERROR_NOT_FOUND,
                        "RAM block '%s' of the stream is not in this VM", b->name);
            return false;
        }
        const VmsnapRamBlock *d = &r->dst[j];
        if (d->gpa != b->gpa) {
            g_set_error(error, G_IO_ERROR, G_IO_ERROR_INVALID_DATA,
                        "RAM block '%s': gpa 0x%" PRIx64 " in the stream, 0x%" PRIx64 " in this VM",
                        b->name, b->gpa, d->gpa);
            return false;
        }
        if (d->size != b->size) {
            g_set_error(error, G_IO_ERROR, G_IO_ERROR_INVALID_DATA,
                        "RAM block '%s': size %" PRIu64 " in the stream, %" PRIu64 " in this VM",
                        b->name, b->size, d->size);
            return false;
        }
        if (!d->host) {
            g_set_error(error, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT,
                        "RAM block '%s' of this VM has no memory", d->name);
            return false;
        }
        r->map[i] = j;
    }
    for (unsigned j = 0; j < r->n_dst; j++) {
        unsigned i = 0;
        while (i < r->n_blocks && strcmp(r->dst[j].name, r->blocks[i].name) != 0)
            i++;
        if (i == r->n_blocks) {
            g_set_error(error, G_IO_ERROR, G_IO_ERROR_NOT_FOUND,
                        "this VM's RAM block '%s' is not in the stream", r->dst[j].name);
            return false;
        }
    }
    return true;
}

bool receiver_match_blocks(Receiver *r, GError **error)
{
    if (!match_blocks(r, error))
        return false;
    if (r->written) {
        GError *why = NULL;
        r->fill = fresh_fill_new(r->dst, r->n_dst, &why);
        if (!r->fill) {
            g_debug("incoming: first writes of pages by memcpy: %s", why->message);
            g_error_free(why);
        }
    }
    return true;
}

/* Ends the fill once no channel writes pages any more (run_threads waited them out). */
static void close_fresh_fill(Receiver *r)
{
    if (!r->fill)
        return;
    uint64_t copied, present, stray;
    fresh_fill_stats(r->fill, &copied, &present, &stray);
    g_debug("incoming: %" PRIu64 " pages filled by UFFDIO_COPY, %" PRIu64
            " by memcpy (present), %" PRIu64 " stray faults",
            copied, present, stray);
    fresh_fill_free(r->fill);
    r->fill = NULL;
}

/* ---- extra channels ---- */

static bool accept_channels(Receiver *r, GError **error)
{
    uint32_t want = r->header.channels;
    const char *what = r->ch[0]->s->name;
    if (want > 1 && !r->hooks.accept_channel) {
        g_set_error(error, G_IO_ERROR, G_IO_ERROR_NOT_SUPPORTED,
                    "%s: the stream has %u channels, this destination takes only one", what, want);
        return false;
    }
    for (uint32_t n = 1; n < want; n++) {
        GError *local = NULL;
        VStream *s = r->hooks.accept_channel(r->hooks.opaque, &local);
        if (!s) {
            if (!local)
                local = g_error_new(G_IO_ERROR, G_IO_ERROR_FAILED, "no connection");
            g_propagate_prefixed_error(error, local, "%s: accepting extra channel %u of %u: ", what,
                                       n, want - 1);
            return false;
        }
        /* Owned by the receiver from here; index unknown until its header is read. */
        g_autoptr(GError) hdr_error = NULL;
        Channel *tmp = channel_new(r, 0, s, 0);
        uint8_t buf[STREAM_HEADER_SIZE];
        uint32_t index = 0;
        uint8_t session[16];
        bool clean = false;
        bool ok = vstream_read_all(s, buf, sizeof(buf), &clean, &hdr_error);
        if (!ok && g_error_matches(hdr_error, G_IO_ERROR, G_IO_ERROR_BROKEN_PIPE)) {
            g_clear_error(&hdr_error);
            g_set_error(&hdr_error, FORMAT_ERROR, FORMAT_ERROR_TRUNCATED,
                        "%s: extra channel %u of %u: truncated: the stream ended in the channel "
                        "header after %" PRIu64 " bytes",
                        s->name, n, want - 1, s->read);
        }
        if (ok) {
            tmp->offset = STREAM_HEADER_SIZE;
            __atomic_fetch_add(&r->bytes, (uint64_t)STREAM_HEADER_SIZE, __ATOMIC_RELAXED);
        }
        ok = ok && stream_channel_header_decode(buf, s->name, &index, session, &hdr_error);
        if (ok && index >= want) {
            g_set_error(&hdr_error, FORMAT_ERROR, FORMAT_ERROR_CORRUPT,
                        "%s: channel header: index %u, the stream has %u channels", s->name, index,
                        want);
            ok = false;
        }
        if (ok && memcmp(session, r->header.session, 16) != 0) {
            g_set_error(&hdr_error, FORMAT_ERROR, FORMAT_ERROR_CORRUPT,
                        "%s: channel header: channel %u presents another session than the main "
                        "channel's (a connection from another migration?)",
                        s->name, index);
            ok = false;
        }
        if (ok && r->ch[index]) {
            g_set_error(&hdr_error, FORMAT_ERROR, FORMAT_ERROR_CORRUPT,
                        "%s: channel header: a second channel %u", s->name, index);
            ok = false;
        }
        if (!ok) {
            channel_free(tmp);
            g_propagate_error(error, g_steal_pointer(&hdr_error));
            return false;
        }
        tmp->index = index;
        tmp->phase = PHASE_PASSES;
        channel_reserve_final(tmp);
        r->ch[index] = tmp;
        r->n_channels++;
    }
    return true;
}

/* ---- threads ---- */

/* Records the first error of any channel and stops the run. */
static void run_failed(Receiver *r, GError *err)
{
    g_mutex_lock(&r->lock);
    if (!r->failed) {
        r->error = err;
        err = NULL;
        __atomic_store_n(&r->failed, true, __ATOMIC_RELEASE);
    }
    g_cond_broadcast(&r->cond);
    g_mutex_unlock(&r->lock);
    if (err)
        g_error_free(err);
}

static gpointer channel_thread(gpointer data)
{
    Channel *ch = data;
    Receiver *r = ch->r;
    GError *err = NULL;
    if (!channel_run(ch, false, &err) && err)
        run_failed(r, err);
    g_mutex_lock(&r->lock);
    r->running--;
    ch->done = true;
    g_cond_broadcast(&r->cond);
    g_mutex_unlock(&r->lock);
    receiver_unref(r);
    return NULL;
}

static bool run_threads(Receiver *r, GError **error)
{
    GError *start_error = NULL;
    r->threaded = true;
    for (unsigned i = 0; i < r->n_channels && !start_error; i++) {
        Channel *ch = r->ch[i];
        g_autofree char *name = g_strdup_printf("recv-ch%u", i);
        g_atomic_int_inc(&r->refs);
        g_mutex_lock(&r->lock);
        r->running++;
        g_mutex_unlock(&r->lock);
        ch->thread = g_thread_try_new(name, channel_thread, ch, &start_error);
        if (!ch->thread) {
            g_prefix_error(&start_error,
                           "%s: starting the thread of channel %u: ", r->ch[0]->s->name, i);
            g_atomic_int_add(&r->refs, -1);
            g_mutex_lock(&r->lock);
            r->running--;
            __atomic_store_n(&r->failed, true, __ATOMIC_RELEASE);
            g_cond_broadcast(&r->cond);
            g_mutex_unlock(&r->lock);
        }
    }
    g_mutex_lock(&r->lock);
    while (r->running > 0 && !r->failed)
        g_cond_wait(&r->cond, &r->lock);
    bool failed = r->failed;
    GError *err = g_steal_pointer(&r->error);
    g_mutex_unlock(&r->lock);

    if (failed) {
        /* Siblings stop at their next record boundary or barrier; give them a moment,
         * so that only a thread blocked in a read outlives the run. */
        gint64 deadline = g_get_monotonic_time() + RECEIVER_STOP_WAIT_US;
        g_mutex_lock(&r->lock);
        while (r->running > 0 && g_cond_wait_until(&r->cond, &r->lock, deadline))
            ;
        for (unsigned i = 0; i < r->n_channels; i++) {
            Channel *ch = r->ch[i];
            if (ch->thread && ch->done) {
                g_mutex_unlock(&r->lock);
                g_thread_join(ch->thread);
                g_mutex_lock(&r->lock);
                ch->thread = NULL;
            }
        }
        g_mutex_unlock(&r->lock);
        /* Wait out page writes in flight; none starts after this (see the top). */
        g_rw_lock_writer_lock(&r->apply);
        g_rw_lock_writer_unlock(&r->apply);
        if (err) {
            g_propagate_error(error, err);
            g_clear_error(&start_error);
        } else {
            g_propagate_error(error, start_error);
        }
        return false;
    }
    for (unsigned i = 0; i < r->n_channels; i++) {
        g_thread_join(r->ch[i]->thread);
        r->ch[i]->thread = NULL;
    }
    return true;
}

bool receiver_run(Receiver *r, GError **error)
{
    if (r->ran) {
        g_set_error(error, G_IO_ERROR, G_IO_ERROR_FAILED, "receiver_run: called twice");
        return false;
    }
    r->ran = true;
    Channel *main = r->ch[0];
    uint8_t buf[STREAM_HEADER_SIZE];
    if (!channel_read(main, buf, sizeof(buf), "the stream header", error) ||
        !stream_header_decode(buf, main->s->name, &r->header, error))
        return false;
    bool ok = channel_run(main, true, error) && accept_channels(r, error) &&
              (r->n_channels == 1 ? channel_run(main, false, error) : run_threads(r, error));
    close_fresh_fill(r);
    return ok;
}

GBytes *receiver_config(const Receiver *r, uint32_t *version)
{
    if (version)
        *version = r->config_version;
    return r->config;
}

const ReceivedSection *receiver_devices(const Receiver *r, unsigned *n)
{
    *n = r->devices->len;
    return (const ReceivedSection *)(void *)r->devices->data;
}

const VmsnapRamBlock *receiver_ram_blocks(const Receiver *r, unsigned *n)
{
    *n = r->n_dst;
    return r->dst;
}

uint64_t receiver_end_us(const Receiver *r)
{
    return r->end_us;
}

bool receiver_source_running(const Receiver *r)
{
    return r->source_running;
}

uint32_t receiver_passes(const Receiver *r)
{
    return r->ch[0]->synced;
}

uint64_t receiver_bytes(const Receiver *r)
{
    return __atomic_load_n(&r->bytes, __ATOMIC_RELAXED);
}

uint64_t receiver_pages(const Receiver *r)
{
    return __atomic_load_n(&r->pages, __ATOMIC_RELAXED);
}
