#include "boot_linux.h"

#include "boot.h"
#include "image_error.h"
#include "multiboot.h"
#include "vmlinux.h"

#include <errno.h>
#include <string.h>
#include <sys/ioctl.h>

#define VMLINUX_PROTOCOL           0x020fu
#define VMLINUX_INITRD_MAX         0x7fffffffu
#define VMLINUX_CMDLINE_SIZE       2047u
#define XLF_CAN_BE_LOADED_ABOVE_4G 0x02u

static const uint64_t linux_gdt[] = {
    0,
    0,
    0x00af9b000000ffffull, /* 0x10 __BOOT_CS: 64-bit code, flat */
    0x00cf93000000ffffull, /* 0x18 __BOOT_DS: data, flat 4 GiB */
    0x00008b000000ffffull, /* 0x20: busy TSS at 0 (only to satisfy entry checks) */
    0,                     /*       its upper half (a 64-bit system descriptor) */
};

bool linux_detect(const uint8_t *image, size_t len, LinuxKind *kind)
{
    if (bzimage_detect(image, len)) {
        *kind = LINUX_KIND_BZIMAGE;
        return true;
    }
    /* An ELF64 that carries a multiboot header is a (bad) multiboot kernel: let the
     * multiboot loader explain why it cannot load it. */
    if (vmlinux_detect(image, len) && multiboot_find_header(image, len) < 0) {
        *kind = LINUX_KIND_VMLINUX;
        return true;
    }
    return false;
}

/* Identity map of the first 4 GiB in 2 MiB pages. */
static bool build_page_tables(GuestRam *ram, GError **error)
{
    uint8_t *pml4 = ram_ptr(ram, LINUX_PML4_ADDR, 4096);
    uint8_t *pdpt = ram_ptr(ram, LINUX_PDPT_ADDR, 4096);
    uint8_t *pd = ram_ptr(ram, LINUX_PD_ADDR, 4096 * LINUX_IDENT_GIB);
    if (!pml4 || !pdpt || !pd) {
        g_set_error(error, G_IO_ERROR, G_IO_ERROR_FAILED, "no guest RAM for the page tables");
        return false;
    }
    memset(pml4, 0, 4096);
    memset(pdpt, 0, 4096);
    linux_put64(pml4, 0, LINUX_PDPT_ADDR | 0x3); /* present, writable */
    for (unsigned g = 0; g < LINUX_IDENT_GIB; g++) {
        linux_put64(pdpt, g * 8, (LINUX_PD_ADDR + g * 4096ull) | 0x3);
        for (unsigned i = 0; i < 512; i++) {
            uint64_t addr = ((uint64_t)g << 30) | ((uint64_t)i << 21);
            linux_put64(pd, (g * 512 + i) * 8, addr | 0x83); /* present, writable, 2 MiB */
        }
    }
    return true;
}

/* Places the initrd as high as allowed: below initrd_addr_max and the end of the
 * low RAM block, above the kernel, page aligned. */
static bool place_initrd(GuestRam *ram, const uint8_t *initrd, size_t initrd_len,
                         const char *initrd_what, uint32_t addr_max, LinuxBoot *out, GError **error)
{
    if (initrd_len == 0)
        return image_fail(error, initrd_what, "the initrd is empty");
    uint64_t top = MIN((uint64_t)addr_max + 1, ram->blocks[0].size);
    if (initrd_len > top)
        return image_fail(error, initrd_what,
                          "the initrd (%zu bytes) is larger than the RAM below "
                          "0x%" G_GINT64_MODIFIER "x",
                          initrd_len, top);
    uint64_t addr = (top - initrd_len) & ~0xfffull;
    if (addr < out->kernel_end)
        return image_fail(error, initrd_what,
                          "the initrd (%zu bytes) does not fit between the kernel "
                          "(ends at 0x%" G_GINT64_MODIFIER "x) and 0x%" G_GINT64_MODIFIER
                          "x (the end "
                          "of low RAM or initrd_addr_max); add --memory",
                          initrd_len, out->kernel_end, top);
    uint8_t *dst = ram_ptr(ram, addr, initrd_len);
    if (!dst)
        return image_fail(error, initrd_what, "no guest RAM at 0x%" G_GINT64_MODIFIER "x", addr);
    memcpy(dst, initrd, initrd_len);
    out->initrd_addr = addr;
    out->initrd_size = initrd_len;
    return true;
}

