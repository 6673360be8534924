#include "pio.h"

bool pio_register(PioBus *bus, uint16_t base, uint16_t len, PioHandler handler, void *opaque,
                  const char *name)
{
    if (bus->n == PIO_MAX_RANGES || len == 0)
        return false;
    for (unsigned i = 0; i < bus->n; i++) {
        const PioRange *r = &bus->ranges[i];
        if (base < r->base + r->len && r->base < base + len)
            return false;
    }
    bus->ranges[bus->n++] = (PioRange){ base, len, handler, opaque, name };
    return true;
}

bool pio_dispatch(const PioBus *bus, uint16_t port, bool is_write, uint8_t *data, unsigned size)
{
    for (unsigned i = 0; i < bus->n; i++) {
        const PioRange *r = &bus->ranges[i];
        if (port >= r->base && port - r->base < r->len) {
            r->handler(r->opaque, port, is_write, data, size);
            return true;
        }
    }
    return false;
}
