/* io/stream.c: fd (socket, pipe), memory and fault backends. */
#include "stream.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define BIG (8u << 20)

static uint8_t *pattern(size_t len, unsigned seed)
{
    uint8_t *p = g_malloc(len);
    uint32_t x = seed * 2654435761u + 1;
    for (size_t i = 0; i < len; i++) {
        x = x * 1103515245u + 12345u;
        p[i] = (uint8_t)(x >> 16);
    }
    return p;
}

typedef struct Reader {
    VStream *s;
    size_t len;
    uint8_t *buf;
    bool ok;
    bool eof_clean; /* a read after len bytes saw a clean end */
    GError *error;
} Reader;

static gpointer reader_thread(gpointer data)
{
    Reader *r = data;
    r->buf = g_malloc(r->len);
    /* Odd-sized reads, so reads and writes never line up. */
    size_t got = 0;
    r->ok = true;
    while (got < r->len && r->ok) {
        size_t n = MIN(r->len - got, 77777);
        r->ok = vstream_read_all(r->s, r->buf + got, n, NULL, &r->error);
        got += n;
    }
    if (r->ok) {
        uint8_t extra;
        g_autoptr(GError) e = NULL;
        g_assert_false(vstream_read_all(r->s, &extra, 1, &r->eof_clean, &e));
        g_assert_error(e, G_IO_ERROR, G_IO_ERROR_BROKEN_PIPE);
    }
    return NULL;
}

/* Writes BIG bytes in uneven pieces through `w` while a thread reads them from `rd`. */
static void transfer(VStream *w, VStream *rd)
{
    g_autofree uint8_t *data = pattern(BIG, 1);
    Reader r = { .s = rd, .len = BIG };
    GThread *t = g_thread_new("reader", reader_thread, &r);
    g_autoptr(GError) error = NULL;
    size_t off = 0;
    unsigned i = 0;
    while (off < BIG) {
        size_t a = MIN(BIG - off, 1000 + (i * 7919) % 300000);
        size_t b = MIN(BIG - off - a, 4096);
        struct iovec iov[3] = { { data + off, a }, { NULL, 0 }, { data + off + a, b } };
        g_assert_true(vstream_writev_all(w, iov, 3, &error));
        g_assert_no_error(error);
        off += a + b;
        i++;
    }
    g_assert_true(vstream_flush(w, &error));
    g_assert_true(vstream_close_write(w, &error));
    g_thread_join(t);
    g_assert_no_error(r.error);
    g_assert_true(r.ok);
    g_assert_true(r.eof_clean);
    g_assert_cmpmem(r.buf, BIG, data, BIG);
    g_assert_cmpuint(w->written, ==, BIG);
    g_assert_cmpuint(rd->read, ==, BIG);
    g_free(r.buf);
}

static void test_socketpair(void)
{
    int sv[2];
    g_assert_cmpint(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), ==, 0);
    /* A tiny send buffer forces short writes. */
    int small = 4096;
    g_assert_cmpint(setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &small, sizeof(small)), ==, 0);
    VStream *w = vstream_fd_new(sv[0], true, "sock-w");
    VStream *r = vstream_fd_new(sv[1], true, "sock-r");
    transfer(w, r);
    vstream_free(w);
    vstream_free(r);
}

static void test_socketpair_nonblocking(void)
{
    int sv[2];
    g_assert_cmpint(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv), ==, 0);
    int small = 4096;
    g_assert_cmpint(setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &small, sizeof(small)), ==, 0);
    VStream *w = vstream_fd_new(sv[0], true, "nb-w");
    VStream *r = vstream_fd_new(sv[1], true, "nb-r");
    transfer(w, r);
    vstream_free(w);
    vstream_free(r);
}

