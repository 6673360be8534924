/* SPDX-License-Identifier: MIT */
/*
 * Tests of the QMP library: the stream framer, the dispatcher (through
 * qmp_server_dispatch_text) and the unix socket server driven by a private
 * GMainContext, with hostile clients.
 */
#include "qmp.h"
#include "qmp_stream.h"

#include <errno.h>
#include <fcntl.h>
#include <glib/gstdio.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#define WAIT_US (10 * G_USEC_PER_SEC)

/* ------------------------------------------------------------------------ */
/* Stream framer */

/* Collects texts as-is and errors as "E:message". */
typedef struct {
    GPtrArray *out;
    guint stop_after; /* return FALSE after this many callbacks; 0 = never */
} Collect;

static gboolean collect_cb(const char *json, gsize len, const GError *error, gpointer data)
{
    Collect *c = data;

    if (error) {
        g_assert_null(json);
        g_assert_true(g_error_matches(error, QMP_ERROR, QMP_ERROR_GENERIC));
        g_ptr_array_add(c->out, g_strconcat("E:", error->message, NULL));
    } else {
        g_assert_cmpuint(strlen(json), ==, len);
        g_ptr_array_add(c->out, g_strndup(json, len));
    }
    return c->stop_after == 0 || c->out->len < c->stop_after;
}

static void collect_init(Collect *c)
{
    c->out = g_ptr_array_new_with_free_func(g_free);
    c->stop_after = 0;
}

static void feed_str(QmpStream *s, const char *str)
{
    qmp_stream_feed(s, str, strlen(str));
}

static void test_stream_split(void)
{
    const char *msg = "{\"execute\": \"query-status\", \"arguments\": {\"a\": [1, {}]}}";
    Collect c;
    g_autoptr(QmpStream) s = NULL;

    collect_init(&c);
    s = qmp_stream_new(1024, 8, collect_cb, &c);
    /* one byte per read: nothing until the last byte */
    for (gsize i = 0; msg[i]; i++) {
        g_assert_cmpuint(c.out->len, ==, 0);
        qmp_stream_feed(s, msg + i, 1);
    }
    g_assert_cmpuint(c.out->len, ==, 1);
    g_assert_cmpstr(c.out->pdata[0], ==, msg);
    g_assert_cmpuint(qmp_stream_pending(s), ==, 0);

    /* an arbitrary split, and newlines inside the object change nothing */
    feed_str(s, "\n{\"a\":\n");
    g_assert_cmpuint(c.out->len, ==, 1);
    feed_str(s, "1}");
    g_assert_cmpuint(c.out->len, ==, 2);
    g_assert_cmpstr(c.out->pdata[1], ==, "{\"a\":\n1}");
    g_ptr_array_unref(c.out);
}

static void test_stream_several(void)
{
    Collect c;
    g_autoptr(QmpStream) s = NULL;

    collect_init(&c);
    s = qmp_stream_new(1024, 8, collect_cb, &c);
    feed_str(s, "{\"a\":1}{\"b\":2}\r\n [3,[4]] 42 true\"str\"{}");
    g_assert_cmpuint(c.out->len, ==, 6);
    g_assert_cmpstr(c.out->pdata[0], ==, "{\"a\":1}");
    g_assert_cmpstr(c.out->pdata[1], ==, "{\"b\":2}");
    g_assert_cmpstr(c.out->pdata[2], ==, "[3,[4]]");
    g_assert_cmpstr(c.out->pdata[3], ==, "42");
    /* a scalar ends at whitespace or an opening brace; "true"str" is one junk token */
    g_assert_cmpstr(c.out->pdata[4], ==, "true\"str\"");
    /* "{" ended the scalar and "{}" was complete itself */
    g_assert_cmpstr(c.out->pdata[5], ==, "{}");
    g_assert_cmpuint(qmp_stream_pending(s), ==, 0);
    g_ptr_array_unref(c.out);
}

static void test_stream_strings(void)
{
    Collect c;
    g_autoptr(QmpStream) s = NULL;

    collect_init(&c);
    s = qmp_stream_new(1024, 8, collect_cb, &c);
    /* braces and brackets inside strings are not counted */
    feed_str(s, "{\"a\": \"}}]]{{[[\"}");
    g_assert_cmpuint(c.out->len, ==, 1);
    g_assert_cmpstr(c.out->pdata[0], ==, "{\"a\": \"}}]]{{[[\"}");
    /* single-quoted strings, which QEMU accepts, likewise; a " inside them is plain */
    feed_str(s, "{'a': '}\"}'}");
    g_assert_cmpuint(c.out->len, ==, 2);
    g_assert_cmpstr(c.out->pdata[1], ==, "{'a': '}\"}'}");
    g_ptr_array_unref(c.out);
}

static void test_stream_escapes(void)
{
    Collect c;
    g_autoptr(QmpStream) s = NULL;

    collect_init(&c);
    s = qmp_stream_new(1024, 8, collect_cb, &c);
    /* an escaped quote does not end the string, so the } after it is text */
    feed_str(s, "{\"a\": \"x\\\"}\"");
    g_assert_cmpuint(c.out->len, ==, 0);
    feed_str(s, "}");
    g_assert_cmpuint(c.out->len, ==, 1);
    /* an escaped backslash does end before the quote */
    feed_str(s, "{\"a\": \"\\\\\"}");
    g_assert_cmpuint(c.out->len, ==, 2);
    g_assert_cmpstr(c.out->pdata[1], ==, "{\"a\": \"\\\\\"}");
    /* escape split across reads */
    feed_str(s, "{\"a\": \"\\");
    feed_str(s, "\"}\"}");
    g_assert_cmpuint(c.out->len, ==, 3);
    g_assert_cmpstr(c.out->pdata[2], ==, "{\"a\": \"\\\"}\"}");
    g_ptr_array_unref(c.out);
}

static void test_stream_depth(void)
{
    Collect c;
    g_autoptr(QmpStream) s = NULL;
    g_autoptr(GString) ok = g_string_new(NULL);
    g_autoptr(GString) deep = g_string_new(NULL);

    collect_init(&c);
    s = qmp_stream_new(1 << 20, 4, collect_cb, &c);
    g_string_append(ok, "{\"a\":[{\"b\":[]}]}"); /* depth 4 */
    feed_str(s, ok->str);
    g_assert_cmpuint(c.out->len, ==, 1);
    g_assert_cmpstr(c.out->pdata[0], ==, ok->str);

    /* depth 5: one error, the rest of the text discarded, then framing goes on */
    for (int i = 0; i < 5000; i++)
        g_string_append(deep, "[");
    for (int i = 0; i < 5000; i++)
        g_string_append(deep, "]");
    feed_str(s, deep->str);
    feed_str(s, "{\"next\":1}");
    g_assert_cmpuint(c.out->len, ==, 3);
    g_assert_true(g_str_has_prefix(c.out->pdata[1], "E:JSON parse error, nesting depth"));
    g_assert_cmpstr(c.out->pdata[2], ==, "{\"next\":1}");
    g_ptr_array_unref(c.out);
}

