/*
 * The CLI's blocking QMP client (cli/qmp_client.c) against the real QMP server
 * library (vmm/qmp) running in a thread with its own GMainContext, and against
 * hand-written misbehaving servers.
 */
#include "qmp.h"
#include "qmp_client.h"
#include "qmp_priv.h" /* QmpClient's socket, to drop a client in the middle of a request */

#include <errno.h>
#include <glib/gstdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#define TIMEOUT_MS 10000

typedef struct {
    GThread *thread;
    GMainContext *ctx;
    GMainLoop *loop;
    QmpServer *server;
    char *dir;
    char *path;
    GMutex lock;
    GCond cond;
    bool ready;
} Fixture;

/* ---- server-side test commands (run in the server thread) ---- */

/* A new node owning `o` (json_node_init_object() would take a second reference). */
static JsonNode *object_node(JsonObject *o)
{
    JsonNode *n = json_node_new(JSON_NODE_OBJECT);
    json_node_take_object(n, o);
    return n;
}

static JsonNode *empty_object(void)
{
    return object_node(json_object_new());
}

static JsonNode *cmd_echo(QmpClient *c, JsonObject *args, gpointer data, GError **error)
{
    JsonNode *n = json_node_alloc();
    return json_node_init_object(n, args);
}

static JsonNode *cmd_fail(QmpClient *c, JsonObject *args, gpointer data, GError **error)
{
    g_set_error(error, QMP_ERROR, QMP_ERROR_DEVICE_NOT_FOUND,
                "Device 'disk0' not found \"quoted\" \\ and unicode \xc3\xa9");
    return NULL;
}

static JsonNode *cmd_event(QmpClient *c, JsonObject *args, gpointer data, GError **error)
{
    Fixture *f = data;
    JsonObject *d = json_object_new();
    json_object_set_int_member(d, "n", 1);
    /* Sent before the response: the client must queue them while it waits. */
    qmp_server_emit_event(f->server, "X_FIRST", object_node(d));
    qmp_server_emit_event(f->server, "X_SECOND", NULL);
    return empty_object();
}

static gboolean emit_later(gpointer data)
{
    Fixture *f = data;
    qmp_server_emit_event(f->server, "X_LATER", NULL);
    return G_SOURCE_REMOVE;
}

static JsonNode *cmd_event_later(QmpClient *c, JsonObject *args, gpointer data, GError **error)
{
    GSource *s = g_timeout_source_new(100);
    g_source_set_callback(s, emit_later, data, NULL);
    g_source_attach(s, g_main_context_get_thread_default());
    g_source_unref(s);
    return empty_object();
}

static JsonNode *cmd_drop(QmpClient *c, JsonObject *args, gpointer data, GError **error)
{
    /* The client is waiting for this response; it never comes. */
    shutdown(c->fd, SHUT_RDWR);
    return empty_object();
}

static JsonNode *cmd_sleep(QmpClient *c, JsonObject *args, gpointer data, GError **error)
{
    g_usleep(300 * 1000);
    return empty_object();
}

static const QmpArgSpec echo_args[] = { { "s", QMP_ARG_STR, TRUE },
                                        { "i", QMP_ARG_INT, TRUE },
                                        { NULL } };

static gpointer server_main(gpointer data)
{
    Fixture *f = data;
    g_autoptr(GError) error = NULL;

    g_main_context_push_thread_default(f->ctx);
    f->server = qmp_server_new("test-pkg", 9, 8, 7);
    const QmpCommand cmds[] = {
        { "x-echo", cmd_echo, echo_args }, { "x-fail", cmd_fail, NULL },
        { "x-event", cmd_event, NULL },    { "x-event-later", cmd_event_later, NULL },
        { "x-drop", cmd_drop, NULL },      { "x-sleep", cmd_sleep, NULL },
    };
    for (unsigned i = 0; i < G_N_ELEMENTS(cmds); i++)
        qmp_server_register(f->server, &cmds[i], f);
    g_assert_true(qmp_server_listen_unix(f->server, f->path, &error));
    g_assert_no_error(error);

    g_mutex_lock(&f->lock);
    f->ready = true;
    g_cond_signal(&f->cond);
    g_mutex_unlock(&f->lock);

    g_main_loop_run(f->loop);
    g_clear_pointer(&f->server, qmp_server_free);
    while (g_main_context_iteration(f->ctx, FALSE))
        ;
    g_main_context_pop_thread_default(f->ctx);
    return NULL;
}

