#include "qmp_client.h"
#include "qmp_stream.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

/* Limits on what a server may make us buffer. */
#define MAX_MESSAGE (64u << 20)
#define MAX_DEPTH   128u
#define MAX_EVENTS  4096u

struct QmpConn {
    int fd;
    char *what;
    QmpStream *stream;
    GQueue texts;        /* char *: complete texts from the framer, not yet parsed */
    GQueue events;       /* JsonObject *: queued events, oldest first */
    char *framing_error; /* set by the framer callback */
    JsonObject *greeting;
    gint64 next_id;
    int timeout_ms;
    bool dead;
};

/* ---- errors ---- */

typedef struct {
    char *klass;
} QmpConnErrorPrivate;

static void qmp_conn_error_private_init(QmpConnErrorPrivate *p)
{
    p->klass = NULL;
}

static void qmp_conn_error_private_copy(const QmpConnErrorPrivate *src, QmpConnErrorPrivate *dst)
{
    dst->klass = g_strdup(src->klass);
}

static void qmp_conn_error_private_clear(QmpConnErrorPrivate *p)
{
    g_clear_pointer(&p->klass, g_free);
}

/* Extended error: the class travels with the GError, so callers need no side channel. */
G_DEFINE_EXTENDED_ERROR(QmpConnError, qmp_conn_error)

const char *qmp_conn_error_class(const GError *error)
{
    if (!error || !g_error_matches(error, QMP_CONN_ERROR, QMP_CONN_ERROR_COMMAND))
        return NULL;
    QmpConnErrorPrivate *p = qmp_conn_error_get_private(error);
    return p ? p->klass : NULL;
}

/* Marks the connection broken and fails with `code`. */
static void G_GNUC_PRINTF(4, 5)
    conn_fail(QmpConn *c, GError **error, QmpConnError code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    g_autofree char *msg = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    c->dead = true;
    g_set_error(error, QMP_CONN_ERROR, code, "%s: %s", c->what, msg);
}

/* ---- I/O ---- */

static gboolean on_text(const char *json, gsize len, const GError *error, gpointer data)
{
    QmpConn *c = data;
    if (error) {
        if (!c->framing_error)
            c->framing_error = g_strdup(error->message);
        return FALSE;
    }
    g_queue_push_tail(&c->texts, g_strndup(json, len));
    return TRUE;
}

static int remaining_ms(gint64 deadline)
{
    if (deadline < 0)
        return -1;
    gint64 left = deadline - g_get_monotonic_time();
    if (left <= 0)
        return 0;
    return (int)MIN((left + 999) / 1000, (gint64)G_MAXINT);
}

static gint64 deadline_after(int timeout_ms)
{
    return timeout_ms < 0 ? -1 : g_get_monotonic_time() + (gint64)timeout_ms * 1000;
}

/* Waits at most until `deadline` (-1: forever) for input and feeds what came to
 * the framer. Returns 1 when bytes were read, 0 when the deadline passed, -1 with
 * an error (the connection is then dead). */
static int pump(QmpConn *c, gint64 deadline, GError **error)
{
    for (;;) {
        struct pollfd pfd = { .fd = c->fd, .events = POLLIN };
        int r = poll(&pfd, 1, remaining_ms(deadline));
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            conn_fail(c, error, QMP_CONN_ERROR_PROTOCOL, "poll: %s", g_strerror(errno));
            return -1;
        }
        if (r == 0)
            return 0;
        char buf[65536];
        ssize_t n = recv(c->fd, buf, sizeof(buf), MSG_DONTWAIT);
        if (n < 0 && (errno == EINTR || errno == EAGAIN))
            continue;
        if (n < 0 && errno != ECONNRESET) {
            conn_fail(c, error, QMP_CONN_ERROR_PROTOCOL, "read: %s", g_strerror(errno));
            return -1;
        }
        if (n <= 0) {
            conn_fail(c, error, QMP_CONN_ERROR_CLOSED, "the QMP server closed the connection");
            return -1;
        }
        qmp_stream_feed(c->stream, buf, (gsize)n);
        if (c->framing_error) {
            conn_fail(c, error, QMP_CONN_ERROR_PROTOCOL, "malformed QMP output: %s",
                      c->framing_error);
            return -1;
        }
        return 1;
    }
}