static void test_stream_size(void)
{
    Collect c;
    g_autoptr(QmpStream) s = NULL;
    g_autofree char *filler = g_strnfill(100, 'x');
    g_autofree char *big = g_strdup_printf("{\"a\": \"%s}{\", \"b\": {}}", filler);
    g_autofree char *big_scalar = g_strnfill(100, '7');

    collect_init(&c);
    s = qmp_stream_new(32, 8, collect_cb, &c);
    /* exactly at the limit is fine */
    feed_str(s, "{\"a\": \"0123456789012345678901\"}");
    g_assert_cmpuint(c.out->len, ==, 1);

    /* over the limit: one error, discarded to the end of that text (braces in
     * its strings included), and the buffer is not holding it */
    feed_str(s, big);
    g_assert_cmpuint(c.out->len, ==, 2);
    g_assert_true(g_str_has_prefix(c.out->pdata[1], "E:JSON parse error, message exceeds"));
    g_assert_cmpuint(qmp_stream_pending(s), ==, 0);
    feed_str(s, "{\"ok\": 1}");
    g_assert_cmpuint(c.out->len, ==, 3);
    g_assert_cmpstr(c.out->pdata[2], ==, "{\"ok\": 1}");

    /* an oversize scalar is discarded up to the next delimiter */
    feed_str(s, big_scalar);
    feed_str(s, big_scalar);
    g_assert_cmpuint(c.out->len, ==, 4);
    g_assert_true(g_str_has_prefix(c.out->pdata[3], "E:JSON parse error, message exceeds"));
    feed_str(s, " {}");
    g_assert_cmpuint(c.out->len, ==, 5);
    g_assert_cmpstr(c.out->pdata[4], ==, "{}");
    g_ptr_array_unref(c.out);
}

static void test_stream_recovery(void)
{
    Collect c;
    g_autoptr(QmpStream) s = NULL;

    collect_init(&c);
    s = qmp_stream_new(1024, 8, collect_cb, &c);
    /* 0xFF abandons an unterminated text (QMP's documented reset) */
    feed_str(s, "{\"execute\": \"oops");
    feed_str(s, "\xff{\"a\":1}");
    g_assert_cmpuint(c.out->len, ==, 2);
    g_assert_cmpstr(c.out->pdata[0], ==, "E:JSON parse error, invalid byte 0xff");
    g_assert_cmpstr(c.out->pdata[1], ==, "{\"a\":1}");

    /* in between texts it is silent */
    feed_str(s, "\xff\x01\xfe{}");
    g_assert_cmpuint(c.out->len, ==, 3);
    g_assert_cmpstr(c.out->pdata[2], ==, "{}");

    /* a raw newline cannot be inside a JSON string: an unterminated string
     * ends at the end of its line */
    feed_str(s, "{\"a\": \"unterminated\n{\"b\":2}");
    g_assert_cmpuint(c.out->len, ==, 5);
    g_assert_cmpstr(c.out->pdata[3], ==, "E:JSON parse error, control character 0x0a in string");
    g_assert_cmpstr(c.out->pdata[4], ==, "{\"b\":2}");

    /* a stray closer */
    feed_str(s, "}{\"c\":3}");
    g_assert_cmpuint(c.out->len, ==, 7);
    g_assert_cmpstr(c.out->pdata[5], ==, "E:JSON parse error, unbalanced '}'");
    g_assert_cmpstr(c.out->pdata[6], ==, "{\"c\":3}");

    /* closing a bracket that was never opened inside an object */
    feed_str(s, "{]{\"d\":4}");
    g_assert_cmpuint(c.out->len, ==, 9);
    g_assert_cmpstr(c.out->pdata[7], ==, "E:JSON parse error, unbalanced ']'");
    g_assert_cmpstr(c.out->pdata[8], ==, "{\"d\":4}");
    g_ptr_array_unref(c.out);
}

static void test_stream_stop(void)
{
    Collect c;
    g_autoptr(QmpStream) s = NULL;

    collect_init(&c);
    c.stop_after = 1;
    s = qmp_stream_new(1024, 8, collect_cb, &c);
    g_assert_false(qmp_stream_feed(s, "{}{}{}", 6));
    g_assert_cmpuint(c.out->len, ==, 1);
    g_ptr_array_unref(c.out);
}

/* ------------------------------------------------------------------------ */
/* Dispatcher */

typedef struct {
    QmpServer *server;
    JsonObject *last_args; /* what x-echo got */
    guint echo_calls;
} DispatchFixture;

static JsonNode *cmd_echo(QmpClient *client, JsonObject *args, gpointer user_data, GError **error)
{
    DispatchFixture *f = user_data;
    JsonNode *node = json_node_new(JSON_NODE_OBJECT);

    g_assert_nonnull(client);
    g_assert_true(qmp_client_get_server(client) == f->server);
    f->echo_calls++;
    /* args belongs to the request: keep a reference for the test to look at */
    g_clear_pointer(&f->last_args, json_object_unref);
    f->last_args = json_object_ref(args);
    json_node_set_object(node, args);
    return node;
}

static JsonNode *cmd_fail(QmpClient *client, JsonObject *args, gpointer user_data, GError **error)
{
    g_set_error(error, QMP_ERROR, QMP_ERROR_DEVICE_NOT_FOUND, "Device '%s' not found",
                json_object_get_string_member(args, "id"));
    return NULL;
}

static JsonNode *cmd_foreign_error(QmpClient *client, JsonObject *args, gpointer user_data,
                                   GError **error)
{
    g_set_error(error, G_IO_ERROR, G_IO_ERROR_FAILED, "disk on fire");
    return NULL;
}

static const QmpArgSpec echo_args[] = {
    { "s", QMP_ARG_STR, FALSE },   { "i", QMP_ARG_INT, TRUE },
    { "b", QMP_ARG_BOOL, TRUE },   { "n", QMP_ARG_NUMBER, TRUE },
    { "o", QMP_ARG_OBJECT, TRUE }, { "a", QMP_ARG_ARRAY, TRUE },
    { "x", QMP_ARG_ANY, TRUE },    { NULL },
};

static const QmpArgSpec fail_args[] = {
    { "id", QMP_ARG_STR, FALSE },
    { NULL },
};

static void register_test_commands(QmpServer *s, gpointer data)
{
    const QmpCommand echo = { "x-echo", cmd_echo, echo_args };
    const QmpCommand fail = { "x-fail", cmd_fail, fail_args };
    const QmpCommand foreign = { "x-foreign-error", cmd_foreign_error, NULL };

    qmp_server_register(s, &echo, data);
    qmp_server_register(s, &fail, data);
    qmp_server_register(s, &foreign, data);
}

static void dfix_setup(DispatchFixture *f, gconstpointer data)
{
    f->server = qmp_server_new("test-pkg", 0, 1, 2);
    register_test_commands(f->server, f);
}

static void dfix_teardown(DispatchFixture *f, gconstpointer data)
{
    g_clear_pointer(&f->last_args, json_object_unref);
    qmp_server_free(f->server);
}

static char *dispatch(DispatchFixture *f, const char *json)
{
    return qmp_server_dispatch_text(f->server, NULL, json, strlen(json));
}