static void server_start(Fixture *f)
{
    f->ctx = g_main_context_new();
    f->loop = g_main_loop_new(f->ctx, FALSE);
    f->ready = false;
    f->thread = g_thread_new("qmp-server", server_main, f);
    g_mutex_lock(&f->lock);
    while (!f->ready)
        g_cond_wait(&f->cond, &f->lock);
    g_mutex_unlock(&f->lock);
}

static gboolean quit_loop(gpointer data)
{
    g_main_loop_quit(data);
    return G_SOURCE_REMOVE;
}

/* Stops the server thread; the server closes every client. */
static void server_stop(Fixture *f)
{
    if (!f->thread)
        return;
    g_main_context_invoke(f->ctx, quit_loop, f->loop);
    g_thread_join(f->thread);
    f->thread = NULL;
    g_main_loop_unref(f->loop);
    g_main_context_unref(f->ctx);
}

static void fix_setup(Fixture *f, gconstpointer data)
{
    g_autoptr(GError) error = NULL;
    g_mutex_init(&f->lock);
    g_cond_init(&f->cond);
    f->dir = g_dir_make_tmp("test-qmp-client-XXXXXX", &error);
    g_assert_no_error(error);
    f->path = g_build_filename(f->dir, "qmp.sock", NULL);
    server_start(f);
}

static void fix_teardown(Fixture *f, gconstpointer data)
{
    server_stop(f);
    g_unlink(f->path);
    g_assert_cmpint(g_rmdir(f->dir), ==, 0);
    g_free(f->path);
    g_free(f->dir);
    g_mutex_clear(&f->lock);
    g_cond_clear(&f->cond);
}

static QmpConn *connect_negotiated(Fixture *f)
{
    g_autoptr(GError) error = NULL;
    QmpConn *c = qmp_conn_connect_unix(f->path, TIMEOUT_MS, &error);
    g_assert_no_error(error);
    g_assert_nonnull(c);
    qmp_conn_set_timeout(c, TIMEOUT_MS);
    g_assert_true(qmp_conn_negotiate(c, &error));
    g_assert_no_error(error);
    return c;
}

/* ---- tests against the real server ---- */

static void test_greeting(Fixture *f, gconstpointer data)
{
    g_autoptr(GError) error = NULL;
    g_autoptr(QmpConn) c = qmp_conn_connect_unix(f->path, TIMEOUT_MS, &error);
    g_assert_no_error(error);
    JsonObject *g = qmp_conn_greeting(c);
    g_assert_nonnull(g);
    JsonObject *v = json_object_get_object_member(g, "version");
    JsonObject *q = json_object_get_object_member(v, "qemu");
    g_assert_cmpint(json_object_get_int_member(q, "major"), ==, 9);
    g_assert_cmpint(json_object_get_int_member(q, "minor"), ==, 8);
    g_assert_cmpint(json_object_get_int_member(q, "micro"), ==, 7);
    g_assert_cmpstr(json_object_get_string_member(v, "package"), ==, "test-pkg");
    g_assert_true(json_object_has_member(g, "capabilities"));

    /* Before negotiation the server refuses commands: an error, the connection stays. */
    g_autoptr(JsonNode) r = qmp_conn_execute(c, "query-version", NULL, &error);
    g_assert_null(r);
    g_assert_error(error, QMP_CONN_ERROR, QMP_CONN_ERROR_COMMAND);
    g_assert_cmpstr(qmp_conn_error_class(error), ==, "CommandNotFound");
    g_assert_cmpstr(error->message, ==,
                    "Expecting capabilities negotiation with 'qmp_capabilities'");
    g_clear_error(&error);
    g_assert_true(qmp_conn_negotiate(c, &error));
    g_assert_no_error(error);
    g_autoptr(JsonNode) v2 = qmp_conn_execute(c, "query-version", NULL, &error);
    g_assert_no_error(error);
    g_assert_true(JSON_NODE_HOLDS_OBJECT(v2));
    g_assert_cmpstr(json_object_get_string_member(json_node_get_object(v2), "package"), ==,
                    "test-pkg");
}