static void test_pipe(void)
{
    int p[2];
    g_assert_cmpint(pipe2(p, O_CLOEXEC), ==, 0);
    fcntl(p[1], F_SETPIPE_SZ, 4096);
    VStream *w = vstream_fd_new(p[1], true, "pipe-w");
    VStream *r = vstream_fd_new(p[0], true, "pipe-r");
    transfer(w, r); /* close_write closes the write end: the reader sees EOF */
    g_autoptr(GError) error = NULL;
    g_assert_false(vstream_write_all(w, "x", 1, &error));
    g_assert_error(error, G_IO_ERROR, G_IO_ERROR_BROKEN_PIPE);
    vstream_free(w);
    vstream_free(r);
}

static void test_many_vectors(void)
{
    /* More vectors than IOV_MAX: the writer splits the call. */
    int sv[2];
    g_assert_cmpint(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), ==, 0);
    VStream *w = vstream_fd_new(sv[0], true, "w");
    VStream *r = vstream_fd_new(sv[1], true, "r");
    enum { N = 3000 };
    g_autofree uint8_t *data = pattern(N * 3, 2);
    g_autofree struct iovec *iov = g_new(struct iovec, N);
    for (int i = 0; i < N; i++)
        iov[i] = (struct iovec){ data + i * 3, 3 };
    Reader rd = { .s = r, .len = N * 3 };
    GThread *t = g_thread_new("reader", reader_thread, &rd);
    g_autoptr(GError) error = NULL;
    g_assert_true(vstream_writev_all(w, iov, N, &error));
    g_assert_true(vstream_close_write(w, &error));
    g_thread_join(t);
    g_assert_true(rd.ok);
    g_assert_cmpmem(rd.buf, N * 3, data, N * 3);
    g_free(rd.buf);
    vstream_free(w);
    vstream_free(r);
}

static void test_eof(void)
{
    int sv[2];
    g_assert_cmpint(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), ==, 0);
    VStream *w = vstream_fd_new(sv[0], true, "w");
    VStream *r = vstream_fd_new(sv[1], true, "unix:/tmp/peer.sock");
    g_autoptr(GError) error = NULL;
    g_assert_true(vstream_write_all(w, "0123456789", 10, &error));
    g_assert_true(vstream_close_write(w, &error));

    char buf[32];
    bool clean = true;
    g_assert_true(vstream_read_all(r, buf, 4, &clean, &error));
    g_assert_false(clean);
    /* 6 bytes left, 8 asked: an unclean end, named with the offset. */
    g_assert_false(vstream_read_all(r, buf, 8, &clean, &error));
    g_assert_error(error, G_IO_ERROR, G_IO_ERROR_BROKEN_PIPE);
    g_assert_false(clean);
    g_assert_cmpstr(error->message, ==,
                    "unix:/tmp/peer.sock: unexpected end of stream after 10 "
                    "bytes");
    g_clear_error(&error);
    /* Now at the very end: a clean EOF (still an error for the caller to judge). */
    g_assert_false(vstream_read_all(r, buf, 8, &clean, &error));
    g_assert_true(clean);
    g_assert_error(error, G_IO_ERROR, G_IO_ERROR_BROKEN_PIPE);
    g_clear_error(&error);
    /* NULL eof_clean is allowed. */
    g_assert_false(vstream_read_all(r, buf, 1, NULL, &error));
    g_assert_error(error, G_IO_ERROR, G_IO_ERROR_BROKEN_PIPE);
    /* A zero-length read is always fine. */
    g_clear_error(&error);
    g_assert_true(vstream_read_all(r, buf, 0, &clean, &error));
    vstream_free(w);
    vstream_free(r);
}

