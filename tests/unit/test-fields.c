/* Self-describing fields (include/vmsnap/fields.h, docs/FORMAT.md section 5). */
#include <string.h>
#include <vmsnap/fields.h>

#define SECTION "section 'cpu' instance 1 version 1: "

static GBytes *finish_ok(VmsnapFieldWriter *w)
{
    g_autoptr(GError) error = NULL;
    GBytes *b = vmsnap_fw_finish(w, &error);
    g_assert_no_error(error);
    g_assert_nonnull(b);
    return b;
}

static void assert_error(GError *error, int code, const char *message)
{
    g_assert_nonnull(error);
    if (strcmp(error->message, message) != 0) {
        g_printerr("got:      %s\nexpected: %s\n", error->message, message);
    }
    g_assert_cmpstr(error->message, ==, message);
    g_assert_error(error, VMSNAP_FIELDS_ERROR, code);
}

static void assert_contains(const char *haystack, const char *needle)
{
    if (strstr(haystack, needle) == NULL) {
        g_printerr("'%s' does not contain '%s'\n", haystack, needle);
    }
    g_assert_nonnull(strstr(haystack, needle));
}

/* A payload with every kind, nesting and arrays. */
static GBytes *sample(void)
{
    VmsnapFieldWriter *w = vmsnap_fw_new();
    vmsnap_fw_u8(w, "a8", 0xab);
    vmsnap_fw_u16(w, "a16", 0xbeef);
    vmsnap_fw_u32(w, "a32", 0xdeadbeef);
    vmsnap_fw_u64(w, "a64", 0x0123456789abcdefull);
    vmsnap_fw_i64(w, "neg", -42);
    vmsnap_fw_bool(w, "on", true);
    vmsnap_fw_bool(w, "off", false);
    vmsnap_fw_bytes(w, "blob", "\x01\x02\x03", 3);
    vmsnap_fw_bytes(w, "empty", NULL, 0);
    vmsnap_fw_str(w, "name", "vm-\"one\"\n");
    vmsnap_fw_struct_begin(w, "regs");
    vmsnap_fw_u64(w, "rip", 0x101234);
    vmsnap_fw_struct_begin(w, "cs");
    vmsnap_fw_u64(w, "base", 0);
    vmsnap_fw_u32(w, "limit", 0xffffffff);
    vmsnap_fw_struct_end(w);
    vmsnap_fw_struct_end(w);
    vmsnap_fw_array_begin(w, "queue", 3);
    vmsnap_fw_u16(w, NULL, 1);
    vmsnap_fw_u16(w, "", 2);
    vmsnap_fw_u16(w, NULL, 3);
    vmsnap_fw_array_end(w);
    vmsnap_fw_array_begin(w, "lapics", 2);
    for (int i = 0; i < 2; i++) {
        vmsnap_fw_struct_begin(w, NULL);
        vmsnap_fw_u32(w, "id", (uint32_t)i);
        vmsnap_fw_array_begin(w, "lvt", 1);
        vmsnap_fw_u32(w, NULL, 0x10000u + (uint32_t)i);
        vmsnap_fw_array_end(w);
        vmsnap_fw_struct_end(w);
    }
    vmsnap_fw_array_end(w);
    vmsnap_fw_struct_begin(w, "nothing");
    vmsnap_fw_struct_end(w);
    vmsnap_fw_array_begin(w, "none", 0);
    vmsnap_fw_array_end(w);
    return finish_ok(w);
}

/* Reads sample() back; returns the reader's verdict. */
static bool read_sample(const void *data, size_t len, GError **error)
{
    VmsnapFieldReader *r = vmsnap_fr_new(data, len, "cpu", 1, 1);
    uint8_t u8;
    uint16_t u16;
    uint32_t u32, n;
    uint64_t u64;
    int64_t i64;
    bool b;
    uint8_t blob[3];
    char *s = NULL;
    vmsnap_fr_u8(r, "a8", &u8);
    vmsnap_fr_u16(r, "a16", &u16);
    vmsnap_fr_u32(r, "a32", &u32);
    vmsnap_fr_u64(r, "a64", &u64);
    vmsnap_fr_i64(r, "neg", &i64);
    vmsnap_fr_bool(r, "on", &b);
    vmsnap_fr_bool(r, "off", &b);
    vmsnap_fr_bytes(r, "blob", blob, 3);
    vmsnap_fr_bytes(r, "empty", blob, 0);
    vmsnap_fr_str(r, "name", 100, &s);
    g_free(s);
    vmsnap_fr_struct_begin(r, "regs");
    vmsnap_fr_u64(r, "rip", &u64);
    vmsnap_fr_struct_begin(r, "cs");
    vmsnap_fr_u64(r, "base", &u64);
    vmsnap_fr_u32(r, "limit", &u32);
    vmsnap_fr_struct_end(r);
    vmsnap_fr_struct_end(r);
    vmsnap_fr_array_begin(r, "queue", 16, &n);
    for (uint32_t i = 0; i < n; i++) {
        vmsnap_fr_u16(r, NULL, &u16);
    }
    vmsnap_fr_array_end(r);
    vmsnap_fr_array_begin(r, "lapics", 16, &n);
    for (uint32_t i = 0; i < n; i++) {
        uint32_t m;
        vmsnap_fr_struct_begin(r, NULL);
        vmsnap_fr_u32(r, "id", &u32);
        vmsnap_fr_array_begin(r, "lvt", 4, &m);
        for (uint32_t j = 0; j < m; j++) {
            vmsnap_fr_u32(r, NULL, &u32);
        }
        vmsnap_fr_array_end(r);
        vmsnap_fr_struct_end(r);
    }
    vmsnap_fr_array_end(r);
    vmsnap_fr_struct_begin(r, "nothing");
    vmsnap_fr_struct_end(r);
    vmsnap_fr_array_begin(r, "none", 0, &n);
    vmsnap_fr_array_end(r);
    return vmsnap_fr_finish(r, error);
}

