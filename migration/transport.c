#include "transport.h"

#include "unix_listen.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

/* A TCP connect to an unreachable host would otherwise wait for the kernel's
 * retries (minutes). */
#define CONNECT_TIMEOUT_MS 30000
/* How long a freed exec: stream waits for its command before SIGTERM, then SIGKILL. */
#define EXEC_GRACE_MS 1000

static bool fail_errno(GError **error, int err, const char *addr, const char *what)
{
    g_set_error(error, G_IO_ERROR, g_io_error_from_errno(err), "%s: %s failed: %s", addr, what,
                g_strerror(err));
    return false;
}

static char *tcp_name(const char *host, const char *port)
{
    /* IPv6 literals are bracketed, as in the URI. */
    return strchr(host, ':') ? g_strdup_printf("tcp:[%s]:%s", host, port)
                             : g_strdup_printf("tcp:%s:%s", host, port);
}

static char *uri_name(const MigrateUri *u)
{
    switch (u->kind) {
    case MIGRATE_URI_UNIX:
        return g_strdup_printf("unix:%s", u->path);
    case MIGRATE_URI_TCP:
        return tcp_name(u->host, u->port);
    case MIGRATE_URI_EXEC:
        return g_strdup_printf("exec:%s", u->command);
    case MIGRATE_URI_FD:
        return g_strdup_printf("fd:%s", u->fdname);
    case MIGRATE_URI_FILE:
        return g_strdup_printf("file:%s", u->path);
    }
    return g_strdup("?");
}

static bool unix_addr(const char *path, const char *name, struct sockaddr_un *addr, GError **error)
{
    memset(addr, 0, sizeof(*addr));
    addr->sun_family = AF_UNIX;
    if (strlen(path) >= sizeof(addr->sun_path)) {
        g_set_error(error, G_IO_ERROR, G_IO_ERROR_FILENAME_TOO_LONG,
                    "%s: the socket path is longer than %zu bytes", name,
                    sizeof(addr->sun_path) - 1);
        return false;
    }
    strcpy(addr->sun_path, path);
    return true;
}

static void set_nodelay(int fd)
{
    /* Records are written whole: Nagle would only delay the small ones (SYNC, END). */
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

/* Measured on loopback, one connection, 1 MiB writes: a unix socket moves ~4.5 GB/s
 * with the default 208 KiB send buffer and ~12 GB/s with 1 MiB (the kernel doubles
 * it). For TCP, setting a size turns autotuning off and was slower (3.5 vs 5 GB/s),
 * so TCP keeps the kernel's. */
#define UNIX_SNDBUF (1 << 20)

static void set_unix_sndbuf(int fd)
{
    int size = UNIX_SNDBUF;
    setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &size, sizeof(size));
}

/* ---- source side ---- */

/* connect() with a time limit; returns 0 or an errno. */
static int connect_timeout(int fd, const struct sockaddr *sa, socklen_t len, int timeout_ms)
{
    int flags = fcntl(fd, F_GETFL);
    if (flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0)
        return errno;
    int err = 0;
    if (connect(fd, sa, len) < 0) {
        err = errno;
        if (err == EINPROGRESS) {
            struct pollfd p = { .fd = fd, .events = POLLOUT };
            gint64 deadline = g_get_monotonic_time() + (gint64)timeout_ms * 1000;
            int r;
            do {
                gint64 left = (deadline - g_get_monotonic_time()) / 1000;
                r = poll(&p, 1, (int)MAX(left, 0));
            } while (r < 0 && errno == EINTR);
            socklen_t elen = sizeof(err);
            if (r < 0)
                err = errno;
            else if (r == 0)
                err = ETIMEDOUT;
            else if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &elen) < 0)
                err = errno;
        }
    }
    if (fcntl(fd, F_SETFL, flags) < 0 && !err)
        err = errno;
    return err;
}

