#include "chardev.h"

#include "unix_listen.h"

#include <errno.h>
#include <fcntl.h>
#include <glib-unix.h>
#include <poll.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#define SOCKET_WRITE_TIMEOUT_MS 1000

static bool errno_error(GError **error, int err, const char *fmt, const char *what)
{
    g_autofree char *msg = g_strdup_printf(fmt, what);
    g_set_error(error, G_IO_ERROR, g_io_error_from_errno(err), "--serial: %s: %s", msg,
                g_strerror(err));
    return false;
}

/* Raw input, but Ctrl-C etc. still signal vmsnap and output keeps its newline
 * translation: what QEMU's stdio backend does with signal=on. */
static void stdin_raw(Chardev *cd)
{
    struct termios tio;
    if (!isatty(STDIN_FILENO))
        return;
    if (tcgetattr(STDIN_FILENO, &cd->saved_tio) < 0)
        return;
    tio = cd->saved_tio;
    tio.c_iflag &= ~(tcflag_t)(IGNBRK | BRKINT | PARMRK | ISTRIP | INLCR | IGNCR | ICRNL | IXON);
    tio.c_lflag &= ~(tcflag_t)(ECHO | ECHONL | ICANON | IEXTEN);
    tio.c_cflag = (tio.c_cflag & ~(tcflag_t)(CSIZE | PARENB)) | CS8;
    tio.c_cc[VMIN] = 1;
    tio.c_cc[VTIME] = 0;
    if (tcsetattr(STDIN_FILENO, TCSANOW, &tio) == 0)
        cd->tty_raw = true;
}

static bool listen_unix(Chardev *cd, const char *path, GError **error)
{
    struct stat st;
    g_autofree char *who = g_strdup_printf("--serial: socket '%s'", path);
    int fd = unix_listen_path(path, 4, who, &st, error);
    if (fd < 0)
        return false;
    cd->listen_fd = fd;
    cd->sock_path = g_strdup(path);
    cd->sock_dev = st.st_dev;
    cd->sock_ino = st.st_ino;
    return true;
}

