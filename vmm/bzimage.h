/* The x86 Linux boot protocol: the bzImage setup header and the zero page
 * (struct boot_params), per Documentation/arch/x86/boot.rst. */
#pragma once

#include <glib.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Offsets in the bzImage file and in the zero page (the setup header sits at the
 * same offset in both). */
#define LINUX_HDR_OFFSET          0x1f1u
#define LINUX_HDR_SETUP_SECTS     0x1f1u /* u8 */
#define LINUX_HDR_BOOT_FLAG       0x1feu /* u16, 0xAA55 */
#define LINUX_HDR_JUMP            0x200u /* u16: a short jump; byte 0x201 = header end - 0x202 */
#define LINUX_HDR_MAGIC_OFF       0x202u /* u32, "HdrS" */
#define LINUX_HDR_VERSION         0x206u /* u16 */
#define LINUX_HDR_TYPE_OF_LOADER  0x210u /* u8 */
#define LINUX_HDR_LOADFLAGS       0x211u /* u8 */
#define LINUX_HDR_CODE32_START    0x214u /* u32 */
#define LINUX_HDR_RAMDISK_IMAGE   0x218u /* u32 */
#define LINUX_HDR_RAMDISK_SIZE    0x21cu /* u32 */
#define LINUX_HDR_HEAP_END_PTR    0x224u /* u16 */
#define LINUX_HDR_CMD_LINE_PTR    0x228u /* u32 */
#define LINUX_HDR_INITRD_ADDR_MAX 0x22cu /* u32 */
#define LINUX_HDR_KERNEL_ALIGN    0x230u /* u32 */
#define LINUX_HDR_RELOCATABLE     0x234u /* u8 */
#define LINUX_HDR_XLOADFLAGS      0x236u /* u16 */
#define LINUX_HDR_CMDLINE_SIZE    0x238u /* u32 */
#define LINUX_HDR_PAYLOAD_OFFSET  0x248u /* u32 */
#define LINUX_HDR_PAYLOAD_LENGTH  0x24cu /* u32 */
#define LINUX_HDR_PREF_ADDRESS    0x258u /* u64 */
#define LINUX_HDR_INIT_SIZE       0x260u /* u32 */
#define LINUX_HDR_MAX_END         0x290u /* the header area in boot_params ends here */

#define LINUX_HDR_MAGIC      0x53726448u /* "HdrS" */
#define LINUX_BOOT_FLAG      0xAA55u
#define LINUX_MIN_PROTOCOL   0x0206u
#define LINUX_PROTOCOL_64BIT 0x020cu /* xloadflags and the 64-bit entry */

#define LINUX_LOADFLAGS_LOADED_HIGH  0x01u
#define LINUX_LOADFLAGS_CAN_USE_HEAP 0x80u
#define LINUX_XLF_KERNEL_64          0x01u

/* Zero page (boot_params) fields outside the setup header. */
#define LINUX_ZP_SIZE             4096u
#define LINUX_ZP_EXT_RAMDISK_IMG  0x0c0u /* u32, high half */
#define LINUX_ZP_EXT_RAMDISK_SIZE 0x0c4u
#define LINUX_ZP_EXT_CMD_LINE_PTR 0x0c8u
#define LINUX_ZP_E820_ENTRIES     0x1e8u /* u8 */
#define LINUX_ZP_SENTINEL         0x1efu /* u8, must stay 0 */
#define LINUX_ZP_E820_TABLE       0x2d0u /* 128 x 20 bytes */
#define LINUX_ZP_E820_MAX         128u

#define LINUX_LOADER_TYPE_UNDEFINED 0xffu
#define LINUX_DEFAULT_LOAD_ADDR     0x100000u
#define LINUX_ENTRY64_OFFSET        0x200u /* startup_64 = protected-mode kernel + 0x200 */

typedef struct BzImage {
    uint16_t version;    /* boot protocol, e.g. 0x020f */
    uint8_t setup_sects; /* 0 means 4 */
    uint8_t loadflags;
    uint16_t xloadflags;
    uint8_t relocatable;
    uint32_t kernel_alignment;
    uint32_t initrd_addr_max;
    uint32_t cmdline_size; /* max command line length, without the NUL */
    uint64_t pref_address;
    uint32_t init_size;   /* memory the kernel needs from its load address */
    size_t setup_size;    /* bytes of real-mode setup code before the kernel */
    size_t kernel_offset; /* file offset of the protected-mode kernel */
    size_t kernel_size;   /* its size in the file */
    size_t hdr_end;       /* end offset of the setup header to copy (<= 0x290) */
} BzImage;

/* True if `image` has the setup header magic "HdrS" at 0x202. */
bool bzimage_detect(const uint8_t *image, size_t len);

/* Parses and validates the setup header. Errors name the file (`what`) and the
 * field: boot_flag, header magic, version (at least 2.06; the 64-bit entry also
 * needs 2.12 and XLF_KERNEL_64), setup_sects, sizes. */
bool bzimage_parse(const uint8_t *image, size_t len, const char *what, BzImage *out,
                   GError **error);

/* Little-endian field access in a zero page or a setup header. */
static inline void linux_put8(uint8_t *p, size_t off, uint8_t v)
{
    p[off] = v;
}
static inline void linux_put16(uint8_t *p, size_t off, uint16_t v)
{
    p[off] = (uint8_t)v;
    p[off + 1] = (uint8_t)(v >> 8);
}
static inline void linux_put32(uint8_t *p, size_t off, uint32_t v)
{
    linux_put16(p, off, (uint16_t)v);
    linux_put16(p, off + 2, (uint16_t)(v >> 16));
}
static inline void linux_put64(uint8_t *p, size_t off, uint64_t v)
{
    linux_put32(p, off, (uint32_t)v);
    linux_put32(p, off + 4, (uint32_t)(v >> 32));
}
static inline uint16_t linux_get16(const uint8_t *p, size_t off)
{
    return (uint16_t)(p[off] | (p[off + 1] << 8));
}
static inline uint32_t linux_get32(const uint8_t *p, size_t off)
{
    return linux_get16(p, off) | ((uint32_t)linux_get16(p, off + 2) << 16);
}
static inline uint64_t linux_get64(const uint8_t *p, size_t off)
{
    return linux_get32(p, off) | ((uint64_t)linux_get32(p, off + 4) << 32);
}