static void test_round_trip(void)
{
    g_autoptr(GBytes) b = sample();
    g_autoptr(GError) error = NULL;
    g_autoptr(VmsnapFieldReader) r =
        vmsnap_fr_new(g_bytes_get_data(b, NULL), g_bytes_get_size(b), "cpu", 1, 1);
    uint8_t u8 = 0;
    uint16_t u16 = 0;
    uint32_t u32 = 0, n = 0;
    uint64_t u64 = 0;
    int64_t i64 = 0;
    bool on = false, off = true;
    uint8_t blob[3] = { 0 };
    g_autofree char *name = NULL;
    g_autofree void *dup = NULL;
    size_t dup_len = 99;

    g_assert_true(vmsnap_fr_u8(r, "a8", &u8));
    g_assert_cmpuint(u8, ==, 0xab);
    g_assert_true(vmsnap_fr_u16(r, "a16", &u16));
    g_assert_cmpuint(u16, ==, 0xbeef);
    g_assert_true(vmsnap_fr_u32(r, "a32", &u32));
    g_assert_cmpuint(u32, ==, 0xdeadbeef);
    g_assert_true(vmsnap_fr_u64(r, "a64", &u64));
    g_assert_cmphex(u64, ==, 0x0123456789abcdefull);
    g_assert_true(vmsnap_fr_i64(r, "neg", &i64));
    g_assert_cmpint(i64, ==, -42);
    g_assert_true(vmsnap_fr_bool(r, "on", &on));
    g_assert_true(on);
    g_assert_true(vmsnap_fr_bool(r, "off", &off));
    g_assert_false(off);
    g_assert_true(vmsnap_fr_bytes(r, "blob", blob, 3));
    g_assert_cmpmem(blob, 3, "\x01\x02\x03", 3);
    g_assert_true(vmsnap_fr_bytes_dup(r, "empty", 10, &dup, &dup_len));
    g_assert_cmpuint(dup_len, ==, 0);
    g_assert_true(vmsnap_fr_str(r, "name", 100, &name));
    g_assert_cmpstr(name, ==, "vm-\"one\"\n");
    g_assert_true(vmsnap_fr_struct_begin(r, "regs"));
    g_assert_true(vmsnap_fr_u64(r, "rip", &u64));
    g_assert_cmphex(u64, ==, 0x101234);
    g_assert_true(vmsnap_fr_struct_begin(r, "cs"));
    g_assert_true(vmsnap_fr_u64(r, "base", &u64));
    g_assert_cmphex(u64, ==, 0);
    g_assert_true(vmsnap_fr_u32(r, "limit", &u32));
    g_assert_cmphex(u32, ==, 0xffffffff);
    g_assert_true(vmsnap_fr_struct_end(r));
    g_assert_true(vmsnap_fr_struct_end(r));
    g_assert_true(vmsnap_fr_array_begin(r, "queue", 3, &n));
    g_assert_cmpuint(n, ==, 3);
    for (uint32_t i = 0; i < n; i++) {
        g_assert_true(vmsnap_fr_u16(r, NULL, &u16));
        g_assert_cmpuint(u16, ==, i + 1);
    }
    g_assert_true(vmsnap_fr_array_end(r));
    g_assert_true(vmsnap_fr_array_begin(r, "lapics", 2, &n));
    g_assert_cmpuint(n, ==, 2);
    for (uint32_t i = 0; i < n; i++) {
        uint32_t m = 0;
        g_assert_true(vmsnap_fr_struct_begin(r, ""));
        g_assert_true(vmsnap_fr_u32(r, "id", &u32));
        g_assert_cmpuint(u32, ==, i);
        g_assert_true(vmsnap_fr_array_begin(r, "lvt", 1, &m));
        g_assert_cmpuint(m, ==, 1);
        g_assert_true(vmsnap_fr_u32(r, NULL, &u32));
        g_assert_cmphex(u32, ==, 0x10000 + i);
        g_assert_true(vmsnap_fr_array_end(r));
        g_assert_true(vmsnap_fr_struct_end(r));
    }
    g_assert_true(vmsnap_fr_array_end(r));
    g_assert_true(vmsnap_fr_struct_begin(r, "nothing"));
    g_assert_true(vmsnap_fr_struct_end(r));
    g_assert_true(vmsnap_fr_array_begin(r, "none", 0, &n));
    g_assert_cmpuint(n, ==, 0);
    g_assert_true(vmsnap_fr_array_end(r));
    g_assert_false(vmsnap_fr_failed(r));
    g_assert_true(vmsnap_fr_finish(g_steal_pointer(&r), &error));
    g_assert_no_error(error);

    /* The helper used by the hostile tests agrees. */
    g_assert_true(read_sample(g_bytes_get_data(b, NULL), g_bytes_get_size(b), &error));
    g_assert_no_error(error);
}