static VStream *connect_unix(const MigrateUri *u, const char *name, GError **error)
{
    struct sockaddr_un addr;
    if (!unix_addr(u->path, name, &addr, error))
        return NULL;
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        fail_errno(error, errno, name, "socket");
        return NULL;
    }
    int r;
    do {
        r = connect(fd, (struct sockaddr *)&addr, sizeof(addr));
    } while (r < 0 && errno == EINTR);
    if (r < 0) {
        int err = errno;
        close(fd);
        fail_errno(error, err, name, "connect");
        return NULL;
    }
    set_unix_sndbuf(fd);
    return vstream_fd_new(fd, true, name);
}

static VStream *connect_tcp(const MigrateUri *u, const char *name, GError **error)
{
    struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM };
    struct addrinfo *res = NULL;
    /* An empty host ("tcp::4444") is the local host, as in QEMU. */
    int gai = getaddrinfo(*u->host ? u->host : NULL, u->port, &hints, &res);
    if (gai) {
        g_set_error(error, G_IO_ERROR, G_IO_ERROR_NOT_FOUND, "%s: cannot resolve the address: %s",
                    name, gai == EAI_SYSTEM ? g_strerror(errno) : gai_strerror(gai));
        return NULL;
    }
    int err = ENOENT;
    for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
        int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
        if (fd < 0) {
            err = errno;
            continue;
        }
        err = connect_timeout(fd, ai->ai_addr, ai->ai_addrlen, CONNECT_TIMEOUT_MS);
        if (err) {
            close(fd);
            continue;
        }
        freeaddrinfo(res);
        set_nodelay(fd);
        return vstream_fd_new(fd, true, name);
    }
    freeaddrinfo(res);
    fail_errno(error, err, name, "connect");
    return NULL;
}

/* ---- exec: a shell command at the other end of a pipe ---- */

typedef struct ExecStream {
    VStream base;
    VStream *inner; /* our end of the pipe */
    pid_t pid;      /* 0 once reaped */
    int status;     /* wait status, valid once reaped */
} ExecStream;

static ssize_t exec_writev(VStream *vs, const struct iovec *iov, int iovcnt)
{
    ExecStream *s = (ExecStream *)vs;
    return s->inner->ops->writev(s->inner, iov, iovcnt);
}

static ssize_t exec_read(VStream *vs, void *buf, size_t len)
{
    ExecStream *s = (ExecStream *)vs;
    return s->inner->ops->read(s->inner, buf, len);
}

static int exec_flush(VStream *vs)
{
    ExecStream *s = (ExecStream *)vs;
    return s->inner->ops->flush(s->inner);
}

static int exec_close_write(VStream *vs)
{
    /* Closes our end of the pipe: the command sees EOF on its stdin (source), or
     * EPIPE if it still writes to its stdout (destination). */
    ExecStream *s = (ExecStream *)vs;
    return s->inner->ops->close_write(s->inner);
}

/* Reaps the command; with `deadline_us` (monotonic) >= 0 gives up at that time.
 * Returns true once reaped (or when it cannot be: someone else reaped it). */
static bool exec_reap(ExecStream *s, gint64 deadline_us)
{
    while (s->pid > 0) {
        int st;
        pid_t r = waitpid(s->pid, &st, deadline_us < 0 ? 0 : WNOHANG);
        if (r == s->pid) {
            s->status = st;
            s->pid = 0;
        } else if (r < 0 && errno != EINTR) {
            /* ECHILD: SIGCHLD ignored, or reaped by someone else. Nothing to report. */
            s->status = 0;
            s->pid = 0;
        } else if (r == 0) {
            if (g_get_monotonic_time() >= deadline_us)
                return false;
            g_usleep(5000);
        }
    }
    return true;
}

/* How long a reader at EOF waits for the command to exit, to report its status. */
#define EXEC_EOF_WAIT_MS 500

static char *exec_status_text(int st)
{
    if (WIFEXITED(st) && WEXITSTATUS(st) != 0)
        return g_strdup_printf("the command exited with status %d", WEXITSTATUS(st));
    if (WIFSIGNALED(st)) {
        const char *abbrev = sigabbrev_np(WTERMSIG(st));
        return g_strdup_printf("the command was killed by signal %d (SIG%s)", WTERMSIG(st),
                               abbrev ? abbrev : "?");
    }
    return NULL;
}

