/* The multiboot v1 loader: the embedded guest, hand-made images, and bad input. */
#include "guests.h"
#include "multiboot.h"

#include <elf.h>
#include <string.h>

typedef struct {
    GuestRam ram;
} Fixture;

static void fixture_setup(Fixture *f, gconstpointer data)
{
    g_autoptr(GError) error = NULL;
    g_assert_true(ram_layout(&f->ram, 16u << 20, &error));
    g_assert_true(ram_alloc(&f->ram, RAM_BACKING_ANON, &error));
}

static void fixture_teardown(Fixture *f, gconstpointer data)
{
    ram_free(&f->ram);
}

static uint32_t rd32(Fixture *f, uint32_t gpa)
{
    uint32_t v;
    memcpy(&v, ram_ptr(&f->ram, gpa, 4), 4);
    return v;
}

static void test_embedded_guest(Fixture *f, gconstpointer data)
{
    g_autoptr(GError) error = NULL;
    MultibootImage img;
    g_assert_true(multiboot_load(vmsnap_guest_dirty_elf, vmsnap_guest_dirty_elf_len, "dirty",
                                 "bevery=2 pace=0", &f->ram, &img, &error));
    g_assert_no_error(error);
    g_assert_cmpuint(img.load_low, >=, BOOT_INFO_END);
    g_assert_cmpuint(img.load_high, <=, 0x9F000);
    g_assert_cmpuint(img.entry, >=, img.load_low);
    g_assert_cmpuint(img.entry, <, img.load_high);
    g_assert_cmpuint(img.mbi_addr, ==, BOOT_INFO_MBI);

    /* flags: memory, cmdline, mmap, loader name */
    g_assert_cmpuint(rd32(f, BOOT_INFO_MBI), ==, (1u << 0) | (1u << 2) | (1u << 6) | (1u << 9));
    g_assert_cmpuint(rd32(f, BOOT_INFO_MBI + 4), ==, 639);               /* mem_lower KiB */
    g_assert_cmpuint(rd32(f, BOOT_INFO_MBI + 8), ==, (15u << 20) >> 10); /* mem_upper KiB */
    uint32_t cmdline = rd32(f, BOOT_INFO_MBI + 16);
    g_assert_cmpstr((const char *)ram_ptr(&f->ram, cmdline, 1), ==, "bevery=2 pace=0");
    uint32_t mmap_len = rd32(f, BOOT_INFO_MBI + 44), mmap_addr = rd32(f, BOOT_INFO_MBI + 48);
    g_assert_cmpuint(mmap_len, ==, 3 * 24);
    /* third entry: available RAM from 1 MiB to 16 MiB */
    uint8_t *e = ram_ptr(&f->ram, mmap_addr + 48, 24);
    uint64_t base, len;
    uint32_t type;
    memcpy(&base, e + 4, 8);
    memcpy(&len, e + 12, 8);
    memcpy(&type, e + 20, 4);
    g_assert_cmpuint(base, ==, 1u << 20);
    g_assert_cmpuint(len, ==, 15u << 20);
    g_assert_cmpuint(type, ==, 1);
    /* the image really is in RAM: the multiboot header sits in the loaded bytes */
    long hoff = multiboot_find_header(vmsnap_guest_dirty_elf, vmsnap_guest_dirty_elf_len);
    g_assert_cmpint(hoff, >, 0);
}

static void test_two_block_memory_map(void)
{
    g_autoptr(GError) error = NULL;
    GuestRam ram;
    MultibootImage img;
    g_assert_true(ram_layout(&ram, 5ull << 30, &error));
    g_assert_cmpuint(ram.n_blocks, ==, 2);
    g_assert_cmpuint(ram.blocks[0].size, ==, 3ull << 30);
    g_assert_cmpuint(ram.blocks[1].gpa, ==, 4ull << 30);
    g_assert_cmpuint(ram.blocks[1].size, ==, 2ull << 30);
    g_assert_true(ram_alloc(&ram, RAM_BACKING_MEMFD, &error));
    g_assert_cmpint(ram.blocks[0].fd, >=, 0);
    g_assert_true(multiboot_load(vmsnap_guest_dirty_elf, vmsnap_guest_dirty_elf_len, "dirty", "",
                                 &ram, &img, &error));
    uint32_t mmap_len;
    memcpy(&mmap_len, ram_ptr(&ram, BOOT_INFO_MBI + 44, 4), 4);
    g_assert_cmpuint(mmap_len, ==, 4 * 24);
    uint64_t base;
    memcpy(&base, ram_ptr(&ram, BOOT_INFO_MMAP + 3 * 24 + 4, 8), 8);
    g_assert_cmpuint(base, ==, 4ull << 30);
    ram_free(&ram);
}