static void test_mem(void)
{
    g_autoptr(GByteArray) out = g_byte_array_new();
    g_autoptr(GBytes) in = g_bytes_new_static("hello world", 11);
    VStream *s = vstream_mem_new(out, in, "mem");
    g_autoptr(GError) error = NULL;
    struct iovec iov[2] = { { "abc", 3 }, { "defg", 4 } };
    g_assert_true(vstream_writev_all(s, iov, 2, &error));
    g_assert_true(vstream_write_all(s, "h", 1, &error));
    g_assert_true(vstream_flush(s, &error));
    g_assert_cmpmem(out->data, out->len, "abcdefgh", 8);
    g_assert_cmpuint(s->written, ==, 8);
    char buf[16];
    g_assert_true(vstream_read_all(s, buf, 5, NULL, &error));
    g_assert_cmpmem(buf, 5, "hello", 5);
    bool clean;
    g_assert_false(vstream_read_all(s, buf, 10, &clean, &error));
    g_assert_false(clean);
    g_assert_error(error, G_IO_ERROR, G_IO_ERROR_BROKEN_PIPE);
    g_clear_error(&error);
    g_assert_true(vstream_close_write(s, &error));
    g_assert_false(vstream_write_all(s, "x", 1, &error));
    g_assert_error(error, G_IO_ERROR, G_IO_ERROR_BROKEN_PIPE);
    vstream_free(s);

    /* No input: a clean EOF at once. */
    s = vstream_mem_new(NULL, NULL, "empty");
    g_clear_error(&error);
    g_assert_false(vstream_read_all(s, buf, 1, &clean, &error));
    g_assert_true(clean);
    vstream_free(s);
}

static void test_fault_write(gconstpointer data)
{
    int err = GPOINTER_TO_INT(data);
    g_autoptr(GByteArray) out = g_byte_array_new();
    VStream *s = vstream_fault_new(vstream_mem_new(out, NULL, "file:/snap/x"), VSTREAM_FAULT_WRITE,
                                   3, err, false);
    g_autoptr(GError) error = NULL;
    g_assert_true(vstream_write_all(s, "aaaa", 4, &error));
    g_assert_true(vstream_write_all(s, "bbbb", 4, &error));
    g_assert_false(vstream_write_all(s, "cccc", 4, &error));
    g_assert_error(error, G_IO_ERROR, (gint)g_io_error_from_errno(err));
    g_autofree char *want =
        g_strdup_printf("file:/snap/x: write failed at byte offset 8: %s", g_strerror(err));
    g_assert_cmpstr(error->message, ==, want);
    g_assert_cmpuint(out->len, ==, 8);
    g_assert_cmpuint(s->written, ==, 8);
    /* Only the nth call fails. */
    g_clear_error(&error);
    g_assert_true(vstream_write_all(s, "dddd", 4, &error));
    vstream_free(s);
}

static void test_fault_eintr(void)
{
    /* EINTR is retried by the _all functions. */
    g_autoptr(GByteArray) out = g_byte_array_new();
    g_autoptr(GBytes) in = g_bytes_new_static("xyz", 3);
    VStream *s =
        vstream_fault_new(vstream_mem_new(out, NULL, "m"), VSTREAM_FAULT_WRITE, 1, EINTR, false);
    g_autoptr(GError) error = NULL;
    g_assert_true(vstream_write_all(s, "ab", 2, &error));
    g_assert_cmpmem(out->data, out->len, "ab", 2);
    vstream_free(s);
    s = vstream_fault_new(vstream_mem_new(NULL, in, "m"), VSTREAM_FAULT_READ, 1, EINTR, false);
    char buf[3];
    g_assert_true(vstream_read_all(s, buf, 3, NULL, &error));
    g_assert_cmpmem(buf, 3, "xyz", 3);
    vstream_free(s);
}

static void test_fault_short_write(void)
{
    g_autoptr(GByteArray) out = g_byte_array_new();
    VStream *s =
        vstream_fault_new(vstream_mem_new(out, NULL, "exec:cat"), VSTREAM_FAULT_WRITE, 2, 0, true);
    g_autoptr(GError) error = NULL;
    g_autofree uint8_t *data = pattern(1000, 3);
    g_assert_true(vstream_write_all(s, data, 100, &error));
    /* The second call moves 450 of 900 bytes, the retry fails with EPIPE. */
    struct iovec iov[2] = { { data + 100, 300 }, { data + 400, 600 } };
    g_assert_false(vstream_writev_all(s, iov, 2, &error));
    g_assert_error(error, G_IO_ERROR, G_IO_ERROR_BROKEN_PIPE);
    g_assert_cmpstr(error->message, ==, "exec:cat: write failed at byte offset 550: Broken pipe");
    g_assert_cmpuint(out->len, ==, 550);
    g_assert_cmpmem(out->data, 550, data, 550);
    g_clear_error(&error);
    g_assert_false(vstream_flush(s, &error));
    g_clear_error(&error);
    g_assert_false(vstream_write_all(s, "x", 1, &error));
    vstream_free(s);
}

