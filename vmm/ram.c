#include "ram.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

bool ram_layout(GuestRam *ram, uint64_t total, GError **error)
{
    memset(ram, 0, sizeof(*ram));
    if (total == 0 || total % RAM_PAGE_SIZE) {
        g_set_error(error, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT,
                    "memory size %" G_GUINT64_FORMAT " is not a positive multiple of %u bytes",
                    total, RAM_PAGE_SIZE);
        return false;
    }
    uint64_t low = MIN(total, RAM_LOW_LIMIT);
    RamBlock *b = &ram->blocks[ram->n_blocks++];
    g_strlcpy(b->name, "ram-below-4g", sizeof(b->name));
    b->gpa = 0;
    b->size = low;
    b->page_size = RAM_PAGE_SIZE;
    b->fd = -1;
    if (total > low) {
        b = &ram->blocks[ram->n_blocks++];
        g_strlcpy(b->name, "ram-above-4g", sizeof(b->name));
        b->gpa = RAM_HIGH_BASE;
        b->size = total - low;
        b->page_size = RAM_PAGE_SIZE;
        b->fd = -1;
    }
    ram->total = total;
    return true;
}

static bool block_alloc(RamBlock *b, RamBacking backing, GError **error)
{
    int flags = MAP_NORESERVE;
    int fd = -1;

    if (backing == RAM_BACKING_MEMFD) {
        g_autofree char *name = g_strdup_printf("vmsnap-%s", b->name);
        fd = memfd_create(name, MFD_CLOEXEC);
        if (fd < 0 || ftruncate(fd, (off_t)b->size) < 0) {
            int err = errno;
            if (fd >= 0)
                close(fd);
            g_set_error(error, G_IO_ERROR, g_io_error_from_errno(err),
                        "cannot create memfd for %s (%" G_GUINT64_FORMAT " bytes): %s", b->name,
                        b->size, g_strerror(err));
            return false;
        }
        flags |= MAP_SHARED;
    } else {
        flags |= MAP_PRIVATE | MAP_ANONYMOUS;
    }
    void *p = mmap(NULL, b->size, PROT_READ | PROT_WRITE, flags, fd, 0);
    if (p == MAP_FAILED) {
        int err = errno;
        if (fd >= 0)
            close(fd);
        g_set_error(error, G_IO_ERROR, g_io_error_from_errno(err),
                    "cannot map %" G_GUINT64_FORMAT " bytes of guest RAM for %s: %s", b->size,
                    b->name, g_strerror(err));
        return false;
    }
    /* Transparent huge pages (THP is often "madvise" only): fewer faults on first
     * touch, and a never-touched 2 MiB range reads through the huge zero page, so a
     * save's zero-page scan does not fault in 512 page-table entries for it. */
    (void)madvise(p, b->size, MADV_HUGEPAGE);
    b->host = p;
    b->fd = fd;
    b->backing = backing;
    return true;
}

bool ram_discard(GuestRam *ram, GError **error)
{
    for (unsigned i = 0; i < ram->n_blocks; i++) {
        RamBlock *b = &ram->blocks[i];
        int rc;
        if (b->backing == RAM_BACKING_ANON)
            rc = madvise(b->host, b->size, MADV_DONTNEED);
        else if (b->backing == RAM_BACKING_MEMFD)
            rc = fallocate(b->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0, (off_t)b->size);
        else {
            g_set_error(error, G_IO_ERROR, G_IO_ERROR_NOT_SUPPORTED,
                        "RAM block %s is a private file mapping: it cannot be discarded", b->name);
            return false;
        }
        if (rc < 0) {
            int err = errno;
            g_set_error(error, G_IO_ERROR, g_io_error_from_errno(err),
                        "cannot discard RAM block %s: %s", b->name, g_strerror(err));
            return false;
        }
    }
    return true;
}

void ram_prefer_huge_pages(GuestRam *ram, bool huge)
{
    for (unsigned i = 0; i < ram->n_blocks; i++) {
        RamBlock *b = &ram->blocks[i];
        if (b->host && b->backing == RAM_BACKING_ANON)
            (void)madvise(b->host, b->size, huge ? MADV_HUGEPAGE : MADV_NOHUGEPAGE);
    }
}

bool ram_alloc(GuestRam *ram, RamBacking backing, GError **error)
{
    for (unsigned i = 0; i < ram->n_blocks; i++) {
        if (!block_alloc(&ram->blocks[i], backing, error)) {
            ram_free(ram);
            return false;
        }
    }
    return true;
}

void ram_free(GuestRam *ram)
{
    for (unsigned i = 0; i < ram->n_blocks; i++) {
        RamBlock *b = &ram->blocks[i];
        if (b->host)
            munmap(b->host, b->size);
        if (b->fd >= 0)
            close(b->fd);
        b->host = NULL;
        b->fd = -1;
    }
}

RamBlock *ram_block_at(GuestRam *ram, uint64_t gpa)
{
    for (unsigned i = 0; i < ram->n_blocks; i++) {
        RamBlock *b = &ram->blocks[i];
        if (gpa >= b->gpa && gpa - b->gpa < b->size)
            return b;
    }
    return NULL;
}

void *ram_ptr(const GuestRam *ram, uint64_t gpa, uint64_t len)
{
    for (unsigned i = 0; i < ram->n_blocks; i++) {
        const RamBlock *b = &ram->blocks[i];
        if (gpa >= b->gpa && gpa - b->gpa < b->size) {
            uint64_t off = gpa - b->gpa;
            if (len > b->size - off || !b->host)
                return NULL;
            return b->host + off;
        }
    }
    return NULL;
}

const char *ram_backing_name(RamBacking b)
{
    switch (b) {
    case RAM_BACKING_ANON:
        return "anon";
    case RAM_BACKING_MEMFD:
        return "memfd";
    case RAM_BACKING_FILE:
        return "file";
    }
    return "?";
}