/* A minimal ELF32 with one PT_LOAD: headers, multiboot header, one ud2. */
static GByteArray *make_elf(uint32_t paddr, uint32_t mb_flags)
{
    GByteArray *b = g_byte_array_new();
    Elf32_Ehdr eh = { 0 };
    Elf32_Phdr ph = { 0 };
    uint32_t off = sizeof(eh) + sizeof(ph);
    uint32_t mb[3] = { MULTIBOOT_HEADER_MAGIC, mb_flags, -(MULTIBOOT_HEADER_MAGIC + mb_flags) };
    uint8_t code[] = { 0x0f, 0x0b };
    uint32_t total = off + sizeof(mb) + sizeof(code);

    memcpy(eh.e_ident, ELFMAG, SELFMAG);
    eh.e_ident[EI_CLASS] = ELFCLASS32;
    eh.e_ident[EI_DATA] = ELFDATA2LSB;
    eh.e_ident[EI_VERSION] = EV_CURRENT;
    eh.e_type = ET_EXEC;
    eh.e_machine = EM_386;
    eh.e_version = EV_CURRENT;
    eh.e_entry = paddr + off + sizeof(mb);
    eh.e_phoff = sizeof(eh);
    eh.e_ehsize = sizeof(eh);
    eh.e_phentsize = sizeof(ph);
    eh.e_phnum = 1;
    ph.p_type = PT_LOAD;
    ph.p_paddr = ph.p_vaddr = paddr;
    ph.p_filesz = total;
    ph.p_memsz = total + 4096; /* some bss */
    g_byte_array_append(b, (void *)&eh, sizeof(eh));
    g_byte_array_append(b, (void *)&ph, sizeof(ph));
    g_byte_array_append(b, (void *)mb, sizeof(mb));
    g_byte_array_append(b, code, sizeof(code));
    return b;
}

static void expect_fail(Fixture *f, const uint8_t *img, size_t len, const char *cmdline,
                        const char *needle)
{
    g_autoptr(GError) error = NULL;
    MultibootImage out;
    g_assert_false(multiboot_load(img, len, "k.elf", cmdline, &f->ram, &out, &error));
    g_assert_nonnull(error);
    if (!strstr(error->message, needle))
        g_error("expected '%s' in '%s'", needle, error->message);
    g_assert_true(g_str_has_prefix(error->message, "k.elf: "));
}

static void test_handmade_and_bss(Fixture *f, gconstpointer data)
{
    g_autoptr(GByteArray) elf = make_elf(0x200000, 0x3);
    g_autoptr(GError) error = NULL;
    MultibootImage img;
    memset(ram_ptr(&f->ram, 0x200000 + elf->len, 4096), 0xAA, 4096);
    g_assert_true(multiboot_load(elf->data, elf->len, "k.elf", "", &f->ram, &img, &error));
    g_assert_cmpuint(img.entry, ==, 0x200000 + elf->len - 2);
    g_assert_cmpuint(img.load_high, ==, 0x200000 + elf->len + 4096);
    const uint8_t *bss = ram_ptr(&f->ram, 0x200000 + elf->len, 4096);
    for (unsigned i = 0; i < 4096; i++)
        g_assert_cmpuint(bss[i], ==, 0); /* bss is zeroed */
}

