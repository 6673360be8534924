#include "target.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <stdarg.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static G_GNUC_PRINTF(3, 4) bool fail_errno(GError **error, int err, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    g_autofree char *msg = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    g_set_error(error, G_IO_ERROR, g_io_error_from_errno(err), "%s: %s", msg, g_strerror(err));
    return false;
}

static bool check_regular(SaveTarget *t, GError **error)
{
    struct stat st;
    if (fstat(t->meta_fd, &st) < 0)
        return fail_errno(error, errno, "%s: fstat failed", t->what);
    if (!S_ISREG(st.st_mode)) {
        g_set_error(error, G_IO_ERROR, G_IO_ERROR_NOT_REGULAR_FILE,
                    "%s: not a regular file (a mapped-RAM snapshot needs a seekable file; "
                    "pipes and sockets carry the stream format)",
                    t->what);
        return false;
    }
    return true;
}

/* Opens the page fd with O_DIRECT through /proc/self/fd, so that the flag does
 * not change the caller's file description; falls back to buffered. */
static bool open_page_fd(SaveTarget *t, bool buffered, GError **error)
{
    t->page_fd = t->meta_fd;
    t->direct = false;
    if (buffered)
        return true;
    g_autofree char *proc = g_strdup_printf("/proc/self/fd/%d", t->meta_fd);
    int fd = open(proc, O_WRONLY | O_DIRECT | O_CLOEXEC);
    if (fd < 0) {
        if (errno == EINVAL)
            return true; /* the filesystem has no O_DIRECT (tmpfs): buffered */
        return fail_errno(error, errno, "%s: cannot reopen with O_DIRECT", t->what);
    }
    t->page_fd = fd;
    t->direct = true;
    return true;
}

bool save_target_open_path(SaveTarget *t, const char *path, uint64_t offset, bool in_place,
                           bool buffered, GError **error)
{
    memset(t, 0, sizeof(*t));
    t->meta_fd = t->page_fd = -1;
    t->base = offset;
    t->path = g_strdup(path);
    if (!in_place && offset == 0) {
        t->tmp_path = g_strdup_printf("%s.partial", path);
        t->what = g_strdup(t->tmp_path);
        t->meta_fd = open(t->tmp_path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    } else {
        t->what = g_strdup(path);
        t->meta_fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    }
    if (t->meta_fd < 0)
        return fail_errno(error, errno, "%s: cannot create", t->what);
    t->own_meta_fd = true;
    return check_regular(t, error) && open_page_fd(t, buffered, error);
}

bool save_target_open_fd(SaveTarget *t, int fd, uint64_t offset, bool buffered, GError **error)
{
    memset(t, 0, sizeof(*t));
    t->page_fd = -1;
    t->base = offset;
    t->meta_fd = fd;
    t->what = g_strdup_printf("fd %d", fd);
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0)
        return fail_errno(error, errno, "%s: bad file descriptor", t->what);
    if ((fl & O_ACCMODE) != O_RDWR && (fl & O_ACCMODE) != O_WRONLY) {
        g_set_error(error, G_IO_ERROR, G_IO_ERROR_PERMISSION_DENIED, "%s: not open for writing",
                    t->what);
        return false;
    }
    if (fl & O_APPEND) {
        /* pwrite() on an O_APPEND fd appends: offsets would be wrong. */
        g_set_error(error, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT,
                    "%s: opened with O_APPEND; a snapshot needs positioned writes", t->what);
        return false;
    }
    return check_regular(t, error) && open_page_fd(t, buffered, error);
}

bool save_target_is_file(const SaveTarget *t, int fd)
{
    struct stat a, b;
    return fd >= 0 && fstat(t->meta_fd, &a) == 0 && fstat(fd, &b) == 0 && a.st_dev == b.st_dev &&
           a.st_ino == b.st_ino;
}

bool save_target_pwrite(SaveTarget *t, const void *buf, size_t len, uint64_t offset,
                        const char *what, GError **error)
{
    const uint8_t *p = buf;
    while (len > 0) {
        ssize_t n = pwrite(t->meta_fd, p, len, (off_t)offset);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            int err = n < 0 ? errno : ENOSPC;
            g_set_error(error, G_IO_ERROR, g_io_error_from_errno(err),
                        "%s: writing the %s at offset 0x%" G_GINT64_MODIFIER "x failed: %s",
                        t->what, what, offset, g_strerror(err));
            return false;
        }
        p += n;
        len -= (size_t)n;
        offset += (uint64_t)n;
    }
    return true;
}

bool save_target_sync(SaveTarget *t, GError **error)
{
    if (fdatasync(t->meta_fd) < 0)
        return fail_errno(error, errno, "%s: fdatasync failed", t->what);
    return true;
}

static bool sync_parent_dir(const char *path, GError **error)
{
    g_autofree char *copy = g_strdup(path);
    const char *dir = dirname(copy);
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return fail_errno(error, errno, "%s: cannot open the directory to sync it", dir);
    int r = fsync(fd);
    int err = errno;
    close(fd);
    if (r < 0)
        return fail_errno(error, err, "%s: fsync of the directory failed", dir);
    return true;
}

bool save_target_commit(SaveTarget *t, uint64_t end, GError **error)
{
    struct stat st;
    /* In place: drop whatever an older, longer snapshot left after our end. */
    if (fstat(t->meta_fd, &st) == 0 && (uint64_t)st.st_size > end &&
        ftruncate(t->meta_fd, (off_t)end) < 0)
        return fail_errno(error, errno, "%s: truncate failed", t->what);
    if (!t->tmp_path)
        return true;
    if (rename(t->tmp_path, t->path) < 0) {
        int err = errno;
        g_set_error(error, G_IO_ERROR, g_io_error_from_errno(err), "cannot rename %s to %s: %s",
                    t->tmp_path, t->path, g_strerror(err));
        return false;
    }
    g_clear_pointer(&t->tmp_path, g_free);
    return sync_parent_dir(t->path, error);
}

void save_target_abort(SaveTarget *t)
{
    if (t->tmp_path)
        unlink(t->tmp_path);
}

void save_target_close(SaveTarget *t)
{
    if (t->page_fd >= 0 && t->page_fd != t->meta_fd)
        close(t->page_fd);
    if (t->own_meta_fd && t->meta_fd >= 0)
        close(t->meta_fd);
    t->page_fd = t->meta_fd = -1;
    g_clear_pointer(&t->what, g_free);
    g_clear_pointer(&t->path, g_free);
    g_clear_pointer(&t->tmp_path, g_free);
}
