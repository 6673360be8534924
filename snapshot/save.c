/* The public stopped-save API (include/vmsnap/snapshot.h) on top of the file sink
 * and the precopy driver. */
#include "precopy.h"
#include "sink.h"

#include <string.h>

static bool run_save(const VmsnapVm *vm, const char *path, int fd, const VmsnapSaveOptions *opt,
                     VmsnapSaveStats *stats, GError **error)
{
    uint64_t t0 = (uint64_t)g_get_monotonic_time();
    if (!vm || vm->struct_size < offsetof(VmsnapVm, ops) || !vm->n_blocks || !vm->config) {
        g_set_error(error, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT,
                    "save: the VM description is incomplete (no RAM blocks or no config)");
        return false;
    }
    /* The caller paused the VM: a stopped save, whatever vm->running says. */
    VmsnapVm stopped = { 0 };
    memcpy(&stopped, vm, MIN(vm->struct_size, sizeof(stopped)));
    stopped.struct_size = sizeof(stopped);
    stopped.ops = NULL;
    stopped.running = false;

    SaveSink *s = file_sink_new(&stopped, path, fd, opt, error);
    if (!s)
        return false;
    VmsnapProgress own = { 0 };
    s->progress = opt && opt->progress ? opt->progress : &own;
    s->threads = opt && opt->threads ? opt->threads : (unsigned)g_get_num_processors();
    s->cancel = opt ? opt->cancel : NULL;
    const char *delay = g_getenv("VMSNAP_FAULT_SAVE_DELAY_US"); /* test hook */
    s->delay_us = delay ? (unsigned)g_ascii_strtoull(delay, NULL, 10) : 0;
    uint64_t ram = 0;
    for (unsigned i = 0; i < vm->n_blocks; i++)
        ram += vm->blocks[i].size;
    s->progress->ram_bytes = ram;

    PrecopyParams params = { 0 };
    PrecopyState st = { 0 };
    uint64_t t1 = (uint64_t)g_get_monotonic_time();
    bool ok = precopy_run(s, &params, &st, error);
    if (stats) {
        file_sink_stats(s, stats);
        stats->total_ns = ((uint64_t)g_get_monotonic_time() - t0) * 1000;
        stats->pages_ns = stats->total_ns - stats->metadata_ns - stats->sync_ns - (t1 - t0) * 1000;
    }
    s->ops->free(s);
    return ok;
}

bool vmsnap_save_path(const VmsnapVm *vm, const char *path, const VmsnapSaveOptions *opt,
                      VmsnapSaveStats *stats, GError **error)
{
    return run_save(vm, path, -1, opt, stats, error);
}

bool vmsnap_save_fd(const VmsnapVm *vm, int fd, const VmsnapSaveOptions *opt,
                    VmsnapSaveStats *stats, GError **error)
{
    return run_save(vm, NULL, fd, opt, stats, error);
}