static void test_command(Fixture *f, gconstpointer data)
{
    g_autoptr(GError) error = NULL;
    g_autoptr(QmpConn) c = connect_negotiated(f);
    g_autoptr(JsonObject) args = json_object_new();
    json_object_set_string_member(args, "s", "h\xc3\xa9llo \"world\"\n");
    json_object_set_int_member(args, "i", -42);
    for (int round = 0; round < 3; round++) {
        g_autoptr(JsonNode) r = qmp_conn_execute(c, "x-echo", args, &error);
        g_assert_no_error(error);
        JsonObject *o = json_node_get_object(r);
        g_assert_cmpstr(json_object_get_string_member(o, "s"), ==, "h\xc3\xa9llo \"world\"\n");
        g_assert_cmpint(json_object_get_int_member(o, "i"), ==, -42);
    }
    /* args are not consumed */
    g_assert_cmpint(json_object_get_int_member(args, "i"), ==, -42);
    g_autoptr(JsonNode) empty = qmp_conn_execute(c, "x-echo", NULL, &error);
    g_assert_no_error(error);
    g_assert_cmpuint(json_object_get_size(json_node_get_object(empty)), ==, 0);
    g_autoptr(JsonNode) st = qmp_conn_execute(c, "query-commands", NULL, &error);
    g_assert_no_error(error);
    g_assert_true(JSON_NODE_HOLDS_ARRAY(st));
}

static void test_error(Fixture *f, gconstpointer data)
{
    g_autoptr(GError) error = NULL;
    g_autoptr(QmpConn) c = connect_negotiated(f);

    g_autoptr(JsonNode) r = qmp_conn_execute(c, "x-fail", NULL, &error);
    g_assert_null(r);
    g_assert_error(error, QMP_CONN_ERROR, QMP_CONN_ERROR_COMMAND);
    g_assert_cmpstr(qmp_conn_error_class(error), ==, "DeviceNotFound");
    g_assert_cmpstr(error->message, ==,
                    "Device 'disk0' not found \"quoted\" \\ and unicode \xc3\xa9");
    /* The class survives a copy (extended error private data). */
    g_autoptr(GError) copy = g_error_copy(error);
    g_assert_cmpstr(qmp_conn_error_class(copy), ==, "DeviceNotFound");
    g_clear_error(&error);

    g_autoptr(JsonNode) r2 = qmp_conn_execute(c, "no-such-command", NULL, &error);
    g_assert_null(r2);
    g_assert_cmpstr(qmp_conn_error_class(error), ==, "CommandNotFound");
    g_assert_cmpstr(error->message, ==, "The command no-such-command has not been found");
    g_clear_error(&error);

    /* Argument checking by the server */
    g_autoptr(JsonObject) bad = json_object_new();
    json_object_set_string_member(bad, "i", "not a number");
    g_autoptr(JsonNode) r3 = qmp_conn_execute(c, "x-echo", bad, &error);
    g_assert_null(r3);
    g_assert_cmpstr(qmp_conn_error_class(error), ==, "GenericError");
    g_clear_error(&error);

    /* Errors of other kinds have no class. */
    g_autoptr(GError) other = g_error_new_literal(G_IO_ERROR, G_IO_ERROR_FAILED, "x");
    g_assert_null(qmp_conn_error_class(other));
    g_assert_null(qmp_conn_error_class(NULL));

    /* Still usable after command errors. */
    g_autoptr(JsonNode) ok = qmp_conn_execute(c, "x-echo", NULL, &error);
    g_assert_no_error(error);
    g_assert_nonnull(ok);
}

