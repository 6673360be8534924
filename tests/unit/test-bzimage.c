/* The Linux boot protocol: bzImage setup header parsing, the e820 map, the zero
 * page and the vmlinux (ELF64) loader, on hand-made images. */
#include "boot_linux.h"
#include "bzimage.h"
#include "e820.h"
#include "vmlinux.h"

#include <elf.h>
#include <string.h>

#define SETUP_SECTS  4u
#define SETUP_SIZE   ((SETUP_SECTS + 1) * 512u)
#define KERNEL_SIZE  8192u
#define INIT_SIZE    0x40000u
#define PREF_ADDRESS 0x1000000u

/* A minimal but well-formed bzImage: setup header + a recognisable "kernel". */
static GByteArray *make_bzimage(uint16_t version)
{
    GByteArray *b = g_byte_array_sized_new(SETUP_SIZE + KERNEL_SIZE);
    g_byte_array_set_size(b, SETUP_SIZE + KERNEL_SIZE);
    uint8_t *p = b->data;
    memset(p, 0, b->len);
    p[LINUX_HDR_SETUP_SECTS] = SETUP_SECTS;
    linux_put16(p, LINUX_HDR_BOOT_FLAG, LINUX_BOOT_FLAG);
    p[LINUX_HDR_JUMP] = 0xeb;
    p[LINUX_HDR_JUMP + 1] = 0x6a; /* header ends at 0x26c */
    linux_put32(p, LINUX_HDR_MAGIC_OFF, LINUX_HDR_MAGIC);
    linux_put16(p, LINUX_HDR_VERSION, version);
    p[LINUX_HDR_LOADFLAGS] = LINUX_LOADFLAGS_LOADED_HIGH;
    linux_put32(p, LINUX_HDR_INITRD_ADDR_MAX, 0x7fffffffu);
    linux_put32(p, LINUX_HDR_KERNEL_ALIGN, 0x200000u);
    p[LINUX_HDR_RELOCATABLE] = 1;
    linux_put16(p, LINUX_HDR_XLOADFLAGS, 0x7f);
    linux_put32(p, LINUX_HDR_CMDLINE_SIZE, 2047);
    linux_put64(p, LINUX_HDR_PREF_ADDRESS, PREF_ADDRESS);
    linux_put32(p, LINUX_HDR_INIT_SIZE, INIT_SIZE);
    for (unsigned i = 0; i < KERNEL_SIZE; i++)
        p[SETUP_SIZE + i] = (uint8_t)(i * 7 + 1);
    return b;
}

static void expect_parse_error(const GByteArray *b, size_t len, const char *substr)
{
    g_autoptr(GError) error = NULL;
    BzImage bz;
    g_assert_false(bzimage_parse(b->data, len, "test.bzImage", &bz, &error));
    g_assert_nonnull(error);
    if (!strstr(error->message, substr) || !strstr(error->message, "test.bzImage"))
        g_error("error '%s' lacks '%s' or the file name", error->message, substr);
}

static void test_header_good(void)
{
    g_autoptr(GByteArray) b = make_bzimage(0x020f);
    g_autoptr(GError) error = NULL;
    BzImage bz;
    g_assert_true(bzimage_detect(b->data, b->len));
    g_assert_true(bzimage_parse(b->data, b->len, "good", &bz, &error));
    g_assert_no_error(error);
    g_assert_cmphex(bz.version, ==, 0x020f);
    g_assert_cmpuint(bz.setup_size, ==, SETUP_SIZE);
    g_assert_cmpuint(bz.kernel_offset, ==, SETUP_SIZE);
    g_assert_cmpuint(bz.kernel_size, ==, KERNEL_SIZE);
    g_assert_cmphex(bz.init_size, ==, INIT_SIZE);
    g_assert_cmphex(bz.pref_address, ==, PREF_ADDRESS);
    g_assert_cmphex(bz.initrd_addr_max, ==, 0x7fffffffu);
    g_assert_cmpuint(bz.cmdline_size, ==, 2047);
    g_assert_cmphex(bz.hdr_end, ==, 0x26c);
    g_assert_true(bz.relocatable);

    /* setup_sects 0 means 4 */
    b->data[LINUX_HDR_SETUP_SECTS] = 0;
    g_assert_true(bzimage_parse(b->data, b->len, "good", &bz, &error));
    g_assert_cmpuint(bz.setup_size, ==, 5 * 512);
}