/* Reads until at least one complete text is queued. Returns false with an error
 * (TIMEOUT when `deadline` passes; -1 waits forever). */
static bool fill(QmpConn *c, gint64 deadline, GError **error)
{
    while (g_queue_is_empty(&c->texts)) {
        int r = pump(c, deadline, error);
        if (r < 0)
            return false;
        if (r == 0) {
            /* A late answer would be mistaken for the next one: give up on the socket. */
            conn_fail(c, error, QMP_CONN_ERROR_TIMEOUT, "no answer from the QMP server in time");
            return false;
        }
    }
    return true;
}

/* Returns the next message from the server (an object; caller unrefs). */
static JsonObject *read_message(QmpConn *c, gint64 deadline, GError **error)
{
    if (!fill(c, deadline, error))
        return NULL;
    g_autofree char *text = g_queue_pop_head(&c->texts);
    g_autoptr(JsonParser) parser = json_parser_new_immutable();
    g_autoptr(GError) local = NULL;
    if (!json_parser_load_from_data(parser, text, -1, &local)) {
        conn_fail(c, error, QMP_CONN_ERROR_PROTOCOL, "malformed JSON from the QMP server: %s",
                  local->message);
        return NULL;
    }
    JsonNode *root = json_parser_get_root(parser);
    if (!root || !JSON_NODE_HOLDS_OBJECT(root)) {
        conn_fail(c, error, QMP_CONN_ERROR_PROTOCOL,
                  "the QMP server sent something other than an object: %.200s", text);
        return NULL;
    }
    return json_object_ref(json_node_get_object(root));
}

static bool is_event(JsonObject *o)
{
    JsonNode *n = json_object_get_member(o, "event");
    return n && JSON_NODE_HOLDS_VALUE(n) && json_node_get_value_type(n) == G_TYPE_STRING;
}

static void queue_event(QmpConn *c, JsonObject *o)
{
    if (g_queue_get_length(&c->events) >= MAX_EVENTS)
        json_object_unref(g_queue_pop_head(&c->events));
    g_queue_push_tail(&c->events, json_object_ref(o));
}

/* Sends all of `data`, the first chunk with `fd` attached when fd >= 0. */
static bool send_all(QmpConn *c, const char *data, size_t len, int fd, GError **error)
{
    bool with_fd = fd >= 0;
    while (len > 0) {
        union {
            struct cmsghdr align;
            char buf[CMSG_SPACE(sizeof(int))];
        } control;
        struct iovec iov = { .iov_base = (char *)data, .iov_len = len };
        struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1 };
        if (with_fd) {
            memset(&control, 0, sizeof(control));
            msg.msg_control = control.buf;
            msg.msg_controllen = sizeof(control.buf);
            struct cmsghdr *cm = CMSG_FIRSTHDR(&msg);
            cm->cmsg_level = SOL_SOCKET;
            cm->cmsg_type = SCM_RIGHTS;
            cm->cmsg_len = CMSG_LEN(sizeof(int));
            memcpy(CMSG_DATA(cm), &fd, sizeof(int));
        }
        ssize_t n = sendmsg(c->fd, &msg, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EPIPE || errno == ECONNRESET)) {
            conn_fail(c, error, QMP_CONN_ERROR_CLOSED, "the QMP server closed the connection");
            return false;
        }
        if (n < 0) {
            conn_fail(c, error, QMP_CONN_ERROR_PROTOCOL, "write: %s", g_strerror(errno));
            return false;
        }
        with_fd = false;
        data += n;
        len -= (size_t)n;
    }
    return true;
}

static bool check_alive(QmpConn *c, GError **error)
{
    if (!c->dead)
        return true;
    g_set_error(error, QMP_CONN_ERROR, QMP_CONN_ERROR_CLOSED,
                "%s: the QMP connection is closed after an earlier error", c->what);
    return false;
}

/* ---- connection ---- */

