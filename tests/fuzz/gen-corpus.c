/*
 * Writes the seed corpus of fuzz-format into a directory (argv[1]): small
 * snapshots in the "sparse" form fuzz-format.c understands (the 4096-byte header
 * followed by the metadata region, without the page areas), some valid and some
 * with one rule broken (re-sealed, so only that rule catches them), plus raw
 * fields payloads. Not run by the tests: rerun it by hand when the format
 * changes, and commit the result.
 *
 *   ninja -C build tests/fuzz/gen-corpus-format && build/tests/fuzz/gen-corpus-format \
 *       tests/fuzz/corpus-format
 */
#include <stdio.h>
#include <string.h>
#include <vmsnap/fields.h>

#include "snapbuild.h"

static const char *dir;

static void save(const char *name, const void *data, size_t len)
{
    g_autofree char *path = g_build_filename(dir, name, NULL);
    g_autoptr(GError) error = NULL;
    if (!g_file_set_contents(path, data, (gssize)len, &error)) {
        fprintf(stderr, "%s\n", error->message);
        exit(1);
    }
    printf("%s: %zu bytes\n", path, len);
}

/* Header + metadata, as fuzz-format.c's sparse mode reads them back. */
static void save_snap(const char *name, const Snap *s)
{
    g_autoptr(GByteArray) out = g_byte_array_new();
    g_byte_array_append(out, s->file->data + s->h.base_offset, FORMAT_HEADER_SIZE);
    if (s->h.state == FORMAT_STATE_DONE) {
        g_byte_array_append(out, s->file->data + s->h.metadata_offset,
                            (guint)(s->h.file_size - s->h.metadata_offset));
    }
    save(name, out->data, out->len);
}

static void put64(Snap *s, uint64_t at, uint64_t v)
{
    v = GUINT64_TO_LE(v);
    memcpy(s->file->data + at, &v, 8);
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s DIR\n", argv[0]);
        return 2;
    }
    dir = argv[1];
    g_mkdir_with_parents(dir, 0755);

    static const struct {
        const char *name;
        SnapSpec spec;
    } valid[] = {
        { "valid-base0.snap", { .base = 0 } },
        { "valid-base4096.snap", { .base = 4096 } },
        { "valid-base12345.snap", { .base = 12345, .pages = { 1, 64 } } },
        { "valid-compat-bit.snap", { .compat = 1 } },
        { "valid-unknown-section.snap", { .extra_type = 99 } },
        { "valid-workset.snap", { .extra_type = FORMAT_SECTION_WORKSET } },
        { "partial.snap", { .base = 4096, .partial = true } },
        { "incompat-delta.snap", { .incompat = 1 } },
        { "required-unknown.snap", { .extra_type = 99, .extra_flags = FORMAT_SECTION_REQUIRED } },
    };
    for (size_t i = 0; i < G_N_ELEMENTS(valid); i++) {
        Snap *s = snap_build(&valid[i].spec);
        save_snap(valid[i].name, s);
        snap_free(s);
    }

    /* One rule broken each, re-sealed. */
    SnapSpec spec = { .base = 4096 };
    Snap *s = snap_build(&spec);
    int bm = snap_find(s, FORMAT_SECTION_PRESENT_BITMAP, 1);
    uint64_t at = snap_payload(s, (unsigned)bm, NULL) + 8;
    put64(s, at, 1ull << 10); /* past page 66 */
    snap_reseal(s);
    save_snap("bad-bitmap-trailing-bit.snap", s);
    snap_free(s);

    s = snap_build(&spec);
    int cs = snap_find(s, FORMAT_SECTION_PAGE_CHECKSUMS, 0);
    put64(s, snap_payload(s, (unsigned)cs, NULL), 0x1234); /* page 0 is absent */
    snap_reseal(s);
    save_snap("bad-absent-checksum.snap", s);
    snap_free(s);

    s = snap_build(&spec);
    int rb = snap_find(s, FORMAT_SECTION_RAM_BLOCKS, 0);
    uint64_t table = snap_payload(s, (unsigned)rb, NULL);
    put64(s, table + 8 + 64 + 48, s->blocks[0].pages_offset); /* areas overlap */
    snap_reseal(s);
    save_snap("bad-overlapping-areas.snap", s);
    snap_free(s);

    s = snap_build(&spec);
    int cpu = snap_find(s, FORMAT_SECTION_DEVICE, 1);
    uint64_t e = snap_dir_entry(s, (unsigned)cpu);
    put64(s, e + 16, snap_payload(s, (unsigned)cpu, NULL) - 8); /* payloads overlap */
    snap_reseal(s);
    save_snap("bad-overlapping-payloads.snap", s);
    snap_free(s);

    s = snap_build(&spec);
    s->file->data[s->h.metadata_offset + 100] ^= 1; /* not re-sealed */
    save_snap("bad-directory-checksum.snap", s);
    snap_free(s);

    /* Raw fields payloads. */
    VmsnapFieldWriter *w = vmsnap_fw_new();
    vmsnap_fw_str(w, "name", "fuzz");
    vmsnap_fw_str(w, "uuid", "6b1f0f3e-5d1c-4b53-9a63-0c1c0f1e2d3c");
    vmsnap_fw_u64(w, "memory", 1 << 20);
    vmsnap_fw_u32(w, "cpus", 1);
    vmsnap_fw_str(w, "kernel", "embedded:guest/dirty");
    vmsnap_fw_u64(w, "kernel_xxh3", 7);
    vmsnap_fw_str(w, "cmdline", "console=ttyS0");
    vmsnap_fw_str(w, "run_state", "running");
    g_autoptr(GBytes) config = vmsnap_fw_finish(w, NULL);
    save("fields-config.bin", g_bytes_get_data(config, NULL), g_bytes_get_size(config));

    w = vmsnap_fw_new();
    vmsnap_fw_struct_begin(w, "regs");
    vmsnap_fw_u64(w, "rip", 0x101234);
    vmsnap_fw_u64(w, "rflags", 2);
    vmsnap_fw_struct_end(w);
    vmsnap_fw_array_begin(w, "msrs", 3);
    for (int i = 0; i < 3; i++) {
        vmsnap_fw_u64(w, NULL, (uint64_t)i);
    }
    vmsnap_fw_array_end(w);
    vmsnap_fw_bytes(w, "xsave", "abcd", 4);
    vmsnap_fw_array_begin(w, "lapics", 2);
    for (int i = 0; i < 2; i++) {
        vmsnap_fw_struct_begin(w, NULL);
        vmsnap_fw_bool(w, "on", true);
        vmsnap_fw_i64(w, "skew", -i);
        vmsnap_fw_u8(w, "id", (uint8_t)i);
        vmsnap_fw_u16(w, "mode", 3);
        vmsnap_fw_struct_end(w);
    }
    vmsnap_fw_array_end(w);
    g_autoptr(GBytes) device = vmsnap_fw_finish(w, NULL);
    save("fields-device.bin", g_bytes_get_data(device, NULL), g_bytes_get_size(device));
    return 0;
}