static void test_header_bad_magic(void)
{
    g_autoptr(GByteArray) b = make_bzimage(0x020f);
    b->data[LINUX_HDR_MAGIC_OFF] = 'X';
    g_assert_false(bzimage_detect(b->data, b->len));
    expect_parse_error(b, b->len, "'header'");

    g_autoptr(GByteArray) c = make_bzimage(0x020f);
    linux_put16(c->data, LINUX_HDR_BOOT_FLAG, 0x1234);
    expect_parse_error(c, c->len, "'boot_flag'");
}

static void test_header_old_protocol(void)
{
    g_autoptr(GByteArray) b = make_bzimage(0x0205);
    expect_parse_error(b, b->len, "'version' is 2.05");
    /* 2.06..2.11 parse, but have no 64-bit entry */
    g_autoptr(GByteArray) c = make_bzimage(0x020a);
    expect_parse_error(c, c->len, "XLF_KERNEL_64");
    g_autoptr(GByteArray) d = make_bzimage(0x020f);
    linux_put16(d->data, LINUX_HDR_XLOADFLAGS, 0);
    expect_parse_error(d, d->len, "XLF_KERNEL_64");
    g_autoptr(GByteArray) e = make_bzimage(0x020f);
    e->data[LINUX_HDR_LOADFLAGS] = 0;
    expect_parse_error(e, e->len, "'loadflags'");
}

static void test_header_truncated(void)
{
    g_autoptr(GByteArray) b = make_bzimage(0x020f);
    expect_parse_error(b, 0x100, "truncated bzImage");
    expect_parse_error(b, 0x263, "truncated bzImage");
    /* the header is whole, but the file ends inside the setup code */
    expect_parse_error(b, SETUP_SIZE - 1, "'setup_sects'");
    /* init_size smaller than the kernel in the file */
    linux_put32(b->data, LINUX_HDR_INIT_SIZE, KERNEL_SIZE - 1);
    expect_parse_error(b, b->len, "'init_size'");
}

static void check_entry(const E820Entry *e, uint64_t addr, uint64_t size, uint32_t type)
{
    g_assert_cmphex(e->addr, ==, addr);
    g_assert_cmphex(e->size, ==, size);
    g_assert_cmpuint(e->type, ==, type);
}

static void test_e820_256m(void)
{
    g_autoptr(GError) error = NULL;
    GuestRam ram;
    E820Entry e[E820_MAX];
    g_assert_true(ram_layout(&ram, 256ull << 20, &error));
    g_assert_cmpuint(e820_build(&ram, e), ==, 3);
    check_entry(&e[0], 0, 0x9fc00, E820_RAM);
    check_entry(&e[1], 0x9fc00, 0x100000 - 0x9fc00, E820_RESERVED);
    check_entry(&e[2], 0x100000, (256ull << 20) - 0x100000, E820_RAM);

    /* 1 MiB of RAM leaves nothing above 1 MiB: refused */
    g_assert_true(ram_layout(&ram, 1ull << 20, &error));
    g_assert_cmpuint(e820_build(&ram, e), ==, 0);
}

static void test_e820_5g(void)
{
    g_autoptr(GError) error = NULL;
    GuestRam ram;
    E820Entry e[E820_MAX];
    g_assert_true(ram_layout(&ram, 5ull << 30, &error));
    g_assert_cmpuint(e820_build(&ram, e), ==, 4);
    check_entry(&e[0], 0, 0x9fc00, E820_RAM);
    check_entry(&e[1], 0x9fc00, 0x60400, E820_RESERVED);
    check_entry(&e[2], 0x100000, (3ull << 30) - 0x100000, E820_RAM);
    check_entry(&e[3], 4ull << 30, 2ull << 30, E820_RAM);

    uint8_t table[4 * 20];
    e820_write(table, e, 4);
    g_assert_cmphex(linux_get64(table, 3 * 20), ==, 4ull << 30);
    g_assert_cmphex(linux_get64(table, 3 * 20 + 8), ==, 2ull << 30);
    g_assert_cmpuint(linux_get32(table, 3 * 20 + 16), ==, E820_RAM);
    g_assert_cmpuint(linux_get32(table, 1 * 20 + 16), ==, E820_RESERVED);
}

typedef struct {
    GuestRam ram;
} Fixture;

static void fixture_setup(Fixture *f, gconstpointer data)
{
    g_autoptr(GError) error = NULL;
    g_assert_true(ram_layout(&f->ram, 256ull << 20, &error));
    g_assert_true(ram_alloc(&f->ram, RAM_BACKING_ANON, &error));
}

static void fixture_teardown(Fixture *f, gconstpointer data)
{
    ram_free(&f->ram);
}

static uint8_t *gpa(Fixture *f, uint64_t addr, uint64_t len)
{
    uint8_t *p = ram_ptr(&f->ram, addr, len);
    g_assert_nonnull(p);
    return p;
}

