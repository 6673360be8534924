/* Port I/O dispatch for devices emulated in the VMM. */
#pragma once

#include <stdbool.h>
#include <stdint.h>

/* data points at `size` bytes: filled by the handler on reads, consumed on writes. */
typedef void (*PioHandler)(void *opaque, uint16_t port, bool is_write, uint8_t *data,
                           unsigned size);

#define PIO_MAX_RANGES 16

typedef struct PioRange {
    uint16_t base;
    uint16_t len;
    PioHandler handler;
    void *opaque;
    const char *name;
} PioRange;

typedef struct PioBus {
    unsigned n;
    PioRange ranges[PIO_MAX_RANGES];
} PioBus;

/* Returns false if the table is full or the range overlaps an existing one. */
bool pio_register(PioBus *bus, uint16_t base, uint16_t len, PioHandler handler, void *opaque,
                  const char *name);

/* Returns false when no device claims the port. */
bool pio_dispatch(const PioBus *bus, uint16_t port, bool is_write, uint8_t *data, unsigned size);
