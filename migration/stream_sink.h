/* The stream sink: a save or live migration written as a record stream
 * (docs/PROTOCOL.md) over one main channel and optional extra (multifd) channels. */
#pragma once

#include "sink.h"
#include "stream.h"

/* Takes ownership of the streams (main first, then extra channels). With extra
 * channels each pass is spread over all of them, one writer thread per channel.
 * finish() flushes each stream and calls transport_stream_finish() on it (so an
 * exec: command's failure is reported). */
SaveSink *stream_sink_new(const VmsnapVm *vm, VStream **channels, unsigned n_channels,
                          bool validate_uuid, GError **error);