/* The setup header a vmlinux lacks: what the 64-bit kernel reads from it. */
static void vmlinux_header(uint8_t *zp, const LinuxBoot *lb)
{
    linux_put16(zp, LINUX_HDR_BOOT_FLAG, LINUX_BOOT_FLAG);
    linux_put32(zp, LINUX_HDR_MAGIC_OFF, LINUX_HDR_MAGIC);
    linux_put16(zp, LINUX_HDR_VERSION, VMLINUX_PROTOCOL);
    linux_put8(zp, LINUX_HDR_LOADFLAGS, LINUX_LOADFLAGS_LOADED_HIGH);
    linux_put32(zp, LINUX_HDR_INITRD_ADDR_MAX, VMLINUX_INITRD_MAX);
    linux_put32(zp, LINUX_HDR_KERNEL_ALIGN, 0x200000u);
    linux_put16(zp, LINUX_HDR_XLOADFLAGS, LINUX_XLF_KERNEL_64 | XLF_CAN_BE_LOADED_ABOVE_4G);
    linux_put32(zp, LINUX_HDR_CMDLINE_SIZE, VMLINUX_CMDLINE_SIZE);
    linux_put64(zp, LINUX_HDR_PREF_ADDRESS, lb->load_addr);
    linux_put32(zp, LINUX_HDR_INIT_SIZE, (uint32_t)(lb->kernel_end - lb->load_addr));
}

