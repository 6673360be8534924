/*
 * Writes the seed corpus of fuzz-stream into a directory (argv[1]): small streams,
 * valid ones and ones with one rule broken (re-sealed, so only that rule catches
 * them), and two-channel inputs in the split form fuzz-stream.c reads (two bytes
 * giving the split, then the main channel, then channel 1). Not run by the tests:
 * rerun it by hand when the protocol changes, and commit the result.
 *
 *   ninja -C build tests/fuzz/gen-corpus-stream && build/tests/fuzz/gen-corpus-stream \
 *       tests/fuzz/corpus-stream
 */
#include <stdio.h>
#include <string.h>

#include "streambuild.h"

static const char *dir;

static void save(const char *name, GBytes *a, GBytes *b)
{
    g_autoptr(GByteArray) out = g_byte_array_new();
    if (b) {
        /* fuzz-stream: split = 2 + (prefix % (size - 2)) lands on the channel boundary */
        size_t split = 2 + g_bytes_get_size(a);
        uint16_t prefix = (uint16_t)(split - 2);
        uint8_t le[2] = { (uint8_t)prefix, (uint8_t)(prefix >> 8) };
        g_byte_array_append(out, le, 2);
    }
    g_byte_array_append(out, g_bytes_get_data(a, NULL), (guint)g_bytes_get_size(a));
    if (b)
        g_byte_array_append(out, g_bytes_get_data(b, NULL), (guint)g_bytes_get_size(b));
    g_autofree char *path = g_build_filename(dir, name, NULL);
    g_autoptr(GError) error = NULL;
    if (!g_file_set_contents(path, (const char *)out->data, out->len, &error)) {
        fprintf(stderr, "%s\n", error->message);
        exit(1);
    }
    printf("%s: %u bytes\n", path, out->len);
}

/* A small valid stream: 2 data pages, 2 zero pages, 2 passes, 1 device. */
static SbChannel *small(uint32_t channels)
{
    StreamHeader h = sb_header(channels);
    SbChannel *c = sb_new(0, &h);
    sb_config(c, 1);
    sb_ram_blocks(c);
    sb_pages(c, 0, 0, 3, 0x7, 0x2, 1);
    sb_sync(c, 1, false);
    sb_pages(c, 1, 15, 1, 0x1, 0x1, 2);
    sb_sync(c, 2, true);
    sb_device(c, "cpu", 0, 1);
    sb_end(c, STREAM_END_SOURCE_RUNNING);
    return c;
}

static void save1(const char *name, SbChannel *c)
{
    g_autoptr(GBytes) b = sb_assemble(c);
    save(name, b, NULL);
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s DIR\n", argv[0]);
        return 2;
    }
    dir = argv[1];
    g_mkdir_with_parents(dir, 0755);

    g_autoptr(SbChannel) good = small(1);
    save1("valid.strm", good);

    g_autoptr(SbChannel) early = small(1);
    sb_device(early, "early", 0, 1);
    g_ptr_array_insert(early->recs, 3, g_ptr_array_steal_index(early->recs, early->recs->len - 1));
    save1("bad-device-before-final.strm", early);

    g_autoptr(SbChannel) outside = small(1);
    sb_pages(outside, 1, 15, 2, 0x1, 0, 1);
    g_ptr_array_insert(outside->recs, 3,
                       g_ptr_array_steal_index(outside->recs, outside->recs->len - 1));
    save1("bad-pages-outside.strm", outside);

    g_autoptr(SbChannel) twice = small(1);
    sb_device(twice, "cpu", 0, 1);
    g_ptr_array_insert(twice->recs, 7, g_ptr_array_steal_index(twice->recs, twice->recs->len - 1));
    save1("bad-device-twice.strm", twice);

    g_autoptr(SbChannel) after = small(1);
    sb_sync(after, 3, true);
    save1("bad-record-after-end.strm", after);

    g_autoptr(SbChannel) chain = small(1);
    SbRecord *end = chain->recs->pdata[chain->recs->len - 1];
    end->auto_end = false;
    uint8_t e[24];
    stream_end_encode(&(StreamEnd){ .records = 7, .chain = 1 }, e);
    g_byte_array_append(end->payload, e, sizeof(e));
    save1("bad-end-chain.strm", chain);

    /* Two channels: passes spread over both. */
    g_autoptr(SbChannel) m = small(2);
    StreamHeader h = sb_header(2);
    g_autoptr(SbChannel) x = sb_new(1, &h);
    sb_pages(x, 0, 5, 2, 0x3, 0x1, 1);
    sb_sync(x, 1, false);
    sb_pages(x, 0, 0, 1, 0x1, 0, 2);
    sb_sync(x, 2, true);
    sb_end(x, 0);
    g_autoptr(GBytes) mb = sb_assemble(m), xb = sb_assemble(x);
    save("valid-2ch.strm", mb, xb);

    g_autoptr(SbChannel) x2 = sb_new(1, &h);
    sb_sync(x2, 1, true);
    sb_end(x2, 0);
    g_autoptr(GBytes) x2b = sb_assemble(x2);
    save("bad-2ch-fewer-passes.strm", mb, x2b);
    return 0;
}
