/* The migration stream: codec (format/stream_format.h), writer and receiver
 * (migration/stream_writer.h, migration/receiver.h), docs/PROTOCOL.md. */
#include <errno.h>
#include <inttypes.h>
#include <string.h>
#include <vmsnap/fields.h>
#include <xxhash.h>

#include "receiver.h"
#include "stream_writer.h"
#include "streambuild.h"

static void assert_contains(const char *haystack, const char *needle)
{
    if (strstr(haystack, needle) == NULL)
        g_printerr("'%s'\n  does not contain\n'%s'\n", haystack, needle);
    g_assert_nonnull(strstr(haystack, needle));
}

/* ---- destination memory ---- */

#define GARBAGE 0xEE /* what destination memory holds before the stream */

typedef struct Dest {
    VmsnapRamBlock blocks[SB_BLOCKS];
} Dest;

static void dest_init(Dest *d)
{
    memset(d, 0, sizeof(*d));
    for (unsigned i = 0; i < SB_BLOCKS; i++) {
        g_strlcpy(d->blocks[i].name, sb_blocks[i].name, sizeof(d->blocks[i].name));
        d->blocks[i].gpa = sb_blocks[i].gpa;
        d->blocks[i].size = sb_blocks[i].size;
        d->blocks[i].page_size = 4096;
        d->blocks[i].host = g_malloc(sb_blocks[i].size);
        memset(d->blocks[i].host, GARBAGE, sb_blocks[i].size);
        d->blocks[i].backing_fd = -1;
    }
}

static void dest_clear(Dest *d)
{
    for (unsigned i = 0; i < SB_BLOCKS; i++)
        g_free(d->blocks[i].host);
}

/* Every byte of the page is v. */
static bool page_is(const Dest *d, unsigned block, uint64_t page, uint8_t v)
{
    const uint8_t *p = d->blocks[block].host + page * 4096;
    for (unsigned i = 0; i < 4096; i++)
        if (p[i] != v)
            return false;
    return true;
}

/* What sb_good() leaves in memory. */
static void check_good_memory(const Dest *d)
{
    for (uint64_t p = 0; p < 64; p++) {
        uint8_t want = GARBAGE;
        if (p <= 4 || (p >= 7 && p <= 9))
            want = sb_page_byte(0, p, 1);
        if (p == 5 || p == 3)
            want = 0;
        if (p == 2)
            want = sb_page_byte(0, 2, 2);
        if (!page_is(d, 0, p, want))
            g_error("block 0 page %" PRIu64 ": expected 0x%02x, found 0x%02x", p, want,
                    d->blocks[0].host[p * 4096]);
    }
    for (uint64_t p = 0; p < 16; p++)
        g_assert_true(page_is(d, 1, p, p < 3 ? sb_page_byte(1, p, 1) : GARBAGE));
}

/* ---- a VStream that serves bytes slowly or blocks (multi-channel tests) ---- */

typedef struct TestStream {
    VStream base;
    GBytes *in;
    size_t pos;
    size_t delay_at; /* first read at or after this position sleeps delay_ms */
    unsigned delay_ms;
    size_t block_at; /* reads at or after this position wait for `release` */
    gint *release;   /* then return EOF */
    gint *freed;     /* set when the stream is freed */
} TestStream;

static ssize_t ts_read(VStream *vs, void *buf, size_t len)
{
    TestStream *s = (TestStream *)vs;
    size_t size = g_bytes_get_size(s->in);
    if (s->release && s->pos >= s->block_at) {
        while (!g_atomic_int_get(s->release))
            g_usleep(1000);
        return 0;
    }
    if (s->delay_ms && s->pos >= s->delay_at) {
        g_usleep(s->delay_ms * 1000ul);
        s->delay_ms = 0;
    }
    size_t n = MIN(len, size - s->pos);
    if (s->release)
        n = MIN(n, s->block_at - s->pos);
    memcpy(buf, (const uint8_t *)g_bytes_get_data(s->in, NULL) + s->pos, n);
    s->pos += n;
    return (ssize_t)n;
}

static ssize_t ts_writev(VStream *vs, const struct iovec *iov, int iovcnt)
{
    return -EPIPE;
}

static void ts_free(VStream *vs)
{
    TestStream *s = (TestStream *)vs;
    if (s->freed)
        g_atomic_int_set(s->freed, 1);
    g_bytes_unref(s->in);
    g_free(s);
}

static const VStreamOps ts_ops = { .writev = ts_writev, .read = ts_read, .free = ts_free };

static TestStream *ts_new(GBytes *in, const char *name)
{
    TestStream *s = g_new0(TestStream, 1);
    s->base.ops = &ts_ops;
    s->base.name = g_strdup(name);
    s->in = g_bytes_ref(in);
    return s;
}

/* ---- receiving ---- */

typedef struct Hooks {
    unsigned config_calls;
    bool refuse;
    uint32_t config_version;
    bool validate_uuid;
    GQueue channels; /* VStream * */
} Hooks;

static bool hook_config(void *opaque, GBytes *fields, uint32_t version, const uint8_t uuid[16],
                        bool validate_uuid, GError **error)
{
    Hooks *h = opaque;
    h->config_calls++;
    h->config_version = version;
    h->validate_uuid = validate_uuid;
    g_assert_cmpuint(uuid[0], ==, 0xa0);
    g_assert_true(
        vmsnap_fields_check(g_bytes_get_data(fields, NULL), g_bytes_get_size(fields), NULL));
    if (h->refuse) {
        g_set_error(error, G_IO_ERROR, G_IO_ERROR_NOT_SUPPORTED,
                    "config: memory is 327680 bytes, this VM has 1048576");
        return false;
    }
    return true;
}

static VStream *hook_accept(void *opaque, GError **error)
{
    Hooks *h = opaque;
    VStream *s = g_queue_pop_head(&h->channels);
    if (!s)
        g_set_error(error, G_IO_ERROR, G_IO_ERROR_TIMED_OUT, "no more connections");
    return s;
}

static void hooks_clear(Hooks *h)
{
    VStream *s;
    while ((s = g_queue_pop_head(&h->channels)))
        vstream_free(s);
}

/* Receives `bytes` (main channel "test") into d; returns the receiver. */
static Receiver *receive(GBytes *bytes, Dest *d, Hooks *hooks, bool *ok, GError **error)
{
    ReceiverHooks rh = { .config = hook_config, .accept_channel = hook_accept, .opaque = hooks };
    Receiver *r = receiver_new(vstream_mem_new(NULL, bytes, "test"), d->blocks, SB_BLOCKS,
                               hooks ? &rh : NULL);
    *ok = receiver_run(r, error);
    return r;
}

/* Receives and expects failure; returns the message. */
static char *receive_fail(GBytes *bytes)
{
    Dest d;
    dest_init(&d);
    Hooks hooks = { 0 };
    GError *error = NULL;
    bool ok;
    Receiver *r = receive(bytes, &d, &hooks, &ok, &error);
    if (ok)
        g_error("the stream was accepted");
    g_assert_nonnull(error);
    char *msg = g_strdup(error->message);
    g_error_free(error);
    receiver_free(r);
    hooks_clear(&hooks);
    dest_clear(&d);
    return msg;
}

/* ---- codec ---- */

static void test_names(void)
{
    static const char *names[] = { "unknown", "CONFIG", "RAM_BLOCKS", "PAGES",
                                   "SYNC",    "DEVICE", "END",        "unknown" };
    for (uint32_t t = 0; t < G_N_ELEMENTS(names); t++)
        g_assert_cmpstr(stream_record_name(t), ==, names[t]);
    g_assert_cmpstr(stream_record_name(UINT32_MAX), ==, "unknown");
}

static void expect_header_error(const uint8_t *buf, int code, const char *needle)
{
    g_autoptr(GError) error = NULL;
    StreamHeader h;
    g_assert_false(stream_header_decode(buf, "s", &h, &error));
    g_assert_error(error, FORMAT_ERROR, code);
    assert_contains(error->message, needle);
    g_assert_true(g_str_has_prefix(error->message, "s: stream header: "));
}