/* The bytes on the wire are the ones FORMAT.md section 5 describes. */
static void test_encoding(void)
{
    VmsnapFieldWriter *w = vmsnap_fw_new();
    vmsnap_fw_u32(w, "a", 0x11223344);
    vmsnap_fw_struct_begin(w, "s");
    vmsnap_fw_bool(w, "b", true);
    vmsnap_fw_struct_end(w);
    vmsnap_fw_array_begin(w, "v", 2);
    vmsnap_fw_u8(w, NULL, 7);
    vmsnap_fw_i64(w, NULL, -2);
    vmsnap_fw_array_end(w);
    vmsnap_fw_bytes(w, "x", "\xaa\xbb", 2);
    vmsnap_fw_str(w, "t", "hi");
    vmsnap_fw_u16(w, "c", 0x0102);
    vmsnap_fw_u64(w, "d", 0x0102030405060708ull);
    g_autoptr(GBytes) b = finish_ok(w);
    static const uint8_t expect[] = {
        3,    1,    'a',  0x44, 0x33, 0x22, 0x11, 9, 1, 's', 6,   1, 'b', 1,    11,
        0,    10,   1,    'v',  2,    0,    0,    0, 1, 0,   7,   5, 0,   0xfe, 0xff,
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 11,   0, 7, 1,   'x', 2, 0,   0,    0,
        0xaa, 0xbb, 8,    1,    't',  2,    0,    0, 0, 'h', 'i', 2, 1,   'c',  0x02,
        0x01, 4,    1,    'd',  8,    7,    6,    5, 4, 3,   2,   1,
    };
    g_assert_cmpmem(g_bytes_get_data(b, NULL), g_bytes_get_size(b), expect, sizeof(expect));

    /* An empty writer gives an empty payload, which reads back as nothing. */
    g_autoptr(GBytes) empty = finish_ok(vmsnap_fw_new());
    g_assert_cmpuint(g_bytes_get_size(empty), ==, 0);
    g_autoptr(GError) error = NULL;
    g_assert_true(vmsnap_fr_finish(vmsnap_fr_new(NULL, 0, "x", 0, 1), &error));
    g_assert_no_error(error);
}

/* Writes one field list, reads it back with a mismatching reader; returns the error. */
typedef void (*WriteFn)(VmsnapFieldWriter *w);
typedef void (*ReadFn)(VmsnapFieldReader *r);

static GError *mismatch(WriteFn write, ReadFn read)
{
    VmsnapFieldWriter *w = vmsnap_fw_new();
    write(w);
    g_autoptr(GBytes) b = finish_ok(w);
    VmsnapFieldReader *r =
        vmsnap_fr_new(g_bytes_get_data(b, NULL), g_bytes_get_size(b), "cpu", 1, 1);
    read(r);
    g_assert_true(vmsnap_fr_failed(r));
    GError *error = NULL;
    g_assert_false(vmsnap_fr_finish(r, &error));
    return error;
}

static void w_sregs(VmsnapFieldWriter *w)
{
    vmsnap_fw_struct_begin(w, "sregs");
    vmsnap_fw_struct_begin(w, "cs");
    vmsnap_fw_u32(w, "base", 5);
    vmsnap_fw_struct_end(w);
    vmsnap_fw_struct_end(w);
}

static void r_sregs_u64(VmsnapFieldReader *r)
{
    uint64_t v = 7;
    vmsnap_fr_struct_begin(r, "sregs");
    vmsnap_fr_struct_begin(r, "cs");
    g_assert_false(vmsnap_fr_u64(r, "base", &v));
    g_assert_cmpuint(v, ==, 0);
    /* Sticky: everything after fails too, and zeroes its output. */
    g_assert_false(vmsnap_fr_struct_end(r));
    g_assert_false(vmsnap_fr_struct_end(r));
}

static void r_sregs_name(VmsnapFieldReader *r)
{
    uint32_t v;
    vmsnap_fr_struct_begin(r, "sregs");
    vmsnap_fr_struct_begin(r, "cs");
    vmsnap_fr_u32(r, "limit", &v);
}

static void r_sregs_missing(VmsnapFieldReader *r)
{
    uint32_t v;
    vmsnap_fr_struct_begin(r, "sregs");
    vmsnap_fr_struct_begin(r, "cs");
    vmsnap_fr_u32(r, "base", &v);
    g_assert_false(vmsnap_fr_u32(r, "limit", &v));
}

static void r_sregs_trailing(VmsnapFieldReader *r)
{
    vmsnap_fr_struct_begin(r, "sregs");
    vmsnap_fr_struct_begin(r, "cs");
    g_assert_false(vmsnap_fr_struct_end(r));
}

static void w_two(VmsnapFieldWriter *w)
{
    vmsnap_fw_u32(w, "a", 1);
    vmsnap_fw_u32(w, "b", 2);
}

static void r_one(VmsnapFieldReader *r)
{
    uint32_t v;
    g_assert_true(vmsnap_fr_u32(r, "a", &v));
    g_assert_false(vmsnap_fr_failed(r));
}

static void r_three(VmsnapFieldReader *r)
{
    uint32_t v;
    vmsnap_fr_u32(r, "a", &v);
    vmsnap_fr_u32(r, "b", &v);
    g_assert_false(vmsnap_fr_u32(r, "c", &v));
}

