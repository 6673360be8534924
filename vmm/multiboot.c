#include "multiboot.h"

#include "image_error.h"

#include "config.h"

#include <elf.h>
#include <string.h>

/* Multiboot v1 information structure (spec section 3.3). */
struct mb_info {
    uint32_t flags;
    uint32_t mem_lower;
    uint32_t mem_upper;
    uint32_t boot_device;
    uint32_t cmdline;
    uint32_t mods_count;
    uint32_t mods_addr;
    uint32_t syms[4];
    uint32_t mmap_length;
    uint32_t mmap_addr;
    uint32_t drives_length;
    uint32_t drives_addr;
    uint32_t config_table;
    uint32_t boot_loader_name;
    uint32_t apm_table;
} __attribute__((packed));
_Static_assert(sizeof(struct mb_info) == 72, "multiboot info layout");

struct mb_mmap_entry {
    uint32_t size; /* of the rest of the entry: 20 */
    uint64_t addr;
    uint64_t len;
    uint32_t type;
} __attribute__((packed));
_Static_assert(sizeof(struct mb_mmap_entry) == 24, "multiboot mmap entry layout");

struct mb_header {
    uint32_t magic;
    uint32_t flags;
    uint32_t checksum;
    /* valid when flags bit 16 (a.out kludge) is set */
    uint32_t header_addr;
    uint32_t load_addr;
    uint32_t load_end_addr;
    uint32_t bss_end_addr;
    uint32_t entry_addr;
} __attribute__((packed));

#define MBH_PAGE_ALIGN  (1u << 0)
#define MBH_MEMORY_INFO (1u << 1)
#define MBH_VIDEO_MODE  (1u << 2)
#define MBH_AOUT_KLUDGE (1u << 16)

#define MBI_MEMORY  (1u << 0)
#define MBI_CMDLINE (1u << 2)
#define MBI_MMAP    (1u << 6)
#define MBI_LOADER  (1u << 9)

#define MMAP_AVAILABLE 1u
#define MMAP_RESERVED  2u

#define LOW_MEM_END    0x0009FC00u /* conventional memory, below the EBDA */
#define HIGH_MEM_START 0x00100000u

long multiboot_find_header(const uint8_t *image, size_t len)
{
    size_t limit = MIN(len, (size_t)MULTIBOOT_SEARCH);
    for (size_t off = 0; off + 12 <= limit; off += 4) {
        uint32_t w[3];
        memcpy(w, image + off, sizeof(w));
        if (w[0] == MULTIBOOT_HEADER_MAGIC && (uint32_t)(w[0] + w[1] + w[2]) == 0)
            return (long)off;
    }
    return -1;
}

/* Copies file bytes [off, off+filesz) to guest [paddr, paddr+memsz), zero filling the rest. */
static bool place_segment(GuestRam *ram, const uint8_t *image, size_t len, uint64_t off,
                          uint64_t filesz, uint64_t paddr, uint64_t memsz, const char *what,
                          const char *seg, GError **error)
{
    if (filesz > memsz)
        return image_fail(error, what,
                          "%s: file size 0x%" G_GINT64_MODIFIER
                          "x exceeds memory size 0x%" G_GINT64_MODIFIER "x",
                          seg, filesz, memsz);
    if (off > len || filesz > len - off)
        return image_fail(error, what,
                          "%s: file range 0x%" G_GINT64_MODIFIER "x+0x%" G_GINT64_MODIFIER
                          "x is beyond the end of the file (%zu bytes)",
                          seg, off, filesz, len);
    if (paddr + memsz > UINT32_MAX + 1ull)
        return image_fail(error, what,
                          "%s: 0x%" G_GINT64_MODIFIER "x+0x%" G_GINT64_MODIFIER "x is above 4 GiB",
                          seg, paddr, memsz);
    if (memsz == 0)
        return true;
    if (paddr < BOOT_INFO_END && paddr + memsz > BOOT_GDT_ADDR)
        return image_fail(error, what,
                          "%s: 0x%" G_GINT64_MODIFIER "x-0x%" G_GINT64_MODIFIER
                          "x overlaps the boot information area 0x%x-0x%x",
                          seg, paddr, paddr + memsz, BOOT_GDT_ADDR, BOOT_INFO_END);
    uint8_t *dst = ram_ptr(ram, paddr, memsz);
    if (!dst)
        return image_fail(error, what,
                          "%s: 0x%" G_GINT64_MODIFIER "x-0x%" G_GINT64_MODIFIER
                          "x does not fit in guest RAM (%" G_GUINT64_FORMAT " MiB)",
                          seg, paddr, paddr + memsz, ram->total >> 20);
    memcpy(dst, image + off, filesz);
    memset(dst + filesz, 0, memsz - filesz);
    return true;
}

