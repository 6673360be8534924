#include "chardev.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>

bool chardev_open(Chardev *cd, const char *spec, GError **error)
{
    memset(cd, 0, sizeof(*cd));
    cd->out_fd = -1;
    if (!spec || !strcmp(spec, "stdio")) {
        cd->out_fd = STDOUT_FILENO;
    } else if (!strcmp(spec, "none")) {
        /* discard */
    } else if (g_str_has_prefix(spec, "file:") && spec[5]) {
        cd->out_fd = open(spec + 5, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        if (cd->out_fd < 0) {
            int err = errno;
            g_set_error(error, G_IO_ERROR, g_io_error_from_errno(err),
                        "serial: cannot open '%s': %s", spec + 5, g_strerror(err));
            return false;
        }
        cd->close_out = true;
    } else {
        g_set_error(error, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT,
                    "serial: '%s' is not stdio, file:PATH or none", spec);
        return false;
    }
    cd->spec = g_strdup(spec ? spec : "stdio");
    return true;
}

void chardev_write(Chardev *cd, const uint8_t *buf, size_t len)
{
    while (cd->out_fd >= 0 && len > 0) {
        ssize_t n = write(cd->out_fd, buf, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return;
        buf += n;
        len -= (size_t)n;
    }
}

void chardev_close(Chardev *cd)
{
    if (cd->close_out && cd->out_fd >= 0)
        close(cd->out_fd);
    cd->out_fd = -1;
    g_clear_pointer(&cd->spec, g_free);
}