static void w_array(VmsnapFieldWriter *w)
{
    vmsnap_fw_array_begin(w, "queue", 5);
    for (int i = 0; i < 5; i++) {
        vmsnap_fw_u64(w, NULL, (uint64_t)i);
    }
    vmsnap_fw_array_end(w);
    vmsnap_fw_bytes(w, "regs", "abcd", 4);
}

static void r_array_max(VmsnapFieldReader *r)
{
    uint32_t n = 9;
    g_assert_false(vmsnap_fr_array_begin(r, "queue", 4, &n));
    g_assert_cmpuint(n, ==, 0);
}

static void r_array_elem(VmsnapFieldReader *r)
{
    uint32_t n;
    uint64_t v;
    uint32_t x;
    vmsnap_fr_array_begin(r, "queue", 8, &n);
    vmsnap_fr_u64(r, NULL, &v);
    vmsnap_fr_u64(r, NULL, &v);
    g_assert_false(vmsnap_fr_u32(r, NULL, &x));
}

static void r_bytes_len(VmsnapFieldReader *r)
{
    uint32_t n;
    uint64_t v;
    uint8_t buf[8];
    vmsnap_fr_array_begin(r, "queue", 8, &n);
    for (uint32_t i = 0; i < n; i++) {
        vmsnap_fr_u64(r, NULL, &v);
    }
    vmsnap_fr_array_end(r);
    memset(buf, 0x55, sizeof(buf));
    g_assert_false(vmsnap_fr_bytes(r, "regs", buf, 8));
    for (size_t i = 0; i < sizeof(buf); i++) {
        g_assert_cmpuint(buf[i], ==, 0);
    }
}

static void r_array_short(VmsnapFieldReader *r)
{
    uint32_t n;
    uint64_t v;
    vmsnap_fr_array_begin(r, "queue", 8, &n);
    vmsnap_fr_u64(r, NULL, &v);
    g_assert_false(vmsnap_fr_array_end(r));
}

static void r_value(VmsnapFieldReader *r)
{
    uint32_t n;
    uint64_t v;
    vmsnap_fr_array_begin(r, "queue", 8, &n);
    vmsnap_fr_u64(r, NULL, &v);
    vmsnap_fr_u64(r, NULL, &v);
    g_assert_false(vmsnap_fr_fail(r, "value %" G_GUINT64_FORMAT " out of range", v));
}

static void r_value_top(VmsnapFieldReader *r)
{
    uint32_t n;
    uint64_t v;
    vmsnap_fr_array_begin(r, "queue", 8, &n);
    for (uint32_t i = 0; i < n; i++) {
        vmsnap_fr_u64(r, NULL, &v);
    }
    vmsnap_fr_array_end(r);
    vmsnap_fr_fail(r, "bad queue");
}

static void test_mismatch(void)
{
    GError *e;

    e = mismatch(w_sregs, r_sregs_u64);
    assert_error(e, VMSNAP_FIELDS_ERROR_MISMATCH,
                 SECTION "field 'sregs.cs.base': expected u64, found u32");
    g_error_free(e);

    e = mismatch(w_sregs, r_sregs_name);
    assert_error(e, VMSNAP_FIELDS_ERROR_MISMATCH,
                 SECTION "field 'sregs.cs.limit': expected u32 'limit', found u32 'base'");
    g_error_free(e);

    e = mismatch(w_sregs, r_sregs_missing);
    assert_error(e, VMSNAP_FIELDS_ERROR_MISMATCH,
                 SECTION "field 'sregs.cs.limit': expected u32, found the end of struct "
                         "'sregs.cs'");
    g_error_free(e);

    e = mismatch(w_sregs, r_sregs_trailing);
    assert_error(e, VMSNAP_FIELDS_ERROR_MISMATCH,
                 SECTION "field 'sregs.cs.base': unexpected u32 after the last expected member "
                         "of 'sregs.cs'");
    g_error_free(e);

    e = mismatch(w_two, r_three);
    assert_error(e, VMSNAP_FIELDS_ERROR_MISMATCH,
                 SECTION "field 'c': expected u32, found the end of the payload");
    g_error_free(e);

    e = mismatch(w_array, r_array_max);
    assert_error(e, VMSNAP_FIELDS_ERROR_MISMATCH,
                 SECTION "field 'queue': array of 5 elements, at most 4 expected");
    g_error_free(e);

    e = mismatch(w_array, r_array_elem);
    assert_error(e, VMSNAP_FIELDS_ERROR_MISMATCH,
                 SECTION "field 'queue[2]': expected u32, found u64");
    g_error_free(e);

    e = mismatch(w_array, r_bytes_len);
    assert_error(e, VMSNAP_FIELDS_ERROR_MISMATCH,
                 SECTION "field 'regs': expected 8 bytes, found 4");
    g_error_free(e);

    e = mismatch(w_array, r_array_short);
    assert_error(e, VMSNAP_FIELDS_ERROR_USAGE,
                 SECTION "field 'queue': array_end after 1 of its 5 elements");
    g_error_free(e);

    e = mismatch(w_array, r_value);
    assert_error(e, VMSNAP_FIELDS_ERROR_VALUE, SECTION "field 'queue[1]': value 1 out of range");
    g_error_free(e);

    e = mismatch(w_array, r_value_top);
    assert_error(e, VMSNAP_FIELDS_ERROR_VALUE, SECTION "field 'queue': bad queue");
    g_error_free(e);

    /* A trailing top-level field is reported by finish(). */
    VmsnapFieldWriter *w = vmsnap_fw_new();
    w_two(w);
    g_autoptr(GBytes) b = finish_ok(w);
    VmsnapFieldReader *r =
        vmsnap_fr_new(g_bytes_get_data(b, NULL), g_bytes_get_size(b), "cpu", 1, 1);
    r_one(r);
    g_autoptr(GError) error = NULL;
    g_assert_false(vmsnap_fr_finish(r, &error));
    assert_error(error, VMSNAP_FIELDS_ERROR_MISMATCH,
                 SECTION "field 'b': unexpected u32 after the last expected field");
}