static bool load_elf32(const uint8_t *image, size_t len, const char *what, GuestRam *ram,
                       MultibootImage *out, GError **error)
{
    Elf32_Ehdr eh;
    if (len < sizeof(eh))
        return image_fail(error, what, "truncated ELF header (%zu bytes)", len);
    memcpy(&eh, image, sizeof(eh));
    if (eh.e_ident[EI_CLASS] == ELFCLASS64)
        return image_fail(error, what,
                          "is an ELF64 image; a multiboot v1 kernel must be ELF32 "
                          "(or use the a.out kludge)");
    if (eh.e_ident[EI_CLASS] != ELFCLASS32 || eh.e_ident[EI_DATA] != ELFDATA2LSB)
        return image_fail(error, what, "not a little-endian ELF32 image");
    if (eh.e_machine != EM_386)
        return image_fail(error, what, "ELF e_machine is %u, expected %u (i386)", eh.e_machine,
                          EM_386);
    if (eh.e_phentsize != sizeof(Elf32_Phdr))
        return image_fail(error, what, "ELF e_phentsize is %u, expected %zu", eh.e_phentsize,
                          sizeof(Elf32_Phdr));
    if (eh.e_phnum == 0 || eh.e_phnum > 64)
        return image_fail(error, what, "ELF has %u program headers (expected 1..64)", eh.e_phnum);
    if (eh.e_phoff > len || (uint64_t)eh.e_phnum * sizeof(Elf32_Phdr) > len - eh.e_phoff)
        return image_fail(error, what,
                          "ELF program headers at offset 0x%x run past the end of the file",
                          eh.e_phoff);

    uint64_t low = UINT64_MAX, high = 0;
    unsigned loaded = 0;
    for (unsigned i = 0; i < eh.e_phnum; i++) {
        Elf32_Phdr ph;
        memcpy(&ph, image + eh.e_phoff + i * sizeof(ph), sizeof(ph));
        if (ph.p_type != PT_LOAD || ph.p_memsz == 0)
            continue;
        char seg[48];
        g_snprintf(seg, sizeof(seg), "program header %u (file offset 0x%x)", i, ph.p_offset);
        if (!place_segment(ram, image, len, ph.p_offset, ph.p_filesz, ph.p_paddr, ph.p_memsz, what,
                           seg, error))
            return false;
        low = MIN(low, (uint64_t)ph.p_paddr);
        high = MAX(high, (uint64_t)ph.p_paddr + ph.p_memsz);
        loaded++;
    }
    if (!loaded)
        return image_fail(error, what, "ELF has no loadable segment");
    if (eh.e_entry < low || eh.e_entry >= high)
        return image_fail(error, what,
                          "entry point 0x%x is outside the loaded image 0x%" G_GINT64_MODIFIER
                          "x-0x%" G_GINT64_MODIFIER "x",
                          eh.e_entry, low, high);
    out->entry = eh.e_entry;
    out->load_low = (uint32_t)low;
    out->load_high = (uint32_t)high;
    return true;
}

static bool load_aout_kludge(const uint8_t *image, size_t len, long hoff, const struct mb_header *h,
                             const char *what, GuestRam *ram, MultibootImage *out, GError **error)
{
    if ((size_t)hoff + sizeof(*h) > len)
        return image_fail(error, what, "multiboot header at offset 0x%lx is truncated", hoff);
    if (h->load_addr > h->header_addr)
        return image_fail(error, what, "multiboot load_addr 0x%x is above header_addr 0x%x",
                          h->load_addr, h->header_addr);
    uint64_t file_start = (uint64_t)hoff - (h->header_addr - h->load_addr);
    if ((uint64_t)hoff < h->header_addr - h->load_addr)
        return image_fail(error, what,
                          "multiboot header_addr/load_addr put the image before the file");
    uint64_t load_end = h->load_end_addr ? h->load_end_addr : h->load_addr + (len - file_start);
    uint64_t bss_end = h->bss_end_addr ? h->bss_end_addr : load_end;
    if (load_end < h->load_addr || bss_end < load_end)
        return image_fail(error, what, "multiboot load_end_addr/bss_end_addr are inconsistent");
    if (!place_segment(ram, image, len, file_start, load_end - h->load_addr, h->load_addr,
                       bss_end - h->load_addr, what, "a.out image", error))
        return false;
    if (h->entry_addr < h->load_addr || h->entry_addr >= bss_end)
        return image_fail(error, what, "multiboot entry_addr 0x%x is outside the image",
                          h->entry_addr);
    out->entry = h->entry_addr;
    out->load_low = h->load_addr;
    out->load_high = (uint32_t)bss_end;
    return true;
}