static void test_fault_read(void)
{
    g_autofree uint8_t *data = pattern(4096, 4);
    g_autoptr(GBytes) in = g_bytes_new(data, 4096);
    VStream *s = vstream_fault_new(vstream_mem_new(NULL, in, "tcp:h:1"), VSTREAM_FAULT_READ, 2,
                                   ECONNRESET, false);
    g_autoptr(GError) error = NULL;
    uint8_t buf[4096];
    g_assert_true(vstream_read_all(s, buf, 1000, NULL, &error));
    g_assert_false(vstream_read_all(s, buf, 1000, NULL, &error));
    g_assert_error(error, G_IO_ERROR, G_IO_ERROR_CONNECTION_CLOSED);
    g_assert_nonnull(strstr(error->message, "tcp:h:1: read failed at byte offset 1000"));
    vstream_free(s);

    /* Short read: half, then EPIPE. */
    s = vstream_fault_new(vstream_mem_new(NULL, in, "r"), VSTREAM_FAULT_READ, 1, 0, true);
    g_clear_error(&error);
    g_assert_false(vstream_read_all(s, buf, 1000, NULL, &error));
    g_assert_error(error, G_IO_ERROR, G_IO_ERROR_BROKEN_PIPE);
    g_assert_cmpuint(s->read, ==, 500);
    g_assert_cmpmem(buf, 500, data, 500);
    vstream_free(s);
}

static bool sigpipe_pending(void)
{
    sigset_t pend;
    sigpending(&pend);
    return sigismember(&pend, SIGPIPE);
}

/* The reader goes away in the middle: EPIPE, not a SIGPIPE that kills the process. */
static void test_peer_closes(gconstpointer data)
{
    bool use_pipe = GPOINTER_TO_INT(data);
    signal(SIGPIPE, SIG_DFL);
    int fds[2];
    if (use_pipe)
        g_assert_cmpint(pipe(fds), ==, 0);
    else
        g_assert_cmpint(socketpair(AF_UNIX, SOCK_STREAM, 0, fds), ==, 0);
    int rfd = use_pipe ? fds[0] : fds[1], wfd = use_pipe ? fds[1] : fds[0];
    VStream *w = vstream_fd_new(wfd, true, use_pipe ? "exec:cat" : "unix:/tmp/x.sock");
    g_autofree uint8_t *buf = pattern(1 << 20, 5);
    char tmp[1000];
    /* The peer reads a little, then closes. */
    g_autoptr(GError) error = NULL;
    g_assert_true(vstream_write_all(w, buf, 1000, &error));
    g_assert_cmpint(read(rfd, tmp, sizeof(tmp)), ==, 1000);
    close(rfd);
    g_assert_false(vstream_write_all(w, buf, 1 << 20, &error));
    g_assert_error(error, G_IO_ERROR, G_IO_ERROR_BROKEN_PIPE);
    g_assert_nonnull(strstr(error->message, "write failed at byte offset 1000: Broken pipe"));
    g_assert_false(sigpipe_pending());
    vstream_free(w);
}

typedef struct Writer {
    VStream *s;
    GError *error;
    bool ok;
    bool pending; /* SIGPIPE pending in the writer thread afterwards */
} Writer;

static gpointer writer_thread(gpointer data)
{
    Writer *w = data;
    g_autofree uint8_t *buf = pattern(4 << 20, 6);
    w->ok = vstream_write_all(w->s, buf, 4 << 20, &w->error);
    w->pending = sigpipe_pending();
    return NULL;
}