/* Dispatches and compares the exact response text. */
#define assert_dispatch(f, json, expected)             \
    do {                                               \
        g_autofree char *rsp_ = dispatch((f), (json)); \
        g_assert_cmpstr(rsp_, ==, (expected));         \
    } while (0)

static void negotiate(DispatchFixture *f)
{
    assert_dispatch(f, "{\"execute\": \"qmp_capabilities\"}", "{\"return\": {}}");
}

static void test_dispatch_negotiation(DispatchFixture *f, gconstpointer data)
{
    /* known and unknown commands alike are refused before negotiation */
    assert_dispatch(f, "{\"execute\": \"query-version\"}",
                    "{\"error\": {\"class\": \"CommandNotFound\", \"desc\": \"Expecting "
                    "capabilities negotiation with 'qmp_capabilities'\"}}");
    assert_dispatch(f, "{\"execute\": \"no-such\", \"id\": 1}",
                    "{\"error\": {\"class\": \"CommandNotFound\", \"desc\": \"Expecting "
                    "capabilities negotiation with 'qmp_capabilities'\"}, \"id\": 1}");
    g_assert_cmpuint(f->echo_calls, ==, 0);
    /* unknown capability: refused, still not negotiated */
    assert_dispatch(f,
                    "{\"execute\": \"qmp_capabilities\", \"arguments\": {\"enable\": [\"oob\"]}}",
                    "{\"error\": {\"class\": \"GenericError\", \"desc\": \"Capability 'oob' not "
                    "available\"}}");
    assert_dispatch(f, "{\"execute\": \"qmp_capabilities\", \"arguments\": {\"enable\": [\"x\"]}}",
                    "{\"error\": {\"class\": \"GenericError\", \"desc\": \"Parameter 'enable[0]' "
                    "does not accept value 'x'\"}}");
    assert_dispatch(f, "{\"execute\": \"qmp_capabilities\", \"arguments\": {\"enable\": [1]}}",
                    "{\"error\": {\"class\": \"GenericError\", \"desc\": \"Invalid parameter type "
                    "for 'enable[0]', expected: string\"}}");
    assert_dispatch(f, "{\"execute\": \"query-version\"}",
                    "{\"error\": {\"class\": \"CommandNotFound\", \"desc\": \"Expecting "
                    "capabilities negotiation with 'qmp_capabilities'\"}}");
    /* an empty enable list is fine */
    assert_dispatch(f, "{\"execute\": \"qmp_capabilities\", \"arguments\": {\"enable\": []}}",
                    "{\"return\": {}}");
    assert_dispatch(f, "{\"execute\": \"qmp_capabilities\"}",
                    "{\"error\": {\"class\": \"CommandNotFound\", \"desc\": \"Capabilities "
                    "negotiation is already complete, command ignored\"}}");
    assert_dispatch(f, "{\"execute\": \"query-version\", \"id\": \"v\"}",
                    "{\"return\": {\"qemu\": {\"micro\": 2, \"minor\": 1, \"major\": 0}, "
                    "\"package\": \"test-pkg\"}, \"id\": \"v\"}");
}

static void test_dispatch_malformed(DispatchFixture *f, gconstpointer data)
{
    g_autofree char *rsp = NULL;

    negotiate(f);
    assert_dispatch(f, "{\"execute\": \"nope\"}",
                    "{\"error\": {\"class\": \"CommandNotFound\", \"desc\": \"The command nope "
                    "has not been found\"}}");
    assert_dispatch(f, "[1, 2]",
                    "{\"error\": {\"class\": \"GenericError\", \"desc\": \"QMP input must be a "
                    "JSON object\"}}");
    assert_dispatch(f, "42",
                    "{\"error\": {\"class\": \"GenericError\", \"desc\": \"QMP input must be a "
                    "JSON object\"}}");
    assert_dispatch(f, "{\"id\": 5}",
                    "{\"error\": {\"class\": \"GenericError\", \"desc\": \"QMP input lacks member "
                    "'execute'\"}, \"id\": 5}");
    assert_dispatch(f, "{\"execute\": 1}",
                    "{\"error\": {\"class\": \"GenericError\", \"desc\": \"QMP input member "
                    "'execute' must be a string\"}}");
    assert_dispatch(f, "{\"execute\": \"x-echo\", \"arguments\": []}",
                    "{\"error\": {\"class\": \"GenericError\", \"desc\": \"QMP input member "
                    "'arguments' must be an object\"}}");
    assert_dispatch(f, "{\"execute\": \"x-echo\", \"foo\": 1}",
                    "{\"error\": {\"class\": \"GenericError\", \"desc\": \"QMP input member "
                    "'foo' is unexpected\"}}");
    /* no out-of-band execution */
    assert_dispatch(f, "{\"exec-oob\": \"query-version\", \"id\": 7}",
                    "{\"error\": {\"class\": \"GenericError\", \"desc\": \"QMP input member "
                    "'exec-oob' is unexpected\"}, \"id\": 7}");
    g_assert_cmpuint(f->echo_calls, ==, 0);

    rsp = dispatch(f, "{\"execute\": ");
    g_assert_true(g_str_has_prefix(rsp, "{\"error\": {\"class\": \"GenericError\", \"desc\": "
                                        "\"JSON parse error, "));
    g_clear_pointer(&rsp, g_free);
    assert_dispatch(f, "nonsense",
                    "{\"error\": {\"class\": \"GenericError\", \"desc\": \"JSON parse error, "
                    "unexpected identifier `nonsense', expected value\"}}");
    rsp = dispatch(f, "{\"execute\": \"x\xff\"}");
    g_assert_true(g_str_has_prefix(rsp, "{\"error\": {\"class\": \"GenericError\", \"desc\": "
                                        "\"JSON parse error, "));
    g_clear_pointer(&rsp, g_free);
    /* nothing to answer */
    g_assert_null(dispatch(f, " \r\n"));
    /* still works */
    assert_dispatch(f, "{\"execute\": \"x-echo\", \"arguments\": {\"s\": \"ok\"}}",
                    "{\"return\": {\"s\": \"ok\"}}");
}

