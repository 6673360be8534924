/* SPDX-License-Identifier: MIT */
/*
 * QMP server: lifecycle, the listening unix socket, greetings, and events
 * (queued from any thread, broadcast from the server's GMainContext).
 */
#include "qmp_json.h"
#include "qmp_priv.h"
#include "unix_listen.h"

#include <errno.h>
#include <gio/gio.h>
#include <glib-unix.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

/* How long accepting pauses when the process is out of fds (avoids a busy loop). */
#define ACCEPT_PAUSE_MS  100
#define FLUSH_TIMEOUT_US G_USEC_PER_SEC

static gboolean on_accept(int fd, GIOCondition cond, gpointer data);

static void destroy_source(GSource **src)
{
    if (*src) {
        g_source_destroy(*src);
        g_clear_pointer(src, g_source_unref);
    }
}

QmpServer *qmp_server_new(const char *package_version, int major, int minor, int micro)
{
    QmpServer *s = g_new0(QmpServer, 1);

    s->package = g_strdup(package_version ? package_version : "");
    s->major = major;
    s->minor = minor;
    s->micro = micro;
    s->max_message_size = QMP_DEFAULT_MAX_MESSAGE_SIZE;
    s->max_client_output = QMP_DEFAULT_MAX_CLIENT_OUTPUT;
    s->max_clients = QMP_DEFAULT_MAX_CLIENTS;
    s->listen_fd = -1;
    s->clients = g_ptr_array_new_with_free_func((GDestroyNotify)qmp_client_unref);
    g_mutex_init(&s->event_lock);
    g_queue_init(&s->event_queue);
    qmp_dispatch_init(s);
    qmp_builtin_register(s);
    s->detached = qmp_client_new(s, -1);
    return s;
}

void qmp_server_set_limits(QmpServer *s, gsize max_message_size, gsize max_client_output)
{
    g_return_if_fail(s);
    if (max_message_size)
        s->max_message_size = max_message_size;
    if (max_client_output)
        s->max_client_output = max_client_output;
}

static gboolean on_event_wakeup(gpointer data);

/* A source without fds that fires when someone sets its ready time to 0. */
static gboolean wakeup_dispatch(GSource *source, GSourceFunc callback, gpointer data)
{
    g_source_set_ready_time(source, -1);
    return callback(data);
}

static GSourceFuncs wakeup_funcs = { .dispatch = wakeup_dispatch };

static void start_accepting(QmpServer *s)
{
    s->listen_source = g_unix_fd_source_new(s->listen_fd, G_IO_IN);
    g_source_set_callback(s->listen_source, G_SOURCE_FUNC(on_accept), s, NULL);
    g_source_attach(s->listen_source, s->context);
}

gboolean qmp_server_listen_unix(QmpServer *s, const char *path, GError **error)
{
    struct stat st;

    g_return_val_if_fail(s && path, FALSE);
    g_return_val_if_fail(s->listen_fd < 0, FALSE);

    g_autofree char *who = g_strdup_printf("QMP socket '%s'", path);
    int fd = unix_listen_path(path, 16, who, &st, error);
    if (fd < 0)
        return FALSE;

    s->listen_fd = fd;
    s->path = g_strdup(path);
    s->sock_dev = st.st_dev;
    s->sock_ino = st.st_ino;

    g_mutex_lock(&s->event_lock);
    s->context = g_main_context_ref_thread_default();
    /* a source with no fd that emit_event() wakes by setting its ready time */
    s->event_source = g_source_new(&wakeup_funcs, sizeof(GSource));
    g_source_set_callback(s->event_source, on_event_wakeup, s, NULL);
    g_source_attach(s->event_source, s->context);
    g_mutex_unlock(&s->event_lock);

    start_accepting(s);
    return TRUE;
}

JsonNode *qmp_server_version_node(QmpServer *s)
{
    JsonObject *qemu = json_object_new();
    JsonObject *ver = json_object_new();
    JsonNode *node = json_node_new(JSON_NODE_OBJECT);

    /* QEMU's member order */
    json_object_set_int_member(qemu, "micro", s->micro);
    json_object_set_int_member(qemu, "minor", s->minor);
    json_object_set_int_member(qemu, "major", s->major);
    json_object_set_object_member(ver, "qemu", qemu);
    json_object_set_string_member(ver, "package", s->package);
    json_node_take_object(node, ver);
    return node;
}

static void send_greeting(QmpClient *c)
{
    QmpServer *s = c->server;
    g_autoptr(JsonNode) root = json_node_new(JSON_NODE_OBJECT);
    JsonObject *greeting = json_object_new();
    JsonObject *qmp = json_object_new();
    g_autofree char *text = NULL;
    g_autofree char *line = NULL;

    json_object_set_member(qmp, "version", qmp_server_version_node(s));
    json_object_set_array_member(qmp, "capabilities", json_array_new());
    json_object_set_object_member(greeting, "QMP", qmp);
    json_node_take_object(root, greeting);
    text = qmp_json_to_string(root);
    line = g_strconcat(text, "\r\n", NULL);
    qmp_client_send(c, line, strlen(line));
}

static gboolean on_accept_resume(gpointer data)
{
    QmpServer *s = data;

    g_clear_pointer(&s->resume_source, g_source_unref);
    start_accepting(s);
    return G_SOURCE_REMOVE;
}