QmpConn *qmp_conn_new_fd(int fd, const char *what, int timeout_ms, GError **error)
{
    g_autoptr(QmpConn) c = g_new0(QmpConn, 1);
    c->fd = fd;
    c->what = g_strdup(what);
    c->timeout_ms = -1;
    c->next_id = 1;
    c->stream = qmp_stream_new(MAX_MESSAGE, MAX_DEPTH, on_text, c);
    g_queue_init(&c->texts);
    g_queue_init(&c->events);

    g_autoptr(JsonObject) msg = read_message(c, deadline_after(timeout_ms), error);
    if (!msg) {
        g_prefix_error(error, "waiting for the QMP greeting: ");
        return NULL;
    }
    JsonNode *qmp = json_object_get_member(msg, "QMP");
    if (!qmp || !JSON_NODE_HOLDS_OBJECT(qmp)) {
        conn_fail(c, error, QMP_CONN_ERROR_PROTOCOL,
                  "not a QMP server: the first message has no \"QMP\" greeting object");
        return NULL;
    }
    c->greeting = json_object_ref(json_node_get_object(qmp));
    return g_steal_pointer(&c);
}

QmpConn *qmp_conn_connect_unix(const char *path, int timeout_ms, GError **error)
{
    struct sockaddr_un addr = { .sun_family = AF_UNIX };
    if (strlen(path) >= sizeof(addr.sun_path)) {
        g_set_error(error, QMP_CONN_ERROR, QMP_CONN_ERROR_CONNECT,
                    "%s: socket path longer than %zu bytes", path, sizeof(addr.sun_path) - 1);
        return NULL;
    }
    memcpy(addr.sun_path, path, strlen(path) + 1);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        int err = errno;
        g_set_error(error, QMP_CONN_ERROR, QMP_CONN_ERROR_CONNECT, "%s: socket: %s", path,
                    g_strerror(err));
        return NULL;
    }
    int r;
    do {
        r = connect(fd, (struct sockaddr *)&addr, sizeof(addr));
    } while (r < 0 && errno == EINTR);
    if (r < 0) {
        int err = errno;
        close(fd);
        g_set_error(error, QMP_CONN_ERROR, QMP_CONN_ERROR_CONNECT, "%s: cannot connect: %s", path,
                    g_strerror(err));
        return NULL;
    }
    return qmp_conn_new_fd(fd, path, timeout_ms, error);
}

void qmp_conn_free(QmpConn *c)
{
    if (!c)
        return;
    if (c->fd >= 0)
        close(c->fd);
    g_queue_clear_full(&c->texts, g_free);
    g_queue_clear_full(&c->events, (GDestroyNotify)json_object_unref);
    g_clear_pointer(&c->stream, qmp_stream_free);
    g_clear_pointer(&c->greeting, json_object_unref);
    g_free(c->framing_error);
    g_free(c->what);
    g_free(c);
}

JsonObject *qmp_conn_greeting(QmpConn *c)
{
    return c->greeting;
}

void qmp_conn_set_timeout(QmpConn *c, int timeout_ms)
{
    c->timeout_ms = timeout_ms;
}

unsigned qmp_conn_queued_events(const QmpConn *c)
{
    return g_queue_get_length((GQueue *)&c->events);
}

/* ---- commands ---- */

static char *request_text(const char *command, JsonObject *args, gint64 id)
{
    g_autoptr(JsonBuilder) b = json_builder_new_immutable();
    json_builder_begin_object(b);
    json_builder_set_member_name(b, "execute");
    json_builder_add_string_value(b, command);
    if (args) {
        json_builder_set_member_name(b, "arguments");
        JsonNode *n = json_node_alloc();
        json_node_init_object(n, args);
        json_builder_add_value(b, n);
    }
    json_builder_set_member_name(b, "id");
    json_builder_add_int_value(b, id);
    json_builder_end_object(b);
    g_autoptr(JsonNode) root = json_builder_get_root(b);
    g_autoptr(JsonGenerator) gen = json_generator_new();
    json_generator_set_root(gen, root);
    g_autofree char *text = json_generator_to_data(gen, NULL);
    return g_strconcat(text, "\r\n", NULL);
}

/* The id of a response: -1 when it has none (servers need not echo it), -2 when it
 * is not one of ours. */
static gint64 response_id(JsonObject *o)
{
    JsonNode *n = json_object_get_member(o, "id");
    if (!n)
        return -1;
    if (!JSON_NODE_HOLDS_VALUE(n) || json_node_get_value_type(n) != G_TYPE_INT64)
        return -2;
    return json_node_get_int(n);
}