static void test_dispatch_args(DispatchFixture *f, gconstpointer data)
{
    static const struct {
        const char *args;
        const char *desc;
    } bad[] = {
        { "{}", "Parameter 's' is missing" },
        { "{\"i\": 1}", "Parameter 's' is missing" },
        { "{\"s\": \"a\", \"zz\": 1}", "Parameter 'zz' is unexpected" },
        { "{\"s\": 1}", "Invalid parameter type for 's', expected: string" },
        { "{\"s\": null}", "Invalid parameter type for 's', expected: string" },
        { "{\"s\": \"a\", \"i\": 1.5}", "Invalid parameter type for 'i', expected: integer" },
        { "{\"s\": \"a\", \"i\": \"1\"}", "Invalid parameter type for 'i', expected: integer" },
        { "{\"s\": \"a\", \"b\": 1}", "Invalid parameter type for 'b', expected: boolean" },
        { "{\"s\": \"a\", \"n\": \"1\"}", "Invalid parameter type for 'n', expected: number" },
        { "{\"s\": \"a\", \"o\": []}", "Invalid parameter type for 'o', expected: object" },
        { "{\"s\": \"a\", \"a\": {}}", "Invalid parameter type for 'a', expected: array" },
        /* declared members are checked before unexpected ones, like QEMU */
        { "{\"zz\": 1, \"s\": 2}", "Invalid parameter type for 's', expected: string" },
    };

    negotiate(f);
    for (gsize i = 0; i < G_N_ELEMENTS(bad); i++) {
        g_autofree char *req = g_strdup_printf(
            "{\"execute\": \"x-echo\", \"arguments\": %s, \"id\": %zu}", bad[i].args, i);
        g_autofree char *expected = g_strdup_printf(
            "{\"error\": {\"class\": \"GenericError\", \"desc\": \"%s\"}, \"id\": %zu}",
            bad[i].desc, i);

        assert_dispatch(f, req, expected);
    }
    g_assert_cmpuint(f->echo_calls, ==, 0);

    /* every type accepted; number takes integers too; any takes null */
    assert_dispatch(f,
                    "{\"execute\": \"x-echo\", \"arguments\": {\"s\": \"\\u00e9\\n\", \"i\": -3, "
                    "\"b\": true, \"n\": 2, \"o\": {\"k\": [1]}, \"a\": [], \"x\": null}}",
                    "{\"return\": {\"s\": \"\\u00E9\\n\", \"i\": -3, \"b\": true, \"n\": 2, \"o\": "
                    "{\"k\": [1]}, \"a\": [], \"x\": null}}");
    g_assert_cmpuint(f->echo_calls, ==, 1);
    /* the handler got exactly the arguments */
    g_assert_cmpstr(json_object_get_string_member(f->last_args, "s"), ==, "\xc3\xa9\n");
    g_assert_cmpint(json_object_get_int_member(f->last_args, "i"), ==, -3);
    g_assert_true(json_object_get_boolean_member(f->last_args, "b"));
    g_assert_cmpuint(json_object_get_size(f->last_args), ==, 7);

    assert_dispatch(f, "{\"execute\": \"x-echo\", \"arguments\": {\"s\": \"\", \"n\": 0.5}}",
                    "{\"return\": {\"s\": \"\", \"n\": 0.5}}");
    g_assert_cmpuint(f->echo_calls, ==, 2);
}

static void test_dispatch_id(DispatchFixture *f, gconstpointer data)
{
    negotiate(f);
    /* any JSON value is echoed verbatim, on success and on error */
    assert_dispatch(f,
                    "{\"id\": {\"a\": [1, \"x\"]}, \"execute\": \"x-echo\", "
                    "\"arguments\": {\"s\": \"t\"}}",
                    "{\"return\": {\"s\": \"t\"}, \"id\": {\"a\": [1, \"x\"]}}");
    assert_dispatch(f, "{\"execute\": \"nope\", \"id\": \"libvirt-42\"}",
                    "{\"error\": {\"class\": \"CommandNotFound\", \"desc\": \"The command nope "
                    "has not been found\"}, \"id\": \"libvirt-42\"}");
    assert_dispatch(f, "{\"execute\": \"x-fail\", \"arguments\": {\"id\": \"disk0\"}, \"id\": 3}",
                    "{\"error\": {\"class\": \"DeviceNotFound\", \"desc\": \"Device 'disk0' not "
                    "found\"}, \"id\": 3}");
    assert_dispatch(f, "{\"execute\": \"x-foreign-error\", \"id\": null}",
                    "{\"error\": {\"class\": \"GenericError\", \"desc\": \"disk on fire\"}, "
                    "\"id\": null}");
}

static void test_dispatch_query_commands(DispatchFixture *f, gconstpointer data)
{
    g_autofree char *rsp = NULL;
    g_autoptr(JsonParser) parser = json_parser_new();
    g_autoptr(GHashTable) names = g_hash_table_new(g_str_hash, g_str_equal);
    const char *expected[] = { "qmp_capabilities", "query-commands", "query-version", "getfd",
                               "closefd",          "x-echo",         "x-fail" };
    JsonArray *list;
    const QmpCommand again = { "x-echo", cmd_echo, echo_args };

    /* re-registering replaces, it does not list a name twice */
    qmp_server_register(f->server, &again, f);
    negotiate(f);
    rsp = dispatch(f, "{\"execute\": \"query-commands\"}");
    g_assert_true(json_parser_load_from_data(parser, rsp, -1, NULL));
    list =
        json_object_get_array_member(json_node_get_object(json_parser_get_root(parser)), "return");
    for (guint i = 0; i < json_array_get_length(list); i++) {
        JsonObject *o = json_array_get_object_element(list, i);

        g_assert_cmpuint(json_object_get_size(o), ==, 1);
        g_assert_true(g_hash_table_add(names, (gpointer)json_object_get_string_member(o, "name")));
    }
    for (gsize i = 0; i < G_N_ELEMENTS(expected); i++)
        g_assert_true(g_hash_table_contains(names, expected[i]));
    g_assert_cmpuint(g_hash_table_size(names), ==, 8);
}

static void test_dispatch_fds(DispatchFixture *f, gconstpointer data)
{
    g_autoptr(GError) error = NULL;

    negotiate(f);
    assert_dispatch(f, "{\"execute\": \"getfd\", \"arguments\": {\"fdname\": \"mig\"}}",
                    "{\"error\": {\"class\": \"GenericError\", \"desc\": \"No file descriptor "
                    "supplied via SCM_RIGHTS\"}}");
    assert_dispatch(f, "{\"execute\": \"closefd\", \"arguments\": {\"fdname\": \"mig\"}}",
                    "{\"error\": {\"class\": \"GenericError\", \"desc\": \"File descriptor named "
                    "'mig' not found\"}}");
    assert_dispatch(f, "{\"execute\": \"getfd\"}",
                    "{\"error\": {\"class\": \"GenericError\", \"desc\": \"Parameter 'fdname' is "
                    "missing\"}}");
    g_assert_cmpint(qmp_server_take_fd(f->server, "mig", &error), ==, -1);
    g_assert_error(error, QMP_ERROR, QMP_ERROR_GENERIC);
}

/* ------------------------------------------------------------------------ */
/* Socket server */

typedef struct {
    GMainContext *ctx;
    char *dir;
    char *path;
    QmpServer *server;
    DispatchFixture d; /* for the test commands' user data */
} Fixture;

typedef struct {
    int fd;
    GString *in;
} TestClient;

static void fix_setup(Fixture *f, gconstpointer data)
{
    g_autoptr(GError) error = NULL;

    f->ctx = g_main_context_new();
    g_main_context_push_thread_default(f->ctx);
    f->dir = g_dir_make_tmp("test-qmp-XXXXXX", &error);
    g_assert_no_error(error);
    f->path = g_build_filename(f->dir, "qmp.sock", NULL);
    f->server = qmp_server_new("test-pkg", 0, 1, 2);
    f->d.server = f->server;
    register_test_commands(f->server, &f->d);
    g_assert_true(qmp_server_listen_unix(f->server, f->path, &error));
    g_assert_no_error(error);
}