/* Writes the multiboot info, memory map, loader name and command line. */
static bool build_info(GuestRam *ram, const char *cmdline, const char *what, MultibootImage *out,
                       GError **error)
{
    size_t cl = strlen(cmdline);
    if (cl >= BOOT_INFO_CMDLINE_MAX)
        return image_fail(error, what, "command line is %zu bytes, at most %u fit", cl,
                          BOOT_INFO_CMDLINE_MAX - 1);
    uint8_t *area = ram_ptr(ram, BOOT_INFO_BASE, BOOT_INFO_END - BOOT_INFO_BASE);
    if (!area)
        return image_fail(error, what, "guest RAM is too small for the boot information");
    memset(area, 0, BOOT_INFO_END - BOOT_INFO_BASE);

    const RamBlock *low = &ram->blocks[0];
    if (low->size <= HIGH_MEM_START)
        return image_fail(error, what,
                          "guest RAM (%" G_GUINT64_FORMAT " KiB) must be larger than 1 MiB",
                          ram->total >> 10);

    struct mb_mmap_entry map[4];
    unsigned n = 0;
    map[n++] = (struct mb_mmap_entry){ 20, 0, LOW_MEM_END, MMAP_AVAILABLE };
    map[n++] =
        (struct mb_mmap_entry){ 20, LOW_MEM_END, HIGH_MEM_START - LOW_MEM_END, MMAP_RESERVED };
    map[n++] =
        (struct mb_mmap_entry){ 20, HIGH_MEM_START, low->size - HIGH_MEM_START, MMAP_AVAILABLE };
    if (ram->n_blocks > 1)
        map[n++] =
            (struct mb_mmap_entry){ 20, ram->blocks[1].gpa, ram->blocks[1].size, MMAP_AVAILABLE };
    memcpy(area + (BOOT_INFO_MMAP - BOOT_INFO_BASE), map, n * sizeof(map[0]));

    static const char loader[] = "vmsnap " VMSNAP_VERSION;
    memcpy(area + (BOOT_INFO_NAME - BOOT_INFO_BASE), loader, sizeof(loader));
    memcpy(area + (BOOT_INFO_CMDLINE - BOOT_INFO_BASE), cmdline, cl + 1);

    struct mb_info mbi = {
        .flags = MBI_MEMORY | MBI_CMDLINE | MBI_MMAP | MBI_LOADER,
        .mem_lower = LOW_MEM_END >> 10,
        /* KiB of contiguous memory from 1 MiB: ends at the low block's end */
        .mem_upper = (uint32_t)((low->size - HIGH_MEM_START) >> 10),
        .cmdline = BOOT_INFO_CMDLINE,
        .mmap_length = n * (uint32_t)sizeof(map[0]),
        .mmap_addr = BOOT_INFO_MMAP,
        .boot_loader_name = BOOT_INFO_NAME,
    };
    memcpy(area + (BOOT_INFO_MBI - BOOT_INFO_BASE), &mbi, sizeof(mbi));
    out->mbi_addr = BOOT_INFO_MBI;
    return true;
}

bool multiboot_load(const uint8_t *image, size_t len, const char *what, const char *cmdline,
                    GuestRam *ram, MultibootImage *out, GError **error)
{
    memset(out, 0, sizeof(*out));
    long hoff = multiboot_find_header(image, len);
    if (hoff < 0)
        return image_fail(error, what,
                          "no multiboot v1 header (magic 0x%08X with a valid checksum) in "
                          "the first %u bytes",
                          MULTIBOOT_HEADER_MAGIC, MULTIBOOT_SEARCH);
    struct mb_header h = { 0 };
    memcpy(&h, image + hoff, MIN(sizeof(h), len - (size_t)hoff));
    out->header_flags = h.flags;

    /* Bits 0-15 are requirements: refuse what we cannot provide. */
    uint32_t unsupported = h.flags & 0xFFFFu & ~(MBH_PAGE_ALIGN | MBH_MEMORY_INFO | MBH_VIDEO_MODE);
    if (unsupported)
        return image_fail(error, what,
                          "multiboot header at offset 0x%lx requires unsupported features "
                          "(flags 0x%08x)",
                          hoff, unsupported);

    bool ok = (h.flags & MBH_AOUT_KLUDGE)
                  ? load_aout_kludge(image, len, hoff, &h, what, ram, out, error)
                  : load_elf32(image, len, what, ram, out, error);
    return ok && build_info(ram, cmdline ? cmdline : "", what, out, error);
}