/* The reader closes while a write is blocked half-way: the kernel returns the bytes
 * it moved and raises SIGPIPE anyway; the next call gets EPIPE. */
static void test_pipe_closed_during_write(void)
{
    signal(SIGPIPE, SIG_DFL);
    int p[2];
    g_assert_cmpint(pipe(p), ==, 0);
    Writer w = { .s = vstream_fd_new(p[1], true, "exec:cat") };
    GThread *t = g_thread_new("writer", writer_thread, &w);
    char tmp[4096];
    g_assert_cmpint(read(p[0], tmp, sizeof(tmp)), ==, sizeof(tmp));
    g_usleep(100000); /* let the writer block on the full pipe */
    close(p[0]);
    g_thread_join(t);
    g_assert_false(w.ok);
    g_assert_error(w.error, G_IO_ERROR, G_IO_ERROR_BROKEN_PIPE);
    g_assert_false(w.pending);
    g_assert_cmpuint(w.s->written, >, 0);
    g_error_free(w.error);
    vstream_free(w.s);
}

/* A caller that blocks SIGPIPE itself keeps the pending signal (it is not ours). */
static void test_pipe_sigpipe_blocked(void)
{
    sigset_t set, old;
    sigemptyset(&set);
    sigaddset(&set, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &set, &old);
    int p[2];
    g_assert_cmpint(pipe(p), ==, 0);
    close(p[0]);
    VStream *w = vstream_fd_new(p[1], true, "p");
    g_autoptr(GError) error = NULL;
    g_assert_false(vstream_write_all(w, "x", 1, &error));
    g_assert_error(error, G_IO_ERROR, G_IO_ERROR_BROKEN_PIPE);
    g_assert_true(sigpipe_pending());
    int sig;
    sigwait(&set, &sig);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    vstream_free(w);
}

static void test_borrowed_fd(void)
{
    int p[2];
    g_assert_cmpint(pipe(p), ==, 0);
    VStream *w = vstream_fd_new(p[1], false, "borrowed");
    g_autoptr(GError) error = NULL;
    g_assert_true(vstream_write_all(w, "ab", 2, &error));
    g_assert_true(vstream_close_write(w, &error)); /* leaves a borrowed fd open */
    vstream_free(w);
    g_assert_cmpint(fcntl(p[1], F_GETFD), >=, 0);
    close(p[1]);
    VStream *r = vstream_fd_new(p[0], true, "r");
    char buf[2];
    g_assert_true(vstream_read_all(r, buf, 2, NULL, &error));
    g_assert_cmpmem(buf, 2, "ab", 2);
    vstream_free(r);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/stream/fd/socketpair", test_socketpair);
    g_test_add_func("/stream/fd/socketpair-nonblocking", test_socketpair_nonblocking);
    g_test_add_func("/stream/fd/pipe", test_pipe);
    g_test_add_func("/stream/fd/many-vectors", test_many_vectors);
    g_test_add_func("/stream/fd/eof", test_eof);
    g_test_add_func("/stream/fd/borrowed", test_borrowed_fd);
    g_test_add_data_func("/stream/fd/peer-closes-socket", GINT_TO_POINTER(0), test_peer_closes);
    g_test_add_data_func("/stream/fd/peer-closes-pipe", GINT_TO_POINTER(1), test_peer_closes);
    g_test_add_func("/stream/fd/pipe-closed-during-write", test_pipe_closed_during_write);
    g_test_add_func("/stream/fd/pipe-sigpipe-blocked", test_pipe_sigpipe_blocked);
    g_test_add_func("/stream/mem", test_mem);
    g_test_add_data_func("/stream/fault/write-enospc", GINT_TO_POINTER(ENOSPC), test_fault_write);
    g_test_add_data_func("/stream/fault/write-eio", GINT_TO_POINTER(EIO), test_fault_write);
    g_test_add_func("/stream/fault/eintr", test_fault_eintr);
    g_test_add_func("/stream/fault/short-write", test_fault_short_write);
    g_test_add_func("/stream/fault/read", test_fault_read);
    return g_test_run();
}