static void fix_teardown(Fixture *f, gconstpointer data)
{
    g_clear_pointer(&f->d.last_args, json_object_unref);
    qmp_server_free(f->server);
    /* the server removes its socket */
    g_assert_false(g_file_test(f->path, G_FILE_TEST_EXISTS));
    /* let sources destroyed by the server go */
    while (g_main_context_iteration(f->ctx, FALSE))
        ;
    g_main_context_pop_thread_default(f->ctx);
    g_main_context_unref(f->ctx);
    g_assert_cmpint(g_rmdir(f->dir), ==, 0);
    g_free(f->path);
    g_free(f->dir);
}

static void spin(Fixture *f)
{
    while (g_main_context_iteration(f->ctx, FALSE))
        ;
}

static void client_open_path(TestClient *c, const char *path)
{
    struct sockaddr_un addr = { .sun_family = AF_UNIX };

    c->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    g_assert_cmpint(c->fd, >=, 0);
    g_strlcpy(addr.sun_path, path, sizeof(addr.sun_path));
    g_assert_cmpint(connect(c->fd, (struct sockaddr *)&addr, sizeof(addr)), ==, 0);
    c->in = g_string_new(NULL);
}

static void client_open(Fixture *f, TestClient *c)
{
    client_open_path(c, f->path);
}

static void client_close(TestClient *c)
{
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
    g_string_free(c->in, TRUE);
    c->in = NULL;
}

/* Receives what is there; returns FALSE at EOF. */
static gboolean client_recv(TestClient *c)
{
    char buf[65536];
    gssize n = recv(c->fd, buf, sizeof(buf), MSG_DONTWAIT);

    if (n > 0)
        g_string_append_len(c->in, buf, n);
    else if (n < 0)
        g_assert_true(errno == EAGAIN || errno == ECONNRESET);
    return n != 0 && !(n < 0 && errno == ECONNRESET);
}

/* Runs the server until a "\r\n"-terminated line arrives; returns it without "\r\n". */
static char *client_read_line(Fixture *f, TestClient *c)
{
    gint64 deadline = g_get_monotonic_time() + WAIT_US;

    for (;;) {
        char *end = strstr(c->in->str, "\r\n");

        if (end) {
            char *line = g_strndup(c->in->str, end - c->in->str);

            g_string_erase(c->in, 0, end - c->in->str + 2);
            g_assert_null(strchr(line, '\n'));
            return line;
        }
        g_assert_cmpint(g_get_monotonic_time(), <, deadline);
        spin(f);
        if (!client_recv(c))
            g_error("unexpected EOF from the QMP server");
        g_usleep(500);
    }
}

/* Runs the server until the client sees EOF. */
static void client_wait_eof(Fixture *f, TestClient *c)
{
    gint64 deadline = g_get_monotonic_time() + WAIT_US;

    for (;;) {
        g_assert_cmpint(g_get_monotonic_time(), <, deadline);
        spin(f);
        if (!client_recv(c))
            return;
        g_string_truncate(c->in, 0);
        g_usleep(500);
    }
}

/* Sends everything, running the server while the socket is full. */
static void client_send_len(Fixture *f, TestClient *c, const char *data, gsize len)
{
    gint64 deadline = g_get_monotonic_time() + 4 * WAIT_US;

    while (len > 0) {
        gssize n = send(c->fd, data, len, MSG_NOSIGNAL | MSG_DONTWAIT);

        if (n < 0) {
            g_assert_cmpint(errno, ==, EAGAIN);
            g_assert_cmpint(g_get_monotonic_time(), <, deadline);
            spin(f);
            /* the server may answer while we send; keep our side drained */
            client_recv(c);
            continue;
        }
        data += n;
        len -= n;
    }
    spin(f);
}

static void client_send(Fixture *f, TestClient *c, const char *text)
{
    client_send_len(f, c, text, strlen(text));
}

static void client_send_with_fd(TestClient *c, const char *text, int fd)
{
    union {
        struct cmsghdr align;
        char buf[CMSG_SPACE(sizeof(int))];
    } control = { 0 };
    struct iovec iov = { .iov_base = (char *)text, .iov_len = strlen(text) };
    struct msghdr msg = {
        .msg_iov = &iov,
        .msg_iovlen = 1,
        .msg_control = control.buf,
        .msg_controllen = sizeof(control.buf),
    };
    struct cmsghdr *cm = CMSG_FIRSTHDR(&msg);

    cm->cmsg_level = SOL_SOCKET;
    cm->cmsg_type = SCM_RIGHTS;
    cm->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(cm), &fd, sizeof(int));
    g_assert_cmpint(sendmsg(c->fd, &msg, MSG_NOSIGNAL), ==, (gssize)strlen(text));
}

static void assert_line(Fixture *f, TestClient *c, const char *expected)
{
    g_autofree char *line = client_read_line(f, c);

    g_assert_cmpstr(line, ==, expected);
}

/* Connects, checks the greeting, and negotiates unless told not to. */
static void client_connect(Fixture *f, TestClient *c, gboolean negotiate)
{
    client_open(f, c);
    assert_line(f, c,
                "{\"QMP\": {\"version\": {\"qemu\": {\"micro\": 2, \"minor\": 1, \"major\": 0}, "
                "\"package\": \"test-pkg\"}, \"capabilities\": []}}");
    if (negotiate) {
        client_send(f, c, "{\"execute\": \"qmp_capabilities\"}\n");
        assert_line(f, c, "{\"return\": {}}");
    }
}

static JsonNode *parse_line(const char *line)
{
    g_autoptr(JsonParser) parser = json_parser_new();
    g_autoptr(GError) error = NULL;

    json_parser_load_from_data(parser, line, -1, &error);
    g_assert_no_error(error);
    g_assert_true(JSON_NODE_HOLDS_OBJECT(json_parser_get_root(parser)));
    return json_node_copy(json_parser_get_root(parser));
}

static void test_socket_greeting(Fixture *f, gconstpointer data)
{
    TestClient c;

    client_connect(f, &c, FALSE);
    /* commands before negotiation are refused, over the socket too */
    client_send(f, &c, "{\"execute\": \"query-version\"}");
    assert_line(f, &c,
                "{\"error\": {\"class\": \"CommandNotFound\", \"desc\": \"Expecting capabilities "
                "negotiation with 'qmp_capabilities'\"}}");
    client_close(&c);
}

static void test_socket_roundtrip(Fixture *f, gconstpointer data)
{
    TestClient c;

    client_connect(f, &c, TRUE);
    /* no newline needed, and single quotes work as in QEMU */
    client_send(f, &c, "{'execute': 'x-echo', 'arguments': {'s': 'hi', 'i': 7}, 'id': 'a1'}");
    assert_line(f, &c, "{\"return\": {\"s\": \"hi\", \"i\": 7}, \"id\": \"a1\"}");
    g_assert_cmpint(json_object_get_int_member(f->d.last_args, "i"), ==, 7);
    /* two requests in one write, answered in order */
    client_send(f, &c,
                "{\"execute\": \"x-echo\", \"arguments\": {\"s\": \"1\"}}"
                "{\"execute\": \"nope\", \"id\": 2}\r\n");
    assert_line(f, &c, "{\"return\": {\"s\": \"1\"}}");
    assert_line(f, &c,
                "{\"error\": {\"class\": \"CommandNotFound\", \"desc\": \"The command nope has not "
                "been found\"}, \"id\": 2}");
    client_close(&c);
}