static void test_zero_page(Fixture *f, gconstpointer data)
{
    g_autoptr(GByteArray) b = make_bzimage(0x020f);
    g_autoptr(GError) error = NULL;
    static const uint8_t initrd[5000] = { 0x1f, 0x8b, 0x08 };
    LinuxBoot lb;
    g_assert_true(linux_load(b->data, b->len, "bz", "console=ttyS0 tok=42", initrd, sizeof(initrd),
                             "initrd.gz", &f->ram, &lb, &error));
    g_assert_no_error(error);
    g_assert_cmpint(lb.kind, ==, LINUX_KIND_BZIMAGE);
    g_assert_cmphex(lb.load_addr, ==, PREF_ADDRESS);
    g_assert_cmphex(lb.entry, ==, PREF_ADDRESS + 0x200);
    g_assert_cmphex(lb.kernel_end, ==, PREF_ADDRESS + INIT_SIZE);
    /* the protected-mode kernel at its load address, its bss zeroed */
    g_assert_cmpmem(gpa(f, PREF_ADDRESS, KERNEL_SIZE), KERNEL_SIZE, b->data + SETUP_SIZE,
                    KERNEL_SIZE);
    g_assert_cmpuint(gpa(f, PREF_ADDRESS + KERNEL_SIZE, 1)[0], ==, 0);

    uint8_t *zp = gpa(f, LINUX_ZERO_PAGE, LINUX_ZP_SIZE);
    /* the setup header is copied in ... */
    g_assert_cmphex(linux_get32(zp, LINUX_HDR_MAGIC_OFF), ==, LINUX_HDR_MAGIC);
    g_assert_cmphex(linux_get16(zp, LINUX_HDR_VERSION), ==, 0x020f);
    g_assert_cmphex(linux_get16(zp, LINUX_HDR_BOOT_FLAG), ==, LINUX_BOOT_FLAG);
    g_assert_cmphex(linux_get32(zp, LINUX_HDR_INIT_SIZE), ==, INIT_SIZE);
    g_assert_cmpuint(zp[LINUX_HDR_SETUP_SECTS], ==, SETUP_SECTS);
    /* ... but not past its end */
    g_assert_cmpuint(zp[0x26c], ==, 0);
    g_assert_cmpuint(zp[LINUX_ZP_SENTINEL], ==, 0);
    /* the loader's fields */
    g_assert_cmphex(zp[LINUX_HDR_TYPE_OF_LOADER], ==, 0xff);
    g_assert_cmphex(linux_get32(zp, LINUX_HDR_CMD_LINE_PTR), ==, LINUX_CMDLINE_ADDR);
    g_assert_cmpstr((const char *)gpa(f, LINUX_CMDLINE_ADDR, 1), ==, "console=ttyS0 tok=42");
    uint64_t rd = (256ull << 20) - 8192; /* page aligned, as high as possible */
    g_assert_cmphex(lb.initrd_addr, ==, rd);
    g_assert_cmphex(linux_get32(zp, LINUX_HDR_RAMDISK_IMAGE), ==, rd);
    g_assert_cmpuint(linux_get32(zp, LINUX_HDR_RAMDISK_SIZE), ==, sizeof(initrd));
    g_assert_cmpuint(linux_get32(zp, LINUX_ZP_EXT_RAMDISK_IMG), ==, 0);
    g_assert_cmpmem(gpa(f, rd, sizeof(initrd)), sizeof(initrd), initrd, sizeof(initrd));
    /* e820 */
    g_assert_cmpuint(zp[LINUX_ZP_E820_ENTRIES], ==, 3);
    const uint8_t *t = zp + LINUX_ZP_E820_TABLE;
    g_assert_cmphex(linux_get64(t, 0), ==, 0);
    g_assert_cmphex(linux_get64(t, 8), ==, 0x9fc00);
    g_assert_cmpuint(linux_get32(t, 16), ==, E820_RAM);
    g_assert_cmpuint(linux_get32(t, 36), ==, E820_RESERVED);
    g_assert_cmphex(linux_get64(t, 40), ==, 0x100000);
    g_assert_cmphex(linux_get64(t, 48), ==, (256ull << 20) - 0x100000);
    g_assert_cmphex(linux_get64(t, 60), ==, 0);
    /* identity map: PML4 -> PDPT -> 2 MiB pages up to 4 GiB */
    g_assert_cmphex(linux_get64(gpa(f, LINUX_PML4_ADDR, 8), 0), ==, LINUX_PDPT_ADDR | 3);
    g_assert_cmphex(linux_get64(gpa(f, LINUX_PDPT_ADDR + 24, 8), 0), ==,
                    (LINUX_PD_ADDR + 3 * 4096) | 3);
    g_assert_cmphex(linux_get64(gpa(f, LINUX_PD_ADDR + (4 * 512 - 1) * 8, 8), 0), ==,
                    ((4ull << 30) - (2u << 20)) | 0x83);
    /* GDT: __BOOT_CS is 64-bit code, __BOOT_DS flat data */
    g_assert_cmphex(linux_get64(gpa(f, LINUX_GDT_ADDR + LINUX_BOOT_CS, 8), 0), ==,
                    0x00af9b000000ffffull);
    g_assert_cmphex(linux_get64(gpa(f, LINUX_GDT_ADDR + LINUX_BOOT_DS, 8), 0), ==,
                    0x00cf93000000ffffull);
}