static JsonNode *command_error(QmpConn *c, const char *command, JsonObject *o, GError **error)
{
    JsonNode *en = json_object_get_member(o, "error");
    JsonObject *eo = en && JSON_NODE_HOLDS_OBJECT(en) ? json_node_get_object(en) : NULL;
    const char *klass = eo ? json_object_get_string_member_with_default(eo, "class", NULL) : NULL;
    const char *desc = eo ? json_object_get_string_member_with_default(eo, "desc", NULL) : NULL;
    if (!klass || !desc) {
        conn_fail(c, error, QMP_CONN_ERROR_PROTOCOL,
                  "%s: malformed error response (no \"class\" or \"desc\" string)", command);
        return NULL;
    }
    if (error) {
        GError *e = g_error_new_literal(QMP_CONN_ERROR, QMP_CONN_ERROR_COMMAND, desc);
        qmp_conn_error_get_private(e)->klass = g_strdup(klass);
        g_propagate_error(error, e);
    }
    return NULL;
}

static JsonNode *execute(QmpConn *c, const char *command, JsonObject *args, int fd, GError **error)
{
    if (!check_alive(c, error))
        return NULL;
    gint64 id = c->next_id++;
    g_autofree char *text = request_text(command, args, id);
    if (!send_all(c, text, strlen(text), fd, error))
        return NULL;
    gint64 deadline = deadline_after(c->timeout_ms);
    for (;;) {
        g_autoptr(JsonObject) o = read_message(c, deadline, error);
        if (!o) {
            g_prefix_error(error, "%s: ", command);
            return NULL;
        }
        if (is_event(o)) {
            queue_event(c, o);
            continue;
        }
        gint64 rid = response_id(o);
        if (rid != -1 && rid != id) {
            conn_fail(c, error, QMP_CONN_ERROR_PROTOCOL,
                      "%s: response with an unexpected id (waiting for %" G_GINT64_FORMAT ")",
                      command, id);
            return NULL;
        }
        if (json_object_has_member(o, "error"))
            return command_error(c, command, o, error);
        JsonNode *ret = json_object_get_member(o, "return");
        if (!ret) {
            conn_fail(c, error, QMP_CONN_ERROR_PROTOCOL,
                      "%s: response without \"return\" or \"error\"", command);
            return NULL;
        }
        return json_node_copy(ret);
    }
}

JsonNode *qmp_conn_execute(QmpConn *c, const char *command, JsonObject *args, GError **error)
{
    return execute(c, command, args, -1, error);
}

JsonNode *qmp_conn_execute_fd(QmpConn *c, const char *command, JsonObject *args, int fd,
                              GError **error)
{
    g_return_val_if_fail(fd >= 0, NULL);
    return execute(c, command, args, fd, error);
}

bool qmp_conn_negotiate(QmpConn *c, GError **error)
{
    g_autoptr(JsonNode) r = qmp_conn_execute(c, "qmp_capabilities", NULL, error);
    return r != NULL;
}

/* ---- events ---- */

static JsonObject *take_event(QmpConn *c, const char *name)
{
    for (GList *l = c->events.head; l; l = l->next) {
        JsonObject *o = l->data;
        if (!name || !g_strcmp0(json_object_get_string_member(o, "event"), name)) {
            g_queue_delete_link(&c->events, l);
            return o;
        }
    }
    return NULL;
}

JsonObject *qmp_conn_wait_event(QmpConn *c, const char *name, int timeout_ms, GError **error)
{
    JsonObject *ev = take_event(c, name);
    if (ev)
        return ev;
    if (!check_alive(c, error))
        return NULL;
    gint64 deadline = deadline_after(timeout_ms);
    for (;;) {
        /* Not fill(): running out of time here leaves the connection usable. */
        while (g_queue_is_empty(&c->texts)) {
            int r = pump(c, deadline, error);
            if (r < 0)
                return NULL;
            if (r == 0) {
                g_set_error(error, QMP_CONN_ERROR, QMP_CONN_ERROR_TIMEOUT,
                            "%s: no %s event within %d ms", c->what, name ? name : "QMP",
                            timeout_ms);
                return NULL;
            }
        }
        g_autoptr(JsonObject) o = read_message(c, -1, error);
        if (!o)
            return NULL;
        if (!is_event(o)) {
            conn_fail(c, error, QMP_CONN_ERROR_PROTOCOL,
                      "unexpected message while waiting for an event (no command pending)");
            return NULL;
        }
        if (!name || !g_strcmp0(json_object_get_string_member(o, "event"), name))
            return g_steal_pointer(&o);
        queue_event(c, o);
    }
}
