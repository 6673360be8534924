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