static void test_zero_page_errors(Fixture *f, gconstpointer data)
{
    g_autoptr(GByteArray) b = make_bzimage(0x020f);
    GError *error = NULL;
    LinuxBoot lb;
    /* an initrd that does not fit above the kernel */
    gsize big = (256u << 20) - PREF_ADDRESS;
    g_autofree uint8_t *initrd = g_malloc0(big);
    g_assert_false(
        linux_load(b->data, b->len, "bz", "", initrd, big, "big.img", &f->ram, &lb, &error));
    g_assert_nonnull(strstr(error->message, "big.img: the initrd"));
    g_clear_error(&error);
    /* a command line longer than cmdline_size */
    linux_put32(b->data, LINUX_HDR_CMDLINE_SIZE, 8);
    g_assert_false(
        linux_load(b->data, b->len, "bz", "console=ttyS0", NULL, 0, NULL, &f->ram, &lb, &error));
    g_assert_nonnull(strstr(error->message, "cmdline_size"));
    g_clear_error(&error);
    /* a kernel that needs more memory than there is */
    linux_put32(b->data, LINUX_HDR_CMDLINE_SIZE, 2047);
    linux_put32(b->data, LINUX_HDR_INIT_SIZE, 512u << 20);
    g_assert_false(linux_load(b->data, b->len, "bz", "", NULL, 0, NULL, &f->ram, &lb, &error));
    g_assert_nonnull(strstr(error->message, "init_size"));
    g_clear_error(&error);
    /* neither kind */
    uint8_t junk[4096] = { 0 };
    g_assert_false(linux_load(junk, sizeof(junk), "junk", "", NULL, 0, NULL, &f->ram, &lb, &error));
    g_assert_nonnull(strstr(error->message, "neither a bzImage"));
    g_clear_error(&error);
}

/* A vmlinux-shaped ELF64: one segment linked at 0xffffffff81000000, loaded at
 * 16 MiB, entry the physical address of its start. */
static GByteArray *make_vmlinux(uint64_t entry, uint64_t paddr)
{
    const size_t code = 4096, off = 0x1000;
    GByteArray *b = g_byte_array_new();
    g_byte_array_set_size(b, off + code);
    memset(b->data, 0, b->len);
    Elf64_Ehdr eh = { 0 };
    memcpy(eh.e_ident, ELFMAG, SELFMAG);
    eh.e_ident[EI_CLASS] = ELFCLASS64;
    eh.e_ident[EI_DATA] = ELFDATA2LSB;
    eh.e_ident[EI_VERSION] = EV_CURRENT;
    eh.e_type = ET_EXEC;
    eh.e_machine = EM_X86_64;
    eh.e_version = EV_CURRENT;
    eh.e_entry = entry;
    eh.e_phoff = sizeof(eh);
    eh.e_ehsize = sizeof(eh);
    eh.e_phentsize = sizeof(Elf64_Phdr);
    eh.e_phnum = 1;
    Elf64_Phdr ph = { .p_type = PT_LOAD,
                      .p_flags = PF_R | PF_X,
                      .p_offset = off,
                      .p_vaddr = 0xffffffff81000000ull,
                      .p_paddr = paddr,
                      .p_filesz = code,
                      .p_memsz = code * 4,
                      .p_align = 0x200000 };
    memcpy(b->data, &eh, sizeof(eh));
    memcpy(b->data + sizeof(eh), &ph, sizeof(ph));
    memset(b->data + off, 0x90, code);
    return b;
}

