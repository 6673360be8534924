/* Legacy PC ports answered trivially (no PCI host bridge, an empty CMOS). */
#pragma once

#include "pio.h"

#define LEGACY_PCI_CONF_BASE 0xcf8 /* 0xCF8-0xCFF: config address + data */
#define LEGACY_CMOS_BASE     0x70  /* 0x70 index, 0x71 data */

bool legacy_register_pci(PioBus *bus);
bool legacy_register_cmos(PioBus *bus);
