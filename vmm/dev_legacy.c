/* Legacy PC ports that Linux probes and that vmsnap answers trivially. */
#include "dev_legacy.h"

#include <string.h>

/* PCI configuration mechanism #1 with no host bridge: reads float high (all-ones,
 * "no device"), writes are dropped. Linux concludes there is no PCI. */
static void pci_conf_pio(void *opaque, uint16_t port, bool is_write, uint8_t *data, unsigned size)
{
    if (!is_write)
        memset(data, 0xff, size);
}

/* CMOS/RTC with nothing behind it: the index write is dropped and every register
 * reads 0 (so the update-in-progress bit is clear and the clock reads midnight). */
static void cmos_pio(void *opaque, uint16_t port, bool is_write, uint8_t *data, unsigned size)
{
    if (!is_write)
        memset(data, 0, size);
}

bool legacy_register_pci(PioBus *bus)
{
    return pio_register(bus, LEGACY_PCI_CONF_BASE, 8, pci_conf_pio, NULL, "pci-conf");
}

bool legacy_register_cmos(PioBus *bus)
{
    return pio_register(bus, LEGACY_CMOS_BASE, 2, cmos_pio, NULL, "cmos");
}
