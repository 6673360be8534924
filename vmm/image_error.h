/* Errors of the kernel image loaders (multiboot, bzImage, vmlinux). */
#pragma once

#include <gio/gio.h>
#include <stdbool.h>

/* Sets *error (G_IO_ERROR_INVALID_DATA) to "WHAT: message" and returns false, so a
 * loader can `return image_fail(error, file, "...", ...)`. */
G_GNUC_PRINTF(3, 4)
bool image_fail(GError **error, const char *what, const char *fmt, ...);
