/* SPDX-License-Identifier: MIT */
/*
 * One connected QMP client: non-blocking reads with SCM_RIGHTS fds, framing,
 * dispatch, and a bounded output buffer drained by a G_IO_OUT watch.
 *
 * Lifetime: s->clients holds one reference; I/O callbacks take another while
 * they run, because a command or an event broadcast may close the client (and
 * drop the list's reference) in the middle of a callback.
 */
#include "qmp_priv.h"

#include <errno.h>
#include <glib-unix.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define READ_CHUNK       65536
#define MAX_FDS_PER_READ 16

static gboolean on_text(const char *json, gsize len, const GError *error, gpointer data);
static gboolean on_readable(int fd, GIOCondition cond, gpointer data);

QmpClient *qmp_client_new(QmpServer *s, int fd)
{
    QmpClient *c = g_new0(QmpClient, 1);

    c->server = s;
    c->ref = 1;
    c->fd = fd;
    c->out = g_byte_array_new();
    c->pending_fds = g_array_new(FALSE, FALSE, sizeof(int));
    if (fd >= 0) {
        c->stream = qmp_stream_new(s->max_message_size, QMP_DEFAULT_MAX_DEPTH, on_text, c);
        c->in_source = g_unix_fd_source_new(fd, G_IO_IN | G_IO_HUP | G_IO_ERR);
        g_source_set_callback(c->in_source, G_SOURCE_FUNC(on_readable), c, NULL);
        g_source_attach(c->in_source, s->context);
    }
    return c;
}

QmpClient *qmp_client_ref(QmpClient *c)
{
    g_atomic_int_inc(&c->ref);
    return c;
}

void qmp_client_unref(QmpClient *c)
{
    if (!c || !g_atomic_int_dec_and_test(&c->ref))
        return;
    g_assert(c->dead || c->fd < 0);
    qmp_stream_free(c->stream);
    g_byte_array_unref(c->out);
    g_array_unref(c->pending_fds);
    g_free(c);
}

QmpServer *qmp_client_get_server(QmpClient *client)
{
    return client->server;
}

static void destroy_source(GSource **src)
{
    if (*src) {
        g_source_destroy(*src);
        g_clear_pointer(src, g_source_unref);
    }
}

void qmp_client_close(QmpClient *c)
{
    if (c->dead)
        return;
    c->dead = TRUE;
    destroy_source(&c->in_source);
    destroy_source(&c->out_source);
    if (c->fd >= 0)
        close(c->fd);
    for (guint i = 0; i < c->pending_fds->len; i++)
        close(g_array_index(c->pending_fds, int, i));
    g_array_set_size(c->pending_fds, 0);
    g_byte_array_set_size(c->out, 0);
    c->out_pos = 0;
    /* last: this may drop the final reference */
    if (c->fd >= 0)
        g_ptr_array_remove(c->server->clients, c);
}

int qmp_client_take_pending_fd(QmpClient *c)
{
    int fd;

    if (c->pending_fds->len == 0)
        return -1;
    /* the newest: the one sent with this command or just before it, as in QEMU */
    fd = g_array_index(c->pending_fds, int, c->pending_fds->len - 1);
    g_array_set_size(c->pending_fds, c->pending_fds->len - 1);
    return fd;
}

/* Returns bytes written (0 if the socket is full) or -1 if the peer is gone. */
static gssize write_some(QmpClient *c, const guint8 *data, gsize len)
{
    for (;;) {
        /* MSG_NOSIGNAL: a vanished peer must not SIGPIPE the VMM */
        gssize n = send(c->fd, data, len, MSG_NOSIGNAL | MSG_DONTWAIT);

        if (n >= 0)
            return n;
        if (errno == EINTR)
            continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK)
            return 0;
        return -1;
    }
}

static gsize pending_output(const QmpClient *c)
{
    return c->out->len - c->out_pos;
}

/* Writes as much pending output as the socket takes. Returns FALSE if it closed @c. */
static gboolean write_pending(QmpClient *c)
{
    gssize n = write_some(c, c->out->data + c->out_pos, pending_output(c));

    if (n < 0) {
        qmp_client_close(c);
        return FALSE;
    }
    c->out_pos += n;
    if (pending_output(c) == 0) {
        g_byte_array_set_size(c->out, 0);
        c->out_pos = 0;
        destroy_source(&c->out_source);
        if (!c->in_source) {
            /* the peer shut down its side and has now got every answer */
            qmp_client_close(c);
            return FALSE;
        }
    }
    return TRUE;
}

static gboolean on_writable(int fd, GIOCondition cond, gpointer data)
{
    QmpClient *c = data;
    g_autoptr(QmpClient) ref = qmp_client_ref(c);

    if (!write_pending(c))
        return G_SOURCE_REMOVE;
    return c->out_source ? G_SOURCE_CONTINUE : G_SOURCE_REMOVE;
}

