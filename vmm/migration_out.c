/* An outgoing migration or save: the job thread runs the engine's precopy driver
 * into a sink (mapped file or stream) while the main loop keeps serving QMP. */
#include "migration_priv.h"

#include "dirty.h"
#include "sink.h"
#include "stream_sink.h"
#include "transport.h"
#include "vmstate.h"

#include <string.h>

/* ---- VmsnapVmOps, called from the job thread ---- */

static bool op_dirty_start(void *opaque, GError **error)
{
    Migration *g = opaque;
    return dirty_log_start(g->m->vm, error);
}

static bool op_dirty_fetch(void *opaque, unsigned block, uint64_t *bitmap, GError **error)
{
    Migration *g = opaque;
    return dirty_log_fetch(g->m->vm, block, bitmap, error);
}

static bool op_dirty_rearm(void *opaque, unsigned block, uint64_t first, uint64_t count,
                           const uint64_t *bitmap, GError **error)
{
    Migration *g = opaque;
    return dirty_log_rearm(g->m->vm, block, first, count, bitmap, error);
}

static void op_dirty_stop(void *opaque)
{
    Migration *g = opaque;
    dirty_log_stop(g->m->vm);
}

static void op_pause(void *opaque)
{
    Migration *g = opaque;
    Machine *m = g->m;
    /* vm_pause() is thread-safe; the run state is read atomically by QMP handlers. */
    if (machine_state(m) == RUN_STATE_RUNNING) {
        vm_pause(m->vm);
        __atomic_store_n(&g->paused_by_us, true, __ATOMIC_RELEASE);
        machine_set_state(m, RUN_STATE_FINISH_MIGRATE);
        if (m->qmp)
            qmp_server_emit_event(m->qmp, "STOP", NULL);
    } else {
        machine_set_state(m, RUN_STATE_FINISH_MIGRATE);
    }
    if (!g->params.cap_pause_before_switchover)
        migration_set_status(g, MIG_DEVICE);
}

static void op_throttle(void *opaque, unsigned percent)
{
    Migration *g = opaque;
    vm_set_throttle(g->m->vm, percent);
}

static void pass_done(void *opaque, uint32_t pass)
{
    Migration *g = opaque;
    Machine *m = g->m;
    if (g->params.cap_events && m->qmp) {
        JsonBuilder *b = json_builder_new();
        json_builder_begin_object(b);
        json_builder_set_member_name(b, "pass");
        json_builder_add_int_value(b, pass);
        json_builder_end_object(b);
        qmp_server_emit_event(m->qmp, "MIGRATION_PASS", json_builder_get_root(b));
        g_object_unref(b);
    }
}

/* pause-before-switchover: wait for QMP migrate-continue (or a cancel). */
static bool before_switchover(void *opaque, GError **error)
{
    Migration *g = opaque;
    migration_set_status(g, MIG_PRE_SWITCHOVER);
    g_mutex_lock(&g->lock);
    while (!g->continue_requested && !__atomic_load_n(&g->cancel, __ATOMIC_RELAXED))
        g_cond_wait(&g->cond, &g->lock);
    g_mutex_unlock(&g->lock);
    if (__atomic_load_n(&g->cancel, __ATOMIC_RELAXED)) {
        g_set_error(error, G_IO_ERROR, G_IO_ERROR_CANCELLED, "migration cancelled");
        return false;
    }
    migration_set_status(g, MIG_DEVICE);
    return true;
}

/* ---- the job ---- */

static SaveSink *open_sink(Migration *g, GError **error)
{
    if (g->is_file) {
        VmsnapSaveOptions opt = {
            .struct_size = sizeof(opt),
            .offset = g->uri.offset,
            .in_place = g->uri.has_offset,
            .no_checksums = !g->params.x_page_checksums,
        };
        return file_sink_new(&g->vm, g->uri.kind == MIGRATE_URI_FILE ? g->uri.path : NULL, g->fd,
                             &opt, error);
    }
    return migration_stream_sink_new(g, error);
}

