/* SPDX-License-Identifier: MIT */
/* Internals shared by the files of the QMP library; not part of the API. */
#pragma once

#include "qmp.h"
#include "qmp_stream.h"

#include <sys/types.h>

/* Unclaimed SCM_RIGHTS fds a client may hold; older ones are closed beyond this. */
#define QMP_MAX_PENDING_FDS 16

typedef struct {
    char *name;
    QmpCommandFunc func;
    const QmpArgSpec *args;
    gpointer user_data;
} QmpCommandEntry;

struct QmpClient {
    QmpServer *server;
    gint ref;
    int fd;              /* -1 for the server's detached client */
    gboolean negotiated; /* qmp_capabilities succeeded */
    gboolean dead;       /* disconnected; waiting for the last reference */
    QmpStream *stream;
    GSource *in_source;
    GSource *out_source; /* only while output is pending */
    GByteArray *out;     /* unsent output starts at out_pos */
    gsize out_pos;
    GArray *pending_fds; /* int; received with SCM_RIGHTS, not yet claimed, oldest first */
};

struct QmpServer {
    char *package;
    int major, minor, micro;

    GHashTable *commands;     /* name -> QmpCommandEntry (owned) */
    GPtrArray *command_order; /* QmpCommandEntry, registration order, for query-commands */
    GHashTable *named_fds;    /* fd name (owned) -> GINT_TO_POINTER(fd) */
    QmpClient *detached;      /* used by qmp_server_dispatch_text(s, NULL, ...) */

    gsize max_message_size;
    gsize max_client_output;
    guint max_clients;

    GMainContext *context; /* set by listen */
    char *path;
    int listen_fd;
    dev_t sock_dev; /* identity of our socket file, to unlink only ours */
    ino_t sock_ino;
    GSource *listen_source;
    GSource *resume_source; /* accepting paused after EMFILE */
    GPtrArray *clients;     /* QmpClient, connected ones */

    /* events emitted from any thread; drained by event_source in context */
    GMutex event_lock;
    GQueue event_queue; /* char *, complete texts with "\r\n" */
    GSource *event_source;
};

/* qmp_dispatch.c */
void qmp_dispatch_init(QmpServer *s);
void qmp_dispatch_finalize(QmpServer *s);
/* Returns the error response text (no "\r\n") for a framing error. */
char *qmp_dispatch_error_text(const GError *error);

/* qmp_server.c */
/* Returns {"qemu": {"micro", "minor", "major"}, "package"}: query-version and the greeting. */
JsonNode *qmp_server_version_node(QmpServer *s);

/* qmp_builtin.c */
void qmp_builtin_register(QmpServer *s);
void qmp_fds_close_all(QmpServer *s);

/* qmp_client.c */
QmpClient *qmp_client_new(QmpServer *s, int fd); /* fd < 0: detached, no I/O */
QmpClient *qmp_client_ref(QmpClient *c);
void qmp_client_unref(QmpClient *c);
/* Disconnects: removes sources, closes the socket and pending fds, leaves s->clients. */
void qmp_client_close(QmpClient *c);
/* Queues @len bytes; writes what the socket takes now; closes the client on overflow. */
void qmp_client_send(QmpClient *c, const char *data, gsize len);
/* Takes the most recently received SCM_RIGHTS fd, or returns -1. */
int qmp_client_take_pending_fd(QmpClient *c);
/* Blocks until the output is written or @deadline (monotonic us) passes. */
void qmp_client_flush(QmpClient *c, gint64 deadline);

G_DEFINE_AUTOPTR_CLEANUP_FUNC(QmpClient, qmp_client_unref)