static void test_vmlinux(Fixture *f, gconstpointer data)
{
    g_autoptr(GByteArray) b = make_vmlinux(0x1000000, 0x1000000);
    g_autoptr(GError) error = NULL;
    LinuxBoot lb;
    LinuxKind kind;
    g_assert_true(linux_detect(b->data, b->len, &kind));
    g_assert_cmpint(kind, ==, LINUX_KIND_VMLINUX);
    g_assert_true(
        linux_load(b->data, b->len, "vmlinux", "tok=7", NULL, 0, NULL, &f->ram, &lb, &error));
    g_assert_no_error(error);
    g_assert_cmphex(lb.entry, ==, 0x1000000);
    g_assert_cmphex(lb.load_addr, ==, 0x1000000);
    g_assert_cmphex(lb.kernel_end, ==, 0x1000000 + 4 * 4096);
    g_assert_cmpuint(gpa(f, 0x1000000, 1)[0], ==, 0x90);
    uint8_t *zp = gpa(f, LINUX_ZERO_PAGE, LINUX_ZP_SIZE);
    g_assert_cmphex(linux_get32(zp, LINUX_HDR_MAGIC_OFF), ==, LINUX_HDR_MAGIC);
    g_assert_cmphex(linux_get16(zp, LINUX_HDR_BOOT_FLAG), ==, LINUX_BOOT_FLAG);
    g_assert_cmphex(zp[LINUX_HDR_TYPE_OF_LOADER], ==, 0xff);
    g_assert_cmphex(linux_get32(zp, LINUX_HDR_CMD_LINE_PTR), ==, LINUX_CMDLINE_ADDR);
    g_assert_cmphex(linux_get32(zp, LINUX_HDR_RAMDISK_IMAGE), ==, 0);
    g_assert_cmpuint(zp[LINUX_ZP_E820_ENTRIES], ==, 3);
    g_assert_cmpstr((const char *)gpa(f, LINUX_CMDLINE_ADDR, 1), ==, "tok=7");

    /* a virtual entry point is translated through its segment */
    g_autoptr(GByteArray) v = make_vmlinux(0xffffffff81000200ull, 0x1000000);
    g_assert_true(linux_load(v->data, v->len, "vmlinux", "", NULL, 0, NULL, &f->ram, &lb, &error));
    g_assert_cmphex(lb.entry, ==, 0x1000200);
}

static void test_vmlinux_errors(Fixture *f, gconstpointer data)
{
    GError *error = NULL;
    LinuxBoot lb;
    g_autoptr(GByteArray) low = make_vmlinux(0x1000, 0x1000);
    g_assert_false(
        linux_load(low->data, low->len, "low.elf", "", NULL, 0, NULL, &f->ram, &lb, &error));
    g_assert_nonnull(strstr(error->message, "below 1 MiB"));
    g_clear_error(&error);
    g_autoptr(GByteArray) high = make_vmlinux(0x20000000, 0x20000000);
    g_assert_false(
        linux_load(high->data, high->len, "high.elf", "", NULL, 0, NULL, &f->ram, &lb, &error));
    g_assert_nonnull(strstr(error->message, "does not fit in guest RAM"));
    g_clear_error(&error);
    g_autoptr(GByteArray) noentry = make_vmlinux(0x5000000, 0x1000000);
    g_assert_false(
        linux_load(noentry->data, noentry->len, "e.elf", "", NULL, 0, NULL, &f->ram, &lb, &error));
    g_assert_nonnull(strstr(error->message, "in no loaded segment"));
    g_clear_error(&error);
    g_autoptr(GByteArray) trunc = make_vmlinux(0x1000000, 0x1000000);
    g_assert_false(
        linux_load(trunc->data, 0x1800, "t.elf", "", NULL, 0, NULL, &f->ram, &lb, &error));
    g_assert_nonnull(strstr(error->message, "beyond the end of the file"));
    g_clear_error(&error);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/bzimage/header/good", test_header_good);
    g_test_add_func("/bzimage/header/bad-magic", test_header_bad_magic);
    g_test_add_func("/bzimage/header/old-protocol", test_header_old_protocol);
    g_test_add_func("/bzimage/header/truncated", test_header_truncated);
    g_test_add_func("/bzimage/e820/256M", test_e820_256m);
    g_test_add_func("/bzimage/e820/5G", test_e820_5g);
    g_test_add("/bzimage/zero-page/fields", Fixture, NULL, fixture_setup, test_zero_page,
               fixture_teardown);
    g_test_add("/bzimage/zero-page/errors", Fixture, NULL, fixture_setup, test_zero_page_errors,
               fixture_teardown);
    g_test_add("/bzimage/vmlinux/load", Fixture, NULL, fixture_setup, test_vmlinux,
               fixture_teardown);
    g_test_add("/bzimage/vmlinux/errors", Fixture, NULL, fixture_setup, test_vmlinux_errors,
               fixture_teardown);
    return g_test_run();
}