/* Reader-side limits: strings, bytes_dup, unclosed containers, misuse. */
static void test_reader_limits(void)
{
    VmsnapFieldWriter *w = vmsnap_fw_new();
    vmsnap_fw_str(w, "s", "hello");
    vmsnap_fw_bytes(w, "b", "12345678", 8);
    vmsnap_fw_struct_begin(w, "t");
    vmsnap_fw_struct_end(w);
    g_autoptr(GBytes) b = finish_ok(w);
    const void *data = g_bytes_get_data(b, NULL);
    size_t len = g_bytes_get_size(b);
    g_autoptr(GError) error = NULL;
    char *s = NULL;
    void *p = NULL;
    size_t n = 0;

    VmsnapFieldReader *r = vmsnap_fr_new(data, len, "dev", 0, 2);
    g_assert_false(vmsnap_fr_str(r, "s", 4, &s));
    g_assert_null(s);
    g_assert_false(vmsnap_fr_finish(r, &error));
    assert_error(error, VMSNAP_FIELDS_ERROR_MISMATCH,
                 "section 'dev' instance 0 version 2: field 's': string of 5 bytes, at most 4 "
                 "expected");
    g_clear_error(&error);

    r = vmsnap_fr_new(data, len, "dev", 0, 2);
    g_assert_true(vmsnap_fr_str(r, "s", 5, &s));
    g_assert_cmpstr(s, ==, "hello");
    g_free(s);
    g_assert_false(vmsnap_fr_bytes_dup(r, "b", 7, &p, &n));
    g_assert_null(p);
    g_assert_cmpuint(n, ==, 0);
    g_assert_false(vmsnap_fr_finish(r, &error));
    assert_contains(error->message, "field 'b': 8 bytes, at most 7 expected");
    g_clear_error(&error);

    /* struct left open */
    r = vmsnap_fr_new(data, len, "dev", 0, 2);
    vmsnap_fr_str(r, "s", 5, &s);
    g_free(s);
    g_assert_true(vmsnap_fr_bytes_dup(r, "b", 8, &p, &n));
    g_assert_cmpmem(p, n, "12345678", 8);
    g_free(p);
    g_assert_true(vmsnap_fr_struct_begin(r, "t"));
    g_assert_false(vmsnap_fr_finish(r, &error));
    assert_error(error, VMSNAP_FIELDS_ERROR_USAGE,
                 "section 'dev' instance 0 version 2: field 't': struct not closed");
    g_clear_error(&error);

    /* unbalanced end, unnamed read at top level, named read in an array */
    r = vmsnap_fr_new(data, len, NULL, 0, 0);
    g_assert_false(vmsnap_fr_array_end(r));
    g_assert_false(vmsnap_fr_finish(r, &error));
    assert_error(error, VMSNAP_FIELDS_ERROR_USAGE, "array_end without a matching array_begin");
    g_clear_error(&error);

    r = vmsnap_fr_new(data, len, NULL, 0, 0);
    g_assert_false(vmsnap_fr_str(r, NULL, 5, &s));
    g_assert_false(vmsnap_fr_finish(r, &error));
    assert_error(error, VMSNAP_FIELDS_ERROR_USAGE, "a field name is required");
    g_clear_error(&error);
}

/* Hand-made payloads the writer would never produce. */
static void check_bad(const void *data, size_t len, const char *needle)
{
    g_autoptr(GError) error = NULL;
    g_autoptr(GString) out = g_string_new(NULL);
    g_assert_false(vmsnap_fields_check(data, len, &error));
    g_assert_error(error, VMSNAP_FIELDS_ERROR, VMSNAP_FIELDS_ERROR_MALFORMED);
    assert_contains(error->message, needle);
    g_clear_error(&error);
    g_assert_false(vmsnap_fields_print(data, len, "p", true, out, &error));
    assert_contains(error->message, needle);
}

