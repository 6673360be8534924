#include "snapfile.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

bool snapfile_read(void *opaque, uint64_t offset, void *buf, size_t len, GError **error)
{
    VmsnapSnapshot *s = opaque;
    uint8_t *p = buf;
    while (len > 0) {
        ssize_t n = pread(s->fd, p, len, (off_t)offset);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            int err = errno;
            g_set_error(error, G_IO_ERROR, g_io_error_from_errno(err),
                        "%s: read at offset 0x%" G_GINT64_MODIFIER "x failed: %s", s->what, offset,
                        g_strerror(err));
            return false;
        }
        if (n == 0) {
            struct stat st;
            fstat(s->fd, &st);
            g_set_error(error, FORMAT_ERROR, FORMAT_ERROR_TRUNCATED,
                        "%s: truncated: the file is %" G_GINT64_FORMAT " bytes, the snapshot "
                        "needs %" G_GUINT64_FORMAT,
                        s->what, (gint64)st.st_size, offset + len);
            return false;
        }
        p += n;
        len -= (size_t)n;
        offset += (uint64_t)n;
    }
    return true;
}

typedef struct Mapping {
    void *base;
    size_t len;
} Mapping;

static void unmap(gpointer data)
{
    Mapping *m = data;
    munmap(m->base, m->len);
    g_free(m);
}

/* FormatMapFn: a read-only view of the page cache, no copy. */
static GBytes *snapfile_map(void *opaque, uint64_t offset, size_t len, GError **error)
{
    VmsnapSnapshot *s = opaque;
    uint64_t aligned = offset & ~(uint64_t)(getpagesize() - 1);
    size_t delta = (size_t)(offset - aligned);
    void *p = mmap(NULL, len + delta, PROT_READ, MAP_SHARED, s->fd, (off_t)aligned);
    if (p == MAP_FAILED) {
        int err = errno;
        g_set_error(error, G_IO_ERROR, g_io_error_from_errno(err),
                    "%s: cannot map %zu bytes at offset 0x%" G_GINT64_MODIFIER "x: %s", s->what,
                    len, offset, g_strerror(err));
        return NULL;
    }
    Mapping *m = g_new(Mapping, 1);
    m->base = p;
    m->len = len + delta;
    return g_bytes_new_with_free_func((uint8_t *)p + delta, len, unmap, m);
}

int snapfile_open_direct(const VmsnapSnapshot *s)
{
    g_autofree char *proc = g_strdup_printf("/proc/self/fd/%d", s->fd);
    return open(proc, O_RDONLY | O_DIRECT | O_CLOEXEC);
}

static VmsnapSnapshot *open_common(int fd, uint64_t offset, const char *what, unsigned flags,
                                   GError **error)
{
    VmsnapSnapshot *s = g_new0(VmsnapSnapshot, 1);
    s->fd = fd;
    s->what = g_strdup(what);
    s->base = offset;
    struct stat st;
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
        g_set_error(error, G_IO_ERROR, G_IO_ERROR_NOT_REGULAR_FILE,
                    "%s: not a regular file (a stream needs 'vmsnap convert' or an exec:/unix: "
                    "source)",
                    what);
        vmsnap_snapshot_close(s);
        return NULL;
    }
    unsigned fflags = 0;
    if (flags & VMSNAP_OPEN_ALLOW_PARTIAL)
        fflags |= FORMAT_OPEN_ALLOW_PARTIAL;
    if (flags & VMSNAP_OPEN_NO_PAGE_CHECKSUMS)
        fflags |= FORMAT_OPEN_DROP_CHECKSUMS;
    s->fmt = format_snapshot_parse_mapped(snapfile_read, snapfile_map, s, what, offset,
                                          (uint64_t)st.st_size, fflags, error);
    if (!s->fmt) {
        vmsnap_snapshot_close(s);
        return NULL;
    }
    return s;
}

VmsnapSnapshot *vmsnap_snapshot_open(const char *path, uint64_t offset, unsigned flags,
                                     GError **error)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        int err = errno;
        g_set_error(error, G_IO_ERROR, g_io_error_from_errno(err), "%s: cannot open: %s", path,
                    g_strerror(err));
        return NULL;
    }
    return open_common(fd, offset, path, flags, error);
}

VmsnapSnapshot *vmsnap_snapshot_open_fd(int fd, uint64_t offset, const char *what, unsigned flags,
                                        GError **error)
{
    int copy = fcntl(fd, F_DUPFD_CLOEXEC, 0);
    if (copy < 0) {
        int err = errno;
        g_set_error(error, G_IO_ERROR, g_io_error_from_errno(err), "%s: %s", what, g_strerror(err));
        return NULL;
    }
    return open_common(copy, offset, what, flags, error);
}

void vmsnap_snapshot_close(VmsnapSnapshot *s)
{
    if (!s)
        return;
    format_snapshot_free(s->fmt);
    if (s->fd >= 0)
        close(s->fd);
    g_free(s->what);
    g_free(s);
}

bool vmsnap_snapshot_complete(const VmsnapSnapshot *s)
{
    return s->fmt->header.state == FORMAT_STATE_DONE;
}

GBytes *vmsnap_snapshot_config(const VmsnapSnapshot *s, uint32_t *version)
{
    if (version)
        *version = s->fmt->config_version;
    return s->fmt->config;
}

const char *vmsnap_snapshot_name(const VmsnapSnapshot *s)
{
    return s->what;
}