static gboolean finished_in_main(gpointer data)
{
    migration_out_finished(data);
    return G_SOURCE_REMOVE;
}

static gpointer job_thread(gpointer data)
{
    Migration *g = data;
    SaveSink *sink = open_sink(g, &g->job_error);
    if (sink) {
        sink->progress = &g->progress;
        sink->threads = (unsigned)g->params.multifd_channels;
        sink->cancel = &g->cancel;
        sink->max_bandwidth = (uint64_t)g->params.max_bandwidth;
        const char *delay = g_getenv("VMSNAP_FAULT_SAVE_DELAY_US"); /* test hook */
        sink->delay_us = delay ? (unsigned)g_ascii_strtoull(delay, NULL, 10) : 0;
        PrecopyParams p = {
            .live = true, /* when the VM runs */
            .downtime_limit_ms = (uint64_t)g->params.downtime_limit,
            .auto_converge = g->params.cap_auto_converge,
            .throttle_initial = (unsigned)g->params.cpu_throttle_initial,
            .throttle_increment = (unsigned)g->params.cpu_throttle_increment,
            .throttle_max = (unsigned)g->params.max_cpu_throttle,
            .pass_done = pass_done,
            .before_switchover = g->params.cap_pause_before_switchover ? before_switchover : NULL,
            .opaque = g,
        };
        migration_set_status(g, MIG_ACTIVE);
        precopy_run(sink, &p, &g->pst, &g->job_error);
        if (g->is_file)
            file_sink_stats(sink, &g->file_stats);
        sink->ops->free(sink);
    }
    machine_call_in_main(g->m, G_PRIORITY_DEFAULT, finished_in_main, g, NULL);
    return NULL;
}

bool migration_out_start(Migration *g, GError **error)
{
    Machine *m = g->m;
    if (!vmstate_describe(m, &g->vm, g->blocks, error))
        return false;
    g->ops = (VmsnapVmOps){
        .struct_size = sizeof(g->ops),
        .dirty_start = op_dirty_start,
        .dirty_fetch = op_dirty_fetch,
        .dirty_stop = op_dirty_stop,
        .dirty_rearm = op_dirty_rearm,
        .pause = op_pause,
        .throttle = op_throttle,
        .opaque = g,
    };
    g->vm.ops = &g->ops;
    g->vm.running = g->was_running;
    g->progress.ram_bytes = m->vm->ram.total;
    if (!g->was_running)
        machine_set_state(m, RUN_STATE_FINISH_MIGRATE);
    g->setup_us = (uint64_t)g_get_monotonic_time() - g->start_us;
    g->thread = g_thread_new("vmsnap-migrate", job_thread, g);
    return true;
}

/* Connects the main channel (and, with multifd, the extra ones) and makes the sink. */
SaveSink *migration_stream_sink_new(Migration *g, GError **error)
{
    unsigned n = 1;
    if (g->params.cap_multifd && g->params.multifd_channels > 1)
        n = (unsigned)g->params.multifd_channels;
    g_autofree VStream **ch = g_new0(VStream *, n);
    if (g->uri.kind == MIGRATE_URI_FD) {
        g_autofree char *name = g_strdup_printf("fd:%s", g->uri.fdname);
        ch[0] = transport_stream_from_fd(g->fd, name);
        g->fd = -1; /* the stream owns it now */
    } else {
        ch[0] = transport_connect(&g->uri, error);
    }
    for (unsigned i = 1; ch[0] && i < n; i++) {
        ch[i] = transport_connect_extra(&g->uri, error);
        if (!ch[i]) {
            for (unsigned j = 0; j < i; j++)
                vstream_free(ch[j]);
            return NULL;
        }
    }
    if (!ch[0])
        return NULL;
    return stream_sink_new(&g->vm, ch, n, g->params.cap_validate_uuid, error);
}
