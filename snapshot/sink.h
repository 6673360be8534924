/*
 * A save sink: where one save or migration goes (a mapped-RAM file, a stream). The
 * precopy driver (migration/precopy.c) calls begin, then pass once per iteration
 * (the last one with the VM paused), then finish with the device state.
 */
#pragma once

#include <gio/gio.h>
#include <vmsnap/snapshot.h>

#include "scan.h"

typedef struct SaveSink SaveSink;

/* One device's saved state. */
typedef struct DevicePayload {
    char name[24];
    uint32_t instance;
    uint32_t version;
    GBytes *fields;
} DevicePayload;

typedef struct SaveSinkOps {
    /* Headers and setup (file: partial header; stream: header, config, RAM blocks). */
    bool (*begin)(SaveSink *s, GError **error);
    /* Writes the selected pages (select NULL = all) of pass `pass`; `final` when the VM
     * is paused. Returns false with an error. */
    bool (*pass)(SaveSink *s, uint64_t *const *select, uint32_t pass, bool final,
                 uint64_t dirty_left, GError **error);
    /* Device state and the end: file: metadata, sync, commit; stream: DEVICE records,
     * END, flush. */
    bool (*finish)(SaveSink *s, const DevicePayload *devices, unsigned n_devices,
                   bool source_running, GError **error);
    /* After a failure: remove what must not look complete. */
    void (*abort)(SaveSink *s);
    void (*free)(SaveSink *s);
} SaveSinkOps;

struct SaveSink {
    const SaveSinkOps *ops;
    const VmsnapVm *vm;
    VmsnapProgress *progress;
    unsigned threads;
    const int *cancel;
    uint64_t max_bandwidth;
    uint64_t bytes;    /* bytes written by passes so far (atomic) */
    unsigned delay_us; /* test hook, see scan.h */
    /* Set by the precopy driver for live passes when the VMM re-arms tracking per
     * chunk (VmsnapVmOps.dirty_rearm); sinks hand it to their ScanJob. */
    ScanRearmFn rearm;
    void *rearm_opaque;
};

/* The mapped-RAM file sink (snapshot/file_sink.c). path != NULL: by path (atomic
 * replace unless in_place or offset > 0); else the open regular file fd. */
SaveSink *file_sink_new(const VmsnapVm *vm, const char *path, int fd, const VmsnapSaveOptions *opt,
                        GError **error);
/* Statistics of a finished file save. */
void file_sink_stats(SaveSink *s, VmsnapSaveStats *stats);

/* Runs a device's save callback into a payload. */
bool device_payload_save(const VmsnapDevice *d, DevicePayload *out, GError **error);
void device_payloads_free(DevicePayload *p, unsigned n);
