#include "stream.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- the generic layer: retries, counters, error messages ---- */

static bool stream_error(VStream *s, int err, const char *what, uint64_t offset, GError **error)
{
    g_set_error(error, G_IO_ERROR, g_io_error_from_errno(err),
                "%s: %s failed at byte offset %" G_GUINT64_FORMAT ": %s", s->name, what, offset,
                g_strerror(err));
    return false;
}

bool vstream_write_all(VStream *s, const void *buf, size_t len, GError **error)
{
    struct iovec iov = { .iov_base = (void *)buf, .iov_len = len };
    return vstream_writev_all(s, &iov, 1, error);
}

bool vstream_writev_all(VStream *s, struct iovec *iov, int iovcnt, GError **error)
{
    /* Skip empty vectors first, so a zero-length write never reaches the backend. */
    while (iovcnt > 0 && iov->iov_len == 0) {
        iov++;
        iovcnt--;
    }
    while (iovcnt > 0) {
        ssize_t n = s->ops->writev(s, iov, MIN(iovcnt, IOV_MAX));
        if (n == -EINTR)
            continue;
        if (n < 0)
            return stream_error(s, (int)-n, "write", s->written, error);
        if (n == 0) /* a backend that makes no progress would loop forever */
            return stream_error(s, EIO, "write", s->written, error);
        s->written += (uint64_t)n;
        size_t done = (size_t)n;
        while (iovcnt > 0 && done >= iov->iov_len) {
            done -= iov->iov_len;
            iov++;
            iovcnt--;
        }
        if (iovcnt > 0) {
            iov->iov_base = (char *)iov->iov_base + done;
            iov->iov_len -= done;
        }
        while (iovcnt > 0 && iov->iov_len == 0) {
            iov++;
            iovcnt--;
        }
    }
    return true;
}

bool vstream_read_all(VStream *s, void *buf, size_t len, bool *eof_clean, GError **error)
{
    size_t got = 0;
    if (eof_clean)
        *eof_clean = false;
    while (got < len) {
        ssize_t n = s->ops->read(s, (char *)buf + got, len - got);
        if (n == -EINTR)
            continue;
        if (n < 0)
            return stream_error(s, (int)-n, "read", s->read, error);
        if (n == 0) {
            if (eof_clean)
                *eof_clean = got == 0;
            g_autofree char *detail = s->ops->eof_detail ? s->ops->eof_detail(s) : NULL;
            g_set_error(error, G_IO_ERROR, G_IO_ERROR_BROKEN_PIPE,
                        "%s: unexpected end of stream after %" G_GUINT64_FORMAT " bytes%s%s",
                        s->name, s->read, detail ? ": " : "", detail ? detail : "");
            return false;
        }
        got += (size_t)n;
        s->read += (uint64_t)n;
    }
    return true;
}

bool vstream_flush(VStream *s, GError **error)
{
    int r = s->ops->flush ? s->ops->flush(s) : 0;
    return r >= 0 || stream_error(s, -r, "flush", s->written, error);
}

bool vstream_close_write(VStream *s, GError **error)
{
    int r = s->ops->close_write ? s->ops->close_write(s) : 0;
    return r >= 0 || stream_error(s, -r, "close", s->written, error);
}

void vstream_free(VStream *s)
{
    if (!s)
        return;
    g_free(s->name);
    s->ops->free(s);
}

static void stream_init(VStream *s, const VStreamOps *ops, const char *name)
{
    s->ops = ops;
    s->name = g_strdup(name ? name : "stream");
    s->written = 0;
    s->read = 0;
}

/* ---- fd backend ---- */

typedef enum { FD_FILE, FD_PIPE, FD_SOCKET } FdKind;

typedef struct FdStream {
    VStream base;
    int fd;
    bool own;
    FdKind kind;
} FdStream;

/* A non-blocking fd (say, one also watched by a main loop) is waited for rather than
 * reported as EAGAIN. */