static void test_malformed(void)
{
    check_bad("\x0c\x01x", 3, "unknown field kind");
    check_bad("\x00\x01x", 3, "unknown field kind");
    check_bad("\x01\x40", 2, "longer than 63");
    check_bad("\x01\x02x", 3, "truncated field name");
    check_bad("\x01\x01 \x00", 4, "outside [A-Za-z0-9_-]");
    check_bad("\x01\x00\x05", 3, "unnamed field outside an array");
    check_bad("\x0b\x00", 2, "end marker outside any struct or array");
    check_bad("\x09\x01s\x0b\x01x", 6, "end marker with a name");
    check_bad("\x06\x01x\x02", 4, "invalid bool value 2");
    check_bad("\x04\x01x\x01\x02", 5, "truncated u64 value");
    check_bad("\x07\x01x\x05\x00\x00\x00\x01", 8, "truncated bytes (5 bytes, 1 left)");
    check_bad("\x07\x01x\x01\x00\x00\x01", 7, "bytes of 16777217 bytes over the limit");
    check_bad("\x08\x01x\x01\x00\x01\x00\x00", 8, "str of 65537 bytes over the limit");
    check_bad("\x08\x01x\x02\x00\x00\x00"
              "a\x00",
              9, "string contains a NUL byte");
    check_bad("\x08\x01x\x02\x00\x00\x00"
              "\xc3\x28",
              9, "not valid UTF-8");
    check_bad("\x0a\x01x\x02\x00\x00\x00\x01\x00\x01\x0b\x00", 12,
              "array of 2 elements ends "
              "after 1");
    check_bad("\x0a\x01x\x00\x00\x00\x00\x01\x00\x01\x0b\x00", 12, "more elements than");
    check_bad("\x0a\x01x\x01\x00\x00\x00\x01\x01y\x01\x0b\x00", 13, "named field 'y' inside");
    check_bad("\x0a\x01x\x01\x00", 5, "truncated array count");
    check_bad("\x09\x01s\x01\x01x\x01", 7, "the payload ends inside this struct");
    check_bad("\x09\x01s\x09\x01t\x01\x01x\x01\x0b\x00", 12,
              "s' at payload offset 12: the payload ends inside this struct");

    /* 17 nested structs. */
    g_autoptr(GByteArray) deep = g_byte_array_new();
    for (int i = 0; i < 17; i++) {
        g_byte_array_append(deep, (const uint8_t *)"\x09\x01s", 3);
    }
    for (int i = 0; i < 17; i++) {
        g_byte_array_append(deep, (const uint8_t *)"\x0b\x00", 2);
    }
    check_bad(deep->data, deep->len, "nesting deeper than 16");
    g_autoptr(GError) error = NULL;
    VmsnapFieldReader *r = vmsnap_fr_new(deep->data, deep->len, "d", 0, 1);
    for (int i = 0; i < 17; i++) {
        vmsnap_fr_struct_begin(r, "s");
    }
    g_assert_false(vmsnap_fr_finish(r, &error));
    assert_contains(error->message, "nesting deeper than 16");
    g_clear_error(&error);

    /* A huge array count with few bytes is refused before any loop runs. */
    static const uint8_t huge[] = { 10, 1, 'a', 0xff, 0xff, 0xff, 0xff, 1, 0, 1, 11, 0 };
    uint32_t n = 1;
    r = vmsnap_fr_new(huge, sizeof(huge), "d", 0, 1);
    g_assert_false(vmsnap_fr_array_begin(r, "a", UINT32_MAX, &n));
    g_assert_cmpuint(n, ==, 0);
    g_assert_false(vmsnap_fr_finish(r, &error));
    g_assert_error(error, VMSNAP_FIELDS_ERROR, VMSNAP_FIELDS_ERROR_MALFORMED);
    assert_contains(error->message, "array count 4294967295 does not fit");
    g_clear_error(&error);
    check_bad(huge, sizeof(huge), "array of 4294967295 elements ends after 1");

    /* Reader: embedded NUL and bad UTF-8 in a string, bad bool. */
    char *s = (char *)"x";
    r = vmsnap_fr_new("\x08\x01x\x02\x00\x00\x00"
                      "a\x00",
                      9, "d", 0, 1);
    g_assert_false(vmsnap_fr_str(r, "x", 100, &s));
    g_assert_null(s);
    g_assert_false(vmsnap_fr_finish(r, &error));
    assert_error(error, VMSNAP_FIELDS_ERROR_MALFORMED,
                 "section 'd' instance 0 version 1: field 'x': string contains a NUL byte");
    g_clear_error(&error);
    bool bv = true;
    r = vmsnap_fr_new("\x06\x01x\x02", 4, "d", 0, 1);
    g_assert_false(vmsnap_fr_bool(r, "x", &bv));
    g_assert_false(bv);
    g_assert_false(vmsnap_fr_finish(r, &error));
    assert_contains(error->message, "invalid bool value 2");
    g_clear_error(&error);
}

static void expect_usage(VmsnapFieldWriter *w, const char *message)
{
    g_autoptr(GError) error = NULL;
    g_assert_null(vmsnap_fw_finish(w, &error));
    assert_error(error, VMSNAP_FIELDS_ERROR_USAGE, message);
}