static gboolean on_accept(int listen_fd, GIOCondition cond, gpointer data)
{
    QmpServer *s = data;

    for (;;) {
        int fd = accept4(listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        QmpClient *c;

        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                return G_SOURCE_CONTINUE;
            /* EMFILE and friends: the socket stays readable, so pause instead of spinning */
            g_warning("QMP: cannot accept on '%s': %s", s->path, g_strerror(errno));
            g_clear_pointer(&s->listen_source, g_source_unref);
            s->resume_source = g_timeout_source_new(ACCEPT_PAUSE_MS);
            g_source_set_callback(s->resume_source, on_accept_resume, s, NULL);
            g_source_attach(s->resume_source, s->context);
            return G_SOURCE_REMOVE;
        }
        if (s->clients->len >= s->max_clients) {
            g_message("QMP: refusing a connection on '%s': %u clients already", s->path,
                      s->clients->len);
            close(fd);
            continue;
        }
        c = qmp_client_new(s, fd);
        g_ptr_array_add(s->clients, c);
        send_greeting(c);
    }
}

/* Sends @text to every negotiated client; sending may close clients, so use a copy. */
static void broadcast(QmpServer *s, const char *text)
{
    g_autoptr(GPtrArray) snapshot =
        g_ptr_array_new_full(s->clients->len, (GDestroyNotify)qmp_client_unref);
    gsize len = strlen(text);

    for (guint i = 0; i < s->clients->len; i++)
        g_ptr_array_add(snapshot, qmp_client_ref(g_ptr_array_index(s->clients, i)));
    for (guint i = 0; i < snapshot->len; i++) {
        QmpClient *c = g_ptr_array_index(snapshot, i);

        if (c->negotiated)
            qmp_client_send(c, text, len);
    }
}

/* Broadcasts queued events in order. Runs in the server's context. */
static void drain_events(QmpServer *s)
{
    for (;;) {
        g_autofree char *text = NULL;

        g_mutex_lock(&s->event_lock);
        text = g_queue_pop_head(&s->event_queue);
        g_mutex_unlock(&s->event_lock);
        if (!text)
            return;
        broadcast(s, text);
    }
}

static gboolean on_event_wakeup(gpointer data)
{
    QmpServer *s = data;

    drain_events(s);
    return G_SOURCE_CONTINUE;
}

void qmp_server_emit_event(QmpServer *s, const char *event, JsonNode *data)
{
    gint64 now = g_get_real_time();
    g_autoptr(JsonNode) root = json_node_new(JSON_NODE_OBJECT);
    JsonObject *obj = json_object_new();
    JsonObject *ts = json_object_new();
    g_autofree char *text = NULL;
    gboolean direct = FALSE;

    g_return_if_fail(s && event);

    json_object_set_int_member(ts, "seconds", now / G_USEC_PER_SEC);
    json_object_set_int_member(ts, "microseconds", now % G_USEC_PER_SEC);
    json_object_set_object_member(obj, "timestamp", ts);
    json_object_set_string_member(obj, "event", event);
    if (data)
        json_object_set_member(obj, "data", data);
    json_node_take_object(root, obj);
    text = qmp_json_to_string(root);

    g_mutex_lock(&s->event_lock);
    if (s->context) {
        g_queue_push_tail(&s->event_queue, g_strconcat(text, "\r\n", NULL));
        /* the owner sends at once, after whatever other threads queued first */
        direct = g_main_context_is_owner(s->context);
        if (!direct)
            g_source_set_ready_time(s->event_source, 0);
    }
    g_mutex_unlock(&s->event_lock);
    if (direct)
        drain_events(s);
}

void qmp_server_flush(QmpServer *s)
{
    gint64 deadline = g_get_monotonic_time() + FLUSH_TIMEOUT_US;
    g_autoptr(GPtrArray) snapshot = NULL;

    g_return_if_fail(s);
    if (!s->context)
        return;
    drain_events(s);
    snapshot = g_ptr_array_new_full(s->clients->len, (GDestroyNotify)qmp_client_unref);
    for (guint i = 0; i < s->clients->len; i++)
        g_ptr_array_add(snapshot, qmp_client_ref(g_ptr_array_index(s->clients, i)));
    for (guint i = 0; i < snapshot->len; i++)
        qmp_client_flush(g_ptr_array_index(snapshot, i), deadline);
}

/* Unlinks the socket path only if it is still the socket this server created. */
static void unlink_own_socket(QmpServer *s)
{
    struct stat st;

    if (s->path && lstat(s->path, &st) == 0 && st.st_dev == s->sock_dev && st.st_ino == s->sock_ino)
        unlink(s->path);
}

void qmp_server_free(QmpServer *s)
{
    if (!s)
        return;

    destroy_source(&s->listen_source);
    destroy_source(&s->resume_source);
    destroy_source(&s->event_source);
    while (s->clients->len > 0)
        qmp_client_close(g_ptr_array_index(s->clients, s->clients->len - 1));
    g_ptr_array_unref(s->clients);
    if (s->listen_fd >= 0) {
        unlink_own_socket(s);
        close(s->listen_fd);
    }
    qmp_client_close(s->detached);
    qmp_client_unref(s->detached);
    qmp_fds_close_all(s);
    qmp_dispatch_finalize(s);
    g_queue_clear_full(&s->event_queue, g_free);
    g_mutex_clear(&s->event_lock);
    if (s->context)
        g_main_context_unref(s->context);
    g_free(s->path);
    g_free(s->package);
    g_free(s);
}