static void test_events(Fixture *f, gconstpointer data)
{
    g_autoptr(GError) error = NULL;
    g_autoptr(QmpConn) c = connect_negotiated(f);

    g_autoptr(JsonNode) r = qmp_conn_execute(c, "x-event", NULL, &error);
    g_assert_no_error(error);
    g_assert_cmpuint(qmp_conn_queued_events(c), ==, 2);

    /* Taken by name, out of order; others stay queued. */
    g_autoptr(JsonObject) second = qmp_conn_wait_event(c, "X_SECOND", 0, &error);
    g_assert_no_error(error);
    g_assert_cmpstr(json_object_get_string_member(second, "event"), ==, "X_SECOND");
    g_assert_false(json_object_has_member(second, "data"));
    g_assert_true(json_object_has_member(second, "timestamp"));
    g_autoptr(JsonObject) first = qmp_conn_wait_event(c, NULL, 0, &error);
    g_assert_no_error(error);
    g_assert_cmpstr(json_object_get_string_member(first, "event"), ==, "X_FIRST");
    g_assert_cmpint(json_object_get_int_member(json_object_get_object_member(first, "data"), "n"),
                    ==, 1);
    g_assert_cmpuint(qmp_conn_queued_events(c), ==, 0);

    /* Nothing comes: a timeout that leaves the connection usable. */
    gint64 t0 = g_get_monotonic_time();
    g_autoptr(JsonObject) none = qmp_conn_wait_event(c, "X_NEVER", 50, &error);
    g_assert_null(none);
    g_assert_error(error, QMP_CONN_ERROR, QMP_CONN_ERROR_TIMEOUT);
    g_assert_cmpint(g_get_monotonic_time() - t0, >=, 45 * 1000);
    g_clear_error(&error);

    /* An event that arrives while waiting; another one is queued on the way. */
    g_autoptr(JsonNode) r2 = qmp_conn_execute(c, "x-event-later", NULL, &error);
    g_assert_no_error(error);
    g_autoptr(JsonNode) r3 = qmp_conn_execute(c, "x-event", NULL, &error);
    g_assert_no_error(error);
    g_autoptr(JsonObject) later = qmp_conn_wait_event(c, "X_LATER", TIMEOUT_MS, &error);
    g_assert_no_error(error);
    g_assert_cmpstr(json_object_get_string_member(later, "event"), ==, "X_LATER");
    g_assert_cmpuint(qmp_conn_queued_events(c), ==, 2);

    /* An event emitted from another thread than the server's. */
    qmp_server_emit_event(f->server, "X_THREAD", NULL);
    g_autoptr(JsonObject) th = qmp_conn_wait_event(c, "X_THREAD", TIMEOUT_MS, &error);
    g_assert_no_error(error);
    g_assert_nonnull(th);
}

static void test_getfd(Fixture *f, gconstpointer data)
{
    g_autoptr(GError) error = NULL;
    g_autoptr(QmpConn) c = connect_negotiated(f);
    int p[2];
    g_assert_cmpint(pipe(p), ==, 0);

    g_autoptr(JsonObject) args = json_object_new();
    json_object_set_string_member(args, "fdname", "snap");
    g_autoptr(JsonNode) r = qmp_conn_execute_fd(c, "getfd", args, p[1], &error);
    g_assert_no_error(error);
    g_assert_nonnull(r);
    /* The fd stays ours */
    g_assert_cmpint(write(p[1], "x", 1), ==, 1);

    /* The server holds it under its name: closefd works once. */
    g_autoptr(JsonNode) r2 = qmp_conn_execute(c, "closefd", args, &error);
    g_assert_no_error(error);
    g_autoptr(JsonNode) r3 = qmp_conn_execute(c, "closefd", args, &error);
    g_assert_null(r3);
    g_assert_error(error, QMP_CONN_ERROR, QMP_CONN_ERROR_COMMAND);
    g_assert_cmpstr(qmp_conn_error_class(error), ==, "GenericError");
    g_clear_error(&error);

    /* getfd without an fd is the server's error, verbatim. */
    g_autoptr(JsonNode) r4 = qmp_conn_execute(c, "getfd", args, &error);
    g_assert_null(r4);
    g_assert_error(error, QMP_CONN_ERROR, QMP_CONN_ERROR_COMMAND);
    g_assert_nonnull(strstr(error->message, "SCM_RIGHTS"));
    close(p[0]);
    close(p[1]);
}

static void test_drop_mid_request(Fixture *f, gconstpointer data)
{
    g_autoptr(GError) error = NULL;
    g_autoptr(QmpConn) c = connect_negotiated(f);

    g_autoptr(JsonNode) r = qmp_conn_execute(c, "x-drop", NULL, &error);
    g_assert_null(r);
    g_assert_error(error, QMP_CONN_ERROR, QMP_CONN_ERROR_CLOSED);
    g_assert_nonnull(strstr(error->message, "x-drop"));
    g_assert_nonnull(strstr(error->message, "closed the connection"));
    g_clear_error(&error);
    /* Every later call fails at once, without touching the socket. */
    g_autoptr(JsonNode) r2 = qmp_conn_execute(c, "x-echo", NULL, &error);
    g_assert_null(r2);
    g_assert_error(error, QMP_CONN_ERROR, QMP_CONN_ERROR_CLOSED);
    g_clear_error(&error);
    g_autoptr(JsonObject) ev = qmp_conn_wait_event(c, NULL, 10, &error);
    g_assert_null(ev);
    g_assert_error(error, QMP_CONN_ERROR, QMP_CONN_ERROR_CLOSED);
}

