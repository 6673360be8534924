#include "vmlinux.h"

#include "image_error.h"

#include <elf.h>
#include <string.h>

#define VMLINUX_MIN_PADDR 0x100000ull
#define VMLINUX_MAX_PHDRS 64u

bool vmlinux_detect(const uint8_t *image, size_t len)
{
    Elf64_Ehdr eh;
    if (len < sizeof(eh))
        return false;
    memcpy(&eh, image, sizeof(eh));
    return !memcmp(eh.e_ident, ELFMAG, SELFMAG) && eh.e_ident[EI_CLASS] == ELFCLASS64 &&
           eh.e_ident[EI_DATA] == ELFDATA2LSB && eh.e_machine == EM_X86_64;
}

bool vmlinux_load(const uint8_t *image, size_t len, const char *what, GuestRam *ram,
                  VmlinuxImage *out, GError **error)
{
    memset(out, 0, sizeof(*out));
    if (!vmlinux_detect(image, len))
        return image_fail(error, what, "not a little-endian x86-64 ELF64 image");
    Elf64_Ehdr eh;
    memcpy(&eh, image, sizeof(eh));
    if (eh.e_type != ET_EXEC)
        return image_fail(error, what, "ELF e_type is %u, expected %u (an executable vmlinux)",
                          eh.e_type, ET_EXEC);
    if (eh.e_phentsize != sizeof(Elf64_Phdr))
        return image_fail(error, what, "ELF e_phentsize is %u, expected %zu", eh.e_phentsize,
                          sizeof(Elf64_Phdr));
    if (eh.e_phnum == 0 || eh.e_phnum > VMLINUX_MAX_PHDRS)
        return image_fail(error, what, "ELF has %u program headers (expected 1..%u)", eh.e_phnum,
                          VMLINUX_MAX_PHDRS);
    if (eh.e_phoff > len || (uint64_t)eh.e_phnum * sizeof(Elf64_Phdr) > len - eh.e_phoff)
        return image_fail(error, what,
                          "ELF program headers at offset 0x%" G_GINT64_MODIFIER
                          "x run past the end of the file",
                          (uint64_t)eh.e_phoff);

    uint64_t low = UINT64_MAX, high = 0, entry = 0;
    bool entry_found = false;
    for (unsigned i = 0; i < eh.e_phnum; i++) {
        Elf64_Phdr ph;
        memcpy(&ph, image + eh.e_phoff + i * sizeof(ph), sizeof(ph));
        if (ph.p_type != PT_LOAD || ph.p_memsz == 0)
            continue;
        if (ph.p_filesz > ph.p_memsz)
            return image_fail(error, what,
                              "program header %u: p_filesz 0x%" G_GINT64_MODIFIER
                              "x exceeds p_memsz 0x%" G_GINT64_MODIFIER "x",
                              i, (uint64_t)ph.p_filesz, (uint64_t)ph.p_memsz);
        if (ph.p_offset > len || ph.p_filesz > len - ph.p_offset)
            return image_fail(error, what,
                              "program header %u: file range 0x%" G_GINT64_MODIFIER
                              "x+0x%" G_GINT64_MODIFIER
                              "x is beyond the end of the file (%zu bytes)",
                              i, (uint64_t)ph.p_offset, (uint64_t)ph.p_filesz, len);
        if (ph.p_paddr < VMLINUX_MIN_PADDR)
            return image_fail(error, what,
                              "program header %u: p_paddr 0x%" G_GINT64_MODIFIER
                              "x is below 1 MiB, where the VMM keeps the boot data",
                              i, (uint64_t)ph.p_paddr);
        uint8_t *dst = ram_ptr(ram, ph.p_paddr, ph.p_memsz);
        if (!dst)
            return image_fail(error, what,
                              "program header %u: 0x%" G_GINT64_MODIFIER "x-0x%" G_GINT64_MODIFIER
                              "x does not fit in guest RAM (%" G_GUINT64_FORMAT " MiB)",
                              i, (uint64_t)ph.p_paddr, (uint64_t)(ph.p_paddr + ph.p_memsz),
                              ram->total >> 20);
        memcpy(dst, image + ph.p_offset, ph.p_filesz);
        memset(dst + ph.p_filesz, 0, ph.p_memsz - ph.p_filesz);
        low = MIN(low, (uint64_t)ph.p_paddr);
        high = MAX(high, (uint64_t)(ph.p_paddr + ph.p_memsz));
        /* e_entry is physical in a Linux vmlinux (ENTRY(phys_startup_64)); accept a
         * virtual one too, translated through its segment. */
        if (!entry_found && eh.e_entry >= ph.p_paddr && eh.e_entry - ph.p_paddr < ph.p_memsz) {
            entry = eh.e_entry;
            entry_found = true;
        } else if (!entry_found && eh.e_entry >= ph.p_vaddr &&
                   eh.e_entry - ph.p_vaddr < ph.p_memsz) {
            entry = ph.p_paddr + (eh.e_entry - ph.p_vaddr);
            entry_found = true;
        }
    }
    if (high == 0)
        return image_fail(error, what, "ELF has no loadable segment");
    if (!entry_found)
        return image_fail(error, what,
                          "entry point 0x%" G_GINT64_MODIFIER "x is in no loaded segment",
                          (uint64_t)eh.e_entry);
    out->entry = entry;
    out->load_low = low;
    out->load_high = high;
    return true;
}