static char *exec_eof_detail(VStream *vs)
{
    ExecStream *s = (ExecStream *)vs;
    if (!exec_reap(s, g_get_monotonic_time() + EXEC_EOF_WAIT_MS * 1000))
        return NULL;
    return exec_status_text(s->status);
}

static void exec_free(VStream *vs)
{
    ExecStream *s = (ExecStream *)vs;
    vstream_free(s->inner); /* EOF or EPIPE for the command: most end at once */
    pid_t pgid = s->pid;
    if (s->pid > 0 && !exec_reap(s, g_get_monotonic_time() + EXEC_GRACE_MS * 1000)) {
        kill(-pgid, SIGTERM);
        if (!exec_reap(s, g_get_monotonic_time() + EXEC_GRACE_MS * 1000)) {
            kill(-pgid, SIGKILL);
            exec_reap(s, -1);
        }
    }
    g_free(s);
}

static const VStreamOps exec_ops = {
    .writev = exec_writev,
    .read = exec_read,
    .flush = exec_flush,
    .close_write = exec_close_write,
    .free = exec_free,
    .eof_detail = exec_eof_detail,
};

/*
 * Runs `/bin/sh -c command` with the pipe end `child_fd` as its stdin (to_child) or
 * stdout, and /dev/null on the other one of those two for a destination. The child
 * gets fds 0, 1 and 2 only, whatever the VMM has open (QMP socket, KVM fds, guest
 * memory), default signal dispositions (the VMM ignores SIGPIPE; `cat` should not)
 * and an empty signal mask.
 */
static pid_t spawn_shell(const char *command, int child_fd, bool to_child, const char *name,
                         GError **error)
{
    posix_spawn_file_actions_t fa;
    posix_spawnattr_t attr;
    sigset_t all, none;
    sigfillset(&all);
    sigemptyset(&none);
    posix_spawn_file_actions_init(&fa);
    posix_spawnattr_init(&attr);
    if (to_child) {
        posix_spawn_file_actions_adddup2(&fa, child_fd, STDIN_FILENO);
    } else {
        posix_spawn_file_actions_adddup2(&fa, child_fd, STDOUT_FILENO);
        posix_spawn_file_actions_addopen(&fa, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
    }
    posix_spawn_file_actions_addclosefrom_np(&fa, STDERR_FILENO + 1);
    posix_spawnattr_setsigdefault(&attr, &all);
    posix_spawnattr_setsigmask(&attr, &none);
    /* Its own process group, so that a command that ignores EOF can be ended with
     * whatever it started: sh -c does not exec the last command. */
    posix_spawnattr_setpgroup(&attr, 0);
    short flags = POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETPGROUP;
    posix_spawnattr_setflags(&attr, flags);

    char *argv[] = { "sh", "-c", (char *)command, NULL };
    pid_t pid;
    int r = posix_spawn(&pid, "/bin/sh", &fa, &attr, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    posix_spawnattr_destroy(&attr);
    if (r) {
        g_set_error(error, G_IO_ERROR, g_io_error_from_errno(r), "%s: cannot run /bin/sh: %s", name,
                    g_strerror(r));
        return -1;
    }
    return pid;
}

static VStream *exec_open(const char *command, bool to_child, GError **error)
{
    g_autofree char *name = g_strdup_printf("exec:%s", command);
    int p[2];
    if (pipe2(p, O_CLOEXEC) < 0) {
        fail_errno(error, errno, name, "pipe");
        return NULL;
    }
    int ours = to_child ? p[1] : p[0], theirs = to_child ? p[0] : p[1];
    pid_t pid = spawn_shell(command, theirs, to_child, name, error);
    close(theirs);
    if (pid < 0) {
        close(ours);
        return NULL;
    }
    ExecStream *s = g_new0(ExecStream, 1);
    s->base.ops = &exec_ops;
    s->base.name = g_steal_pointer(&name);
    s->inner = vstream_fd_new(ours, true, s->base.name);
    s->pid = pid;
    return &s->base;
}

VStream *transport_exec_read(const char *command, GError **error)
{
    return exec_open(command, false, error);
}

static VStream *connect_uri(const MigrateUri *uri, bool extra, GError **error)
{
    g_autofree char *name = uri_name(uri);
    switch (uri->kind) {
    case MIGRATE_URI_UNIX:
        return connect_unix(uri, name, error);
    case MIGRATE_URI_TCP:
        return connect_tcp(uri, name, error);
    case MIGRATE_URI_EXEC:
        if (!extra)
            return exec_open(uri->command, true, error);
        break;
    case MIGRATE_URI_FD:
    case MIGRATE_URI_FILE:
        break;
    }
    g_set_error(error, G_IO_ERROR, G_IO_ERROR_NOT_SUPPORTED,
                extra ? "%s: extra channels (multifd) need a unix: or tcp: address"
                      : "%s: not a stream transport to connect to (unix:, tcp: or exec:)",
                name);
    return NULL;
}

VStream *transport_connect(const MigrateUri *uri, GError **error)
{
    return connect_uri(uri, false, error);
}

VStream *transport_connect_extra(const MigrateUri *uri, GError **error)
{
    return connect_uri(uri, true, error);
}

VStream *transport_stream_from_fd(int fd, const char *name)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);
    if (getsockname(fd, (struct sockaddr *)&ss, &len) == 0 &&
        (ss.ss_family == AF_INET || ss.ss_family == AF_INET6))
        set_nodelay(fd);
    return vstream_fd_new(fd, true, name);
}

