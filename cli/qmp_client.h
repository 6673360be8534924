/*
 * A small blocking QMP client for the CLI: connects to a unix socket (vmsnap's
 * or QEMU's), reads the greeting, negotiates, executes commands and waits for
 * events. Events that arrive while a command waits for its response are queued
 * and handed out by qmp_conn_wait_event(). Not thread-safe: one thread per
 * connection.
 *
 * Every failure is a GError of domain QMP_CONN_ERROR. After a CLOSED, TIMEOUT or
 * PROTOCOL error the connection is unusable and every later call fails with
 * CLOSED; a COMMAND error (the server's {"error": ...} answer) leaves it usable.
 */
#pragma once

#include <glib.h>
#include <json-glib/json-glib.h>
#include <stdbool.h>

G_BEGIN_DECLS

typedef struct QmpConn QmpConn;

typedef enum {
    QMP_CONN_ERROR_CONNECT,  /* the socket could not be connected */
    QMP_CONN_ERROR_CLOSED,   /* the server closed the connection (or it was already broken) */
    QMP_CONN_ERROR_TIMEOUT,  /* no response or event within the time limit */
    QMP_CONN_ERROR_PROTOCOL, /* not QMP: bad JSON, unexpected message, socket error */
    QMP_CONN_ERROR_COMMAND,  /* the server answered {"error": {"class", "desc"}}: the
                              * message is "desc" verbatim, qmp_conn_error_class() the class */
} QmpConnError;

/* The error domain; errors of it carry the QMP error class (see below). */
#define QMP_CONN_ERROR (qmp_conn_error_quark())
GQuark qmp_conn_error_quark(void);

/* The QMP error class ("GenericError", "CommandNotFound", ...) of a
 * QMP_CONN_ERROR_COMMAND error, exactly as the server sent it; NULL for any other
 * error. Valid as long as `error`. */
const char *qmp_conn_error_class(const GError *error);

/* Connects to the unix socket at `path` (a plain path, without "unix:") and reads
 * the greeting, waiting at most `timeout_ms` for it (-1: forever). Does not
 * negotiate. Returns NULL with a CONNECT, CLOSED, TIMEOUT or PROTOCOL error naming
 * the path. */
QmpConn *qmp_conn_connect_unix(const char *path, int timeout_ms, GError **error);

/* The same over a connected stream socket, which the connection takes over (it is
 * closed by qmp_conn_free(), and on failure). `what` names it in errors. */
QmpConn *qmp_conn_new_fd(int fd, const char *what, int timeout_ms, GError **error);

void qmp_conn_free(QmpConn *c);

/* The greeting's "QMP" object ({"version": ..., "capabilities": [...]}). */
JsonObject *qmp_conn_greeting(QmpConn *c);

/* Time limit of qmp_conn_execute() in milliseconds; -1 (the default) waits forever. */
void qmp_conn_set_timeout(QmpConn *c, int timeout_ms);

/* Sends qmp_capabilities. Returns false with an error. */
bool qmp_conn_negotiate(QmpConn *c, GError **error);

/* Executes `command` with `args` (may be NULL; not consumed) and waits for its
 * response. Returns the "return" value (caller frees with json_node_unref), or
 * NULL with an error: COMMAND carries the server's class and desc verbatim. */
JsonNode *qmp_conn_execute(QmpConn *c, const char *command, JsonObject *args, GError **error);

/* The same, passing `fd` with SCM_RIGHTS alongside the request (for getfd and
 * add-fd). The fd stays the caller's. */
JsonNode *qmp_conn_execute_fd(QmpConn *c, const char *command, JsonObject *args, int fd,
                              GError **error);

/* Returns the oldest event named `name` (NULL: any event), whole: {"event", "data",
 * "timestamp"}; caller unrefs. Queued events are looked at first; otherwise waits
 * at most `timeout_ms` (0: do not wait, -1: forever). Returns NULL with a TIMEOUT
 * error when none came in time, or another error. Events of other names stay
 * queued. */
JsonObject *qmp_conn_wait_event(QmpConn *c, const char *name, int timeout_ms, GError **error);

/* Number of events queued (received, not yet taken). */
unsigned qmp_conn_queued_events(const QmpConn *c);

G_DEFINE_AUTOPTR_CLEANUP_FUNC(QmpConn, qmp_conn_free)

G_END_DECLS
