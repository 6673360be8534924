#include "unix_listen.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

static int fail(int fd, const char *bound, const char *what, const char **step)
{
    int err = errno;
    if (bound)
        unlink(bound);
    if (fd >= 0)
        close(fd);
    *step = what;
    errno = err;
    return -1;
}

int unix_listen_ready(const char *path, int backlog, struct stat *st, const char **step)
{
    struct sockaddr_un addr = { .sun_family = AF_UNIX };
    int n = snprintf(addr.sun_path, sizeof(addr.sun_path), "%s.%d.tmp", path, (int)getpid());
    bool renamed = n > 0 && (size_t)n < sizeof(addr.sun_path);
    if (!renamed) {
        if (strlen(path) >= sizeof(addr.sun_path)) {
            errno = ENAMETOOLONG;
            return fail(-1, NULL, "bind", step);
        }
        strcpy(addr.sun_path, path);
    }
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return fail(-1, NULL, "socket", step);
    if (renamed)
        unlink(addr.sun_path); /* our own leftover from a pid reused after a crash */
    if (bind(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0)
        return fail(fd, NULL, "bind", step);
    /* Nobody can connect before listen(), so tightening the mode here is race-free. */
    if (chmod(addr.sun_path, 0600) < 0)
        return fail(fd, addr.sun_path, "chmod", step);
    if (listen(fd, backlog) < 0)
        return fail(fd, addr.sun_path, "listen", step);
    if (renamed && rename(addr.sun_path, path) < 0)
        return fail(fd, addr.sun_path, "rename", step);
    if (lstat(path, st) < 0)
        return fail(fd, path, "stat", step);
    return fd;
}

static int set_errno_error(GError **error, int err, const char *who, const char *what)
{
    g_set_error(error, G_IO_ERROR, g_io_error_from_errno(err), "%s: cannot %s: %s", who, what,
                g_strerror(err));
    return -1;
}

/* 0 when `path` is free for a new socket (absent, or a stale socket now removed). */
static int remove_stale(const struct sockaddr_un *addr, const char *who, GError **error)
{
    struct stat st;
    if (lstat(addr->sun_path, &st) < 0)
        return errno == ENOENT ? 0 : set_errno_error(error, errno, who, "stat the path");
    if (!S_ISSOCK(st.st_mode)) {
        g_set_error(error, G_IO_ERROR, G_IO_ERROR_EXISTS, "%s: the path exists and is not a socket",
                    who);
        return -1;
    }
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return set_errno_error(error, errno, who, "create a socket to probe the path");
    int err = connect(fd, (const struct sockaddr *)addr, sizeof(*addr)) < 0 ? errno : 0;
    close(fd);
    /* Accepted, or a full backlog: somebody listens. */
    if (err == 0 || err == EAGAIN) {
        g_set_error(error, G_IO_ERROR, G_IO_ERROR_ADDRESS_IN_USE,
                    "%s: another process is listening on this socket", who);
        return -1;
    }
    if (err != ECONNREFUSED && err != ENOENT)
        return set_errno_error(error, err, who, "probe the existing socket");
    if (unlink(addr->sun_path) < 0 && errno != ENOENT)
        return set_errno_error(error, errno, who, "remove the stale socket");
    return 0;
}

int unix_listen_path(const char *path, int backlog, const char *who, struct stat *st,
                     GError **error)
{
    struct sockaddr_un addr = { .sun_family = AF_UNIX };
    if (strlen(path) >= sizeof(addr.sun_path)) {
        g_set_error(error, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT,
                    "%s: the path is longer than %zu bytes", who, sizeof(addr.sun_path) - 1);
        return -1;
    }
    strcpy(addr.sun_path, path);
    if (remove_stale(&addr, who, error) < 0)
        return -1;
    const char *step = NULL;
    int fd = unix_listen_ready(path, backlog, st, &step);
    if (fd < 0)
        return set_errno_error(error, errno, who, step);
    return fd;
}
