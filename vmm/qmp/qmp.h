/* SPDX-License-Identifier: MIT */
/*
 * QMP (QEMU Machine Protocol) server library.
 *
 * A VM-agnostic control socket speaking QEMU's QMP wire protocol: greeting,
 * capability negotiation, {"execute": ...} requests, return/error responses and
 * asynchronous events. The VMM registers its own commands; the library provides
 * the framing, the dispatcher, the unix socket server and the built-in commands
 * qmp_capabilities, query-commands, query-version, getfd and closefd.
 *
 * Threading: a server belongs to the GMainContext that was thread-default when
 * qmp_server_listen_unix() was called. Every function except
 * qmp_server_emit_event() must be called from the thread running that context.
 */
#pragma once

#include <glib.h>
#include <json-glib/json-glib.h>

G_BEGIN_DECLS

typedef struct QmpServer QmpServer;
typedef struct QmpClient QmpClient;

/**
 * qmp_error_quark:
 *
 * Returns: the error domain of errors handed to and produced by the dispatcher.
 * The error code is a #QmpErrorClass.
 */
GQuark qmp_error_quark(void);
#define QMP_ERROR qmp_error_quark()

/* QEMU's QapiErrorClass. When adding a class, also update qmp_error_class_name(). */
typedef enum {
    QMP_ERROR_GENERIC,           /* "GenericError" */
    QMP_ERROR_COMMAND_NOT_FOUND, /* "CommandNotFound" */
    QMP_ERROR_DEVICE_NOT_ACTIVE, /* "DeviceNotActive" */
    QMP_ERROR_DEVICE_NOT_FOUND,  /* "DeviceNotFound" */
    QMP_ERROR_KVM_MISSING_CAP,   /* "KVMMissingCap" */
} QmpErrorClass;

/**
 * qmp_error_class_name:
 * @code: an error code of the %QMP_ERROR domain
 *
 * Returns: the QMP wire name of @code ("GenericError", ...); "GenericError" for
 * an unknown code. The string is static.
 */
const char *qmp_error_class_name(int code);

typedef enum {
    QMP_ARG_STR,
    QMP_ARG_INT, /* a JSON integer; 1.0 is refused, like QEMU */
    QMP_ARG_BOOL,
    QMP_ARG_NUMBER, /* integer or floating point */
    QMP_ARG_OBJECT,
    QMP_ARG_ARRAY,
    QMP_ARG_ANY, /* any JSON value, including null */
} QmpArgType;

/* One declared argument; a command's argument array ends with { NULL }. */
typedef struct {
    const char *name;
    QmpArgType type;
    gboolean optional;
} QmpArgSpec;

/*
 * A command handler. @args is the validated arguments object (an empty object
 * when the request had none); it is only valid during the call. Returns the
 * "return" value as a new JsonNode (e.g. an empty object), which the library
 * consumes, or NULL with @error set (domain %QMP_ERROR, code a #QmpErrorClass;
 * errors of other domains are reported as GenericError with their message).
 */
typedef JsonNode *(*QmpCommandFunc)(QmpClient *client, JsonObject *args, gpointer user_data,
                                    GError **error);

/*
 * A command. @args may be NULL for a command without arguments. The struct is
 * copied, but @args must stay valid while the command is registered (usually a
 * static array).
 */
typedef struct {
    const char *name;
    QmpCommandFunc func;
    const QmpArgSpec *args;
} QmpCommand;

/* Defaults of the limits below. */
#define QMP_DEFAULT_MAX_MESSAGE_SIZE  (1024 * 1024)     /* bytes of one request */
#define QMP_DEFAULT_MAX_DEPTH         64                /* nesting of one request */
#define QMP_DEFAULT_MAX_CLIENT_OUTPUT (4 * 1024 * 1024) /* unsent bytes per client */
#define QMP_DEFAULT_MAX_CLIENTS       16

/**
 * qmp_server_new:
 * @package_version: free-form "package" string of the greeting and query-version
 * @major: @minor: @micro: the version reported as "qemu" in the greeting
 *
 * Creates a server with the built-in commands registered and no socket.
 *
 * Returns: a new server, never NULL. Free with qmp_server_free().
 */