bool transport_stream_finish(VStream *s, GError **error)
{
    if (!vstream_flush(s, error) || !vstream_close_write(s, error))
        return false;
    if (s->ops != &exec_ops)
        return true;
    ExecStream *e = (ExecStream *)s;
    exec_reap(e, -1);
    g_autofree char *failure = exec_status_text(e->status);
    if (failure) {
        g_set_error(error, G_IO_ERROR, G_IO_ERROR_FAILED, "%s: %s", s->name, failure);
        return false;
    }
    return true;
}

/* ---- destination side ---- */

struct TransportListener {
    int fd;
    bool is_unix;
    char *host; /* path for unix */
    char *port;
    char *name; /* "unix:PATH", "tcp:HOST:PORT": errors and accepted streams */
    dev_t dev;  /* identity of our socket file, to unlink only ours */
    ino_t ino;
};

static TransportListener *listen_unix(const MigrateUri *u, const char *name, GError **error)
{
    struct sockaddr_un addr;
    if (!unix_addr(u->path, name, &addr, error))
        return NULL;
    struct stat st;
    int fd = unix_listen_path(u->path, 64, name, &st, error);
    if (fd < 0)
        return NULL;
    TransportListener *l = g_new0(TransportListener, 1);
    l->fd = fd;
    l->is_unix = true;
    l->host = g_strdup(u->path);
    l->name = g_strdup(name);
    l->dev = st.st_dev;
    l->ino = st.st_ino;
    return l;
}

