/*
 * A bounded queue of asynchronous reads or writes on one fd (libaio), used by the
 * page writers and readers. One queue per thread; not thread-safe.
 *
 * Completions are reported through a callback with the caller's cookie; a
 * failed or short transfer makes the queue fail: later submits return false and
 * aio_queue_error() names the offset and the reason.
 */
#pragma once

#include <gio/gio.h>
#include <libaio.h>
#include <stdbool.h>
#include <stdint.h>

typedef void (*AioDoneFn)(void *opaque, void *cookie, void *buf, size_t len, uint64_t offset);

typedef struct AioQueue {
    io_context_t ctx;
    int fd;
    bool write;
    unsigned depth;
    unsigned inflight;
    struct iocb *iocbs;
    struct iocb **free_list;
    unsigned n_free;
    struct io_event *events;
    AioDoneFn done;
    void *done_opaque;
    int err; /* first errno, 0 if none */
    uint64_t err_offset;
    size_t err_len;
    long err_res;
} AioQueue;

/* Sets up a queue of `depth` slots on fd for writes (write=true) or reads.
 * Returns false with an error if the kernel refuses (io_setup). */
bool aio_queue_init(AioQueue *q, int fd, bool write, unsigned depth, AioDoneFn done, void *opaque,
                    GError **error);

/* Queues one transfer, first waiting for a free slot if all are in flight.
 * Returns false once the queue has failed. */
bool aio_queue_submit(AioQueue *q, void *buf, size_t len, uint64_t offset, void *cookie);

/* Waits for at least one completion when something is in flight. */
void aio_queue_wait_one(AioQueue *q);

/* Waits for every transfer in flight. Returns false if any failed. */
bool aio_queue_drain(AioQueue *q);

/* Describes the first failure ("write of 1048576 bytes at offset 0x...: No space left
 * on device") into error, prefixed with `what`. */
void aio_queue_error(const AioQueue *q, const char *what, GError **error);

/* Cancels nothing: drains, then frees the context. */
void aio_queue_destroy(AioQueue *q);
