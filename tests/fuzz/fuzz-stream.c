/*
 * Fuzz target for the migration stream receiver (migration/receiver.h,
 * docs/PROTOCOL.md). The destination has the two RAM blocks of
 * tests/unit/streambuild.c ("ram-below-4g", 64 pages at 0; "ram-above-4g", 16
 * pages at 4 GiB). The input is used three ways:
 *  1. as the main channel, unchanged (no extra channels can be accepted);
 *  2. "re-sealed": the header's checksum, and every record's length (cut to what
 *     is left), seq, checksum and END count/chain are recomputed, with channels
 *     forced to 1, so mutations get past the checksums to the rules behind them;
 *  3. the same with two channels: the first two bytes say where the input splits
 *     into the main channel and channel 1 (whose header is re-sealed as channel 1
 *     of the main channel's session); exercises the threads and the barrier.
 *
 * `meson test` replays corpus-stream/ (gen-corpus-stream.c writes it). A libFuzzer
 * build, outside meson (as build-libfuzzer.sh does for fuzz-format):
 *   clang -std=c17 -g -O1 -D_GNU_SOURCE -DG_LOG_DOMAIN='"vmsnap"' \
 *       -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
 *       -Iformat -Iinclude -Iio -Imigration -I. \
 *       $(pkg-config --cflags --libs glib-2.0 gio-2.0 libxxhash) \
 *       $(find format -name '*.c') io/stream.c migration/receiver.c \
 *       migration/receiver_channel.c tests/fuzz/fuzz-stream.c -o /tmp/fuzz-stream
 *   /tmp/fuzz-stream /tmp/corpus tests/fuzz/corpus-stream -max_len=40000
 */
#include <stdio.h>
#include <string.h>
#include <xxhash.h>

#include "receiver.h"
#include "stream_format.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define PAGES0 64
#define PAGES1 16

static VmsnapRamBlock blocks[2] = {
    { .name = "ram-below-4g",
      .gpa = 0,
      .size = PAGES0 * 4096,
      .page_size = 4096,
      .backing_fd = -1 },
    { .name = "ram-above-4g",
      .gpa = 1ull << 32,
      .size = PAGES1 * 4096,
      .page_size = 4096,
      .backing_fd = -1 },
};

static bool accept_config(void *opaque, GBytes *fields, uint32_t version, const uint8_t vm_uuid[16],
                          bool validate_uuid, GError **error)
{
    return true;
}

static GBytes *next_channel;

static VStream *accept_channel(void *opaque, GError **error)
{
    if (!next_channel) {
        g_set_error(error, G_IO_ERROR, G_IO_ERROR_TIMED_OUT, "fuzz: no more channels");
        return NULL;
    }
    VStream *s = vstream_mem_new(NULL, next_channel, "fuzz-ch1");
    next_channel = NULL;
    return s;
}

static void receive(GBytes *main, GBytes *extra)
{
    if (!blocks[0].host) {
        blocks[0].host = g_malloc0(blocks[0].size);
        blocks[1].host = g_malloc0(blocks[1].size);
    }
    next_channel = extra;
    ReceiverHooks hooks = { .config = accept_config, .accept_channel = accept_channel };
    g_autoptr(GError) error = NULL;
    Receiver *r = receiver_new(vstream_mem_new(NULL, main, "fuzz"), blocks, 2, &hooks);
    bool ok = receiver_run(r, &error);
#ifdef FUZZ_DEBUG
    fprintf(stderr, "%s: %s\n", extra ? "2 channels" : "1 channel", ok ? "ok" : error->message);
#endif
    if (ok == (error != NULL))
        __builtin_trap(); /* every refusal has a reason, and success none */
    if (ok) {
        unsigned n;
        const ReceivedSection *dev = receiver_devices(r, &n);
        for (unsigned i = 0; i < n; i++)
            if (!dev[i].name[0] || !vmsnap_fields_check(g_bytes_get_data(dev[i].fields, NULL),
                                                        g_bytes_get_size(dev[i].fields), NULL))
                __builtin_trap();
    }
    receiver_free(r);
    next_channel = NULL;
}

static void put32(uint8_t *p, uint32_t v)
{
    v = GUINT32_TO_LE(v);
    memcpy(p, &v, 4);
}

static void put64(uint8_t *p, uint64_t v)
{
    v = GUINT64_TO_LE(v);
    memcpy(p, &v, 8);
}

static uint32_t get32(const uint8_t *p)
{
    uint32_t v;
    memcpy(&v, p, 4);
    return GUINT32_FROM_LE(v);
}

/* Re-seals one channel in place (see 2. above). index 0: the main channel. */
static void reseal(uint8_t *buf, size_t len, uint32_t index, uint32_t channels,
                   const uint8_t *session)
{
    if (len < STREAM_HEADER_SIZE)
        return;
    if (index == 0) {
        memcpy(buf, STREAM_MAGIC, 8);
        put32(buf + 16, channels);
    } else {
        memcpy(buf, STREAM_CHANNEL_MAGIC, 8);
        put32(buf + 12, index);
        memcpy(buf + 16, session, 16);
    }
    put32(buf + 60, (uint32_t)XXH3_64bits(buf, 60));
    g_autoptr(StreamChain) chain = stream_chain_new();
    size_t pos = STREAM_HEADER_SIZE;
    for (uint32_t seq = 0; pos + STREAM_RECORD_HEADER <= len; seq++) {
        uint8_t *h = buf + pos, *payload = h + STREAM_RECORD_HEADER;
        size_t left = len - pos - STREAM_RECORD_HEADER;
        uint32_t length = MIN(get32(h + 8), (uint32_t)MIN(left, STREAM_MAX_PAYLOAD));
        uint32_t type = get32(h);
        if (type == STREAM_REC_END && length == 24) {
            put64(payload + 8, stream_chain_records(chain));
            put64(payload + 16, stream_chain_digest(chain));
        }
        struct iovec iov = { payload, length };
        uint8_t fresh[STREAM_RECORD_HEADER];
        stream_record_header_make(type, seq, &iov, 1, fresh);
        memcpy(fresh + 12, h + 12, 4); /* keep the reserved field: its own rule */
        memcpy(h, fresh, sizeof(fresh));
        uint64_t sum;
        memcpy(&sum, fresh + 16, 8);
        stream_chain_add(chain, GUINT64_FROM_LE(sum));
        pos += STREAM_RECORD_HEADER + length;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    g_autoptr(GBytes) plain = g_bytes_new(data, size);
    receive(plain, NULL);

    g_autofree uint8_t *copy = g_memdup2(data, size);
    reseal(copy, size, 0, 1, NULL);
    g_autoptr(GBytes) sealed = g_bytes_new(copy, size);
    receive(sealed, NULL);

    if (size >= 2 + 2 * STREAM_HEADER_SIZE) {
        size_t split = 2 + (size_t)(data[0] | data[1] << 8) % (size - 2);
        split = CLAMP(split, 2 + STREAM_HEADER_SIZE, size - STREAM_HEADER_SIZE);
        g_autofree uint8_t *m = g_memdup2(data + 2, split - 2);
        g_autofree uint8_t *x = g_memdup2(data + split, size - split);
        reseal(m, split - 2, 0, 2, NULL);
        reseal(x, size - split, 1, 2, m + 40);
        g_autoptr(GBytes) mb = g_bytes_new(m, split - 2);
        g_autoptr(GBytes) xb = g_bytes_new(x, size - split);
        receive(mb, xb);
    }
    return 0;
}