bool chardev_open(Chardev *cd, const char *spec, unsigned flags, GError **error)
{
    memset(cd, 0, sizeof(*cd));
    g_mutex_init(&cd->out_lock);
    cd->out_fd = cd->in_fd = cd->listen_fd = cd->kick_fd = -1;
    cd->spec_text = g_strdup(spec ? spec : "stdio");
    if (!chardev_spec_parse(spec, "--serial", &cd->spec, error))
        goto fail;

    switch (cd->spec.kind) {
    case CHARDEV_STDIO:
        cd->out_fd = STDOUT_FILENO;
        /* A background job reading its terminal would be stopped (SIGTTIN): then
         * stdio is output only. */
        if (!(flags & CHARDEV_OPEN_NO_STDIN) &&
            !(isatty(STDIN_FILENO) && tcgetpgrp(STDIN_FILENO) != getpgrp())) {
            cd->in_fd = STDIN_FILENO;
            stdin_raw(cd);
        }
        break;
    case CHARDEV_NONE:
        break;
    case CHARDEV_FILE:
        cd->out_fd = open(cd->spec.path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        if (cd->out_fd < 0) {
            errno_error(error, errno, "cannot open '%s'", cd->spec.path);
            goto fail;
        }
        cd->close_out = true;
        if (cd->spec.input) {
            /* Non-blocking: opening a FIFO must not wait for its writer. */
            cd->in_fd = open(cd->spec.input, O_RDONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
            if (cd->in_fd < 0) {
                errno_error(error, errno, "cannot open the input '%s'", cd->spec.input);
                goto fail;
            }
            cd->close_in = true;
        }
        break;
    case CHARDEV_UNIX:
        if (!listen_unix(cd, cd->spec.path, error))
            goto fail;
        break;
    }
    return true;

fail:
    chardev_close(cd);
    return false;
}

/* ---- output (vCPU threads) ---- */

void chardev_write(Chardev *cd, const uint8_t *buf, size_t len)
{
    g_mutex_lock(&cd->out_lock);
    while (cd->out_fd >= 0 && len > 0) {
        ssize_t n = cd->in_socket ? send(cd->out_fd, buf, len, MSG_NOSIGNAL | MSG_DONTWAIT)
                                  : write(cd->out_fd, buf, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN && cd->in_socket && !cd->out_stalled) {
            struct pollfd p = { .fd = cd->out_fd, .events = POLLOUT };
            if (poll(&p, 1, SOCKET_WRITE_TIMEOUT_MS) > 0)
                continue;
            /* The client does not read: drop output until its socket drains, without
             * waiting again for every byte. */
            cd->out_stalled = true;
        }
        if (n <= 0)
            break;
        cd->out_stalled = false;
        buf += n;
        len -= (size_t)n;
    }
    g_mutex_unlock(&cd->out_lock);
}

/* ---- input (main loop) ---- */

static void update_watch(Chardev *cd);
static gboolean on_accept(int fd, GIOCondition cond, gpointer data);

static void deliver(Chardev *cd)
{
    if (!cd->pending_len)
        return;
    size_t n = cd->receive(cd->opaque, cd->pending + cd->pending_off, cd->pending_len);
    cd->pending_off += n;
    cd->pending_len -= n;
    cd->rx_bytes += n;
    if (!cd->pending_len)
        cd->pending_off = 0;
}

/* EOF or an error on the input: stdio and files stop; a unix client is dropped and
 * the socket accepts the next one. */
static void input_end(Chardev *cd)
{
    if (cd->in_src) {
        g_source_remove(cd->in_src);
        cd->in_src = 0;
    }
    if (cd->in_socket) {
        g_mutex_lock(&cd->out_lock);
        cd->out_fd = -1;
        cd->in_socket = false;
        g_mutex_unlock(&cd->out_lock);
        close(cd->in_fd);
        if (!cd->listen_src)
            cd->listen_src = g_unix_fd_add(cd->listen_fd, G_IO_IN, on_accept, cd);
    } else if (cd->close_in) {
        close(cd->in_fd);
    }
    cd->in_fd = -1;
    cd->close_in = false;
}

static gboolean on_input(int fd, GIOCondition cond, gpointer data)
{
    Chardev *cd = data;
    cd->in_src = 0; /* one shot: update_watch() decides whether to watch again */
    size_t room = cd->pending_len ? 0 : cd->can_receive(cd->opaque);
    if (room) {
        ssize_t n = read(fd, cd->pending, MIN(room, sizeof(cd->pending)));
        if (n > 0) {
            cd->pending_off = 0;
            cd->pending_len = (size_t)n;
            deliver(cd);
        } else if (n == 0 || (errno != EAGAIN && errno != EINTR)) {
            input_end(cd);
            return G_SOURCE_REMOVE;
        }
    } else if (cd->in_socket && (cond & (G_IO_HUP | G_IO_ERR))) {
        /* The client left while the UART is full: drop it once nothing it sent is
         * still unread; otherwise wait for room and read the rest first. */
        int unread = 0;
        if (ioctl(fd, FIONREAD, &unread) < 0 || unread == 0) {
            input_end(cd);
            return G_SOURCE_REMOVE;
        }
        return G_SOURCE_REMOVE; /* the next kick re-arms */
    }
    update_watch(cd);
    return G_SOURCE_REMOVE;
}

static void update_watch(Chardev *cd)
{
    if (cd->in_src || cd->in_fd < 0)
        return;
    if (!cd->pending_len && cd->can_receive(cd->opaque))
        cd->in_src = g_unix_fd_add(cd->in_fd, G_IO_IN | G_IO_HUP | G_IO_ERR, on_input, cd);
    else if (cd->in_socket)
        cd->in_src = g_unix_fd_add(cd->in_fd, G_IO_HUP | G_IO_ERR, on_input, cd);
}

static gboolean on_kick(int fd, GIOCondition cond, gpointer data)
{
    Chardev *cd = data;
    uint64_t v;
    if (read(fd, &v, sizeof(v)) < 0 && errno != EAGAIN)
        return G_SOURCE_CONTINUE;
    deliver(cd);
    /* Re-evaluate from scratch: room may have appeared. */
    if (cd->in_src) {
        g_source_remove(cd->in_src);
        cd->in_src = 0;
    }
    update_watch(cd);
    return G_SOURCE_CONTINUE;
}

static gboolean on_accept(int fd, GIOCondition cond, gpointer data)
{
    Chardev *cd = data;
    int c = accept4(fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (c < 0)
        return G_SOURCE_CONTINUE;
    g_mutex_lock(&cd->out_lock);
    cd->in_fd = cd->out_fd = c;
    cd->in_socket = true;
    cd->out_stalled = false;
    g_mutex_unlock(&cd->out_lock);
    cd->connections++;
    cd->listen_src = 0; /* one client at a time: others wait in the backlog */
    update_watch(cd);
    return G_SOURCE_REMOVE;
}

void chardev_attach(Chardev *cd, ChardevCanReceive can_receive, ChardevReceive receive,
                    void *opaque)
{
    cd->can_receive = can_receive;
    cd->receive = receive;
    cd->opaque = opaque;
    if (cd->in_fd < 0 && cd->listen_fd < 0)
        return;
    cd->kick_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (cd->kick_fd >= 0)
        cd->kick_src = g_unix_fd_add(cd->kick_fd, G_IO_IN, on_kick, cd);
    if (cd->listen_fd >= 0)
        cd->listen_src = g_unix_fd_add(cd->listen_fd, G_IO_IN, on_accept, cd);
    update_watch(cd);
}

void chardev_kick(Chardev *cd)
{
    uint64_t one = 1;
    if (cd->kick_fd >= 0 && write(cd->kick_fd, &one, sizeof(one)) < 0) {
        /* the counter is saturated: a kick is pending anyway */
    }
}

void chardev_close(Chardev *cd)
{
    struct stat st;
    guint *srcs[] = { &cd->kick_src, &cd->in_src, &cd->listen_src };
    for (size_t i = 0; i < G_N_ELEMENTS(srcs); i++)
        if (*srcs[i]) {
            g_source_remove(*srcs[i]);
            *srcs[i] = 0;
        }
    if (cd->in_socket || cd->close_in)
        close(cd->in_fd);
    cd->in_fd = -1;
    cd->in_socket = false;
    if (cd->close_out && cd->out_fd >= 0)
        close(cd->out_fd);
    cd->out_fd = -1;
    cd->close_out = cd->close_in = false;
    if (cd->listen_fd >= 0) {
        close(cd->listen_fd);
        /* Remove our socket only: another VM may have replaced it since. */
        if (lstat(cd->sock_path, &st) == 0 && st.st_dev == cd->sock_dev &&
            st.st_ino == cd->sock_ino)
            unlink(cd->sock_path);
        cd->listen_fd = -1;
    }
    if (cd->kick_fd >= 0)
        close(cd->kick_fd);
    cd->kick_fd = -1;
    if (cd->tty_raw)
        tcsetattr(STDIN_FILENO, TCSANOW, &cd->saved_tio);
    cd->tty_raw = false;
    g_clear_pointer(&cd->sock_path, g_free);
    g_clear_pointer(&cd->spec_text, g_free);
    chardev_spec_clear(&cd->spec);
    g_mutex_clear(&cd->out_lock);
}