QmpServer *qmp_server_new(const char *package_version, int major, int minor, int micro);

/**
 * qmp_server_set_limits:
 * @s: a server
 * @max_message_size: largest accepted request in bytes; 0 keeps the current value
 * @max_client_output: unsent output a client may accumulate before it is
 *   disconnected; 0 keeps the current value
 *
 * Changes the per-client limits. The message size applies to clients that
 * connect afterwards, the output limit immediately.
 */
void qmp_server_set_limits(QmpServer *s, gsize max_message_size, gsize max_client_output);

/**
 * qmp_server_listen_unix:
 * @s: a server that is not listening yet
 * @path: path of the unix socket to create
 * @error: return location for an error
 *
 * Creates the listening socket at @path with mode 0600 and attaches it to the
 * thread-default GMainContext. A stale socket file at @path (one nobody accepts
 * on) is replaced; a live socket or a file that is not a socket is an error.
 *
 * Returns: TRUE on success; FALSE with @error set (G_IO_ERROR domain).
 */
gboolean qmp_server_listen_unix(QmpServer *s, const char *path, GError **error);

/**
 * qmp_server_register:
 * @s: a server
 * @cmd: the command; copied, see #QmpCommand
 * @user_data: passed to the handler
 *
 * Registers a command, replacing a command of the same name. qmp_capabilities
 * cannot be replaced.
 */
void qmp_server_register(QmpServer *s, const QmpCommand *cmd, gpointer user_data);

/**
 * qmp_server_emit_event:
 * @s: a server
 * @event: event name, e.g. "STOP"
 * @data: (transfer full) (nullable): the event's "data" object; NULL for an
 *   event without a "data" member (like QEMU's STOP and RESUME)
 *
 * Sends an event, timestamped now, to every client that completed capability
 * negotiation. Safe to call from any thread: from a thread other than the one
 * running the server's context the event is queued and sent by that context,
 * in emission order. Events emitted before qmp_server_listen_unix() are dropped.
 */
void qmp_server_emit_event(QmpServer *s, const char *event, JsonNode *data);

/**
 * qmp_server_flush:
 * @s: a server
 *
 * Best effort: sends queued events and waits, at most about a second in total,
 * until the clients' pending output has been written. For use before exiting.
 */
void qmp_server_flush(QmpServer *s);

/**
 * qmp_server_free:
 * @s: (nullable): a server
 *
 * Closes every client and the listening socket, unlinks the socket path if it
 * is still ours, and closes the named file descriptors. No thread may be inside
 * qmp_server_emit_event() for @s.
 */
void qmp_server_free(QmpServer *s);

/**
 * qmp_server_take_fd:
 * @s: a server
 * @name: an fd name given to getfd
 * @error: return location for an error
 *
 * Takes the file descriptor stored by getfd under @name: it is removed from the
 * server (a later closefd of @name fails, like after QEMU's monitor_get_fd()) and
 * the caller owns it. It is close-on-exec.
 *
 * Returns: the file descriptor, or -1 with @error set (QMP_ERROR, GenericError)
 * if no fd has that name.
 */
int qmp_server_take_fd(QmpServer *s, const char *name, GError **error);

/**
 * qmp_server_dispatch_text:
 * @s: a server
 * @client_or_null: the client the text came from, or NULL for a detached client
 *   owned by the server (with its own negotiation state and no fds)
 * @json: one complete JSON text (need not be NUL-terminated)
 * @len: its length in bytes
 *
 * Parses and executes one request, for the server itself and for tests.
 *
 * Returns: the response as a newly allocated JSON text without the trailing
 * "\r\n", or NULL when there is nothing to answer (@json is only whitespace).
 */
char *qmp_server_dispatch_text(QmpServer *s, QmpClient *client_or_null, const char *json,
                               gsize len);

/**
 * qmp_client_get_server:
 * @client: a client, as passed to a command handler
 *
 * Returns: (transfer none): the server @client belongs to.
 */
QmpServer *qmp_client_get_server(QmpClient *client);

G_DEFINE_AUTOPTR_CLEANUP_FUNC(QmpServer, qmp_server_free)

G_END_DECLS
