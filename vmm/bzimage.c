#include "bzimage.h"

#include "image_error.h"

#include <gio/gio.h>
#include <string.h>

bool bzimage_detect(const uint8_t *image, size_t len)
{
    return len >= LINUX_HDR_MAGIC_OFF + 4 &&
           linux_get32(image, LINUX_HDR_MAGIC_OFF) == LINUX_HDR_MAGIC;
}

bool bzimage_parse(const uint8_t *image, size_t len, const char *what, BzImage *out, GError **error)
{
    memset(out, 0, sizeof(*out));
    if (len < LINUX_HDR_INIT_SIZE + 4)
        return image_fail(error, what,
                          "truncated bzImage: %zu bytes, the setup header alone needs %u", len,
                          LINUX_HDR_INIT_SIZE + 4);
    uint32_t magic = linux_get32(image, LINUX_HDR_MAGIC_OFF);
    if (magic != LINUX_HDR_MAGIC)
        return image_fail(error, what,
                          "setup header field 'header' at 0x%x is 0x%08x, expected "
                          "0x%08x (\"HdrS\"): not a bzImage",
                          LINUX_HDR_MAGIC_OFF, magic, LINUX_HDR_MAGIC);
    uint16_t boot_flag = linux_get16(image, LINUX_HDR_BOOT_FLAG);
    if (boot_flag != LINUX_BOOT_FLAG)
        return image_fail(error, what,
                          "setup header field 'boot_flag' at 0x%x is 0x%04x, expected "
                          "0x%04x",
                          LINUX_HDR_BOOT_FLAG, boot_flag, LINUX_BOOT_FLAG);
    out->version = linux_get16(image, LINUX_HDR_VERSION);
    if (out->version < LINUX_MIN_PROTOCOL)
        return image_fail(error, what,
                          "setup header field 'version' is %u.%02u; vmsnap needs boot "
                          "protocol %u.%02u or later",
                          out->version >> 8, out->version & 0xff, LINUX_MIN_PROTOCOL >> 8,
                          LINUX_MIN_PROTOCOL & 0xff);
    out->setup_sects = image[LINUX_HDR_SETUP_SECTS];
    out->loadflags = image[LINUX_HDR_LOADFLAGS];
    out->relocatable = image[LINUX_HDR_RELOCATABLE];
    out->kernel_alignment = linux_get32(image, LINUX_HDR_KERNEL_ALIGN);
    out->initrd_addr_max = linux_get32(image, LINUX_HDR_INITRD_ADDR_MAX);
    out->cmdline_size = linux_get32(image, LINUX_HDR_CMDLINE_SIZE);
    if (out->version >= LINUX_PROTOCOL_64BIT)
        out->xloadflags = linux_get16(image, LINUX_HDR_XLOADFLAGS);
    if (out->version >= 0x020a) {
        out->pref_address = linux_get64(image, LINUX_HDR_PREF_ADDRESS);
        out->init_size = linux_get32(image, LINUX_HDR_INIT_SIZE);
    }
    if (!(out->loadflags & LINUX_LOADFLAGS_LOADED_HIGH))
        return image_fail(error, what,
                          "setup header field 'loadflags' is 0x%02x: a zImage (loaded "
                          "low) is not supported, only a bzImage (LOADED_HIGH)",
                          out->loadflags);
    if (out->version < LINUX_PROTOCOL_64BIT || !(out->xloadflags & LINUX_XLF_KERNEL_64))
        return image_fail(error, what,
                          "setup header: protocol %u.%02u, xloadflags 0x%04x: no 64-bit "
                          "entry point (needs protocol 2.12 and XLF_KERNEL_64); vmsnap boots Linux "
                          "in long mode only",
                          out->version >> 8, out->version & 0xff, out->xloadflags);

    unsigned sects = out->setup_sects ? out->setup_sects : 4;
    out->setup_size = (size_t)(sects + 1) * 512;
    if (out->setup_size >= len)
        return image_fail(error, what,
                          "setup header field 'setup_sects' is %u: the setup code "
                          "(%zu bytes) is not followed by a kernel (the file has %zu bytes)",
                          out->setup_sects, out->setup_size, len);
    out->kernel_offset = out->setup_size;
    out->kernel_size = len - out->setup_size;
    if (out->init_size && out->init_size < out->kernel_size)
        return image_fail(error, what,
                          "setup header field 'init_size' (0x%x) is smaller than the "
                          "protected-mode kernel (0x%zx bytes)",
                          out->init_size, out->kernel_size);
    if (!out->init_size)
        out->init_size = (uint32_t)MIN(out->kernel_size * 4, (size_t)UINT32_MAX);
    if (out->relocatable && out->kernel_alignment &&
        (out->kernel_alignment & (out->kernel_alignment - 1)))
        return image_fail(error, what,
                          "setup header field 'kernel_alignment' (0x%x) is not a power "
                          "of two",
                          out->kernel_alignment);
    if (!out->initrd_addr_max)
        out->initrd_addr_max = 0x37ffffffu; /* the protocol's default before 2.03 */
    if (!out->cmdline_size)
        out->cmdline_size = 255;
    /* The header ends where its leading jump lands (0x202 + byte 0x201). */
    out->hdr_end =
        MIN((size_t)LINUX_HDR_MAGIC_OFF + image[LINUX_HDR_JUMP + 1], (size_t)LINUX_HDR_MAX_END);
    if (out->hdr_end < LINUX_HDR_INIT_SIZE + 4 && out->version >= 0x020a)
        out->hdr_end = LINUX_HDR_INIT_SIZE + 4;
    return true;
}