/* Re-seals a header after an edit. */
static void reseal_header(uint8_t *buf)
{
    uint32_t sum = GUINT32_TO_LE((uint32_t)XXH3_64bits(buf, 60));
    memcpy(buf + 60, &sum, 4);
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

static void test_header(void)
{
    StreamHeader h = sb_header(3), back;
    h.flags = STREAM_FLAG_LIVE | STREAM_FLAG_VALIDATE_UUID;
    uint8_t buf[STREAM_HEADER_SIZE];
    stream_header_encode(&h, buf);
    g_assert_cmpmem(buf, 8, STREAM_MAGIC, 8);
    g_assert_true(stream_header_decode(buf, "s", &back, NULL));
    g_assert_cmpmem(&h, sizeof(h), &back, sizeof(back));

    uint8_t bad[STREAM_HEADER_SIZE];
    memcpy(bad, buf, sizeof(bad));
    bad[0] ^= 1;
    expect_header_error(bad, FORMAT_ERROR_NOT_SNAPSHOT, "not a vmsnap stream");
    stream_channel_header_encode(1, h.session, bad);
    expect_header_error(bad, FORMAT_ERROR_NOT_SNAPSHOT, "this is an extra channel");
    memcpy(bad, buf, sizeof(bad));
    bad[30] ^= 0x80;
    expect_header_error(bad, FORMAT_ERROR_CORRUPT, "checksum at offset 60 is 0x");
    struct {
        unsigned off;
        uint32_t v;
        int code;
        const char *needle;
    } cases[] = {
        { 8, 2, FORMAT_ERROR_UNSUPPORTED, "version 2 at offset 8, this vmsnap reads version 1" },
        { 8, 0, FORMAT_ERROR_CORRUPT, "version 0 at offset 8" },
        { 12, 4, FORMAT_ERROR_UNSUPPORTED, "unknown flags 0x4 at offset 12" },
        { 16, 0, FORMAT_ERROR_CORRUPT, "channels at offset 16 is 0, expected 1 to 64" },
        { 16, 65, FORMAT_ERROR_CORRUPT, "channels at offset 16 is 65, expected 1 to 64" },
        { 20, 8192, FORMAT_ERROR_UNSUPPORTED, "page_size at offset 20 is 8192, expected 4096" },
    };
    for (unsigned i = 0; i < G_N_ELEMENTS(cases); i++) {
        memcpy(bad, buf, sizeof(bad));
        put32(bad + cases[i].off, cases[i].v);
        reseal_header(bad);
        expect_header_error(bad, cases[i].code, cases[i].needle);
    }
    memcpy(bad, buf, sizeof(bad));
    put32(bad + 16, 64);
    reseal_header(bad);
    g_assert_true(stream_header_decode(bad, "s", &back, NULL));
    g_assert_cmpuint(back.channels, ==, 64);
}

static void test_channel_header(void)
{
    uint8_t session[16], got[16], buf[STREAM_HEADER_SIZE], bad[STREAM_HEADER_SIZE];
    for (unsigned i = 0; i < 16; i++)
        session[i] = (uint8_t)(i * 3);
    stream_channel_header_encode(63, session, buf);
    uint32_t index;
    g_assert_true(stream_channel_header_decode(buf, "c", &index, got, NULL));
    g_assert_cmpuint(index, ==, 63);
    g_assert_cmpmem(got, 16, session, 16);

    struct {
        unsigned off;
        uint32_t v;
        const char *needle;
    } cases[] = {
        { 8, 2, "version 2 at offset 8" },
        { 12, 0, "index at offset 12 is 0, expected 1 to 63" },
        { 12, 64, "index at offset 12 is 64, expected 1 to 63" },
        { 32, 1, "reserved byte at offset 32 is not zero" },
        { 56, 1 << 24, "reserved byte at offset 59 is not zero" },
    };
    for (unsigned i = 0; i < G_N_ELEMENTS(cases); i++) {
        g_autoptr(GError) error = NULL;
        memcpy(bad, buf, sizeof(bad));
        put32(bad + cases[i].off, cases[i].v);
        reseal_header(bad);
        g_assert_false(stream_channel_header_decode(bad, "c", &index, got, &error));
        assert_contains(error->message, cases[i].needle);
        g_assert_true(g_str_has_prefix(error->message, "c: channel header: "));
    }
    g_autoptr(GError) error = NULL;
    memcpy(bad, buf, sizeof(bad));
    bad[20] ^= 4;
    g_assert_false(stream_channel_header_decode(bad, "c", &index, got, &error));
    assert_contains(error->message, "checksum at offset 60");
    g_clear_error(&error);
    StreamHeader h = sb_header(2);
    stream_header_encode(&h, bad);
    g_assert_false(stream_channel_header_decode(bad, "c", &index, got, &error));
    assert_contains(error->message, "this is a main channel");
}

static void test_record_header(void)
{
    uint8_t payload[100], hb[STREAM_RECORD_HEADER];
    for (unsigned i = 0; i < sizeof(payload); i++)
        payload[i] = (uint8_t)i;
    /* The checksum of split iovecs is the checksum of their concatenation. */
    struct iovec one = { payload, sizeof(payload) };
    struct iovec three[3] = { { payload, 10 }, { payload + 10, 0 }, { payload + 10, 90 } };
    uint8_t hb3[STREAM_RECORD_HEADER];
    stream_record_header_make(STREAM_REC_DEVICE, 7, &one, 1, hb);
    stream_record_header_make(STREAM_REC_DEVICE, 7, three, 3, hb3);
    g_assert_cmpmem(hb, sizeof(hb), hb3, sizeof(hb3));

    StreamRecordHeader h;
    g_assert_true(stream_record_header_decode(hb, "s", 2, 1000, &h, NULL));
    g_assert_cmpuint(h.type, ==, STREAM_REC_DEVICE);
    g_assert_cmpuint(h.seq, ==, 7);
    g_assert_cmpuint(h.length, ==, 100);
    g_assert_cmpuint(h.checksum, ==, XXH3_64bits_withSeed(payload, 100, 5ull << 32 | 7));
    g_assert_true(stream_record_check(&h, payload, "s", 2, 1000, NULL));

    g_autoptr(GError) error = NULL;
    payload[50] ^= 1;
    g_assert_false(stream_record_check(&h, payload, "s", 2, 1000, &error));
    assert_contains(error->message, "s: channel 2, record 7 (DEVICE) at offset 1000: bad "
                                    "checksum: the header says 0x");
    g_clear_error(&error);
    payload[50] ^= 1;
    /* The checksum is bound to type and seq. */
    StreamRecordHeader h2 = h;
    h2.seq = 8;
    g_assert_false(stream_record_check(&h2, payload, "s", 2, 1000, NULL));
    h2 = h;
    h2.type = STREAM_REC_CONFIG;
    g_assert_false(stream_record_check(&h2, payload, "s", 2, 1000, NULL));

    uint8_t bad[STREAM_RECORD_HEADER];
    memcpy(bad, hb, sizeof(bad));
    put32(bad, 0);
    g_assert_false(stream_record_header_decode(bad, "s", 0, 64, &h, &error));
    g_assert_cmpstr(error->message, ==,
                    "s: channel 0, record 7 (unknown type 0) at offset 64: unknown record type 0");
    g_clear_error(&error);
    put32(bad, 7);
    g_assert_false(stream_record_header_decode(bad, "s", 0, 64, &h, &error));
    assert_contains(error->message, "(unknown type 7)");
    g_clear_error(&error);
    memcpy(bad, hb, sizeof(bad));
    put32(bad + 12, 0x100);
    g_assert_false(stream_record_header_decode(bad, "s", 0, 64, &h, &error));
    g_assert_cmpstr(error->message, ==,
                    "s: channel 0, record 7 (DEVICE) at offset 64: reserved "
                    "field is 0x100, must be 0");
    g_clear_error(&error);
    memcpy(bad, hb, sizeof(bad));
    put32(bad + 8, STREAM_MAX_PAYLOAD + 1);
    g_assert_false(stream_record_header_decode(bad, "s", 0, 64, &h, &error));
    g_assert_cmpstr(error->message, ==,
                    "s: channel 0, record 7 (DEVICE) at offset 64: length "
                    "16781313 is over the limit of 16781312 bytes");
    put32(bad + 8, STREAM_MAX_PAYLOAD);
    g_assert_true(stream_record_header_decode(bad, "s", 0, 64, &h, NULL));
}

/* A PAGES payload for the pages_decode test: npages up to 128. */
static GByteArray *pages_payload(uint32_t block, uint64_t first, uint32_t npages,
                                 const uint64_t sent[2], const uint64_t zero[2], unsigned ndata)
{
    GByteArray *a = g_byte_array_new();
    g_byte_array_set_size(a, (guint)(stream_pages_prefix(npages) + ndata * 4096u));
    memset(a->data, 0x5a, a->len);
    stream_pages_prefix_encode(block, npages, first, sent, zero, a->data);
    return a;
}

/* sb_blocks with a larger block 0 (256 pages). */
static FormatBlock big_blocks[SB_BLOCKS];

static void expect_pages_error(GByteArray *a, const char *msg)
{
    g_autoptr(GError) error = NULL;
    StreamPages pg;
    g_assert_false(stream_pages_decode(a->data, a->len, big_blocks, SB_BLOCKS, &pg, &error));
    g_assert_error(error, FORMAT_ERROR, FORMAT_ERROR_CORRUPT);
    g_assert_cmpstr(error->message, ==, msg);
    g_byte_array_unref(a);
}

static void test_pages_decode(void)
{
    memcpy(big_blocks, sb_blocks, sizeof(big_blocks));
    big_blocks[0].size = 256 * 4096;
    g_assert_cmpuint(stream_pages_prefix(1), ==, 32);
    g_assert_cmpuint(stream_pages_prefix(64), ==, 32);
    g_assert_cmpuint(stream_pages_prefix(65), ==, 48);
    g_assert_cmpuint(stream_pages_prefix(1024), ==, 16 + 16 * 16);

    uint64_t sent[2] = { 0xffffffffffffffffull, 0x3 }, zero[2] = { 0x1, 0x2 };
    g_autoptr(GByteArray) ok = pages_payload(0, 0, 66, sent, zero, 64);
    StreamPages pg;
    g_assert_true(stream_pages_decode(ok->data, ok->len, big_blocks, SB_BLOCKS, &pg, NULL));
    g_assert_cmpuint(pg.block, ==, 0);
    g_assert_cmpuint(pg.npages, ==, 66);
    g_assert_cmpuint(pg.ndata, ==, 64);
    g_assert_true(stream_bit(pg.sent, 65));
    g_assert_true(stream_bit(pg.zero, 65));
    g_assert_false(stream_bit(pg.zero, 64));
    g_assert_true(pg.data == ok->data + 48);

    /* Nothing sent is allowed: an empty batch. */
    uint64_t none[2] = { 0, 0 };
    g_autoptr(GByteArray) empty = pages_payload(1, 15, 1, none, none, 0);
    g_assert_true(stream_pages_decode(empty->data, empty->len, big_blocks, SB_BLOCKS, &pg, NULL));

    GByteArray *a = g_byte_array_new();
    g_byte_array_set_size(a, 15);
    expect_pages_error(a, "payload of 15 bytes is shorter than the 16-byte head");
    expect_pages_error(pages_payload(2, 0, 1, sent, none, 1),
                       "block 2 is outside the RAM_BLOCKS table (2 blocks)");
    a = pages_payload(0, 0, 1, sent, none, 0);
    put32(a->data + 4, 0);
    expect_pages_error(a, "npages is 0, expected 1 to 1024");
    a = pages_payload(0, 0, 1, sent, none, 0);
    put32(a->data + 4, 1025);
    expect_pages_error(a, "npages is 1025, expected 1 to 1024");
    uint64_t one[2] = { 1, 0 };
    expect_pages_error(pages_payload(1, 10, 7, one, none, 1),
                       "pages [10, 17) are outside block 1 'ram-above-4g' (16 pages)");
    expect_pages_error(pages_payload(1, UINT64_MAX, 2, one, none, 1),
                       "pages [18446744073709551615, 1) are outside block 1 'ram-above-4g' (16 "
                       "pages)");
    a = pages_payload(0, 0, 66, sent, zero, 0);
    g_byte_array_set_size(a, 40);
    expect_pages_error(a, "payload of 40 bytes is shorter than the 48-byte prefix for 66 pages");
    uint64_t past[2] = { 1, 0x4 };
    expect_pages_error(pages_payload(0, 0, 66, past, none, 2),
                       "sent bitmap has bits set past npages 66");
    expect_pages_error(pages_payload(0, 0, 66, one, past, 0),
                       "zero bitmap has bits set past npages 66");
    uint64_t z5[2] = { 1ull << 5, 0 };
    expect_pages_error(pages_payload(0, 0, 10, one, z5, 0),
                       "page 5 is in the zero bitmap but not sent");
    expect_pages_error(pages_payload(0, 0, 66, sent, zero, 63),
                       "payload is 258096 bytes, 64 data pages need 262192");
    a = pages_payload(0, 0, 66, sent, zero, 64);
    g_byte_array_append(a, (const uint8_t *)"x", 1);
    expect_pages_error(a, "payload is 262193 bytes, 64 data pages need 262192");
}

static void test_small_payloads(void)
{
    g_autoptr(GError) error = NULL;
    uint8_t buf[64] = { 0 };

    StreamSync s = { .pass = 3, .flags = STREAM_SYNC_FINAL, .dirty_pages = 1ull << 40 }, sb;
    stream_sync_encode(&s, buf);
    g_assert_true(stream_sync_decode(buf, 16, &sb, NULL));
    g_assert_cmpuint(sb.pass, ==, s.pass);
    g_assert_cmpuint(sb.flags, ==, s.flags);
    g_assert_cmpuint(sb.dirty_pages, ==, s.dirty_pages);
    g_assert_false(stream_sync_decode(buf, 17, &sb, &error));
    g_assert_cmpstr(error->message, ==, "payload is 17 bytes, expected 16");
    g_clear_error(&error);
    put32(buf + 4, 3);
    g_assert_false(stream_sync_decode(buf, 16, &sb, &error));
    g_assert_cmpstr(error->message, ==, "unknown flags 0x2");
    g_clear_error(&error);
    put32(buf, 0);
    g_assert_false(stream_sync_decode(buf, 16, &sb, &error));
    g_assert_cmpstr(error->message, ==, "pass is 0 (passes count from 1)");
    g_clear_error(&error);

    StreamEnd e = { .flags = STREAM_END_SOURCE_RUNNING, .records = 12, .chain = 0x1234 }, eb;
    stream_end_encode(&e, buf);
    g_assert_true(stream_end_decode(buf, 24, &eb, NULL));
    g_assert_cmpuint(eb.flags, ==, e.flags);
    g_assert_cmpuint(eb.records, ==, e.records);
    g_assert_cmpuint(eb.chain, ==, e.chain);
    g_assert_false(stream_end_decode(buf, 23, &eb, &error));
    g_assert_cmpstr(error->message, ==, "payload is 23 bytes, expected 24");
    g_clear_error(&error);
    put32(buf + 4, 1);
    g_assert_false(stream_end_decode(buf, 24, &eb, &error));
    g_assert_cmpstr(error->message, ==, "reserved field at payload offset 4 is not zero");
    g_clear_error(&error);
    put32(buf, 2);
    g_assert_false(stream_end_decode(buf, 24, &eb, &error));
    g_assert_cmpstr(error->message, ==, "unknown flags 0x2");
    g_clear_error(&error);

    /* DEVICE prefix */
    uint32_t inst, ver;
    char name[FORMAT_SECTION_NAME_MAX + 1];
    memset(buf, 0, sizeof(buf));
    stream_device_prefix_encode(3, 2, "serial", buf);
    g_assert_true(stream_device_prefix_decode(buf, 32, &inst, &ver, name, NULL));
    g_assert_cmpstr(name, ==, "serial");
    g_assert_cmpuint(inst, ==, 3);
    g_assert_cmpuint(ver, ==, 2);
    g_assert_false(stream_device_prefix_decode(buf, 31, &inst, &ver, name, &error));
    g_assert_cmpstr(error->message, ==, "payload of 31 bytes is shorter than the 32-byte prefix");
    g_clear_error(&error);
    buf[32] = 99; /* a field kind that does not exist */
    g_assert_false(stream_device_prefix_decode(buf, 40, &inst, &ver, name, &error));
    assert_contains(error->message, "device 'serial' instance 3: fields after the 32-byte "
                                    "prefix: ");
    g_clear_error(&error);
    buf[10] = '/';
    g_assert_false(stream_device_prefix_decode(buf, 32, &inst, &ver, name, &error));
    g_assert_cmpstr(error->message, ==,
                    "device name at payload offset 8: name has a character "
                    "outside [A-Za-z0-9_.-]");
    g_clear_error(&error);
    memset(buf + 8, 0, 24);
    g_assert_false(stream_device_prefix_decode(buf, 32, &inst, &ver, name, &error));
    g_assert_cmpstr(error->message, ==, "device name at payload offset 8: name is empty");
    g_clear_error(&error);
    memset(buf + 8, 'a', 24);
    g_assert_false(stream_device_prefix_decode(buf, 32, &inst, &ver, name, &error));
    g_assert_cmpstr(error->message, ==,
                    "device name at payload offset 8: name is not "
                    "NUL-terminated");
    g_clear_error(&error);
    stream_device_prefix_encode(0, 0, "cpu", buf);
    g_assert_false(stream_device_prefix_decode(buf, 32, &inst, &ver, name, &error));
    g_assert_cmpstr(error->message, ==, "device 'cpu': version is 0");
    g_clear_error(&error);

    /* CONFIG prefix */
    uint32_t cv;
    memset(buf, 0, sizeof(buf));
    stream_config_prefix_encode(1, buf);
    g_assert_true(stream_config_decode(buf, 8, &cv, NULL));
    g_assert_cmpuint(cv, ==, 1);
    g_assert_false(stream_config_decode(buf, 7, &cv, &error));
    g_assert_cmpstr(error->message, ==, "payload of 7 bytes is shorter than the 8-byte prefix");
    g_clear_error(&error);
    buf[8] = 11; /* END with nothing open */
    g_assert_false(stream_config_decode(buf, 10, &cv, &error));
    assert_contains(error->message, "fields after the 8-byte prefix: ");
    g_clear_error(&error);
    put32(buf + 4, 1);
    g_assert_false(stream_config_decode(buf, 8, &cv, &error));
    g_assert_cmpstr(error->message, ==, "reserved field at payload offset 4 is not zero");
    g_clear_error(&error);
    put32(buf, 0);
    g_assert_false(stream_config_decode(buf, 8, &cv, &error));
    g_assert_cmpstr(error->message, ==, "config_version is 0");
    g_clear_error(&error);

    /* RAM_BLOCKS: the file's table with pages_offset 0 */
    FormatBlock *blocks;
    unsigned n;
    g_autoptr(GBytes) t = format_ram_blocks_encode(sb_blocks, SB_BLOCKS);
    g_assert_true(stream_ram_blocks_decode(g_bytes_get_data(t, NULL), g_bytes_get_size(t), &blocks,
                                           &n, NULL));
    g_assert_cmpuint(n, ==, 2);
    g_assert_cmpstr(blocks[1].name, ==, "ram-above-4g");
    g_free(blocks);
    FormatBlock moved[SB_BLOCKS];
    memcpy(moved, sb_blocks, sizeof(moved));
    moved[1].pages_offset = 1 << 20;
    g_autoptr(GBytes) t2 = format_ram_blocks_encode(moved, SB_BLOCKS);
    g_assert_false(stream_ram_blocks_decode(g_bytes_get_data(t2, NULL), g_bytes_get_size(t2),
                                            &blocks, &n, &error));
    g_assert_cmpstr(error->message, ==,
                    "RAM block 1 'ram-above-4g': pages_offset is 1048576, "
                    "must be 0");
    g_assert_null(blocks);
    g_clear_error(&error);
    moved[1].pages_offset = 0;
    moved[1].gpa = 4096;
    g_autoptr(GBytes) t3 = format_ram_blocks_encode(moved, SB_BLOCKS);
    g_assert_false(stream_ram_blocks_decode(g_bytes_get_data(t3, NULL), g_bytes_get_size(t3),
                                            &blocks, &n, &error));
    assert_contains(error->message, "overlaps block 0 'ram-below-4g'");
}

static void test_chain(void)
{
    g_autoptr(StreamChain) c = stream_chain_new();
    g_assert_cmpuint(stream_chain_records(c), ==, 0);
    g_assert_cmpuint(stream_chain_digest(c), ==, XXH3_64bits(NULL, 0));
    uint8_t le[16];
    put64(le, 0x1122334455667788ull);
    put64(le + 8, 42);
    stream_chain_add(c, 0x1122334455667788ull);
    stream_chain_add(c, 42);
    g_assert_cmpuint(stream_chain_records(c), ==, 2);
    g_assert_cmpuint(stream_chain_digest(c), ==, XXH3_64bits(le, 16));
}

/* vmsnap_fw_raw: pass-through of received fields (vmsnap convert). */
static void test_fields_raw(void)
{
    VmsnapFieldWriter *w = vmsnap_fw_new();
    vmsnap_fw_u32(w, "a", 1);
    vmsnap_fw_struct_begin(w, "s");
    vmsnap_fw_str(w, "b", "x");
    vmsnap_fw_struct_end(w);
    g_autoptr(GBytes) inner = vmsnap_fw_finish(w, NULL);
    gsize len;
    const uint8_t *data = g_bytes_get_data(inner, &len);

    /* raw + raw == the concatenation, and a typed field after it */
    w = vmsnap_fw_new();
    g_assert_true(vmsnap_fw_raw(w, data, len));
    g_assert_true(vmsnap_fw_raw(w, data, len));
    g_assert_true(vmsnap_fw_raw(w, NULL, 0));
    vmsnap_fw_u8(w, "c", 2);
    g_autoptr(GBytes) two = vmsnap_fw_finish(w, NULL);
    g_assert_cmpuint(g_bytes_get_size(two), ==, 2 * len + 4);
    g_assert_cmpmem(g_bytes_get_data(two, NULL), len, data, len);
    g_assert_cmpmem((const uint8_t *)g_bytes_get_data(two, NULL) + len, len, data, len);

    g_autoptr(GError) error = NULL;
    w = vmsnap_fw_new();
    g_assert_false(vmsnap_fw_raw(w, data, len - 1)); /* ends inside the struct */
    g_assert_null(vmsnap_fw_finish(w, &error));
    g_assert_error(error, VMSNAP_FIELDS_ERROR, VMSNAP_FIELDS_ERROR_USAGE);
    assert_contains(error->message, "raw fields are not well formed: ");
    g_clear_error(&error);
    w = vmsnap_fw_new();
    vmsnap_fw_struct_begin(w, "open");
    g_assert_false(vmsnap_fw_raw(w, data, len));
    g_assert_null(vmsnap_fw_finish(w, &error));
    assert_contains(error->message, "raw fields inside an open struct");
}

/* ---- receiving good streams ---- */

static void test_good(void)
{
    g_autoptr(SbChannel) c = sb_good();
    g_autoptr(GBytes) bytes = sb_assemble(c);
    Dest d;
    dest_init(&d);
    Hooks hooks = { 0 };
    g_autoptr(GError) error = NULL;
    bool ok;
    Receiver *r = receive(bytes, &d, &hooks, &ok, &error);
    g_assert_no_error(error);
    g_assert_true(ok);
    check_good_memory(&d);
    g_assert_cmpuint(hooks.config_calls, ==, 1);
    g_assert_cmpuint(hooks.config_version, ==, 1);
    g_assert_false(hooks.validate_uuid);
    uint32_t version;
    GBytes *config = receiver_config(r, &version);
    g_assert_cmpuint(version, ==, 1);
    SbRecord *cr = c->recs->pdata[0];
    g_assert_cmpmem(g_bytes_get_data(config, NULL), g_bytes_get_size(config), cr->payload->data + 8,
                    cr->payload->len - 8);
    unsigned n;
    const ReceivedSection *dev = receiver_devices(r, &n);
    g_assert_cmpuint(n, ==, 2);
    g_assert_cmpstr(dev[0].name, ==, "cpu");
    g_assert_cmpuint(dev[0].version, ==, 1);
    g_assert_cmpstr(dev[1].name, ==, "pic");
    g_assert_cmpuint(dev[1].version, ==, 2);
    SbRecord *dr = c->recs->pdata[8];
    g_assert_cmpmem(g_bytes_get_data(dev[1].fields, NULL), g_bytes_get_size(dev[1].fields),
                    dr->payload->data + 32, dr->payload->len - 32);
    g_assert_true(receiver_source_running(r));
    g_assert_cmpuint(receiver_passes(r), ==, 2);
    g_assert_cmpuint(receiver_pages(r), ==, 9 + 3 + 2);
    g_assert_cmpuint(receiver_bytes(r), ==, g_bytes_get_size(bytes));
    const VmsnapRamBlock *rb = receiver_ram_blocks(r, &n);
    g_assert_cmpuint(n, ==, 2);
    g_assert_true(rb[0].host == d.blocks[0].host);
    receiver_free(r);
    dest_clear(&d);

    /* Without hooks, and with END's SOURCE_RUNNING clear. */
    SbRecord *end = c->recs->pdata[c->recs->len - 1];
    end->end_flags = 0;
    g_autoptr(GBytes) b2 = sb_assemble(c);
    dest_init(&d);
    r = receive(b2, &d, NULL, &ok, NULL);
    g_assert_true(ok);
    g_assert_false(receiver_source_running(r));
    check_good_memory(&d);
    receiver_free(r);
    dest_clear(&d);
}

/* The receiver maps its own memory when given no blocks (vmsnap convert). */
static void test_own_blocks(void)
{
    g_autoptr(SbChannel) c = sb_good();
    g_autoptr(GBytes) bytes = sb_assemble(c);
    g_autoptr(GError) error = NULL;
    Receiver *r = receiver_new(vstream_mem_new(NULL, bytes, "test"), NULL, 0, NULL);
    g_assert_true(receiver_run(r, &error));
    g_assert_no_error(error);
    unsigned n;
    const VmsnapRamBlock *rb = receiver_ram_blocks(r, &n);
    g_assert_cmpuint(n, ==, 2);
    g_assert_cmpstr(rb[1].name, ==, "ram-above-4g");
    g_assert_cmpuint(rb[1].gpa, ==, 1ull << 32);
    g_assert_cmpuint(rb[1].size, ==, 16 * 4096);
    g_assert_cmpint(rb[1].backing_fd, ==, -1);
    Dest d = { 0 };
    memcpy(d.blocks, rb, sizeof(d.blocks));
    /* Untouched pages of fresh memory are zero, not GARBAGE. */
    for (uint64_t p = 10; p < 64; p++)
        g_assert_true(page_is(&d, 0, p, 0));
    g_assert_true(page_is(&d, 0, 2, sb_page_byte(0, 2, 2)));
    g_assert_true(page_is(&d, 1, 1, sb_page_byte(1, 1, 1)));
    receiver_free(r);
}

/* Receives what a writer wrote into d (initialised here); asserts success. */
static Receiver *receive_written(const GByteArray *out, Dest *d)
{
    dest_init(d);
    g_autoptr(GBytes) bytes = g_bytes_new(out->data, out->len);
    g_autoptr(GError) error = NULL;
    bool ok;
    Receiver *r = receive(bytes, d, NULL, &ok, &error);
    g_assert_no_error(error);
    g_assert_true(ok);
    return r;
}

/* A writer on a memory stream into out (*s, freed by the caller), past its header,
 * CONFIG and RAM_BLOCKS (blocks). */
static StreamWriter *writer_start(GByteArray *out, bool zero_copy, const FormatBlock *blocks,
                                  VStream **s)
{
    *s = vstream_mem_new(out, NULL, "out");
    StreamWriter *w = stream_writer_new(*s, 0, 4096);
    stream_writer_set_zero_copy(w, zero_copy);
    g_autoptr(GError) error = NULL;
    StreamHeader h = sb_header(1);
    g_assert_true(stream_writer_header(w, &h, &error));
    g_assert_true(stream_writer_config(w, 1, NULL, &error));
    g_assert_true(stream_writer_ram_blocks(w, blocks, SB_BLOCKS, &error));
    g_assert_no_error(error);
    return w;
}

/* stream_writer_chunk(): a scanned chunk as PAGES records, the caller's zero verdict,
 * 32-page records when copying (the copy stays in L2) and one record in place. */
static void test_writer_chunk(void)
{
    for (int zero_copy = 0; zero_copy <= 1; zero_copy++) {
        Dest src;
        dest_init(&src);
        uint8_t *host = src.blocks[0].host;
        for (uint64_t p = 0; p < 64; p++)
            memset(host + p * 4096, (int)(p + 1), 4096);
        uint64_t sel = ~0ull & ~(1ull << 7) & ~(1ull << 40); /* 7 and 40 not sent */
        uint64_t zero = (1ull << 3) | (1ull << 33);          /* said zero by the scan */
        memset(host + 3 * 4096, 0, 4096);
        memset(host + 33 * 4096, 0, 4096);

        g_autoptr(GByteArray) out = g_byte_array_new();
        VStream *s;
        g_autoptr(StreamWriter) w = writer_start(out, zero_copy, sb_blocks, &s);
        g_autoptr(GError) error = NULL;
        uint32_t before = stream_writer_records(w);
        g_assert_true(stream_writer_chunk(w, 0, 0, 64, &sel, &zero, host, &error));
        g_assert_cmpuint(stream_writer_records(w) - before, ==, zero_copy ? 1 : 2);
        g_assert_cmpuint(stream_writer_zero_pages(w), ==, 2);
        g_assert_cmpuint(stream_writer_data_pages(w), ==, 60);
        if (!zero_copy) /* copy mode sent what the page held at the call */
            memset(host + 5 * 4096, 0x55, 4096);
        /* Only pages 32..35 of the second window: a record of 4 pages at page 32. */
        uint64_t sel2 = 0xFull << 32, zero2 = 0;
        g_assert_true(stream_writer_chunk(w, 0, 0, 64, &sel2, &zero2, host, &error));
        uint64_t none = 0;
        g_assert_true(stream_writer_chunk(w, 0, 0, 64, &none, &none, host, &error));
        g_assert_cmpuint(stream_writer_records(w) - before, ==, zero_copy ? 2 : 3);
        g_assert_true(stream_writer_sync(w, 1, STREAM_SYNC_FINAL, 0, &error));
        g_assert_true(stream_writer_end(w, 0, &error));
        g_assert_no_error(error);
        vstream_free(s);

        Dest d;
        Receiver *r = receive_written(out, &d);
        if (!zero_copy)
            memset(host + 5 * 4096, 6, 4096);
        for (uint64_t p = 0; p < 64; p++) {
            const uint8_t *got = d.blocks[0].host + p * 4096;
            if (p == 7 || p == 40)
                g_assert_cmpuint(got[0], ==, GARBAGE); /* not sent */
            else
                g_assert_cmpmem(got, 4096, host + p * 4096, 4096);
        }
        receiver_free(r);
        dest_clear(&d);
        dest_clear(&src);
    }
}

/* Streams written by StreamWriter: batching, zero detection, both copy modes. */
static void test_writer(void)
{
    for (int zero_copy = 0; zero_copy <= 1; zero_copy++) {
        /* Source memory: block 0 with data pages and zero pages; block 1 all data. */
        Dest src;
        dest_init(&src);
        for (uint64_t p = 0; p < 64; p++)
            memset(src.blocks[0].host + p * 4096, p % 3 == 0 ? 0 : (int)(p + 1), 4096);
        src.blocks[0].host[18 * 4096 + 4095] = 1; /* non-zero only in its last byte */
        for (uint64_t p = 0; p < 16; p++)
            memset(src.blocks[1].host + p * 4096, (int)(0x80 + p), 4096);

        FormatBlock moved[SB_BLOCKS];
        memcpy(moved, sb_blocks, sizeof(moved));
        moved[0].pages_offset = 1 << 20; /* ignored: sent as 0 */
        g_autoptr(GByteArray) out = g_byte_array_new();
        VStream *s;
        g_autoptr(StreamWriter) w = writer_start(out, zero_copy, moved, &s);
        g_autoptr(GError) error = NULL;
        /* Pass 1: every page, in order. */
        for (uint32_t b = 0; b < SB_BLOCKS; b++)
            for (uint64_t p = 0; p < sb_blocks[b].size / 4096; p++)
                g_assert_true(stream_writer_page(w, b, p, src.blocks[b].host + p * 4096, &error));
        g_assert_true(stream_writer_sync(w, 1, 0, 2, &error));
        /* Pass 2: out of order (flushes), and a page rewritten after it was added
         * (copy mode sends what it was when added). */
        memset(src.blocks[0].host + 5 * 4096, 0x55, 4096);
        g_assert_true(stream_writer_page(w, 0, 5, src.blocks[0].host + 5 * 4096, &error));
        g_assert_true(stream_writer_page(w, 0, 1, src.blocks[0].host + 1 * 4096, &error));
        if (!zero_copy)
            memset(src.blocks[0].host + 1 * 4096, 0x66, 4096);
        g_assert_true(stream_writer_sync(w, 2, STREAM_SYNC_FINAL, 0, &error));
        memset(src.blocks[0].host + 1 * 4096, 2, 4096); /* what was sent */
        g_assert_true(stream_writer_device(w, "cpu", 1, 3, NULL, 0, &error));
        g_assert_true(stream_writer_end(w, STREAM_END_SOURCE_RUNNING, &error));
        g_assert_no_error(error);
        /* CONFIG, RAM_BLOCKS, 2 PAGES, SYNC, 2 PAGES, SYNC, DEVICE, END */
        g_assert_cmpuint(stream_writer_records(w), ==, 10);
        g_assert_cmpuint(stream_writer_bytes(w), ==, out->len);
        g_assert_cmpuint(stream_writer_zero_pages(w), ==, 21);
        g_assert_cmpuint(stream_writer_data_pages(w), ==, 64 - 21 + 16 + 2);
        vstream_free(s);

        Dest d;
        Receiver *r = receive_written(out, &d);
        for (unsigned b = 0; b < SB_BLOCKS; b++)
            g_assert_cmpmem(d.blocks[b].host, sb_blocks[b].size, src.blocks[b].host,
                            sb_blocks[b].size);
        unsigned n;
        const ReceivedSection *dev = receiver_devices(r, &n);
        g_assert_cmpuint(n, ==, 1);
        g_assert_cmpuint(dev[0].instance, ==, 1);
        g_assert_cmpuint(g_bytes_get_size(dev[0].fields), ==, 0);
        receiver_free(r);
        dest_clear(&d);
        dest_clear(&src);
    }

    /* Spans: at most 1024 pages from the first, one block per record. */
    g_autoptr(GByteArray) out = g_byte_array_new();
    VStream *s = vstream_mem_new(out, NULL, "out");
    g_autoptr(StreamWriter) w = stream_writer_new(s, 0, 4096);
    g_autofree uint8_t *page = g_malloc0(4096);
    page[0] = 1;
    for (uint64_t p = 0; p < 2048; p += 2)
        g_assert_true(stream_writer_page(w, 0, p, page, NULL));
    g_assert_cmpuint(stream_writer_records(w), ==, 1); /* [0, 1024) went out */
    g_assert_true(stream_writer_page(w, 1, 0, page, NULL));
    g_assert_cmpuint(stream_writer_records(w), ==, 2);
    g_assert_true(stream_writer_flush_pages(w, NULL));
    g_assert_true(stream_writer_flush_pages(w, NULL));
    g_assert_cmpuint(stream_writer_records(w), ==, 3);
    /* the first record: prefix for 1023 pages (0..1022) and 512 data pages */
    uint32_t len, npages;
    memcpy(&len, out->data + 8, 4);
    memcpy(&npages, out->data + 24 + 4, 4);
    g_assert_cmpuint(GUINT32_FROM_LE(npages), ==, 1023);
    g_assert_cmpuint(GUINT32_FROM_LE(len), ==, stream_pages_prefix(1023) + 512 * 4096);
    /* an over-long payload is refused before anything is written */
    g_autoptr(GError) error = NULL;
    guint before = out->len;
    struct iovec big = { page, STREAM_MAX_PAYLOAD + 1 };
    g_assert_false(stream_writer_record(w, STREAM_REC_DEVICE, &big, 1, &error));
    assert_contains(error->message, "payload of 16781313 bytes is over the limit");
    g_assert_cmpuint(out->len, ==, before);
    vstream_free(s);
}

/* ---- refusals (PROTOCOL.md 4), each with the record named ---- */

typedef void (*Mutate)(SbChannel *c);
typedef void (*Raw)(SbChannel *c, GByteArray *bytes);

typedef struct Refusal {
    const char *name;
    Mutate mutate;
    Raw raw;
    unsigned record;     /* the record named (index in c->recs) */
    const char *type;    /* its type as named */
    const char *message; /* after "test: channel 0, record N (TYPE) at offset O: " */
} Refusal;

static void insert(SbChannel *c, guint at, SbChannel *from)
{
    /* Moves the last record of `from` to position `at` of c. */
    SbRecord *r = g_ptr_array_steal_index(from->recs, from->recs->len - 1);
    g_ptr_array_insert(c->recs, (gint)at, r);
}

static SbChannel *scratch(void)
{
    StreamHeader h = sb_header(1);
    return sb_new(0, &h);
}

static void m_unknown_type(SbChannel *c)
{
    sb_add(c, 9, "abc", 3);
    insert(c, 2, c);
}

static void m_sync_17(SbChannel *c)
{
    g_byte_array_append(((SbRecord *)c->recs->pdata[4])->payload, (const uint8_t *)"x", 1);
}

static void m_pages_extra_byte(SbChannel *c)
{
    g_byte_array_append(((SbRecord *)c->recs->pdata[2])->payload, (const uint8_t *)"x", 1);
}

static void m_block_outside(SbChannel *c)
{
    put32(((SbRecord *)c->recs->pdata[3])->payload->data, 2);
}

static void m_range_outside(SbChannel *c)
{
    g_autoptr(SbChannel) t = scratch();
    sb_pages(t, 1, 10, 7, 1, 0, 1);
    insert(c, 3, t);
}

static void m_second_config(SbChannel *c)
{
    sb_config(c, 1);
    insert(c, 2, c);
}

static void m_second_ram_blocks(SbChannel *c)
{
    sb_ram_blocks(c);
    insert(c, 4, c);
}

static void m_device_early(SbChannel *c)
{
    sb_device(c, "early", 0, 1);
    insert(c, 3, c);
}

static void m_pages_late(SbChannel *c)
{
    g_autoptr(SbChannel) t = scratch();
    sb_pages(t, 0, 0, 1, 1, 1, 3);
    insert(c, 7, t);
}

static void m_sync_late(SbChannel *c)
{
    sb_sync(c, 3, true);
    insert(c, 8, c);
}

static void m_end_early(SbChannel *c)
{
    sb_end(c, 0);
    insert(c, 5, c);
}

static void m_no_config(SbChannel *c)
{
    g_ptr_array_remove_index(c->recs, 0);
}

static void m_no_ram_blocks(SbChannel *c)
{
    g_ptr_array_remove_index(c->recs, 1);
}

static void m_sync_skips(SbChannel *c)
{
    put32(((SbRecord *)c->recs->pdata[6])->payload->data, 3);
}

static void m_second_device(SbChannel *c)
{
    sb_device(c, "cpu", 0, 1);
    insert(c, 9, c);
}

static void m_zero_not_sent(SbChannel *c)
{
    g_autoptr(SbChannel) t = scratch();
    sb_pages(t, 0, 0, 10, 0x3df, 0x020, 1);
    SbRecord *r = t->recs->pdata[0];
    put64(r->payload->data + 24, 0x030); /* zero: pages 4 and 5, page 5 not sent */
    g_ptr_array_remove_index(c->recs, 2);
    insert(c, 2, t);
}

static void m_end_flags(SbChannel *c)
{
    ((SbRecord *)c->recs->pdata[c->recs->len - 1])->end_flags = 6;
}

static void m_bad_device_name(SbChannel *c)
{
    ((SbRecord *)c->recs->pdata[7])->payload->data[8] = ' ';
}

static void m_bad_config_fields(SbChannel *c)
{
    SbRecord *r = c->recs->pdata[0];
    r->payload->data[8] = 0;
}

static void m_config_version_0(SbChannel *c)
{
    put32(((SbRecord *)c->recs->pdata[0])->payload->data, 0);
}

static void m_ram_blocks_offset(SbChannel *c)
{
    put64(((SbRecord *)c->recs->pdata[1])->payload->data + 8 + 48, 1 << 20);
}

static void m_record_after_end(SbChannel *c)
{
    sb_sync(c, 3, false);
}

static void m_end_count(SbChannel *c)
{
    SbRecord *e = c->recs->pdata[c->recs->len - 1];
    e->auto_end = false;
    uint8_t buf[24];
    stream_end_encode(&(StreamEnd){ .records = 5 }, buf);
    g_byte_array_append(e->payload, buf, sizeof(buf));
}

static void m_end_chain(SbChannel *c)
{
    SbRecord *e = c->recs->pdata[c->recs->len - 1];
    e->auto_end = false;
    uint8_t buf[24];
    stream_end_encode(&(StreamEnd){ .records = 9, .chain = 0xbad }, buf);
    g_byte_array_append(e->payload, buf, sizeof(buf));
}

static void r_reserved(SbChannel *c, GByteArray *b)
{
    put32(b->data + ((SbRecord *)c->recs->pdata[2])->offset + 12, 1);
}

static void r_length_over(SbChannel *c, GByteArray *b)
{
    put32(b->data + ((SbRecord *)c->recs->pdata[5])->offset + 8, STREAM_MAX_PAYLOAD + 1);
}

static void r_lost_record(SbChannel *c, GByteArray *b)
{
    SbRecord *r3 = c->recs->pdata[3], *r4 = c->recs->pdata[4];
    g_byte_array_remove_range(b, (guint)r3->offset, (guint)(r4->offset - r3->offset));
    r4->offset = r3->offset; /* the record named is record 4, where record 3 was */
}

static void r_repeated_record(SbChannel *c, GByteArray *b)
{
    SbRecord *r4 = c->recs->pdata[4], *r5 = c->recs->pdata[5];
    guint n = (guint)(r5->offset - r4->offset), at = (guint)r5->offset, tail = b->len - at;
    g_byte_array_set_size(b, b->len + n);
    memmove(b->data + at + n, b->data + at, tail);
    memcpy(b->data + at, b->data + r4->offset, n);
    r4->offset = r5->offset; /* the repeat of record 4 where record 5 should be */
}

static void r_bad_checksum(SbChannel *c, GByteArray *b)
{
    b->data[((SbRecord *)c->recs->pdata[3])->offset + 24 + 40] ^= 0x10;
}

static void r_stray_bytes(SbChannel *c, GByteArray *b)
{
    g_byte_array_append(b, (const uint8_t *)"abc", 3);
}

static const Refusal refusals[] = {
    { "unknown-type", m_unknown_type, NULL, 2, "unknown type 9", "unknown record type 9" },
    { "reserved", NULL, r_reserved, 2, "PAGES", "reserved field is 0x1, must be 0" },
    { "length-over", NULL, r_length_over, 5, "PAGES",
      "length 16781313 is over the limit of 16781312 bytes" },
    { "sync-length", m_sync_17, NULL, 4, "SYNC", "payload is 17 bytes, expected 16" },
    { "pages-length", m_pages_extra_byte, NULL, 2, "PAGES",
      "payload is 32801 bytes, 8 data pages need 32800" },
    { "block-outside", m_block_outside, NULL, 3, "PAGES",
      "block 2 is outside the RAM_BLOCKS table (2 blocks)" },
    { "range-outside", m_range_outside, NULL, 3, "PAGES",
      "pages [10, 17) are outside block 1 'ram-above-4g' (16 pages)" },
    { "lost-record", NULL, r_lost_record, 4, "SYNC",
      "sequence number 4, expected 3 (a record was lost or repeated)" },
    { "repeated-record", NULL, r_repeated_record, 4, "SYNC",
      "sequence number 4, expected 5 (a record was lost or repeated)" },
    { "second-config", m_second_config, NULL, 2, "CONFIG", "a second CONFIG" },
    { "second-ram-blocks", m_second_ram_blocks, NULL, 4, "RAM_BLOCKS", "a second RAM_BLOCKS" },
    { "device-before-final", m_device_early, NULL, 3, "DEVICE",
      "out of order: DEVICE before the FINAL SYNC" },
    { "pages-after-final", m_pages_late, NULL, 7, "PAGES",
      "out of order: PAGES after the FINAL SYNC (pass 2)" },
    { "sync-after-final", m_sync_late, NULL, 8, "SYNC",
      "out of order: SYNC after the FINAL SYNC (pass 2)" },
    { "end-before-final", m_end_early, NULL, 5, "END", "out of order: END before the FINAL SYNC" },
    { "no-config", m_no_config, NULL, 0, "RAM_BLOCKS",
      "out of order: the stream must start with CONFIG" },
    { "no-ram-blocks", m_no_ram_blocks, NULL, 1, "PAGES",
      "out of order: RAM_BLOCKS must follow CONFIG" },
    { "sync-pass", m_sync_skips, NULL, 6, "SYNC", "SYNC of pass 3, expected pass 2" },
    { "second-device", m_second_device, NULL, 9, "DEVICE", "a second DEVICE 'cpu' instance 0" },
    { "zero-not-sent", m_zero_not_sent, NULL, 2, "PAGES",
      "page 5 is in the zero bitmap but not sent" },
    { "end-flags", m_end_flags, NULL, 9, "END", "unknown flags 0x6" },
    { "device-name", m_bad_device_name, NULL, 7, "DEVICE",
      "device name at payload offset 8: name has a character outside [A-Za-z0-9_.-]" },
    { "config-fields", m_bad_config_fields, NULL, 0, "CONFIG",
      "fields after the 8-byte prefix: payload offset 0: unknown field kind" },
    { "config-version", m_config_version_0, NULL, 0, "CONFIG", "config_version is 0" },
    { "ram-blocks-offset", m_ram_blocks_offset, NULL, 1, "RAM_BLOCKS",
      "RAM block 0 'ram-below-4g': pages_offset is 1048576, must be 0" },
    { "record-after-end", m_record_after_end, NULL, 10, "SYNC", "a record after END" },
    { "end-count", m_end_count, NULL, 9, "END", "END counts 5 records, the channel had 9" },
    { "end-chain", m_end_chain, NULL, 9, "END",
      "END chain checksum 0x0000000000000bad, the "
      "records give 0x" },
    { "bad-checksum", NULL, r_bad_checksum, 3, "PAGES", "bad checksum: the header says 0x" },
};

static void test_refusal(gconstpointer data)
{
    const Refusal *t = data;
    g_autoptr(SbChannel) c = sb_good();
    if (t->mutate)
        t->mutate(c);
    g_autoptr(GBytes) assembled = sb_assemble(c);
    g_autoptr(GByteArray) b = g_bytes_unref_to_array(g_bytes_ref(assembled));
    if (t->raw)
        t->raw(c, b);
    g_autoptr(GBytes) bytes = g_bytes_new(b->data, b->len);
    g_autofree char *msg = receive_fail(bytes);
    SbRecord *r = c->recs->pdata[t->record];
    g_autofree char *want =
        g_strdup_printf("test: channel 0, record %u (%s) at offset %" PRIu64 ": %s", t->record,
                        t->type, r->offset, t->message);
    if (!g_str_has_prefix(msg, want))
        g_error("got:\n  %s\nexpected:\n  %s", msg, want);
}

static void test_refusal_tail(void)
{
    /* Bytes after END that are not a whole record header. */
    g_autoptr(SbChannel) c = sb_good();
    g_autoptr(GBytes) assembled = sb_assemble(c);
    g_autoptr(GByteArray) b = g_bytes_unref_to_array(g_bytes_ref(assembled));
    r_stray_bytes(c, b);
    g_autoptr(GBytes) bytes = g_bytes_new(b->data, b->len);
    g_autofree char *msg = receive_fail(bytes);
    g_autofree char *want = g_strdup_printf("test: channel 0: 3 stray bytes after END (at offset "
                                            "%u)",
                                            b->len - 3);
    g_assert_cmpstr(msg, ==, want);

    /* Several channels, and a destination without accept_channel. */
    StreamHeader h = sb_header(2);
    g_autoptr(SbChannel) m = sb_new(0, &h);
    sb_config(m, 1);
    sb_ram_blocks(m);
    g_autoptr(GBytes) mb = sb_assemble(m);
    Dest d;
    dest_init(&d);
    g_autoptr(GError) error = NULL;
    bool ok;
    Receiver *r = receive(mb, &d, NULL, &ok, &error);
    g_assert_false(ok);
    g_assert_cmpstr(error->message, ==,
                    "test: the stream has 2 channels, this destination takes "
                    "only one");
    receiver_free(r);
    dest_clear(&d);
}

/* The destination's blocks must match the stream's, both ways; its config hook may refuse. */
static void test_destination_mismatch(void)
{
    g_autoptr(SbChannel) c = sb_good();
    g_autoptr(GBytes) bytes = sb_assemble(c);
    uint64_t at = ((SbRecord *)c->recs->pdata[1])->offset;
    const char *pre = "test: channel 0, record 1 (RAM_BLOCKS) at offset";
    for (int k = 0; k < 5; k++) {
        Dest d;
        dest_init(&d);
        unsigned n = SB_BLOCKS;
        const char *want = NULL;
        switch (k) {
        case 0:
            d.blocks[1].gpa = 1ull << 33;
            want = "RAM block 'ram-above-4g': gpa 0x100000000 in the stream, 0x200000000 in "
                   "this VM";
            break;
        case 1:
            d.blocks[0].size = 32 * 4096;
            want = "RAM block 'ram-below-4g': size 262144 in the stream, 131072 in this VM";
            break;
        case 2:
            n = 1;
            want = "RAM block 'ram-above-4g' of the stream is not in this VM";
            break;
        case 3:
            g_strlcpy(d.blocks[1].name, "pc.ram", sizeof(d.blocks[1].name));
            want = "RAM block 'ram-above-4g' of the stream is not in this VM";
            break;
        case 4: {
            /* an extra destination block */
            g_autofree VmsnapRamBlock *more = g_new0(VmsnapRamBlock, 3);
            memcpy(more, d.blocks, sizeof(d.blocks));
            g_strlcpy(more[2].name, "vram", sizeof(more[2].name));
            more[2].gpa = 1ull << 40;
            more[2].size = 4096;
            more[2].host = d.blocks[0].host;
            g_autoptr(GError) error = NULL;
            Receiver *r = receiver_new(vstream_mem_new(NULL, bytes, "test"), more, 3, NULL);
            g_assert_false(receiver_run(r, &error));
            g_autofree char *w = g_strdup_printf("%s %" PRIu64 ": this VM's RAM block 'vram' is "
                                                 "not in the stream",
                                                 pre, at);
            g_assert_cmpstr(error->message, ==, w);
            receiver_free(r);
            dest_clear(&d);
            continue;
        }
        }
        g_autoptr(GError) error = NULL;
        Receiver *r = receiver_new(vstream_mem_new(NULL, bytes, "test"), d.blocks, n, NULL);
        g_assert_false(receiver_run(r, &error));
        g_autofree char *w = g_strdup_printf("%s %" PRIu64 ": %s", pre, at, want);
        g_assert_cmpstr(error->message, ==, w);
        /* Nothing was written. */
        g_assert_true(page_is(&d, 0, 0, GARBAGE));
        receiver_free(r);
        dest_clear(&d);
    }

    /* The config hook refuses: its error, with the record named, nothing written. */
    Dest d;
    dest_init(&d);
    Hooks hooks = { .refuse = true };
    g_autoptr(GError) error = NULL;
    bool ok;
    Receiver *r = receive(bytes, &d, &hooks, &ok, &error);
    g_assert_false(ok);
    g_assert_error(error, G_IO_ERROR, G_IO_ERROR_NOT_SUPPORTED);
    g_assert_cmpstr(error->message, ==,
                    "test: channel 0, record 0 (CONFIG) at offset 64: config: "
                    "memory is 327680 bytes, this VM has 1048576");
    g_assert_true(page_is(&d, 0, 0, GARBAGE));
    receiver_free(r);
    dest_clear(&d);

    /* VALIDATE_UUID reaches the hook. */
    c->h.flags |= STREAM_FLAG_VALIDATE_UUID;
    g_autoptr(GBytes) b2 = sb_assemble(c);
    dest_init(&d);
    hooks.refuse = false;
    r = receive(b2, &d, &hooks, &ok, NULL);
    g_assert_true(ok);
    g_assert_true(hooks.validate_uuid);
    receiver_free(r);
    dest_clear(&d);
}

/* Truncation at every byte: a clean "truncated" error, never a crash or success. */
static void test_truncation(void)
{
    g_autoptr(SbChannel) c = sb_good();
    g_autoptr(GBytes) bytes = sb_assemble(c);
    size_t len = g_bytes_get_size(bytes);
    const uint8_t *data = g_bytes_get_data(bytes, NULL);
    Dest d;
    dest_init(&d);
    for (size_t cut = 0; cut < len; cut++) {
        g_autoptr(GBytes) part = g_bytes_new_static(data, cut);
        g_autoptr(GError) error = NULL;
        bool ok;
        Receiver *r = receive(part, &d, NULL, &ok, &error);
        g_assert_false(ok);
        g_assert_error(error, FORMAT_ERROR, FORMAT_ERROR_TRUNCATED);
        assert_contains(error->message, "test: channel 0: truncated: the stream ended ");
        g_autofree char *after = g_strdup_printf(" after %zu bytes", cut);
        g_assert_true(g_str_has_suffix(error->message, after));
        /* name the record it ended in */
        unsigned rec = 0;
        while (rec + 1 < c->recs->len && ((SbRecord *)c->recs->pdata[rec + 1])->offset <= cut)
            rec++;
        SbRecord *sr = c->recs->pdata[rec];
        g_autofree char *want = NULL;
        if (cut < 64)
            want = g_strdup("ended in the stream header");
        else if (cut == sr->offset)
            want = g_strdup_printf("ended before record %u (no END)", rec);
        else if (cut < sr->offset + 24)
            want = g_strdup_printf("ended in the header of record %u", rec);
        else
            want = g_strdup_printf("ended in record %u (%s)", rec, stream_record_name(sr->type));
        assert_contains(error->message, want);
        receiver_free(r);
    }
    dest_clear(&d);
}

/* A flipped bit anywhere: a clean error naming a record or the header. */
static void test_flip(void)
{
    g_autoptr(SbChannel) c = sb_good();
    g_autoptr(GBytes) bytes = sb_assemble(c);
    size_t len = g_bytes_get_size(bytes);
    g_autofree uint8_t *data = g_memdup2(g_bytes_get_data(bytes, NULL), len);
    g_autoptr(GRegex) named2 = g_regex_new("record [0-9]+", 0, 0, NULL);
    Dest d;
    dest_init(&d);
    for (size_t i = 0; i < len; i++) {
        /* Inside page data, every 29th byte is enough. */
        bool in_data = false;
        for (guint k = 0; k < c->recs->len; k++) {
            SbRecord *r = c->recs->pdata[k];
            if (r->type == STREAM_REC_PAGES && i >= r->offset + 24 + 32 &&
                i < r->offset + 24 + r->payload->len)
                in_data = true;
        }
        if (in_data && i % 29 != 0)
            continue;
        for (unsigned bit = 0; bit < 8; bit += in_data ? 8 : 3) {
            data[i] ^= (uint8_t)(1u << bit);
            g_autoptr(GBytes) b = g_bytes_new_static(data, len);
            g_autoptr(GError) error = NULL;
            bool ok;
            Receiver *r = receive(b, &d, NULL, &ok, &error);
            if (ok)
                g_error("flipping bit %u of byte %zu was not noticed", bit, i);
            g_assert_nonnull(error);
            if (!g_str_has_prefix(error->message, "test: stream header: ") &&
                !g_regex_match(named2, error->message, 0, NULL))
                g_error("byte %zu: the error names no record: %s", i, error->message);
            receiver_free(r);
            data[i] ^= (uint8_t)(1u << bit);
        }
    }
    dest_clear(&d);
}

/* Random and mutated input never crashes, hangs or is accepted without reason. */
static void test_random(void)
{
    g_autoptr(GRand) rand = g_rand_new_with_seed(20240611);
    g_autoptr(SbChannel) good = sb_good();
    g_autoptr(GBytes) good_bytes = sb_assemble(good);
    const uint8_t *gd = g_bytes_get_data(good_bytes, NULL);
    size_t glen = g_bytes_get_size(good_bytes);
    StreamHeader h = sb_header(1);
    uint8_t hdr[STREAM_HEADER_SIZE];
    stream_header_encode(&h, hdr);
    Dest d;
    dest_init(&d);
    unsigned accepted = 0;
    for (unsigned iter = 0; iter < 4000; iter++) {
        g_autoptr(GByteArray) b = g_byte_array_new();
        unsigned kind = iter % 4;
        if (kind == 0 || kind == 1) {
            /* random bytes, or a valid header and random records */
            if (kind == 1)
                g_byte_array_append(b, hdr, sizeof(hdr));
            guint n = (guint)g_rand_int_range(rand, 0, 2048);
            for (guint i = 0; i < n; i++) {
                uint8_t v = (uint8_t)g_rand_int(rand);
                /* bias towards small numbers, which make plausible headers */
                if (g_rand_boolean(rand))
                    v &= 7;
                g_byte_array_append(b, &v, 1);
            }
        } else if (kind == 2) {
            /* the good stream with a few random bytes changed */
            g_byte_array_append(b, gd, (guint)glen);
            unsigned n = (unsigned)g_rand_int_range(rand, 1, 4);
            for (unsigned i = 0; i < n; i++)
                b->data[g_rand_int_range(rand, 0, (gint32)glen)] = (uint8_t)g_rand_int(rand);
        } else {
            /* record-level mutations, re-sealed so the rules behind the checksums run */
            g_autoptr(SbChannel) c = sb_good();
            unsigned n = (unsigned)g_rand_int_range(rand, 1, 4);
            for (unsigned i = 0; i < n; i++) {
                guint k = (guint)g_rand_int_range(rand, 0, (gint32)c->recs->len);
                SbRecord *r = c->recs->pdata[k];
                switch (g_rand_int_range(rand, 0, 6)) {
                case 0:
                    if (r->payload->len)
                        r->payload->data[g_rand_int_range(rand, 0, (gint32)r->payload->len)] =
                            (uint8_t)g_rand_int(rand);
                    break;
                case 1:
                    r->type = (uint32_t)g_rand_int_range(rand, 1, 7);
                    break;
                case 2:
                    g_byte_array_set_size(
                        r->payload, (guint)g_rand_int_range(rand, 0, (gint32)r->payload->len + 1));
                    r->auto_end = false;
                    break;
                case 3:
                    if (c->recs->len > 1)
                        g_ptr_array_remove_index(c->recs, k);
                    break;
                case 4: {
                    SbRecord *dup = g_new0(SbRecord, 1);
                    *dup = *r;
                    dup->payload = g_byte_array_new();
                    g_byte_array_append(dup->payload, r->payload->data, r->payload->len);
                    g_ptr_array_insert(c->recs,
                                       (gint)g_rand_int_range(rand, 0, (gint32)c->recs->len), dup);
                    break;
                }
                case 5:
                    if (r->payload->len >= 8)
                        put32(r->payload->data + 4 * g_rand_int_range(rand, 0, 2),
                              g_rand_int_range(rand, 0, 3) == 0
                                  ? g_rand_int(rand)
                                  : (uint32_t)g_rand_int_range(rand, 0, 70));
                    break;
                }
            }
            g_autoptr(GBytes) ab = sb_assemble(c);
            g_byte_array_append(b, g_bytes_get_data(ab, NULL), (guint)g_bytes_get_size(ab));
        }
        g_autoptr(GBytes) bytes = g_bytes_new(b->data, b->len);
        g_autoptr(GError) error = NULL;
        bool ok;
        Receiver *r = receive(bytes, &d, NULL, &ok, &error);
        g_assert_true(ok == (error == NULL));
        accepted += ok;
        receiver_free(r);
    }
    g_test_message("%u of 4000 mutated streams were still valid", accepted);
    dest_clear(&d);
}

/* ---- several channels ---- */

static SbChannel *extra(uint32_t index, uint32_t channels)
{
    StreamHeader h = sb_header(channels);
    return sb_new(index, &h);
}

/* Receives main + extras (already assembled; main may be a TestStream). */
static Receiver *receive_multi(VStream *main, VStream **extras, unsigned n, Dest *d, bool *ok,
                               GError **error)
{
    static Hooks hooks;
    memset(&hooks, 0, sizeof(hooks));
    g_queue_init(&hooks.channels);
    for (unsigned i = 0; i < n; i++)
        g_queue_push_tail(&hooks.channels, extras[i]);
    ReceiverHooks rh = { .config = hook_config, .accept_channel = hook_accept, .opaque = &hooks };
    Receiver *r = receiver_new(main, d->blocks, SB_BLOCKS, &rh);
    *ok = receiver_run(r, error);
    hooks_clear(&hooks);
    return r;
}

static void test_multi_good(void)
{
    /* 3 channels; pages of each pass spread over all of them, accepted out of order. */
    StreamHeader h = sb_header(3);
    g_autoptr(SbChannel) m = sb_new(0, &h);
    g_autoptr(SbChannel) c1 = extra(1, 3), c2 = extra(2, 3);
    sb_config(m, 1);
    sb_ram_blocks(m);
    sb_pages(m, 0, 0, 10, 0x3ff, 0, 1);
    sb_pages(c1, 0, 10, 10, 0x3ff, 0x1, 1);
    sb_pages(c2, 1, 0, 16, 0xffff, 0, 1);
    for (uint32_t pass = 1; pass <= 3; pass++) {
        if (pass > 1) {
            sb_pages(m, 1, 0, 1, 1, 0, pass);
            sb_pages(c1, 0, 0, 1, 1, 0, pass);
            sb_pages(c2, 0, 10, 1, 1, 0, pass);
        }
        sb_sync(m, pass, pass == 3);
        sb_sync(c1, pass, pass == 3);
        sb_sync(c2, pass, pass == 3);
    }
    sb_device(m, "cpu", 0, 1);
    sb_end(m, STREAM_END_SOURCE_RUNNING);
    sb_end(c1, 0);
    sb_end(c2, 0);
    g_autoptr(GBytes) mb = sb_assemble(m), b1 = sb_assemble(c1), b2 = sb_assemble(c2);
    Dest d;
    dest_init(&d);
    VStream *extras[2] = { vstream_mem_new(NULL, b2, "ch2"), vstream_mem_new(NULL, b1, "ch1") };
    g_autoptr(GError) error = NULL;
    bool ok;
    Receiver *r = receive_multi(vstream_mem_new(NULL, mb, "test"), extras, 2, &d, &ok, &error);
    g_assert_no_error(error);
    g_assert_true(ok);
    for (uint64_t p = 0; p < 20; p++)
        g_assert_true(page_is(&d, 0, p,
                              p == 10  ? sb_page_byte(0, 10, 3)
                              : p == 0 ? sb_page_byte(0, 0, 3)
                                       : sb_page_byte(0, p, 1)));
    g_assert_true(page_is(&d, 0, 20, GARBAGE));
    for (uint64_t p = 0; p < 16; p++)
        g_assert_true(page_is(&d, 1, p, p == 0 ? sb_page_byte(1, 0, 3) : sb_page_byte(1, p, 1)));
    g_assert_cmpuint(receiver_passes(r), ==, 3);
    g_assert_cmpuint(receiver_bytes(r), ==,
                     g_bytes_get_size(mb) + g_bytes_get_size(b1) + g_bytes_get_size(b2));
    g_assert_true(receiver_source_running(r));
    receiver_free(r);
    dest_clear(&d);
}

/*
 * The barrier of PROTOCOL.md 3.2: page 5 is sent in pass 1 on the main channel and
 * in pass 2 on channel 1. The main channel is slow (its pass-1 page arrives 300 ms
 * late), so without the barrier channel 1 would write pass 2's copy first and the
 * main channel would then overwrite it with the older one.
 */
static void test_multi_barrier(void)
{
    StreamHeader h = sb_header(2);
    g_autoptr(SbChannel) m = sb_new(0, &h);
    g_autoptr(SbChannel) c1 = extra(1, 2);
    sb_config(m, 1);
    sb_ram_blocks(m);
    sb_pages(m, 0, 5, 1, 1, 0, 1);
    sb_sync(m, 1, false);
    sb_sync(m, 2, true);
    sb_end(m, 0);
    sb_sync(c1, 1, false);
    sb_pages(c1, 0, 5, 1, 1, 0, 2);
    sb_sync(c1, 2, true);
    sb_end(c1, 0);
    g_autoptr(GBytes) mb = sb_assemble(m), b1 = sb_assemble(c1);
    TestStream *slow = ts_new(mb, "test");
    slow->delay_at = ((SbRecord *)m->recs->pdata[2])->offset;
    slow->delay_ms = 300;
    Dest d;
    dest_init(&d);
    VStream *extras[1] = { vstream_mem_new(NULL, b1, "ch1") };
    g_autoptr(GError) error = NULL;
    bool ok;
    Receiver *r = receive_multi(&slow->base, extras, 1, &d, &ok, &error);
    g_assert_no_error(error);
    g_assert_true(ok);
    g_assert_true(page_is(&d, 0, 5, sb_page_byte(0, 5, 2)));
    receiver_free(r);
    dest_clear(&d);
}

typedef enum {
    MB_BAD_SESSION,
    MB_BAD_INDEX,
    MB_SAME_INDEX,
    MB_DEVICE_ON_EXTRA,
    MB_CONFIG_ON_EXTRA,
    MB_FEWER_PASSES,
    MB_NO_END,
    MB_END_FLAGS,
    MB_MAIN_HEADER,
    MB_NO_CONNECTION,
    MB_SHORT_HEADER,
} MultiBad;

static void test_multi_refusals(void)
{
    for (int k = MB_BAD_SESSION; k <= MB_SHORT_HEADER; k++) {
        StreamHeader h = sb_header(3);
        g_autoptr(SbChannel) m = sb_new(0, &h);
        g_autoptr(SbChannel) c1 = extra(1, 3), c2 = extra(2, 3);
        sb_config(m, 1);
        sb_ram_blocks(m);
        sb_pages(m, 0, 0, 1, 1, 0, 1);
        sb_pages(c1, 0, 1, 1, 1, 0, 1);
        sb_pages(c2, 0, 2, 1, 1, 0, 1);
        sb_sync(m, 1, false);
        sb_sync(c1, 1, false);
        sb_sync(c2, 1, k == MB_FEWER_PASSES);
        sb_sync(m, 2, true);
        sb_sync(c1, 2, true);
        if (k != MB_FEWER_PASSES)
            sb_sync(c2, 2, true);
        if (k == MB_DEVICE_ON_EXTRA)
            sb_device(c2, "cpu", 0, 1);
        if (k == MB_CONFIG_ON_EXTRA) {
            sb_config(c1, 1);
            insert(c1, 0, c1);
        }
        sb_end(m, 0);
        sb_end(c1, k == MB_END_FLAGS ? STREAM_END_SOURCE_RUNNING : 0);
        if (k != MB_NO_END)
            sb_end(c2, 0);
        if (k == MB_BAD_SESSION)
            c2->h.session[3] ^= 1;
        if (k == MB_BAD_INDEX)
            c2->index = 3;
        if (k == MB_SAME_INDEX)
            c2->index = 1;
        if (k == MB_MAIN_HEADER)
            c2->index = 0;
        g_autoptr(GBytes) mb = sb_assemble(m), b1 = sb_assemble(c1), b2 = sb_assemble(c2);
        if (k == MB_SHORT_HEADER) {
            g_bytes_unref(b2);
            b2 = g_bytes_new(g_bytes_get_data(b1, NULL), 40);
        }
        Dest d;
        dest_init(&d);
        VStream *extras[2] = { vstream_mem_new(NULL, b1, "ch1"), vstream_mem_new(NULL, b2, "ch2") };
        g_autoptr(GError) error = NULL;
        bool ok;
        Receiver *r = receive_multi(vstream_mem_new(NULL, mb, "test"), extras,
                                    k == MB_NO_CONNECTION ? 1 : 2, &d, &ok, &error);
        if (k == MB_NO_CONNECTION)
            vstream_free(extras[1]);
        g_assert_false(ok);
        g_assert_nonnull(error);
        const char *msg = error->message;
        switch ((MultiBad)k) {
        case MB_BAD_SESSION:
            g_assert_cmpstr(msg, ==,
                            "ch2: channel header: channel 2 presents another session "
                            "than the main channel's (a connection from another "
                            "migration?)");
            break;
        case MB_BAD_INDEX:
            g_assert_cmpstr(msg, ==, "ch2: channel header: index 3, the stream has 3 channels");
            break;
        case MB_SAME_INDEX:
            g_assert_cmpstr(msg, ==, "ch2: channel header: a second channel 1");
            break;
        case MB_MAIN_HEADER:
            assert_contains(msg, "ch2: channel header: this is a main channel");
            break;
        case MB_DEVICE_ON_EXTRA: {
            g_autofree char *w =
                g_strdup_printf("ch2: channel 2, record 3 (DEVICE) at offset %" PRIu64
                                ": DEVICE records belong on the main channel only",
                                ((SbRecord *)c2->recs->pdata[3])->offset);
            g_assert_cmpstr(msg, ==, w);
            break;
        }
        case MB_CONFIG_ON_EXTRA:
            g_assert_cmpstr(msg, ==,
                            "ch1: channel 1, record 0 (CONFIG) at offset 64: CONFIG "
                            "records belong on the main channel only");
            break;
        case MB_FEWER_PASSES:
            if (!strstr(msg, "ended its passes with pass 1") &&
                !strstr(msg, "FINAL SYNC of pass 1, but channel"))
                g_error("unexpected: %s", msg);
            break;
        case MB_NO_END: {
            g_autofree char *w = g_strdup_printf("ch2: channel 2: truncated: the stream ended "
                                                 "before record 3 (no END) after %zu bytes",
                                                 g_bytes_get_size(b2));
            g_assert_cmpstr(msg, ==, w);
            break;
        }
        case MB_END_FLAGS: {
            g_autofree char *w =
                g_strdup_printf("ch1: channel 1, record 3 (END) at offset %" PRIu64
                                ": END flags 0x1 on an extra channel (main channel only)",
                                ((SbRecord *)c1->recs->pdata[3])->offset);
            g_assert_cmpstr(msg, ==, w);
            break;
        }
        case MB_SHORT_HEADER:
            g_assert_cmpstr(msg, ==,
                            "ch2: extra channel 2 of 2: truncated: the stream ended in "
                            "the channel header after 40 bytes");
            break;
        case MB_NO_CONNECTION:
            g_assert_cmpstr(msg, ==,
                            "test: accepting extra channel 2 of 2: no more "
                            "connections");
            break;
        }
        receiver_free(r);
        dest_clear(&d);
    }
}

/*
 * A channel fails while its sibling's peer is silent (blocked in read): the run
 * still returns the error at once; the blocked thread finishes later, when its read
 * returns, without touching memory, and frees what it holds.
 */
static void test_multi_silent_peer(void)
{
    StreamHeader h = sb_header(2);
    g_autoptr(SbChannel) m = sb_new(0, &h);
    g_autoptr(SbChannel) c1 = extra(1, 2);
    sb_config(m, 1);
    sb_ram_blocks(m);
    sb_pages(m, 0, 0, 1, 1, 0, 1);
    sb_pages(m, 0, 1, 1, 1, 0, 1);
    sb_pages(c1, 0, 9, 1, 1, 0, 1);
    sb_sync(c1, 1, true);
    sb_end(c1, 0);
    g_autoptr(GBytes) mb0 = sb_assemble(m), b1 = sb_assemble(c1);
    g_autoptr(GByteArray) mba = g_bytes_unref_to_array(g_bytes_ref(mb0));
    SbRecord *bad = m->recs->pdata[3];
    mba->data[bad->offset + 24 + 40] ^= 1; /* the main channel's 2nd PAGES is corrupt */
    g_autoptr(GBytes) mb = g_bytes_new(mba->data, mba->len);

    gint release = 0, freed = 0;
    TestStream *silent = ts_new(b1, "ch1");
    silent->block_at = 64; /* after its channel header: nothing more */
    silent->release = &release;
    silent->freed = &freed;
    Dest d;
    dest_init(&d);
    VStream *extras[1] = { &silent->base };
    g_autoptr(GError) error = NULL;
    bool ok;
    gint64 t0 = g_get_monotonic_time();
    /* The main channel fails once channel 1 is surely blocked. */
    TestStream *main = ts_new(mb, "test");
    main->delay_at = bad->offset;
    main->delay_ms = 200;
    Receiver *r = receive_multi(&main->base, extras, 1, &d, &ok, &error);
    g_assert_false(ok);
    g_assert_cmpint(g_get_monotonic_time() - t0, <, 5 * G_USEC_PER_SEC);
    g_autofree char *w = g_strdup_printf(
        "test: channel 0, record 3 (PAGES) at offset %" PRIu64 ": bad checksum", bad->offset);
    assert_contains(error->message, w);
    g_assert_true(page_is(&d, 0, 0, sb_page_byte(0, 0, 1)));
    g_assert_true(page_is(&d, 0, 1, GARBAGE));
    receiver_free(r);
    g_assert_false(g_atomic_int_get(&freed)); /* still blocked, holding its stream */
    g_atomic_int_set(&release, 1);
    gint64 deadline = g_get_monotonic_time() + 10 * G_USEC_PER_SEC;
    while (!g_atomic_int_get(&freed) && g_get_monotonic_time() < deadline)
        g_usleep(1000);
    g_assert_true(g_atomic_int_get(&freed));
    g_usleep(20000); /* let the thread return after its last unref */
    g_assert_true(page_is(&d, 0, 9, GARBAGE));
    dest_clear(&d);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/stream/names", test_names);
    g_test_add_func("/stream/header", test_header);
    g_test_add_func("/stream/channel-header", test_channel_header);
    g_test_add_func("/stream/record-header", test_record_header);
    g_test_add_func("/stream/pages-decode", test_pages_decode);
    g_test_add_func("/stream/small-payloads", test_small_payloads);
    g_test_add_func("/stream/chain", test_chain);
    g_test_add_func("/stream/fields-raw", test_fields_raw);
    g_test_add_func("/stream/receive/good", test_good);
    g_test_add_func("/stream/receive/own-blocks", test_own_blocks);
    g_test_add_func("/stream/writer", test_writer);
    g_test_add_func("/stream/writer-chunk", test_writer_chunk);
    for (unsigned i = 0; i < G_N_ELEMENTS(refusals); i++) {
        g_autofree char *path = g_strdup_printf("/stream/refuse/%s", refusals[i].name);
        g_test_add_data_func(path, &refusals[i], test_refusal);
    }
    g_test_add_func("/stream/refuse/tail-and-channels", test_refusal_tail);
    g_test_add_func("/stream/receive/destination-mismatch", test_destination_mismatch);
    g_test_add_func("/stream/receive/truncation", test_truncation);
    g_test_add_func("/stream/receive/flip", test_flip);
    g_test_add_func("/stream/receive/random", test_random);
    g_test_add_func("/stream/multi/good", test_multi_good);
    g_test_add_func("/stream/multi/barrier", test_multi_barrier);
    g_test_add_func("/stream/multi/refusals", test_multi_refusals);
    g_test_add_func("/stream/multi/silent-peer", test_multi_silent_peer);
    return g_test_run();
}
