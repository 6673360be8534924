#include "aio_queue.h"

#include <errno.h>
#include <string.h>

bool aio_queue_init(AioQueue *q, int fd, bool write, unsigned depth, AioDoneFn done, void *opaque,
                    GError **error)
{
    memset(q, 0, sizeof(*q));
    q->fd = fd;
    q->write = write;
    q->depth = depth;
    q->done = done;
    q->done_opaque = opaque;
    int r = io_setup((int)depth, &q->ctx);
    if (r < 0) {
        g_set_error(error, G_IO_ERROR, g_io_error_from_errno(-r),
                    "io_setup(%u) failed: %s (is /proc/sys/fs/aio-max-nr too small?)", depth,
                    g_strerror(-r));
        q->ctx = 0;
        return false;
    }
    q->iocbs = g_new0(struct iocb, depth);
    q->free_list = g_new(struct iocb *, depth);
    q->events = g_new(struct io_event, depth);
    for (unsigned i = 0; i < depth; i++)
        q->free_list[i] = &q->iocbs[i];
    q->n_free = depth;
    return true;
}

static void record_failure(AioQueue *q, int err, struct iocb *cb, long res)
{
    if (q->err)
        return;
    q->err = err;
    q->err_offset = (uint64_t)cb->u.c.offset;
    q->err_len = cb->u.c.nbytes;
    q->err_res = res;
}

/* Waits for at least `min` completions (min <= inflight). */
static void reap(AioQueue *q, unsigned min)
{
    while (min > 0) {
        int n = io_getevents(q->ctx, (long)min, (long)q->depth, q->events, NULL);
        if (n == -EINTR)
            continue;
        if (n < 0) {
            /* The context itself is broken: nothing more will complete. */
            q->err = q->err ? q->err : -n;
            q->inflight = 0;
            return;
        }
        for (int i = 0; i < n; i++) {
            struct iocb *cb = q->events[i].obj;
            long res = (long)q->events[i].res;
            size_t len = cb->u.c.nbytes;
            if (res < 0)
                record_failure(q, (int)-res, cb, res);
            else if ((size_t)res != len)
                /* A short O_DIRECT write means the device ran out of space; a short
                 * read means the file is shorter than the snapshot says. */
                record_failure(q, q->write ? ENOSPC : ENODATA, cb, res);
            else if (q->done)
                q->done(q->done_opaque, cb->data, cb->u.c.buf, len, (uint64_t)cb->u.c.offset);
            q->free_list[q->n_free++] = cb;
            q->inflight--;
        }
        min = (unsigned)n >= min ? 0 : min - (unsigned)n;
    }
}

bool aio_queue_submit(AioQueue *q, void *buf, size_t len, uint64_t offset, void *cookie)
{
    if (q->err)
        return false;
    if (q->n_free == 0)
        reap(q, 1);
    if (q->err)
        return false;
    struct iocb *cb = q->free_list[--q->n_free];
    if (q->write)
        io_prep_pwrite(cb, q->fd, buf, len, (long long)offset);
    else
        io_prep_pread(cb, q->fd, buf, len, (long long)offset);
    cb->data = cookie;
    for (;;) {
        int r = io_submit(q->ctx, 1, &cb);
        if (r == 1)
            break;
        if (r == -EAGAIN && q->inflight > 0) {
            reap(q, 1);
            continue;
        }
        if (r == -EINTR)
            continue;
        record_failure(q, r < 0 ? -r : EIO, cb, r);
        q->free_list[q->n_free++] = cb;
        return false;
    }
    q->inflight++;
    return true;
}

void aio_queue_wait_one(AioQueue *q)
{
    if (q->inflight)
        reap(q, 1);
}

bool aio_queue_drain(AioQueue *q)
{
    if (q->inflight)
        reap(q, q->inflight);
    return q->err == 0;
}

void aio_queue_error(const AioQueue *q, const char *what, GError **error)
{
    if (q->err_res >= 0 && q->err_len)
        g_set_error(error, G_IO_ERROR, g_io_error_from_errno(q->err),
                    "%s: short %s at offset 0x%" G_GINT64_MODIFIER "x (%ld of %zu bytes): %s", what,
                    q->write ? "write" : "read", q->err_offset, q->err_res, q->err_len,
                    g_strerror(q->err));
    else
        g_set_error(error, G_IO_ERROR, g_io_error_from_errno(q->err),
                    "%s: %s of %zu bytes at offset 0x%" G_GINT64_MODIFIER "x failed: %s", what,
                    q->write ? "write" : "read", q->err_len, q->err_offset, g_strerror(q->err));
}

void aio_queue_destroy(AioQueue *q)
{
    if (q->ctx) {
        aio_queue_drain(q);
        io_destroy(q->ctx);
    }
    g_free(q->iocbs);
    g_free(q->free_list);
    g_free(q->events);
    memset(q, 0, sizeof(*q));
}