static void test_writer_misuse(void)
{
    VmsnapFieldWriter *w;

    w = vmsnap_fw_new();
    vmsnap_fw_struct_begin(w, "regs");
    vmsnap_fw_u32(w, "r ip", 1);
    vmsnap_fw_u32(w, "ok", 1); /* ignored after the first error */
    expect_usage(w, "field 'regs': invalid field name 'r ip' (1 to 63 characters of "
                    "[A-Za-z0-9_-])");

    w = vmsnap_fw_new();
    vmsnap_fw_u8(w, NULL, 1);
    expect_usage(w, "invalid field name '' (1 to 63 characters of [A-Za-z0-9_-])");

    char long_name[65];
    memset(long_name, 'a', 64);
    long_name[64] = '\0';
    w = vmsnap_fw_new();
    vmsnap_fw_u8(w, long_name + 1, 1); /* 63: fine */
    vmsnap_fw_u8(w, long_name, 1);     /* 64: not */
    g_autoptr(GError) error = NULL;
    g_assert_null(vmsnap_fw_finish(w, &error));
    assert_contains(error->message, "invalid field name");
    g_clear_error(&error);

    w = vmsnap_fw_new();
    vmsnap_fw_array_begin(w, "q", 2);
    vmsnap_fw_u8(w, "x", 1);
    expect_usage(w, "field 'q': array elements have no name, got 'x'");

    w = vmsnap_fw_new();
    vmsnap_fw_array_begin(w, "q", 1);
    vmsnap_fw_u8(w, NULL, 1);
    vmsnap_fw_u8(w, NULL, 2);
    expect_usage(w, "field 'q': more than the 1 elements announced");

    w = vmsnap_fw_new();
    vmsnap_fw_array_begin(w, "q", 3);
    vmsnap_fw_u8(w, NULL, 1);
    vmsnap_fw_array_end(w);
    expect_usage(w, "field 'q': 1 elements written, 3 announced");

    w = vmsnap_fw_new();
    vmsnap_fw_struct_end(w);
    expect_usage(w, "struct_end without a matching struct_begin");

    w = vmsnap_fw_new();
    vmsnap_fw_struct_begin(w, "s");
    vmsnap_fw_array_end(w);
    expect_usage(w, "field 's': array_end without a matching array_begin");

    w = vmsnap_fw_new();
    vmsnap_fw_array_begin(w, "a", 1);
    vmsnap_fw_struct_begin(w, NULL);
    expect_usage(w, "field 'a[0]': struct not closed");

    /* 16 levels are fine, 17 are not. */
    w = vmsnap_fw_new();
    for (int i = 0; i < 16; i++) {
        vmsnap_fw_struct_begin(w, "s");
    }
    for (int i = 0; i < 16; i++) {
        vmsnap_fw_struct_end(w);
    }
    g_autoptr(GBytes) deep = finish_ok(w);
    g_assert_true(
        vmsnap_fields_check(g_bytes_get_data(deep, NULL), g_bytes_get_size(deep), &error));
    g_assert_no_error(error);
    w = vmsnap_fw_new();
    for (int i = 0; i < 17; i++) {
        vmsnap_fw_struct_begin(w, "s");
    }
    expect_usage(w, "field 's.s.s.s.s.s.s.s.s.s.s.s.s.s.s.s.s': nesting deeper than 16");

    /* Size limits: BYTES 16 MiB, STR 64 KiB, UTF-8. */
    size_t big = (16u << 20) + 1;
    g_autofree uint8_t *blob = g_malloc0(big);
    w = vmsnap_fw_new();
    vmsnap_fw_bytes(w, "ok", blob, big - 1);
    vmsnap_fw_bytes(w, "big", blob, big);
    expect_usage(w, "field 'big': bytes of 16777217 bytes, at most 16777216 allowed");

    g_autofree char *str = g_malloc(65537 + 1);
    memset(str, 'x', 65537);
    str[65537] = '\0';
    w = vmsnap_fw_new();
    vmsnap_fw_str(w, "ok", str + 1);
    vmsnap_fw_str(w, "long", str);
    expect_usage(w, "field 'long': str of 65537 bytes, at most 65536 allowed");

    w = vmsnap_fw_new();
    vmsnap_fw_str(w, "bad", "\xc3\x28");
    expect_usage(w, "field 'bad': string is not valid UTF-8");

    /* The whole payload is bounded by the section limit (256 MiB). */
    w = vmsnap_fw_new();
    for (int i = 0; i < 17; i++) {
        vmsnap_fw_bytes(w, "b", blob, big - 1);
    }
    g_assert_null(vmsnap_fw_finish(w, &error));
    assert_contains(error->message, "the payload would exceed 268435456 bytes");
}

/* Every strict prefix of a valid payload is refused by the reader, and by the
 * checker when the payload is one top-level struct; no byte pattern crashes. */
static void test_truncated(void)
{
    g_autoptr(GBytes) b = sample();
    size_t len = g_bytes_get_size(b);
    const uint8_t *data = g_bytes_get_data(b, NULL);

    for (size_t cut = 0; cut < len; cut++) {
        /* A copy of exactly `cut` bytes so ASan sees any over-read. */
        g_autofree uint8_t *copy = g_memdup2(data, cut);
        g_autoptr(GError) error = NULL;
        g_assert_false(read_sample(copy, cut, &error));
        g_assert_nonnull(error);
    }

    /* The sample's fields spliced into one struct: no prefix is complete. */
    g_autoptr(GByteArray) spliced = g_byte_array_new();
    g_byte_array_append(spliced,
                        (const uint8_t *)"\x09\x03"
                                         "all",
                        5);
    g_byte_array_append(spliced, data, (guint)len);
    g_byte_array_append(spliced, (const uint8_t *)"\x0b\x00", 2);
    g_autoptr(GError) error = NULL;
    g_assert_true(vmsnap_fields_check(spliced->data, spliced->len, &error));
    g_assert_no_error(error);
    for (size_t cut = 0; cut < spliced->len; cut++) {
        g_autofree uint8_t *copy = g_memdup2(spliced->data, cut);
        g_autoptr(GString) out = g_string_new(NULL);
        g_assert_false(vmsnap_fields_check(copy, cut, &error) && cut > 0);
        g_clear_error(&error);
        g_assert_false(vmsnap_fields_print(copy, cut, "x", false, out, &error) && cut > 0);
        g_clear_error(&error);
    }
}

/* Random bytes and random mutations of a valid payload: no crash, no over-read
 * (under ASan), and every reader call either succeeds or fails cleanly. */
