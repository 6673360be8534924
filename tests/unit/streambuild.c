/* Test helper: builds migration streams record by record (see streambuild.h). */
#include "streambuild.h"

#include <string.h>
#include <vmsnap/fields.h>

const FormatBlock sb_blocks[SB_BLOCKS] = {
    { .name = "ram-below-4g", .gpa = 0, .size = 64 * 4096, .page_size = 4096 },
    { .name = "ram-above-4g", .gpa = 1ull << 32, .size = 16 * 4096, .page_size = 4096 },
};

static void rec_free(gpointer p)
{
    SbRecord *r = p;
    g_byte_array_unref(r->payload);
    g_free(r);
}

SbChannel *sb_new(uint32_t index, const StreamHeader *h)
{
    SbChannel *c = g_new0(SbChannel, 1);
    c->index = index;
    c->h = *h;
    c->recs = g_ptr_array_new_with_free_func(rec_free);
    return c;
}

void sb_free(SbChannel *c)
{
    if (!c)
        return;
    g_ptr_array_unref(c->recs);
    g_free(c);
}

StreamHeader sb_header(uint32_t channels)
{
    StreamHeader h = {
        .version = STREAM_VERSION,
        .flags = STREAM_FLAG_LIVE,
        .channels = channels,
        .page_size = 4096,
        .writer_version = 0x000100,
    };
    for (unsigned i = 0; i < 16; i++) {
        h.vm_uuid[i] = (uint8_t)(0xa0 + i);
        h.session[i] = (uint8_t)(0x10 + i);
    }
    return h;
}

SbRecord *sb_add(SbChannel *c, uint32_t type, const void *payload, size_t len)
{
    SbRecord *r = g_new0(SbRecord, 1);
    r->type = type;
    r->payload = g_byte_array_new();
    if (len)
        g_byte_array_append(r->payload, payload, (guint)len);
    g_ptr_array_add(c->recs, r);
    return r;
}

void sb_config(SbChannel *c, uint32_t version)
{
    VmsnapFieldWriter *w = vmsnap_fw_new();
    vmsnap_fw_str(w, "name", "test-vm");
    vmsnap_fw_u64(w, "memory", 80 * 4096);
    vmsnap_fw_str(w, "run_state", "running");
    g_autoptr(GBytes) fields = vmsnap_fw_finish(w, NULL);
    uint8_t prefix[STREAM_CONFIG_PREFIX];
    stream_config_prefix_encode(version, prefix);
    SbRecord *r = sb_add(c, STREAM_REC_CONFIG, prefix, sizeof(prefix));
    g_byte_array_append(r->payload, g_bytes_get_data(fields, NULL),
                        (guint)g_bytes_get_size(fields));
}

void sb_ram_blocks(SbChannel *c)
{
    g_autoptr(GBytes) t = format_ram_blocks_encode(sb_blocks, SB_BLOCKS);
    sb_add(c, STREAM_REC_RAM_BLOCKS, g_bytes_get_data(t, NULL), g_bytes_get_size(t));
}

void sb_sync(SbChannel *c, uint32_t pass, bool final)
{
    uint8_t buf[16];
    stream_sync_encode(
        &(StreamSync){ .pass = pass, .flags = final ? STREAM_SYNC_FINAL : 0, .dirty_pages = 3 },
        buf);
    sb_add(c, STREAM_REC_SYNC, buf, sizeof(buf));
}

void sb_device(SbChannel *c, const char *name, uint32_t instance, uint32_t version)
{
    VmsnapFieldWriter *w = vmsnap_fw_new();
    vmsnap_fw_u64(w, "rip", 0x1000 + instance);
    vmsnap_fw_str(w, "who", name);
    g_autoptr(GBytes) fields = vmsnap_fw_finish(w, NULL);
    uint8_t prefix[STREAM_DEVICE_PREFIX];
    stream_device_prefix_encode(instance, version, name, prefix);
    SbRecord *r = sb_add(c, STREAM_REC_DEVICE, prefix, sizeof(prefix));
    g_byte_array_append(r->payload, g_bytes_get_data(fields, NULL),
                        (guint)g_bytes_get_size(fields));
}

void sb_end(SbChannel *c, uint32_t flags)
{
    SbRecord *r = sb_add(c, STREAM_REC_END, NULL, 0);
    r->auto_end = true;
    r->end_flags = flags;
}

void sb_pages(SbChannel *c, uint32_t block, uint64_t first, uint32_t npages, uint64_t sent,
              uint64_t zero, uint32_t pass)
{
    uint64_t words[2] = { sent, 0 }, zwords[2] = { zero, 0 };
    uint8_t prefix[16 + 16 * (STREAM_MAX_BATCH / 64)];
    g_assert_cmpuint(npages, <=, 64);
    stream_pages_prefix_encode(block, npages, first, words, zwords, prefix);
    SbRecord *r = sb_add(c, STREAM_REC_PAGES, prefix, stream_pages_prefix(npages));
    uint8_t page[4096];
    for (uint32_t i = 0; i < npages; i++) {
        if (!(sent >> i & 1) || (zero >> i & 1))
            continue;
        memset(page, sb_page_byte(block, first + i, pass), sizeof(page));
        g_byte_array_append(r->payload, page, sizeof(page));
    }
}

GBytes *sb_assemble(SbChannel *c)
{
    GByteArray *out = g_byte_array_new();
    uint8_t hdr[STREAM_HEADER_SIZE];
    if (c->index == 0)
        stream_header_encode(&c->h, hdr);
    else
        stream_channel_header_encode(c->index, c->h.session, hdr);
    g_byte_array_append(out, hdr, sizeof(hdr));
    g_autoptr(StreamChain) chain = stream_chain_new();
    for (guint i = 0; i < c->recs->len; i++) {
        SbRecord *r = c->recs->pdata[i];
        if (r->auto_end) {
            uint8_t e[24];
            stream_end_encode(&(StreamEnd){ .flags = r->end_flags,
                                            .records = stream_chain_records(chain),
                                            .chain = stream_chain_digest(chain) },
                              e);
            g_byte_array_set_size(r->payload, 0);
            g_byte_array_append(r->payload, e, sizeof(e));
        }
        struct iovec iov = { r->payload->data, r->payload->len };
        uint8_t rh[STREAM_RECORD_HEADER];
        stream_record_header_make(r->type, i, &iov, 1, rh);
        uint64_t sum;
        memcpy(&sum, rh + 16, 8);
        stream_chain_add(chain, GUINT64_FROM_LE(sum));
        r->offset = out->len;
        g_byte_array_append(out, rh, sizeof(rh));
        g_byte_array_append(out, r->payload->data, r->payload->len);
    }
    return g_byte_array_free_to_bytes(out);
}

SbChannel *sb_good(void)
{
    StreamHeader h = sb_header(1);
    SbChannel *c = sb_new(0, &h);
    sb_config(c, 1);
    sb_ram_blocks(c);
    /* pass 1: block 0 pages 0-4 and 7-9 data, 5 zero, 6 not sent; block 1 pages 0-2 */
    sb_pages(c, 0, 0, 10, 0x3bf, 0x020, 1);
    sb_pages(c, 1, 0, 3, 0x7, 0, 1);
    sb_sync(c, 1, false);
    /* pass 2: block 0 page 2 rewritten, page 3 became zero */
    sb_pages(c, 0, 2, 2, 0x3, 0x2, 2);
    sb_sync(c, 2, true);
    sb_device(c, "cpu", 0, 1);
    sb_device(c, "pic", 0, 2);
    sb_end(c, STREAM_END_SOURCE_RUNNING);
    return c;
}
