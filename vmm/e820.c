#include "e820.h"

#include "bzimage.h"

unsigned e820_build(const GuestRam *ram, E820Entry *out)
{
    if (ram->n_blocks == 0 || ram->blocks[0].gpa != 0 || ram->blocks[0].size <= E820_HIGH_START)
        return 0;
    unsigned n = 0;
    out[n++] = (E820Entry){ 0, E820_LOW_END, E820_RAM };
    out[n++] = (E820Entry){ E820_LOW_END, E820_HIGH_START - E820_LOW_END, E820_RESERVED };
    out[n++] = (E820Entry){ E820_HIGH_START, ram->blocks[0].size - E820_HIGH_START, E820_RAM };
    for (unsigned i = 1; i < ram->n_blocks && n < E820_MAX; i++)
        out[n++] = (E820Entry){ ram->blocks[i].gpa, ram->blocks[i].size, E820_RAM };
    return n;
}

void e820_write(uint8_t *dst, const E820Entry *e, unsigned n)
{
    for (unsigned i = 0; i < n; i++) {
        linux_put64(dst, i * 20, e[i].addr);
        linux_put64(dst, i * 20 + 8, e[i].size);
        linux_put32(dst, i * 20 + 16, e[i].type);
    }
}