static void test_hostile(void)
{
    g_autoptr(GBytes) b = sample();
    size_t len = g_bytes_get_size(b);
    const uint8_t *data = g_bytes_get_data(b, NULL);
    GRand *rand = g_rand_new_with_seed(1234);
    unsigned rejected = 0;

    for (int round = 0; round < 20000; round++) {
        size_t n;
        g_autofree uint8_t *buf = NULL;
        if (round % 2 == 0) {
            n = (size_t)g_rand_int_range(rand, 0, 200);
            buf = g_malloc(n + 1);
            for (size_t i = 0; i < n; i++) {
                buf[i] = (uint8_t)g_rand_int_range(rand, 0, 13); /* mostly plausible kinds */
                if (g_rand_boolean(rand)) {
                    buf[i] = (uint8_t)g_rand_int(rand);
                }
            }
        } else {
            n = len;
            buf = g_memdup2(data, len);
            int flips = g_rand_int_range(rand, 1, 4);
            for (int f = 0; f < flips; f++) {
                buf[g_rand_int_range(rand, 0, (gint32)len)] ^=
                    (uint8_t)g_rand_int_range(rand, 1, 256);
            }
        }
        g_autoptr(GError) e1 = NULL;
        g_autoptr(GError) e2 = NULL;
        g_autoptr(GError) e3 = NULL;
        g_autoptr(GString) out = g_string_new(NULL);
        bool ok = vmsnap_fields_check(buf, n, &e1);
        g_assert_true(ok == (e1 == NULL));
        g_assert_true(vmsnap_fields_print(buf, n, "h", round % 4 == 1, out, &e2) == ok);
        if (!read_sample(buf, n, &e3)) {
            g_assert_nonnull(e3);
            rejected++;
        }
    }
    g_rand_free(rand);
    g_assert_cmpuint(rejected, >, 12000);
}

static void test_print(void)
{
    g_autoptr(GBytes) b = sample();
    g_autoptr(GString) out = g_string_new(NULL);
    g_autoptr(GError) error = NULL;
    g_assert_true(vmsnap_fields_print(g_bytes_get_data(b, NULL), g_bytes_get_size(b), "cpu1", false,
                                      out, &error));
    g_assert_no_error(error);
    g_assert_cmpstr(out->str, ==,
                    "cpu1.a8 = (u8) 0xab\n"
                    "cpu1.a16 = (u16) 0xbeef\n"
                    "cpu1.a32 = (u32) 0xdeadbeef\n"
                    "cpu1.a64 = (u64) 0x0123456789abcdef\n"
                    "cpu1.neg = (i64) -42\n"
                    "cpu1.on = (bool) true\n"
                    "cpu1.off = (bool) false\n"
                    "cpu1.blob = (bytes[3]) 010203\n"
                    "cpu1.empty = (bytes[0])\n"
                    "cpu1.name = (str) \"vm-\\\"one\\\"\\x0a\"\n"
                    "cpu1.regs.rip = (u64) 0x0000000000101234\n"
                    "cpu1.regs.cs.base = (u64) 0x0000000000000000\n"
                    "cpu1.regs.cs.limit = (u32) 0xffffffff\n"
                    "cpu1.queue[0] = (u16) 0x0001\n"
                    "cpu1.queue[1] = (u16) 0x0002\n"
                    "cpu1.queue[2] = (u16) 0x0003\n"
                    "cpu1.lapics[0].id = (u32) 0x00000000\n"
                    "cpu1.lapics[0].lvt[0] = (u32) 0x00010000\n"
                    "cpu1.lapics[1].id = (u32) 0x00000001\n"
                    "cpu1.lapics[1].lvt[0] = (u32) 0x00010001\n"
                    "cpu1.nothing = (struct) {}\n"
                    "cpu1.none = (array[0]) []\n");

    /* No prefix; long bytes abbreviated unless full. */
    uint8_t blob[40];
    for (int i = 0; i < 40; i++) {
        blob[i] = (uint8_t)i;
    }
    VmsnapFieldWriter *w = vmsnap_fw_new();
    vmsnap_fw_bytes(w, "lapic", blob, sizeof(blob));
    g_autoptr(GBytes) lb = finish_ok(w);
    g_string_truncate(out, 0);
    g_assert_true(vmsnap_fields_print(g_bytes_get_data(lb, NULL), g_bytes_get_size(lb), NULL, false,
                                      out, &error));
    g_assert_cmpstr(out->str, ==,
                    "lapic = (bytes[40]) 000102030405060708090a0b0c0d0e0f"
                    "101112131415161718191a1b1c1d1e1f...\n");
    g_string_truncate(out, 0);
    g_assert_true(vmsnap_fields_print(g_bytes_get_data(lb, NULL), g_bytes_get_size(lb), "", true,
                                      out, &error));
    g_assert_cmpstr(out->str, ==,
                    "lapic = (bytes[40]) 000102030405060708090a0b0c0d0e0f"
                    "101112131415161718191a1b1c1d1e1f2021222324252627\n");
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/fields/round-trip", test_round_trip);
    g_test_add_func("/fields/encoding", test_encoding);
    g_test_add_func("/fields/mismatch", test_mismatch);
    g_test_add_func("/fields/reader-limits", test_reader_limits);
    g_test_add_func("/fields/malformed", test_malformed);
    g_test_add_func("/fields/writer-misuse", test_writer_misuse);
    g_test_add_func("/fields/truncated", test_truncated);
    g_test_add_func("/fields/hostile", test_hostile);
    g_test_add_func("/fields/print", test_print);
    return g_test_run();
}