void qmp_client_send(QmpClient *c, const char *data, gsize len)
{
    QmpServer *s = c->server;

    if (c->dead || c->fd < 0)
        return;
    if (pending_output(c) == 0) {
        gssize n = write_some(c, (const guint8 *)data, len);

        if (n < 0) {
            qmp_client_close(c);
            return;
        }
        data += n;
        len -= n;
        if (len == 0)
            return;
    }
    if (pending_output(c) + len > s->max_client_output) {
        g_message("QMP: disconnecting a client that does not read its output (%" G_GSIZE_FORMAT
                  " bytes pending)",
                  pending_output(c) + len);
        qmp_client_close(c);
        return;
    }
    if (c->out_pos > c->out->len / 2) {
        g_byte_array_remove_range(c->out, 0, c->out_pos);
        c->out_pos = 0;
    }
    g_byte_array_append(c->out, (const guint8 *)data, len);
    if (!c->out_source) {
        c->out_source = g_unix_fd_source_new(c->fd, G_IO_OUT);
        g_source_set_callback(c->out_source, G_SOURCE_FUNC(on_writable), c, NULL);
        g_source_attach(c->out_source, s->context);
    }
}

static void send_line(QmpClient *c, const char *text)
{
    g_autofree char *line = g_strconcat(text, "\r\n", NULL);

    qmp_client_send(c, line, strlen(line));
}

/* Framer callback: one request or one framing error. */
static gboolean on_text(const char *json, gsize len, const GError *error, gpointer data)
{
    QmpClient *c = data;
    g_autofree char *rsp = NULL;

    if (c->dead)
        return FALSE;
    if (error)
        rsp = qmp_dispatch_error_text(error);
    else
        rsp = qmp_server_dispatch_text(c->server, c, json, len);
    if (rsp)
        send_line(c, rsp);
    return !c->dead;
}

static void keep_fds(QmpClient *c, struct msghdr *msg)
{
    for (struct cmsghdr *cm = CMSG_FIRSTHDR(msg); cm; cm = CMSG_NXTHDR(msg, cm)) {
        gsize n;

        if (cm->cmsg_level != SOL_SOCKET || cm->cmsg_type != SCM_RIGHTS)
            continue;
        n = (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        for (gsize i = 0; i < n; i++) {
            int fd;

            memcpy(&fd, CMSG_DATA(cm) + i * sizeof(int), sizeof(int));
            g_array_append_val(c->pending_fds, fd);
        }
    }
    while (c->pending_fds->len > QMP_MAX_PENDING_FDS) {
        close(g_array_index(c->pending_fds, int, 0));
        g_array_remove_index(c->pending_fds, 0);
    }
}

/* Stops reading; closes now, or once the answers still queued have been sent. */
static void on_eof(QmpClient *c)
{
    destroy_source(&c->in_source);
    if (pending_output(c) == 0)
        qmp_client_close(c);
}

static gboolean on_readable(int fd, GIOCondition cond, gpointer data)
{
    QmpClient *c = data;
    g_autoptr(QmpClient) ref = qmp_client_ref(c);
    g_autofree char *buf = g_malloc(READ_CHUNK);
    union {
        struct cmsghdr align;
        char buf[CMSG_SPACE(sizeof(int) * MAX_FDS_PER_READ)];
    } control;
    struct iovec iov = { .iov_base = buf, .iov_len = READ_CHUNK };
    struct msghdr msg = {
        .msg_iov = &iov,
        .msg_iovlen = 1,
        .msg_control = control.buf,
        .msg_controllen = sizeof(control.buf),
    };
    gssize n;

    /* one read per wakeup, so one busy client cannot starve the others */
    do {
        n = recvmsg(fd, &msg, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);
    } while (n < 0 && errno == EINTR);
    if (n < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK)
            return G_SOURCE_CONTINUE;
        qmp_client_close(c);
        return G_SOURCE_REMOVE;
    }
    keep_fds(c, &msg);
    if (n == 0) {
        on_eof(c);
        return G_SOURCE_REMOVE;
    }
    qmp_stream_feed(c->stream, buf, n);
    return c->dead ? G_SOURCE_REMOVE : G_SOURCE_CONTINUE;
}

void qmp_client_flush(QmpClient *c, gint64 deadline)
{
    while (!c->dead && pending_output(c) > 0) {
        struct pollfd pfd = { .fd = c->fd, .events = POLLOUT };
        gint64 left = deadline - g_get_monotonic_time();
        int r;

        if (left <= 0)
            return;
        r = poll(&pfd, 1, (int)MAX(1, left / 1000));
        if (r < 0 && errno != EINTR)
            return;
        if (r > 0 && !write_pending(c))
            return;
    }
}
