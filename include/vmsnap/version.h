/* libvmsnap version. */
#pragma once

#define VMSNAP_VERSION_STRING "0.1.0"
#define VMSNAP_VERSION_NUMBER 0x000100 /* major << 16 | minor << 8 | micro */
