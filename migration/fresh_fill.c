/* Filling never-touched memory with UFFDIO_COPY (fresh_fill.h). */
#include "fresh_fill.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <poll.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <unistd.h>

struct FreshFill {
    int uffd;
    int stop_fd; /* eventfd: the helper thread returns when it is readable */
    GThread *helper;
    size_t page;
    unsigned n_ranges;
    struct uffdio_range *ranges;     /* registered */
    uint64_t copied, present, stray; /* atomic */
};

/* Resolves faults on pages the fill has not written yet with the zero page: what
 * such a page reads as once the fill ends. */
static gpointer helper_thread(gpointer data)
{
    FreshFill *f = data;
    for (;;) {
        struct pollfd p[2] = { { .fd = f->uffd, .events = POLLIN },
                               { .fd = f->stop_fd, .events = POLLIN } };
        if (poll(p, 2, -1) < 0) {
            if (errno == EINTR)
                continue;
            g_warning("fresh fill: poll: %s; stray faults are no longer resolved",
                      g_strerror(errno));
            return NULL;
        }
        if (p[1].revents)
            return NULL;
        struct uffd_msg msg;
        if (read(f->uffd, &msg, sizeof(msg)) != (ssize_t)sizeof(msg) ||
            msg.event != UFFD_EVENT_PAGEFAULT)
            continue;
        uint64_t at = msg.arg.pagefault.address & ~(uint64_t)(f->page - 1);
        /* Counted before the faulting thread is woken, so that it sees its own fault. */
        __atomic_fetch_add(&f->stray, 1, __ATOMIC_RELAXED);
        for (;;) {
            struct uffdio_zeropage z = { .range = { .start = at, .len = f->page } };
            if (ioctl(f->uffd, UFFDIO_ZEROPAGE, &z) == 0)
                break;
            if (errno == EAGAIN || errno == EINTR)
                continue;
            /* A copy got there first (EEXIST), or no zero page: wake the faulting
             * thread, which finds the page or faults again. */
            struct uffdio_range w = { .start = at, .len = f->page };
            (void)ioctl(f->uffd, UFFDIO_WAKE, &w);
            break;
        }
    }
}

static void unregister_all(FreshFill *f)
{
    for (unsigned i = 0; i < f->n_ranges; i++)
        (void)ioctl(f->uffd, UFFDIO_UNREGISTER, &f->ranges[i]);
    f->n_ranges = 0;
}

FreshFill *fresh_fill_new(const VmsnapRamBlock *blocks, unsigned n_blocks, GError **why)
{
    FreshFill *f = g_new0(FreshFill, 1);
    f->page = (size_t)sysconf(_SC_PAGESIZE);
    f->stop_fd = -1;
    f->ranges = g_new0(struct uffdio_range, n_blocks ? n_blocks : 1);
    f->uffd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
    const char *step = "userfaultfd";
    int err = 0;
    if (f->uffd < 0) {
        err = errno;
        goto fail;
    }
    struct uffdio_api api = { .api = UFFD_API };
    step = "UFFDIO_API";
    if (ioctl(f->uffd, UFFDIO_API, &api) < 0) {
        err = errno;
        goto fail;
    }
    for (unsigned i = 0; i < n_blocks; i++) {
        const VmsnapRamBlock *b = &blocks[i];
        struct uffdio_register reg = {
            .range = { .start = (uintptr_t)b->host, .len = b->size },
            .mode = UFFDIO_REGISTER_MODE_MISSING,
        };
        step = "UFFDIO_REGISTER";
        if (b->page_size != f->page || ((uintptr_t)b->host | b->size) % f->page) {
            err = EINVAL;
            goto fail;
        }
        if (ioctl(f->uffd, UFFDIO_REGISTER, &reg) < 0) {
            err = errno;
            goto fail;
        }
        f->ranges[f->n_ranges++] = reg.range;
        if (!(reg.ioctls & (1ull << _UFFDIO_COPY)) || !(reg.ioctls & (1ull << _UFFDIO_ZEROPAGE))) {
            step = "UFFDIO_REGISTER (no UFFDIO_COPY or UFFDIO_ZEROPAGE on this mapping)";
            err = ENOTSUP;
            goto fail;
        }
    }
    step = "eventfd";
    f->stop_fd = eventfd(0, EFD_CLOEXEC);
    if (f->stop_fd < 0) {
        err = errno;
        goto fail;
    }
    GError *thread_error = NULL;
    f->helper = g_thread_try_new("fresh-fill", helper_thread, f, &thread_error);
    if (!f->helper) {
        g_propagate_prefixed_error(why, thread_error, "fresh fill: ");
        fresh_fill_free(f);
        return NULL;
    }
    return f;

fail:
    g_set_error(why, G_IO_ERROR, g_io_error_from_errno(err), "fresh fill: %s: %s", step,
                g_strerror(err));
    fresh_fill_free(f);
    return NULL;
}

bool fresh_fill_copy(FreshFill *f, uint8_t *dst, const uint8_t *src, size_t len, GError **error)
{
    while (len) {
        struct uffdio_copy c = { .dst = (uintptr_t)dst, .src = (uintptr_t)src, .len = len };
        if (ioctl(f->uffd, UFFDIO_COPY, &c) == 0) {
            __atomic_fetch_add(&f->copied, len / f->page, __ATOMIC_RELAXED);
            return true;
        }
        int err = errno;
        if (c.copy > 0) {
            /* A partial copy: it stopped before a present page or was interrupted. */
            size_t done = (size_t)c.copy;
            __atomic_fetch_add(&f->copied, done / f->page, __ATOMIC_RELAXED);
            dst += done;
            src += done;
            len -= done;
            continue;
        }
        if (err == EAGAIN || err == EINTR)
            continue; /* the address space was changing: try again */
        if (err != EEXIST) {
            g_set_error(error, G_IO_ERROR, g_io_error_from_errno(err),
                        "UFFDIO_COPY of %zu bytes at %p: %s", len, (void *)dst, g_strerror(err));
            return false;
        }
        /* Present already: an ordinary write is safe, it cannot fault to the fill. */
        memcpy(dst, src, f->page);
        __atomic_fetch_add(&f->present, 1, __ATOMIC_RELAXED);
        dst += f->page;
        src += f->page;
        len -= f->page;
    }
    return true;
}

void fresh_fill_stats(const FreshFill *f, uint64_t *copied, uint64_t *present, uint64_t *stray)
{
    *copied = __atomic_load_n(&f->copied, __ATOMIC_RELAXED);
    *present = __atomic_load_n(&f->present, __ATOMIC_RELAXED);
    *stray = __atomic_load_n(&f->stray, __ATOMIC_RELAXED);
}

void fresh_fill_free(FreshFill *f)
{
    if (!f)
        return;
    /* Unregistering wakes any thread still waiting on a fault in the blocks. */
    if (f->uffd >= 0)
        unregister_all(f);
    if (f->helper) {
        uint64_t one = 1;
        if (write(f->stop_fd, &one, sizeof(one)) != (ssize_t)sizeof(one)) {
            /* The thread still uses f: leave both be rather than free under it. */
            g_warning("fresh fill: cannot stop the helper thread: %s", g_strerror(errno));
            return;
        }
        g_thread_join(f->helper);
    }
    if (f->stop_fd >= 0)
        close(f->stop_fd);
    if (f->uffd >= 0)
        close(f->uffd);
    g_free(f->ranges);
    g_free(f);
}