static void test_bad_images(Fixture *f, gconstpointer data)
{
    g_autoptr(GByteArray) elf = make_elf(0x200000, 0x3);
    uint8_t junk[4096] = { 0 };

    expect_fail(f, junk, sizeof(junk), "", "no multiboot v1 header");
    /* bad checksum: the header is no longer recognised */
    g_autoptr(GByteArray) bad = g_byte_array_new();
    g_byte_array_append(bad, elf->data, elf->len);
    bad->data[sizeof(Elf32_Ehdr) + sizeof(Elf32_Phdr) + 8] ^= 1;
    expect_fail(f, bad->data, bad->len, "", "no multiboot v1 header");
    /* ELF64 */
    g_byte_array_set_size(bad, 0);
    g_byte_array_append(bad, elf->data, elf->len);
    bad->data[EI_CLASS] = ELFCLASS64;
    expect_fail(f, bad->data, bad->len, "", "is an ELF64 image");
    /* wrong machine */
    g_byte_array_set_size(bad, 0);
    g_byte_array_append(bad, elf->data, elf->len);
    bad->data[18] = 0x3e;
    expect_fail(f, bad->data, bad->len, "", "e_machine is 62");
    /* segment past the end of RAM */
    g_autoptr(GByteArray) high = make_elf(0x2000000, 0x3);
    expect_fail(f, high->data, high->len, "", "does not fit in guest RAM (16 MiB)");
    /* over the boot information area */
    g_autoptr(GByteArray) low = make_elf(0x1000, 0x3);
    expect_fail(f, low->data, low->len, "", "overlaps the boot information area");
    /* unsupported requirement bits */
    g_autoptr(GByteArray) req = make_elf(0x200000, 0x3 | 0x8);
    expect_fail(f, req->data, req->len, "", "requires unsupported features (flags 0x00000008)");
    /* file size claims more than the file has */
    g_byte_array_set_size(bad, 0);
    g_byte_array_append(bad, elf->data, elf->len);
    g_byte_array_set_size(bad, bad->len - 1);
    expect_fail(f, bad->data, bad->len, "", "beyond the end of the file");
    /* program headers outside the file */
    g_byte_array_set_size(bad, 0);
    g_byte_array_append(bad, elf->data, elf->len);
    uint32_t phoff = 0x10000;
    memcpy(bad->data + offsetof(Elf32_Ehdr, e_phoff), &phoff, 4);
    expect_fail(f, bad->data, bad->len, "", "program headers at offset 0x10000");
    /* command line too long */
    g_autofree char *longcmd = g_strnfill(BOOT_INFO_CMDLINE_MAX, 'x');
    expect_fail(f, elf->data, elf->len, longcmd, "command line is 4096 bytes");
    /* truncated: shorter than an ELF header but with the magic */
    expect_fail(f, elf->data, 40, "", "no multiboot v1 header");
}

static void test_aout_kludge(Fixture *f, gconstpointer data)
{
    /* A flat binary: multiboot header with load addresses, then code. */
    uint32_t load = 0x300000;
    uint32_t flags = 0x3 | (1u << 16);
    uint32_t hdr[8] = {
        MULTIBOOT_HEADER_MAGIC, flags,    -(MULTIBOOT_HEADER_MAGIC + flags), load, load, 0,
        load + 0x2000,          load + 32
    };
    uint8_t image[34];
    memcpy(image, hdr, 32);
    image[32] = 0x0f;
    image[33] = 0x0b;
    g_autoptr(GError) error = NULL;
    MultibootImage img;
    g_assert_true(multiboot_load(image, sizeof(image), "flat.bin", "", &f->ram, &img, &error));
    g_assert_no_error(error);
    g_assert_cmpuint(img.entry, ==, load + 32);
    g_assert_cmpuint(img.load_high, ==, load + 0x2000);
    g_assert_cmpmem(ram_ptr(&f->ram, load, sizeof(image)), sizeof(image), image, sizeof(image));
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add("/multiboot/embedded-guest", Fixture, NULL, fixture_setup, test_embedded_guest,
               fixture_teardown);
    g_test_add_func("/multiboot/two-block-memory-map", test_two_block_memory_map);
    g_test_add("/multiboot/handmade-bss", Fixture, NULL, fixture_setup, test_handmade_and_bss,
               fixture_teardown);
    g_test_add("/multiboot/bad-images", Fixture, NULL, fixture_setup, test_bad_images,
               fixture_teardown);
    g_test_add("/multiboot/aout-kludge", Fixture, NULL, fixture_setup, test_aout_kludge,
               fixture_teardown);
    return g_test_run();
}