static void test_socket_events(Fixture *f, gconstpointer data)
{
    TestClient a, b;
    JsonObject *data_obj = json_object_new();
    JsonNode *data_node = json_node_new(JSON_NODE_OBJECT);
    g_autofree char *line = NULL;
    g_autoptr(JsonNode) ev = NULL;
    JsonObject *o;
    JsonObject *ts;
    gint64 before = g_get_real_time() / G_USEC_PER_SEC;

    client_connect(f, &a, TRUE);
    client_connect(f, &b, FALSE);

    json_object_set_string_member(data_obj, "status", "setup");
    json_node_take_object(data_node, data_obj);
    qmp_server_emit_event(f->server, "MIGRATION", data_node);
    qmp_server_emit_event(f->server, "STOP", NULL);

    line = client_read_line(f, &a);
    ev = parse_line(line);
    o = json_node_get_object(ev);
    g_assert_true(g_str_has_prefix(line, "{\"timestamp\": {\"seconds\": "));
    g_assert_true(g_str_has_suffix(line, "\"event\": \"MIGRATION\", \"data\": {\"status\": "
                                         "\"setup\"}}"));
    ts = json_object_get_object_member(o, "timestamp");
    g_assert_cmpint(json_object_get_int_member(ts, "seconds"), >=, before);
    g_assert_cmpint(json_object_get_int_member(ts, "microseconds"), <, G_USEC_PER_SEC);
    g_clear_pointer(&line, g_free);
    line = client_read_line(f, &a);
    g_assert_true(g_str_has_suffix(line, "}, \"event\": \"STOP\"}")); /* no data member */

    /* b was not negotiated: the first thing it sees is its own answer */
    client_send(f, &b, "{\"execute\": \"qmp_capabilities\"}");
    assert_line(f, &b, "{\"return\": {}}");
    g_assert_cmpuint(b.in->len, ==, 0);
    /* now it gets events */
    qmp_server_emit_event(f->server, "RESUME", NULL);
    g_clear_pointer(&line, g_free);
    line = client_read_line(f, &b);
    g_assert_true(g_str_has_suffix(line, "\"event\": \"RESUME\"}"));
    g_clear_pointer(&line, g_free);
    line = client_read_line(f, &a);
    g_assert_true(g_str_has_suffix(line, "\"event\": \"RESUME\"}"));
    client_close(&a);
    client_close(&b);
}

typedef struct {
    QmpServer *server;
    int count;
} EmitThread;

static gpointer emit_thread(gpointer data)
{
    EmitThread *t = data;

    for (int i = 0; i < t->count; i++) {
        JsonNode *node = json_node_new(JSON_NODE_OBJECT);
        JsonObject *o = json_object_new();

        json_object_set_int_member(o, "pass", i);
        json_node_take_object(node, o);
        qmp_server_emit_event(t->server, "MIGRATION_PASS", node);
    }
    return NULL;
}

static void test_socket_events_thread(Fixture *f, gconstpointer data)
{
    TestClient c;
    EmitThread t = { f->server, 200 };
    GThread *thread;

    client_connect(f, &c, TRUE);
    thread = g_thread_new("emit", emit_thread, &t);
    /* the server's context delivers them, in emission order */
    for (int i = 0; i < t.count; i++) {
        g_autofree char *line = client_read_line(f, &c);
        g_autofree char *suffix =
            g_strdup_printf("\"event\": \"MIGRATION_PASS\", \"data\": {\"pass\": %d}}", i);

        g_assert_true(g_str_has_suffix(line, suffix));
    }
    g_thread_join(thread);

    /* flush sends what another thread queued without the loop running */
    t.count = 1;
    thread = g_thread_new("emit", emit_thread, &t);
    g_thread_join(thread);
    qmp_server_flush(f->server);
    g_assert_true(client_recv(&c));
    g_assert_nonnull(strstr(c.in->str, "\"pass\": 0}}\r\n"));
    client_close(&c);
}

static void test_socket_mode(Fixture *f, gconstpointer data)
{
    struct stat st;

    g_assert_cmpint(lstat(f->path, &st), ==, 0);
    g_assert_true(S_ISSOCK(st.st_mode));
    g_assert_cmpint(st.st_mode & 07777, ==, 0600);
}

/* Reads lines until a "return"; every other line must be an error. */
static void expect_errors_then_return(Fixture *f, TestClient *c, const char *expected_return)
{
    for (int i = 0; i < 100000; i++) {
        g_autofree char *line = client_read_line(f, c);
        g_autoptr(JsonNode) node = parse_line(line);
        JsonObject *o = json_node_get_object(node);

        if (json_object_has_member(o, "return")) {
            g_assert_cmpstr(line, ==, expected_return);
            return;
        }
        g_assert_cmpstr(
            json_object_get_string_member(json_object_get_object_member(o, "error"), "class"), ==,
            "GenericError");
    }
    g_assert_not_reached();
}

static void test_socket_garbage(Fixture *f, gconstpointer data)
{
    TestClient c;
    g_autoptr(GRand) rand = g_rand_new_with_seed(1234);
    guint8 junk[4096];

    client_connect(f, &c, TRUE);
    client_send(f, &c, "nonsense } ] \"unterminated\n{\"a\": 'b' ,,,\n");
    for (gsize i = 0; i < sizeof(junk); i++)
        junk[i] = (guint8)g_rand_int_range(rand, 0, 256);
    client_send_len(f, &c, (const char *)junk, sizeof(junk));
    /* 0xFF is the documented way to get the parser back into a known state */
    client_send(f, &c, "\xff\n{\"execute\": \"x-echo\", \"arguments\": {\"s\": \"alive\"}}\n");
    expect_errors_then_return(f, &c, "{\"return\": {\"s\": \"alive\"}}");
    client_close(&c);
}

static void test_socket_huge(Fixture *f, gconstpointer data)
{
    TestClient c;
    gsize size = 10 * 1024 * 1024;
    g_autofree char *huge = g_malloc(size);

    client_connect(f, &c, TRUE);
    /* 10 MiB of one token and no newline */
    memset(huge, 'A', size);
    client_send_len(f, &c, huge, size);
    client_send(f, &c, "\n{\"execute\": \"x-echo\", \"arguments\": {\"s\": \"one\"}}");
    expect_errors_then_return(f, &c, "{\"return\": {\"s\": \"one\"}}");

    /* 10 MiB inside a request's string: a single error, the request is skipped */
    {
        const char *head = "{\"execute\": \"x-echo\", \"arguments\": {\"s\": \"";

        memcpy(huge, head, strlen(head));
    }
    memcpy(huge + size - 3, "\"}}", 3);
    client_send_len(f, &c, huge, size);
    client_send(f, &c, "{\"execute\": \"x-echo\", \"arguments\": {\"s\": \"two\"}}");
    {
        g_autofree char *line = client_read_line(f, &c);

        g_assert_cmpstr(line, ==,
                        "{\"error\": {\"class\": \"GenericError\", \"desc\": \"JSON parse error, "
                        "message exceeds the maximum size of 1048576 bytes\"}}");
    }
    assert_line(f, &c, "{\"return\": {\"s\": \"two\"}}");
    g_assert_cmpuint(f->d.echo_calls, ==, 2);
    client_close(&c);
}