static void test_server_exit(Fixture *f, gconstpointer data)
{
    g_autoptr(GError) error = NULL;
    g_autoptr(QmpConn) a = connect_negotiated(f);
    g_autoptr(QmpConn) b = connect_negotiated(f);

    server_stop(f);
    /* Idle client waiting for an event: sees the close. */
    g_autoptr(JsonObject) ev = qmp_conn_wait_event(a, "X", TIMEOUT_MS, &error);
    g_assert_null(ev);
    g_assert_error(error, QMP_CONN_ERROR, QMP_CONN_ERROR_CLOSED);
    g_clear_error(&error);
    /* A request on a closed socket: EPIPE or EOF, never SIGPIPE. */
    g_autoptr(JsonNode) r = qmp_conn_execute(b, "x-echo", NULL, &error);
    g_assert_null(r);
    g_assert_error(error, QMP_CONN_ERROR, QMP_CONN_ERROR_CLOSED);
}

static void test_timeout(Fixture *f, gconstpointer data)
{
    g_autoptr(GError) error = NULL;
    g_autoptr(QmpConn) c = connect_negotiated(f);
    qmp_conn_set_timeout(c, 50);
    g_autoptr(JsonNode) r = qmp_conn_execute(c, "x-sleep", NULL, &error);
    g_assert_null(r);
    g_assert_error(error, QMP_CONN_ERROR, QMP_CONN_ERROR_TIMEOUT);
    g_clear_error(&error);
    /* The late answer must not be taken for the next one: the connection is dead. */
    g_usleep(400 * 1000);
    g_autoptr(JsonNode) r2 = qmp_conn_execute(c, "x-echo", NULL, &error);
    g_assert_null(r2);
    g_assert_error(error, QMP_CONN_ERROR, QMP_CONN_ERROR_CLOSED);
}

static void test_connect_refused(void)
{
    g_autoptr(GError) error = NULL;
    g_autoptr(QmpConn) c = qmp_conn_connect_unix("/nonexistent/qmp.sock", 100, &error);
    g_assert_null(c);
    g_assert_error(error, QMP_CONN_ERROR, QMP_CONN_ERROR_CONNECT);
    g_assert_nonnull(strstr(error->message, "/nonexistent/qmp.sock"));
    g_clear_error(&error);
    char longpath[200];
    memset(longpath, 'a', sizeof(longpath) - 1);
    longpath[sizeof(longpath) - 1] = 0;
    g_autoptr(QmpConn) c2 = qmp_conn_connect_unix(longpath, 100, &error);
    g_assert_null(c2);
    g_assert_error(error, QMP_CONN_ERROR, QMP_CONN_ERROR_CONNECT);
}

/* ---- misbehaving servers: a socketpair and a thread writing canned output ---- */

typedef struct {
    int fd;
    const char *script; /* written after reading `wait_requests` requests */
    unsigned wait_requests;
} Fake;

static gpointer fake_main(gpointer data)
{
    Fake *fk = data;
    char buf[4096];
    const char *greeting = "{\"QMP\": {\"version\": {}, \"capabilities\": []}}\r\n";
    if (fk->wait_requests) {
        g_assert_cmpint(write(fk->fd, greeting, strlen(greeting)), ==, (gssize)strlen(greeting));
        for (unsigned i = 0; i < fk->wait_requests; i++)
            if (read(fk->fd, buf, sizeof(buf)) <= 0)
                break;
    }
    if (fk->script)
        g_assert_cmpint(write(fk->fd, fk->script, strlen(fk->script)), >=, 0);
    shutdown(fk->fd, SHUT_WR);
    while (read(fk->fd, buf, sizeof(buf)) > 0)
        ;
    close(fk->fd);
    return NULL;
}

/* Connects to a fake server; returns the connection or NULL with *error set. */
static QmpConn *fake_connect(const char *script, unsigned wait_requests, GThread **thread, Fake *fk,
                             GError **error)
{
    int sv[2];
    g_assert_cmpint(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), ==, 0);
    fk->fd = sv[1];
    fk->script = script;
    fk->wait_requests = wait_requests;
    *thread = g_thread_new("fake-qmp", fake_main, fk);
    return qmp_conn_new_fd(sv[0], "fake", TIMEOUT_MS, error);
}

static void expect_protocol_error(const char *script, unsigned wait_requests, GQuark domain,
                                  int code, const char *needle)
{
    g_autoptr(GError) error = NULL;
    Fake fk;
    GThread *t;
    QmpConn *c = fake_connect(script, wait_requests, &t, &fk, &error);
    if (c) {
        qmp_conn_set_timeout(c, TIMEOUT_MS);
        g_autoptr(JsonNode) r = qmp_conn_execute(c, "x", NULL, &error);
        g_assert_null(r);
    }
    g_assert_error(error, domain, code);
    if (needle && !strstr(error->message, needle))
        g_error("'%s' not in '%s'", needle, error->message);
    qmp_conn_free(c);
    g_thread_join(t);
}

