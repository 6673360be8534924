/* SPDX-License-Identifier: MIT */
/*
 * Built-in commands: qmp_capabilities, query-commands, query-version, and
 * getfd/closefd with the table of named fds they manage.
 */
#include "qmp_priv.h"

#include <string.h>
#include <unistd.h>

static JsonNode *new_empty_object(void)
{
    JsonNode *node = json_node_new(JSON_NODE_OBJECT);

    json_node_take_object(node, json_object_new());
    return node;
}

static JsonNode *cmd_qmp_capabilities(QmpClient *client, JsonObject *args, gpointer user_data,
                                      GError **error)
{
    JsonArray *enable = NULL;

    if (client->negotiated) {
        g_set_error(error, QMP_ERROR, QMP_ERROR_COMMAND_NOT_FOUND,
                    "Capabilities negotiation is already complete, command ignored");
        return NULL;
    }
    if (json_object_has_member(args, "enable"))
        enable = json_object_get_array_member(args, "enable");
    /* QEMU's only capability is "oob"; this server offers none */
    for (guint i = 0; enable && i < json_array_get_length(enable); i++) {
        JsonNode *cap = json_array_get_element(enable, i);

        if (!JSON_NODE_HOLDS_VALUE(cap) || json_node_get_value_type(cap) != G_TYPE_STRING) {
            g_set_error(error, QMP_ERROR, QMP_ERROR_GENERIC,
                        "Invalid parameter type for 'enable[%u]', expected: string", i);
            return NULL;
        }
        if (strcmp(json_node_get_string(cap), "oob") == 0) {
            g_set_error(error, QMP_ERROR, QMP_ERROR_GENERIC, "Capability 'oob' not available");
        } else {
            g_set_error(error, QMP_ERROR, QMP_ERROR_GENERIC,
                        "Parameter 'enable[%u]' does not accept value '%s'", i,
                        json_node_get_string(cap));
        }
        return NULL;
    }
    client->negotiated = TRUE;
    return new_empty_object();
}

static JsonNode *cmd_query_commands(QmpClient *client, JsonObject *args, gpointer user_data,
                                    GError **error)
{
    QmpServer *s = client->server;
    JsonArray *list = json_array_sized_new(s->command_order->len);
    JsonNode *node = json_node_new(JSON_NODE_ARRAY);

    for (guint i = 0; i < s->command_order->len; i++) {
        const QmpCommandEntry *e = g_ptr_array_index(s->command_order, i);
        JsonObject *obj = json_object_new();

        json_object_set_string_member(obj, "name", e->name);
        json_array_add_object_element(list, obj);
    }
    json_node_take_array(node, list);
    return node;
}

static JsonNode *cmd_query_version(QmpClient *client, JsonObject *args, gpointer user_data,
                                   GError **error)
{
    return qmp_server_version_node(client->server);
}

static JsonNode *cmd_getfd(QmpClient *client, JsonObject *args, gpointer user_data, GError **error)
{
    QmpServer *s = client->server;
    const char *name = json_object_get_string_member(args, "fdname");
    int fd;

    fd = qmp_client_take_pending_fd(client);
    if (fd < 0) {
        g_set_error(error, QMP_ERROR, QMP_ERROR_GENERIC,
                    "No file descriptor supplied via SCM_RIGHTS");
        return NULL;
    }
    /* QEMU keeps names that start with a digit for fd numbers (fd:N); like QEMU,
     * the fd is consumed (closed) either way */
    if (g_ascii_isdigit(name[0])) {
        close(fd);
        g_set_error(error, QMP_ERROR, QMP_ERROR_GENERIC,
                    "Parameter 'fdname' expects a name not starting with a digit");
        return NULL;
    }
    /* replacing a name closes the fd it held (the table's value destructor) */
    g_hash_table_replace(s->named_fds, g_strdup(name), GINT_TO_POINTER(fd));
    return new_empty_object();
}

static JsonNode *cmd_closefd(QmpClient *client, JsonObject *args, gpointer user_data,
                             GError **error)
{
    QmpServer *s = client->server;
    const char *name = json_object_get_string_member(args, "fdname");

    if (!g_hash_table_remove(s->named_fds, name)) {
        g_set_error(error, QMP_ERROR, QMP_ERROR_GENERIC, "File descriptor named '%s' not found",
                    name);
        return NULL;
    }
    return new_empty_object();
}

int qmp_server_take_fd(QmpServer *s, const char *name, GError **error)
{
    gpointer key;
    gpointer value;

    g_return_val_if_fail(s && name, -1);

    if (!g_hash_table_steal_extended(s->named_fds, name, &key, &value)) {
        g_set_error(error, QMP_ERROR, QMP_ERROR_GENERIC, "File descriptor named '%s' not found",
                    name);
        return -1;
    }
    g_free(key); /* stolen along with the fd */
    return GPOINTER_TO_INT(value);
}

static void close_fd_value(gpointer value)
{
    close(GPOINTER_TO_INT(value));
}

void qmp_fds_close_all(QmpServer *s)
{
    g_clear_pointer(&s->named_fds, g_hash_table_unref);
}

static const QmpArgSpec capabilities_args[] = {
    { "enable", QMP_ARG_ARRAY, TRUE },
    { NULL },
};

static const QmpArgSpec fdname_args[] = {
    { "fdname", QMP_ARG_STR, FALSE },
    { NULL },
};

static const QmpCommand builtin_commands[] = {
    { "qmp_capabilities", cmd_qmp_capabilities, capabilities_args },
    { "query-commands", cmd_query_commands, NULL },
    { "query-version", cmd_query_version, NULL },
    { "getfd", cmd_getfd, fdname_args },
    { "closefd", cmd_closefd, fdname_args },
};

void qmp_builtin_register(QmpServer *s)
{
    s->named_fds = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, close_fd_value);
    for (gsize i = 0; i < G_N_ELEMENTS(builtin_commands); i++)
        qmp_server_register(s, &builtin_commands[i], NULL);
}
