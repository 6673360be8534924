/* Map restore: each RAM block becomes a private copy-on-write mapping of its page
 * area. Holes (zero pages) read as zero; nothing is read until the guest touches it. */
#include "snapfile.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/mman.h>

const FormatBlock *snapfile_match_block(const VmsnapSnapshot *s, const VmsnapRamBlock *rb,
                                        GError **error)
{
    const FormatSnapshot *f = s->fmt;
    for (unsigned i = 0; i < f->n_blocks; i++) {
        const FormatBlock *fb = &f->blocks[i];
        if (strcmp(fb->name, rb->name))
            continue;
        if (fb->gpa != rb->gpa || fb->size != rb->size || fb->page_size != rb->page_size) {
            g_set_error(error, G_IO_ERROR, G_IO_ERROR_INVALID_DATA,
                        "%s: RAM block '%s' is gpa 0x%" G_GINT64_MODIFIER
                        "x size %" G_GUINT64_FORMAT " in the snapshot but gpa 0x%" G_GINT64_MODIFIER
                        "x size %" G_GUINT64_FORMAT " in this VM",
                        s->what, fb->name, fb->gpa, fb->size, rb->gpa, rb->size);
            return NULL;
        }
        return fb;
    }
    g_set_error(error, G_IO_ERROR, G_IO_ERROR_INVALID_DATA,
                "%s: the snapshot has no RAM block '%s' (this VM has %" G_GUINT64_FORMAT
                " bytes there)",
                s->what, rb->name, rb->size);
    return NULL;
}

bool snapfile_check_blocks(const VmsnapSnapshot *s, const VmsnapRamBlock *blocks, unsigned n,
                           GError **error)
{
    for (unsigned i = 0; i < s->fmt->n_blocks; i++) {
        bool found = false;
        for (unsigned j = 0; j < n && !found; j++)
            found = !strcmp(blocks[j].name, s->fmt->blocks[i].name);
        if (!found) {
            g_set_error(error, G_IO_ERROR, G_IO_ERROR_INVALID_DATA,
                        "%s: RAM block '%s' (%" G_GUINT64_FORMAT " bytes) has no counterpart "
                        "in this VM",
                        s->what, s->fmt->blocks[i].name, s->fmt->blocks[i].size);
            return false;
        }
    }
    for (unsigned j = 0; j < n; j++)
        if (!snapfile_match_block(s, &blocks[j], error))
            return false;
    return true;
}

bool vmsnap_snapshot_map(VmsnapSnapshot *s, VmsnapRamBlock *blocks, unsigned n_blocks,
                         GError **error)
{
    if (!snapfile_check_blocks(s, blocks, n_blocks, error))
        return false;
    for (unsigned i = 0; i < n_blocks; i++) {
        const FormatBlock *fb = snapfile_match_block(s, &blocks[i], error);
        void *p = mmap(blocks[i].host, fb->size, PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_FIXED | MAP_NORESERVE, s->fd, (off_t)fb->pages_offset);
        if (p == MAP_FAILED) {
            int err = errno;
            g_set_error(error, G_IO_ERROR, g_io_error_from_errno(err),
                        "%s: cannot map RAM block '%s' from offset 0x%" G_GINT64_MODIFIER "x: %s",
                        s->what, fb->name, fb->pages_offset, g_strerror(err));
            return false;
        }
        int fd = fcntl(s->fd, F_DUPFD_CLOEXEC, 0);
        blocks[i].backing_fd = fd;
    }
    return true;
}