static void test_socket_disconnect(Fixture *f, gconstpointer data)
{
    TestClient a, b, c;

    client_connect(f, &b, TRUE);
    /* half a request, then gone */
    client_connect(f, &a, TRUE);
    client_send(f, &a, "{\"execute\": \"x-echo\", \"argum");
    client_close(&a);
    spin(f);
    /* a request whose answer cannot be delivered (no SIGPIPE, no crash) */
    client_connect(f, &a, TRUE);
    client_send(f, &a, "{\"execute\": \"x-echo\", \"arguments\": {\"s\": \"x\"}}");
    shutdown(a.fd, SHUT_RDWR);
    client_close(&a);
    for (int i = 0; i < 20; i++) {
        qmp_server_emit_event(f->server, "STOP", NULL);
        spin(f);
    }
    g_assert_cmpuint(f->d.echo_calls, ==, 1);

    /* the others are fine */
    for (int i = 0; i < 20; i++)
        g_free(client_read_line(f, &b));
    client_send(f, &b, "{\"execute\": \"query-version\"}");
    assert_line(f, &b,
                "{\"return\": {\"qemu\": {\"micro\": 2, \"minor\": 1, \"major\": 0}, \"package\": "
                "\"test-pkg\"}}");
    client_connect(f, &c, TRUE);

    /* a client that shuts down its sending side still gets its answer, then EOF
     * (what `echo ... | socat - UNIX-CONNECT:sock` does) */
    client_send(f, &c, "{\"execute\": \"x-echo\", \"arguments\": {\"s\": \"bye\"}}");
    shutdown(c.fd, SHUT_WR);
    assert_line(f, &c, "{\"return\": {\"s\": \"bye\"}}");
    client_wait_eof(f, &c);
    client_close(&c);
    client_close(&b);
}

/* Forgets the complete lines received so far. */
static void drop_lines(TestClient *c)
{
    char *last = g_strrstr(c->in->str, "\r\n");

    if (last)
        g_string_erase(c->in, 0, last - c->in->str + 2);
}

static void test_socket_slow_reader(Fixture *f, gconstpointer data)
{
    TestClient slow, ok;

    qmp_server_set_limits(f->server, 0, 64 * 1024);
    g_test_expect_message(G_LOG_DOMAIN, G_LOG_LEVEL_MESSAGE,
                          "QMP: disconnecting a client that does not read its output*");
    client_connect(f, &slow, TRUE);
    client_connect(f, &ok, TRUE);
    /* ~1.5 MB of events; slow never reads, so once the kernel's socket buffer and
     * the 64 KiB allowed are full the server must hang up on it */
    for (int i = 0; i < 20000; i++) {
        qmp_server_emit_event(f->server, "STOP", NULL);
        if (i % 100 == 0) {
            spin(f);
            /* ok reads along */
            client_recv(&ok);
            drop_lines(&ok);
        }
    }
    spin(f);
    /* slow now reads: its backlog, then EOF (a connected client would block) */
    client_wait_eof(f, &slow);
    g_test_assert_expected_messages();
    client_close(&slow);
    drop_lines(&ok);
    client_send(f, &ok, "{\"execute\": \"x-echo\", \"arguments\": {\"s\": \"still\"}}");
    {
        g_autofree char *line = NULL;

        do {
            g_free(line);
            line = client_read_line(f, &ok);
        } while (strstr(line, "\"event\""));
        g_assert_cmpstr(line, ==, "{\"return\": {\"s\": \"still\"}}");
    }
    client_close(&ok);
}

static int pipe_pair(int fds[2])
{
    return pipe2(fds, O_CLOEXEC);
}

/* TRUE if the pipe's read end @rfd sees EOF (no writer left) within a while. */
static gboolean pipe_eof(Fixture *f, int rfd)
{
    gint64 deadline = g_get_monotonic_time() + WAIT_US;

    while (g_get_monotonic_time() < deadline) {
        struct pollfd p = { .fd = rfd, .events = POLLIN };
        char ch;

        spin(f);
        if (poll(&p, 1, 1) == 1)
            return read(rfd, &ch, 1) == 0;
    }
    return FALSE;
}

static void test_socket_getfd(Fixture *f, gconstpointer data)
{
    TestClient c;
    int p1[2], p2[2], p3[2];
    g_autoptr(GError) error = NULL;
    int fd;
    char buf[8] = { 0 };

    g_assert_cmpint(pipe_pair(p1), ==, 0);
    g_assert_cmpint(pipe_pair(p2), ==, 0);
    g_assert_cmpint(pipe_pair(p3), ==, 0);
    client_connect(f, &c, TRUE);

    /* getfd with the fd attached to the same message */
    client_send_with_fd(&c, "{\"execute\": \"getfd\", \"arguments\": {\"fdname\": \"mig\"}}",
                        p1[1]);
    close(p1[1]);
    assert_line(f, &c, "{\"return\": {}}");
    fd = qmp_server_take_fd(f->server, "mig", &error);
    g_assert_no_error(error);
    g_assert_cmpint(fd, >=, 0);
    g_assert_cmpint(fcntl(fd, F_GETFD) & FD_CLOEXEC, ==, FD_CLOEXEC);
    g_assert_cmpint(write(fd, "hi", 2), ==, 2);
    g_assert_cmpint(read(p1[0], buf, sizeof(buf)), ==, 2);
    g_assert_cmpstr(buf, ==, "hi");
    close(fd);
    g_assert_true(pipe_eof(f, p1[0])); /* the server kept no copy */
    close(p1[0]);
    g_assert_cmpint(pipe_pair(p1), ==, 0);
    /* taken: the name is gone */
    g_assert_cmpint(qmp_server_take_fd(f->server, "mig", &error), ==, -1);
    g_assert_error(error, QMP_ERROR, QMP_ERROR_GENERIC);
    g_clear_error(&error);

    /* the fd sent with an earlier message (like qemu.qmp's send_fd_scm) */
    client_send_with_fd(&c, " ", p2[1]);
    close(p2[1]);
    client_send(f, &c, "{\"execute\": \"getfd\", \"arguments\": {\"fdname\": \"a\"}}");
    assert_line(f, &c, "{\"return\": {}}");
    /* replacing a name closes the fd it held */
    client_send_with_fd(&c, "{\"execute\": \"getfd\", \"arguments\": {\"fdname\": \"a\"}}", p3[1]);
    close(p3[1]);
    assert_line(f, &c, "{\"return\": {}}");
    g_assert_true(pipe_eof(f, p2[0]));
    /* closefd closes it */
    client_send(f, &c, "{\"execute\": \"closefd\", \"arguments\": {\"fdname\": \"a\"}, \"id\": 1}");
    assert_line(f, &c, "{\"return\": {}, \"id\": 1}");
    g_assert_true(pipe_eof(f, p3[0]));
    client_send(f, &c, "{\"execute\": \"closefd\", \"arguments\": {\"fdname\": \"a\"}}");
    assert_line(f, &c,
                "{\"error\": {\"class\": \"GenericError\", \"desc\": \"File descriptor named 'a' "
                "not found\"}}");
    /* a name that could be mistaken for an fd number is refused; the fd is used up */
    client_send_with_fd(&c, "{\"execute\": \"getfd\", \"arguments\": {\"fdname\": \"1\"}}", p1[1]);
    close(p1[1]);
    assert_line(f, &c,
                "{\"error\": {\"class\": \"GenericError\", \"desc\": \"Parameter 'fdname' "
                "expects a name not starting with a digit\"}}");
    g_assert_true(pipe_eof(f, p1[0]));
    /* no fd left to claim */
    client_send(f, &c, "{\"execute\": \"getfd\", \"arguments\": {\"fdname\": \"b\"}}");
    assert_line(f, &c,
                "{\"error\": {\"class\": \"GenericError\", \"desc\": \"No file descriptor "
                "supplied via SCM_RIGHTS\"}}");
    client_close(&c);
    close(p1[0]);
    close(p2[0]);
    close(p3[0]);
}