static int wait_fd(int fd, short events)
{
    struct pollfd p = { .fd = fd, .events = events };
    int r = poll(&p, 1, -1);
    return r < 0 ? -errno : 0;
}

/*
 * writev on a pipe whose reader is gone raises SIGPIPE, which kills a process that
 * does not ignore it. Block it around the call and swallow the one we caused, so the
 * caller sees -EPIPE whatever the process's disposition is. (Sockets use
 * MSG_NOSIGNAL instead.)
 */
static ssize_t writev_nosigpipe(int fd, const struct iovec *iov, int iovcnt)
{
    sigset_t pipe_set, old;
    sigemptyset(&pipe_set);
    sigaddset(&pipe_set, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &pipe_set, &old);
    ssize_t n = writev(fd, iov, iovcnt);
    int err = errno;
    size_t total = 0;
    for (int i = 0; i < iovcnt; i++)
        total += iov[i].iov_len;
    /* The reader can go away in the middle of a write: the kernel then returns the
     * bytes it moved and still raises SIGPIPE. If SIGPIPE was blocked already, a
     * pending one is not ours to take. */
    if ((n < 0 ? err == EPIPE : (size_t)n < total) && !sigismember(&old, SIGPIPE)) {
        static const struct timespec zero = { 0, 0 };
        while (sigtimedwait(&pipe_set, NULL, &zero) < 0 && errno == EINTR)
            ;
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    return n < 0 ? -err : n;
}

static ssize_t fd_writev(VStream *vs, const struct iovec *iov, int iovcnt)
{
    FdStream *s = (FdStream *)vs;
    for (;;) {
        if (s->fd < 0)
            return -EPIPE; /* after close_write */
        ssize_t n;
        if (s->kind == FD_SOCKET) {
            struct msghdr msg = { .msg_iov = (struct iovec *)iov, .msg_iovlen = (size_t)iovcnt };
            n = sendmsg(s->fd, &msg, MSG_NOSIGNAL);
            n = n < 0 ? -errno : n;
        } else if (s->kind == FD_PIPE) {
            n = writev_nosigpipe(s->fd, iov, iovcnt);
        } else {
            n = writev(s->fd, iov, iovcnt);
            n = n < 0 ? -errno : n;
        }
        if (n != -EAGAIN)
            return n;
        int r = wait_fd(s->fd, POLLOUT);
        if (r < 0)
            return r;
    }
}

static ssize_t fd_read(VStream *vs, void *buf, size_t len)
{
    FdStream *s = (FdStream *)vs;
    for (;;) {
        if (s->fd < 0)
            return -EBADF;
        ssize_t n = s->kind == FD_SOCKET ? recv(s->fd, buf, len, 0) : read(s->fd, buf, len);
        if (n >= 0)
            return n;
        if (errno != EAGAIN)
            return -errno;
        int r = wait_fd(s->fd, POLLIN);
        if (r < 0)
            return r;
    }
}

static int fd_flush(VStream *vs)
{
    return 0; /* nothing is buffered: every write went to the kernel */
}

static int fd_close_write(VStream *vs)
{
    FdStream *s = (FdStream *)vs;
    if (s->fd < 0)
        return 0;
    if (s->kind == FD_SOCKET)
        return shutdown(s->fd, SHUT_WR) < 0 && errno != ENOTCONN ? -errno : 0;
    /* The reader of a pipe sees EOF once the last write end is closed; a borrowed fd
     * is left to its owner. A regular file needs nothing. */
    if (s->kind == FD_PIPE && s->own) {
        int fd = s->fd;
        s->fd = -1;
        /* Linux releases the fd even when close() fails; EINTR is not worth retrying. */
        if (close(fd) < 0 && errno != EINTR)
            return -errno;
    }
    return 0;
}

static void fd_free(VStream *vs)
{
    FdStream *s = (FdStream *)vs;
    if (s->own && s->fd >= 0)
        close(s->fd);
    g_free(s);
}

static const VStreamOps fd_ops = {
    .writev = fd_writev,
    .read = fd_read,
    .flush = fd_flush,
    .close_write = fd_close_write,
    .free = fd_free,
};

VStream *vstream_fd_new(int fd, bool own, const char *name)
{
    FdStream *s = g_new0(FdStream, 1);
    stream_init(&s->base, &fd_ops, name);
    s->fd = fd;
    s->own = own;
    struct stat st;
    bool ok = fstat(fd, &st) == 0;
    s->kind = ok && S_ISSOCK(st.st_mode)   ? FD_SOCKET
              : ok && S_ISFIFO(st.st_mode) ? FD_PIPE
                                           : FD_FILE;
    return &s->base;
}

/* ---- memory backend ---- */

typedef struct MemStream {
    VStream base;
    GByteArray *out;
    GBytes *in;
    size_t pos;
    bool write_closed;
} MemStream;

static ssize_t mem_writev(VStream *vs, const struct iovec *iov, int iovcnt)
{
    MemStream *s = (MemStream *)vs;
    if (!s->out || s->write_closed)
        return -EPIPE;
    size_t total = 0;
    for (int i = 0; i < iovcnt; i++) {
        /* GByteArray lengths are guint: refuse rather than wrap. */
        if (iov[i].iov_len > G_MAXUINT - s->out->len)
            return total ? (ssize_t)total : -EFBIG;
        g_byte_array_append(s->out, iov[i].iov_base, (guint)iov[i].iov_len);
        total += iov[i].iov_len;
    }
    return (ssize_t)total;
}

static ssize_t mem_read(VStream *vs, void *buf, size_t len)
{
    MemStream *s = (MemStream *)vs;
    if (!s->in)
        return 0;
    size_t size;
    const uint8_t *data = g_bytes_get_data(s->in, &size);
    size_t n = MIN(len, size - s->pos);
    if (n)
        memcpy(buf, data + s->pos, n);
    s->pos += n;
    return (ssize_t)n;
}

static int mem_flush(VStream *vs)
{
    return 0;
}

static int mem_close_write(VStream *vs)
{
    ((MemStream *)vs)->write_closed = true;
    return 0;
}

static void mem_free(VStream *vs)
{
    g_free(vs);
}

static const VStreamOps mem_ops = {
    .writev = mem_writev,
    .read = mem_read,
    .flush = mem_flush,
    .close_write = mem_close_write,
    .free = mem_free,
};

VStream *vstream_mem_new(GByteArray *out, GBytes *in, const char *name)
{
    MemStream *s = g_new0(MemStream, 1);
    stream_init(&s->base, &mem_ops, name);
    s->out = out;
    s->in = in;
    return &s->base;
}

/* ---- fault layer (tests) ---- */

typedef struct FaultStream {
    VStream base;
    VStream *inner;
    VStreamFaultKind kind;
    unsigned nth;
    int err;
    bool short_transfer;
    unsigned calls;
    bool broken; /* after a short transfer: everything fails with EPIPE */
} FaultStream;

/* Counts a call of `kind`; returns 0 to pass it through, 1 for a short transfer, or
 * -errno to fail it. */
static int fault_check(FaultStream *s, VStreamFaultKind kind)
{
    if (s->broken)
        return -EPIPE;
    if (kind != s->kind || ++s->calls != s->nth)
        return 0;
    if (s->short_transfer) {
        s->broken = true;
        return 1;
    }
    return -s->err;
}

static ssize_t fault_writev(VStream *vs, const struct iovec *iov, int iovcnt)
{
    FaultStream *s = (FaultStream *)vs;
    int f = fault_check(s, VSTREAM_FAULT_WRITE);
    if (f < 0)
        return f;
    if (f == 0)
        return s->inner->ops->writev(s->inner, iov, iovcnt);
    /* Half of the bytes asked for (at least one), cut at a vector boundary. */
    size_t total = 0;
    for (int i = 0; i < iovcnt; i++)
        total += iov[i].iov_len;
    size_t want = (total + 1) / 2;
    g_autofree struct iovec *cut = g_new(struct iovec, MAX(iovcnt, 1));
    int n = 0;
    for (int i = 0; i < iovcnt && want > 0; i++, n++) {
        cut[n] = iov[i];
        cut[n].iov_len = MIN(iov[i].iov_len, want);
        want -= cut[n].iov_len;
    }
    return s->inner->ops->writev(s->inner, cut, n);
}

static ssize_t fault_read(VStream *vs, void *buf, size_t len)
{
    FaultStream *s = (FaultStream *)vs;
    int f = fault_check(s, VSTREAM_FAULT_READ);
    if (f < 0)
        return f;
    return s->inner->ops->read(s->inner, buf, f == 0 ? len : (len + 1) / 2);
}

static int fault_flush(VStream *vs)
{
    FaultStream *s = (FaultStream *)vs;
    return s->broken ? -EPIPE : s->inner->ops->flush(s->inner);
}

static int fault_close_write(VStream *vs)
{
    FaultStream *s = (FaultStream *)vs;
    return s->inner->ops->close_write(s->inner);
}

static void fault_free(VStream *vs)
{
    FaultStream *s = (FaultStream *)vs;
    vstream_free(s->inner);
    g_free(s);
}

static const VStreamOps fault_ops = {
    .writev = fault_writev,
    .read = fault_read,
    .flush = fault_flush,
    .close_write = fault_close_write,
    .free = fault_free,
};

VStream *vstream_fault_new(VStream *inner, VStreamFaultKind kind, unsigned nth, int err,
                           bool short_transfer)
{
    FaultStream *s = g_new0(FaultStream, 1);
    stream_init(&s->base, &fault_ops, inner->name);
    s->inner = inner;
    s->kind = kind;
    s->nth = nth;
    s->err = err > 0 ? err : EIO;
    s->short_transfer = short_transfer;
    return &s->base;
}

/* ---- prefix: bytes already read, then the inner stream ---- */

typedef struct PrefixStream {
    VStream base;
    VStream *inner;
    GBytes *prefix;
    size_t pos;
} PrefixStream;

static ssize_t prefix_writev(VStream *vs, const struct iovec *iov, int iovcnt)
{
    PrefixStream *p = (PrefixStream *)vs;
    return p->inner->ops->writev(p->inner, iov, iovcnt);
}

static ssize_t prefix_read(VStream *vs, void *buf, size_t len)
{
    PrefixStream *p = (PrefixStream *)vs;
    gsize have;
    const uint8_t *data = g_bytes_get_data(p->prefix, &have);
    if (p->pos < have) {
        size_t n = MIN(len, have - p->pos);
        memcpy(buf, data + p->pos, n);
        p->pos += n;
        return (ssize_t)n;
    }
    return p->inner->ops->read(p->inner, buf, len);
}

static int prefix_flush(VStream *vs)
{
    PrefixStream *p = (PrefixStream *)vs;
    return p->inner->ops->flush(p->inner);
}

static int prefix_close_write(VStream *vs)
{
    PrefixStream *p = (PrefixStream *)vs;
    return p->inner->ops->close_write(p->inner);
}

static void prefix_free(VStream *vs)
{
    PrefixStream *p = (PrefixStream *)vs;
    vstream_free(p->inner);
    g_bytes_unref(p->prefix);
    g_free(p);
}

static const VStreamOps prefix_ops = {
    .writev = prefix_writev,
    .read = prefix_read,
    .flush = prefix_flush,
    .close_write = prefix_close_write,
    .free = prefix_free,
};

VStream *vstream_prefix_new(VStream *inner, GBytes *prefix)
{
    PrefixStream *p = g_new0(PrefixStream, 1);
    stream_init(&p->base, &prefix_ops, inner->name);
    p->inner = inner;
    p->prefix = g_bytes_ref(prefix);
    return &p->base;
}