static TransportListener *listen_tcp(const MigrateUri *u, const char *name, GError **error)
{
    struct addrinfo hints = { .ai_family = AF_UNSPEC,
                              .ai_socktype = SOCK_STREAM,
                              .ai_flags = AI_PASSIVE };
    struct addrinfo *res = NULL;
    int gai = getaddrinfo(*u->host ? u->host : NULL, u->port, &hints, &res);
    if (gai) {
        g_set_error(error, G_IO_ERROR, G_IO_ERROR_NOT_FOUND, "%s: cannot resolve the address: %s",
                    name, gai == EAI_SYSTEM ? g_strerror(errno) : gai_strerror(gai));
        return NULL;
    }
    int fd = -1, err = ENOENT;
    const char *what = "bind";
    for (struct addrinfo *ai = res; ai && fd < 0; ai = ai->ai_next) {
        fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol);
        if (fd < 0) {
            err = errno;
            what = "socket";
            continue;
        }
        /* A restarted destination must not wait for TIME_WAIT of the previous one. */
        int one = 1;
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
        if (bind(fd, ai->ai_addr, ai->ai_addrlen) < 0 || listen(fd, 64) < 0) {
            err = errno;
            what = "bind";
            close(fd);
            fd = -1;
        }
    }
    freeaddrinfo(res);
    if (fd < 0) {
        fail_errno(error, err, name, what);
        return NULL;
    }
    /* Report what was bound: the port the kernel chose for port 0. */
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);
    char host[NI_MAXHOST], port[NI_MAXSERV];
    if (getsockname(fd, (struct sockaddr *)&ss, &len) < 0 ||
        getnameinfo((struct sockaddr *)&ss, len, host, sizeof(host), port, sizeof(port),
                    NI_NUMERICHOST | NI_NUMERICSERV)) {
        err = errno;
        close(fd);
        fail_errno(error, err ? err : EINVAL, name, "getsockname");
        return NULL;
    }
    TransportListener *l = g_new0(TransportListener, 1);
    l->fd = fd;
    l->host = g_strdup(host);
    l->port = g_strdup(port);
    l->name = tcp_name(host, port);
    return l;
}

TransportListener *transport_listen(const MigrateUri *uri, GError **error)
{
    g_autofree char *name = uri_name(uri);
    if (uri->kind == MIGRATE_URI_UNIX)
        return listen_unix(uri, name, error);
    if (uri->kind == MIGRATE_URI_TCP)
        return listen_tcp(uri, name, error);
    g_set_error(error, G_IO_ERROR, G_IO_ERROR_NOT_SUPPORTED,
                "%s: only unix: and tcp: addresses can listen", name);
    return NULL;
}

const char *transport_listener_type(const TransportListener *l)
{
    return l->is_unix ? "unix" : "inet";
}

const char *transport_listener_host(const TransportListener *l)
{
    return l->host;
}

const char *transport_listener_port(const TransportListener *l)
{
    return l->port;
}

int transport_listener_fd(const TransportListener *l)
{
    return l->fd;
}

VStream *transport_accept(TransportListener *l, int timeout_ms, GError **error)
{
    gint64 deadline = timeout_ms < 0 ? -1 : g_get_monotonic_time() + (gint64)timeout_ms * 1000;
    for (;;) {
        int wait_ms = -1;
        if (deadline >= 0)
            wait_ms = (int)MAX((deadline - g_get_monotonic_time() + 999) / 1000, 0);
        struct pollfd p = { .fd = l->fd, .events = POLLIN };
        int r = poll(&p, 1, wait_ms);
        if (r < 0 && errno != EINTR) {
            fail_errno(error, errno, l->name, "poll");
            return NULL;
        }
        if (r == 0 && wait_ms >= 0 && g_get_monotonic_time() >= deadline) {
            g_set_error(error, G_IO_ERROR, G_IO_ERROR_TIMED_OUT, "%s: no connection within %d ms",
                        l->name, timeout_ms);
            return NULL;
        }
        if (r <= 0)
            continue;
        /* Not inherited from the non-blocking listener: the stream blocks. */
        int fd = accept4(l->fd, NULL, NULL, SOCK_CLOEXEC);
        if (fd < 0) {
            /* Another thread took it, or the peer gave up before we got to it. */
            if (errno == EAGAIN || errno == EINTR || errno == ECONNABORTED)
                continue;
            fail_errno(error, errno, l->name, "accept");
            return NULL;
        }
        if (l->is_unix)
            set_unix_sndbuf(fd); /* the return path */
        else
            set_nodelay(fd);
        return vstream_fd_new(fd, true, l->name);
    }
}

void transport_listener_free(TransportListener *l)
{
    if (!l)
        return;
    struct stat st;
    if (l->is_unix && lstat(l->host, &st) == 0 && st.st_dev == l->dev && st.st_ino == l->ino)
        unlink(l->host);
    close(l->fd);
    g_free(l->host);
    g_free(l->port);
    g_free(l->name);
    g_free(l);
}