static void test_socket_unclaimed_fd(Fixture *f, gconstpointer data)
{
    TestClient c;
    int p[2];

    g_assert_cmpint(pipe_pair(p), ==, 0);
    client_connect(f, &c, TRUE);
    client_send_with_fd(&c, "{\"execute\": \"query-version\"}", p[1]);
    close(p[1]);
    g_free(client_read_line(f, &c));
    /* the server holds the write end while the client is connected */
    {
        struct pollfd pfd = { .fd = p[0], .events = POLLIN };

        spin(f);
        g_assert_cmpint(poll(&pfd, 1, 0), ==, 0);
    }
    client_close(&c);
    /* the server closes it when the client goes */
    g_assert_true(pipe_eof(f, p[0]));
    close(p[0]);
}

static void test_socket_stale(Fixture *f, gconstpointer data)
{
    g_autoptr(GError) error = NULL;
    struct sockaddr_un addr = { .sun_family = AF_UNIX };
    g_autofree char *other = g_build_filename(f->dir, "other.sock", NULL);
    QmpServer *s2;
    int fd;
    TestClient c;

    /* a socket file left behind by a dead process */
    g_strlcpy(addr.sun_path, other, sizeof(addr.sun_path));
    fd = socket(AF_UNIX, SOCK_STREAM, 0);
    g_assert_cmpint(bind(fd, (struct sockaddr *)&addr, sizeof(addr)), ==, 0);
    close(fd);
    g_assert_true(g_file_test(other, G_FILE_TEST_EXISTS));
    s2 = qmp_server_new("two", 9, 8, 7);
    g_assert_true(qmp_server_listen_unix(s2, other, &error));
    g_assert_no_error(error);

    /* it is really ours now */
    client_open_path(&c, other);
    assert_line(f, &c,
                "{\"QMP\": {\"version\": {\"qemu\": {\"micro\": 7, \"minor\": 8, \"major\": 9}, "
                "\"package\": \"two\"}, \"capabilities\": []}}");
    client_close(&c);
    qmp_server_free(s2);
    g_assert_false(g_file_test(other, G_FILE_TEST_EXISTS));

    /* a live server's socket is not stolen */
    s2 = qmp_server_new("two", 9, 8, 7);
    g_assert_false(qmp_server_listen_unix(s2, f->path, &error));
    g_assert_error(error, G_IO_ERROR, G_IO_ERROR_ADDRESS_IN_USE);
    g_clear_error(&error);
    /* nor is a regular file */
    g_assert_true(g_file_set_contents(other, "data", -1, NULL));
    g_assert_false(qmp_server_listen_unix(s2, other, &error));
    g_assert_error(error, G_IO_ERROR, G_IO_ERROR_EXISTS);
    g_assert_true(g_file_test(other, G_FILE_TEST_IS_REGULAR));
    g_unlink(other);
    qmp_server_free(s2);
    /* the first server still serves */
    client_connect(f, &c, TRUE);
    client_close(&c);
}

static JsonNode *cmd_emit(QmpClient *client, JsonObject *args, gpointer user_data, GError **error)
{
    JsonNode *node = json_node_new(JSON_NODE_OBJECT);

    qmp_server_emit_event(qmp_client_get_server(client), "STOP", NULL);
    json_node_take_object(node, json_object_new());
    return node;
}

static void test_socket_event_in_handler(Fixture *f, gconstpointer data)
{
    TestClient c;
    const QmpCommand stop = { "stop", cmd_emit, NULL };
    g_autofree char *line = NULL;

    qmp_server_register(f->server, &stop, NULL);
    client_connect(f, &c, TRUE);
    client_send(f, &c, "{\"execute\": \"stop\", \"id\": 1}");
    /* like QEMU: the STOP event comes before stop's answer */
    line = client_read_line(f, &c);
    g_assert_true(g_str_has_suffix(line, "\"event\": \"STOP\"}"));
    assert_line(f, &c, "{\"return\": {}, \"id\": 1}");
    client_close(&c);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);

#define DTEST(path, fn) \
    g_test_add("/qmp/dispatch/" path, DispatchFixture, NULL, dfix_setup, fn, dfix_teardown)
#define STEST(path, fn) g_test_add("/qmp/socket/" path, Fixture, NULL, fix_setup, fn, fix_teardown)

    g_test_add_func("/qmp/stream/split", test_stream_split);
    g_test_add_func("/qmp/stream/several", test_stream_several);
    g_test_add_func("/qmp/stream/strings", test_stream_strings);
    g_test_add_func("/qmp/stream/escapes", test_stream_escapes);
    g_test_add_func("/qmp/stream/depth", test_stream_depth);
    g_test_add_func("/qmp/stream/size", test_stream_size);
    g_test_add_func("/qmp/stream/recovery", test_stream_recovery);
    g_test_add_func("/qmp/stream/stop", test_stream_stop);
    DTEST("negotiation", test_dispatch_negotiation);
    DTEST("malformed", test_dispatch_malformed);
    DTEST("args", test_dispatch_args);
    DTEST("id", test_dispatch_id);
    DTEST("query-commands", test_dispatch_query_commands);
    DTEST("fds", test_dispatch_fds);
    STEST("greeting", test_socket_greeting);
    STEST("roundtrip", test_socket_roundtrip);
    STEST("events", test_socket_events);
    STEST("events-thread", test_socket_events_thread);
    STEST("event-in-handler", test_socket_event_in_handler);
    STEST("mode", test_socket_mode);
    STEST("garbage", test_socket_garbage);
    STEST("huge", test_socket_huge);
    STEST("disconnect", test_socket_disconnect);
    STEST("slow-reader", test_socket_slow_reader);
    STEST("getfd", test_socket_getfd);
    STEST("unclaimed-fd", test_socket_unclaimed_fd);
    STEST("stale", test_socket_stale);
    return g_test_run();
}