static void test_bad_servers(void)
{
    /* Not QMP at all */
    expect_protocol_error("SSH-2.0-OpenSSH_9.2\r\n", 0, QMP_CONN_ERROR, QMP_CONN_ERROR_PROTOCOL,
                          "greeting");
    expect_protocol_error("{\"hello\": 1}\r\n", 0, QMP_CONN_ERROR, QMP_CONN_ERROR_PROTOCOL,
                          "\"QMP\"");
    expect_protocol_error("[1, 2]\r\n", 0, QMP_CONN_ERROR, QMP_CONN_ERROR_PROTOCOL, "object");
    /* Closes before the greeting */
    expect_protocol_error(NULL, 0, QMP_CONN_ERROR, QMP_CONN_ERROR_CLOSED, "greeting");
    /* Closes in the middle of a response */
    expect_protocol_error("{\"return\": {\"a\": ", 1, QMP_CONN_ERROR, QMP_CONN_ERROR_CLOSED,
                          "closed");
    /* Answers with garbage */
    expect_protocol_error("{\"return\": {\"a\": nope}}\r\n", 1, QMP_CONN_ERROR,
                          QMP_CONN_ERROR_PROTOCOL, "malformed JSON");
    expect_protocol_error("{\"neither\": 1}\r\n", 1, QMP_CONN_ERROR, QMP_CONN_ERROR_PROTOCOL,
                          "without");
    expect_protocol_error("{\"error\": {\"class\": 7}}\r\n", 1, QMP_CONN_ERROR,
                          QMP_CONN_ERROR_PROTOCOL, "malformed error");
    expect_protocol_error("{\"return\": {}, \"id\": 999}\r\n", 1, QMP_CONN_ERROR,
                          QMP_CONN_ERROR_PROTOCOL, "unexpected id");
    expect_protocol_error("\xff\xfe}}}\r\n", 1, QMP_CONN_ERROR, QMP_CONN_ERROR_PROTOCOL,
                          "malformed");
    /* A response without an id (servers need not echo it) is fine; an error class that
     * QEMU does not have is passed through verbatim. */
    expect_protocol_error("{\"error\": {\"class\": \"FutureError\", \"desc\": \"d\"}}\r\n", 1,
                          QMP_CONN_ERROR, QMP_CONN_ERROR_COMMAND, "d");
}

static void test_pretty_server(void)
{
    /* Multi-line (pretty-printed) messages and events before the response. */
    g_autoptr(GError) error = NULL;
    Fake fk;
    GThread *t;
    g_autoptr(QmpConn) c = fake_connect("{\"event\": \"A\",\n \"timestamp\": {}}"
                                        "{\n  \"return\": {\n    \"x\": [1, 2]\n  }\n}\n",
                                        1, &t, &fk, &error);
    g_assert_no_error(error);
    g_autoptr(JsonNode) r = qmp_conn_execute(c, "x", NULL, &error);
    g_assert_no_error(error);
    g_assert_cmpuint(
        json_array_get_length(json_object_get_array_member(json_node_get_object(r), "x")), ==, 2);
    g_assert_cmpuint(qmp_conn_queued_events(c), ==, 1);
    g_autoptr(JsonObject) a = qmp_conn_wait_event(c, "A", 0, &error);
    g_assert_no_error(error);
    g_clear_pointer(&c, qmp_conn_free);
    g_thread_join(t);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
#define FTEST(path, fn) g_test_add("/qmp-client/" path, Fixture, NULL, fix_setup, fn, fix_teardown)
    FTEST("greeting", test_greeting);
    FTEST("command", test_command);
    FTEST("error", test_error);
    FTEST("events", test_events);
    FTEST("getfd", test_getfd);
    FTEST("drop-mid-request", test_drop_mid_request);
    FTEST("server-exit", test_server_exit);
    FTEST("timeout", test_timeout);
    g_test_add_func("/qmp-client/connect-refused", test_connect_refused);
    g_test_add_func("/qmp-client/bad-servers", test_bad_servers);
    g_test_add_func("/qmp-client/pretty-server", test_pretty_server);
    return g_test_run();
}
