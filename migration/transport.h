/*
 * Migration transports: connecting (source) and listening/accepting (destination)
 * for unix:PATH and tcp:HOST:PORT, spawning exec:CMD through /bin/sh -c, and
 * wrapping fd:NAME. Each produces VStreams (io/stream.h).
 */
#pragma once

#include "stream.h"
#include "uri.h"

/* Source side: opens the main channel to `uri` (unix:, tcp:, exec:; fd: is handled by
 * the caller, who owns the fd: see transport_stream_from_fd). For exec:, the command's
 * stdin receives the stream; its stdout/stderr are inherited. The child is reaped when
 * the stream is freed, and a non-zero exit status is reported by
 * transport_stream_finish(). */
VStream *transport_connect(const MigrateUri *uri, GError **error);

/* Source side, multifd: one more connection to the same unix:/tcp: address. */
VStream *transport_connect_extra(const MigrateUri *uri, GError **error);

/* Destination side. */
typedef struct TransportListener TransportListener;

/* Binds and listens (unix: creates the socket, mode 0600, replacing a stale one; tcp:
 * port 0 picks a free port). */
TransportListener *transport_listen(const MigrateUri *uri, GError **error);
/* The address actually bound, QEMU's socket-address shape: type "unix" + path, or
 * type "inet" + host + port (the chosen port when 0 was asked). */
const char *transport_listener_type(const TransportListener *l);
const char *transport_listener_host(const TransportListener *l); /* path for unix */
const char *transport_listener_port(const TransportListener *l); /* NULL for unix */
/* The listening fd, for a GSource in the destination's main loop. */
int transport_listener_fd(const TransportListener *l);
/* Accepts one connection (blocking, with a timeout in ms; -1 = none). */
VStream *transport_accept(TransportListener *l, int timeout_ms, GError **error);
void transport_listener_free(TransportListener *l);

/* Destination side for exec:CMD: runs the command and reads its stdout. */
VStream *transport_exec_read(const char *command, GError **error);

/* A stream over an fd received with getfd (pipe or socket); owns the fd. */
VStream *transport_stream_from_fd(int fd, const char *name);

/* After a successful transfer: flushes, closes the write side and, for exec:, waits
 * for the command and reports a non-zero exit status or a signal as an error naming
 * the command. */
bool transport_stream_finish(VStream *s, GError **error);