bool linux_load(const uint8_t *image, size_t len, const char *what, const char *cmdline,
                const uint8_t *initrd, size_t initrd_len, const char *initrd_what, GuestRam *ram,
                LinuxBoot *out, GError **error)
{
    memset(out, 0, sizeof(*out));
    if (!cmdline)
        cmdline = "";
    LinuxKind kind;
    if (!linux_detect(image, len, &kind))
        return image_fail(error, what,
                          "neither a bzImage (no \"HdrS\" at 0x202) nor an x86-64 "
                          "vmlinux ELF64");
    out->n_e820 = e820_build(ram, out->e820);
    if (!out->n_e820)
        return image_fail(error, what,
                          "guest RAM (%" G_GUINT64_FORMAT " KiB) must be larger than "
                          "1 MiB",
                          ram->total >> 10);

    uint32_t cmdline_size, initrd_max;
    BzImage bz;
    if (kind == LINUX_KIND_BZIMAGE) {
        if (!bzimage_parse(image, len, what, &bz, error))
            return false;
        uint64_t addr = LINUX_DEFAULT_LOAD_ADDR;
        if (bz.relocatable && bz.pref_address >= LINUX_DEFAULT_LOAD_ADDR)
            addr = bz.pref_address;
        if (bz.relocatable && bz.kernel_alignment && addr % bz.kernel_alignment)
            addr = (addr + bz.kernel_alignment - 1) & ~((uint64_t)bz.kernel_alignment - 1);
        uint8_t *dst = ram_ptr(ram, addr, bz.init_size);
        if (!dst)
            return image_fail(error, what,
                              "the kernel needs 0x%" G_GINT64_MODIFIER "x-0x%" G_GINT64_MODIFIER
                              "x (init_size 0x%x), beyond the low RAM block "
                              "(%" G_GUINT64_FORMAT " MiB); add --memory",
                              addr, addr + bz.init_size, bz.init_size, ram->blocks[0].size >> 20);
        memcpy(dst, image + bz.kernel_offset, bz.kernel_size);
        memset(dst + bz.kernel_size, 0, bz.init_size - bz.kernel_size);
        out->kind = kind;
        out->protocol = bz.version;
        out->load_addr = addr;
        out->kernel_end = addr + bz.init_size;
        out->entry = addr + LINUX_ENTRY64_OFFSET;
        cmdline_size = bz.cmdline_size;
        initrd_max = bz.initrd_addr_max;
    } else {
        VmlinuxImage vi;
        if (!vmlinux_load(image, len, what, ram, &vi, error))
            return false;
        out->kind = kind;
        out->protocol = VMLINUX_PROTOCOL;
        out->load_addr = vi.load_low;
        out->kernel_end = vi.load_high;
        out->entry = vi.entry;
        cmdline_size = VMLINUX_CMDLINE_SIZE;
        initrd_max = VMLINUX_INITRD_MAX;
    }

    size_t cl = strlen(cmdline);
    size_t cl_max = MIN((size_t)cmdline_size, (size_t)LINUX_CMDLINE_MAX - 1);
    if (cl > cl_max)
        return image_fail(error, what,
                          "the command line is %zu bytes; this kernel takes at most %zu "
                          "(cmdline_size)",
                          cl, cl_max);
    if (initrd && !place_initrd(ram, initrd, initrd_len, initrd_what, initrd_max, out, error))
        return false;

    uint8_t *zp = ram_ptr(ram, LINUX_ZERO_PAGE, LINUX_ZP_SIZE);
    uint8_t *cmd = ram_ptr(ram, LINUX_CMDLINE_ADDR, LINUX_CMDLINE_MAX);
    uint8_t *gdt = ram_ptr(ram, LINUX_GDT_ADDR, sizeof(linux_gdt));
    if (!zp || !cmd || !gdt)
        return image_fail(error, what, "no guest RAM for the boot data");
    memset(zp, 0, LINUX_ZP_SIZE);
    if (kind == LINUX_KIND_BZIMAGE)
        memcpy(zp + LINUX_HDR_OFFSET, image + LINUX_HDR_OFFSET, bz.hdr_end - LINUX_HDR_OFFSET);
    else
        vmlinux_header(zp, out);
    linux_put8(zp, LINUX_HDR_TYPE_OF_LOADER, LINUX_LOADER_TYPE_UNDEFINED);
    linux_put32(zp, LINUX_HDR_CODE32_START, (uint32_t)out->load_addr);
    linux_put32(zp, LINUX_HDR_CMD_LINE_PTR, LINUX_CMDLINE_ADDR);
    linux_put32(zp, LINUX_HDR_RAMDISK_IMAGE, (uint32_t)out->initrd_addr);
    linux_put32(zp, LINUX_HDR_RAMDISK_SIZE, (uint32_t)out->initrd_size);
    linux_put32(zp, LINUX_ZP_EXT_RAMDISK_IMG, (uint32_t)(out->initrd_addr >> 32));
    linux_put32(zp, LINUX_ZP_EXT_RAMDISK_SIZE, (uint32_t)(out->initrd_size >> 32));
    linux_put8(zp, LINUX_ZP_E820_ENTRIES, (uint8_t)out->n_e820);
    e820_write(zp + LINUX_ZP_E820_TABLE, out->e820, out->n_e820);

    memset(cmd, 0, LINUX_CMDLINE_MAX);
    memcpy(cmd, cmdline, cl);
    memcpy(gdt, linux_gdt, sizeof(linux_gdt));
    return build_page_tables(ram, error);
}

bool boot_linux_vcpus(Vm *vm, const LinuxBoot *lb, GError **error)
{
    Vcpu *v = &vm->vcpus[0];
    struct kvm_sregs sregs;

    if (!boot_vcpu_ioctl(v, KVM_GET_SREGS, &sregs, "KVM_GET_SREGS", error))
        return false;
    boot_flat_segment(&sregs.cs, LINUX_BOOT_CS, 0xb, true);
    boot_flat_segment(&sregs.ds, LINUX_BOOT_DS, 0x3, false);
    boot_sregs_tables(&sregs, LINUX_BOOT_TSS, LINUX_GDT_ADDR, sizeof(linux_gdt) - 1);
    sregs.cr0 = 0x80000031ull; /* PG | NE | ET | PE */
    sregs.cr3 = LINUX_PML4_ADDR;
    sregs.cr4 = 0x20;   /* PAE */
    sregs.efer = 0x500; /* LME | LMA */
    if (!boot_vcpu_ioctl(v, KVM_SET_SREGS, &sregs, "KVM_SET_SREGS", error))
        return false;
    struct kvm_regs regs = {
        .rflags = 0x2,
        .rip = lb->entry,
        .rsi = LINUX_ZERO_PAGE,
    };
    return boot_vcpu_ioctl(v, KVM_SET_REGS, &regs, "KVM_SET_REGS", error);
}
