/* SPDX-License-Identifier: MIT */
/*
 * QMP dispatcher: request parsing, argument validation, the command table and
 * response building, with QEMU's error classes and texts (qapi/qmp-dispatch.c,
 * monitor/qmp.c, qapi/qobject-input-visitor.c).
 */
#include "qmp_json.h"
#include "qmp_priv.h"

#include <string.h>

/* clang-format off */
G_DEFINE_QUARK(qmp-error-quark, qmp_error)
/* clang-format on */

const char *qmp_error_class_name(int code)
{
    switch ((QmpErrorClass)code) {
    case QMP_ERROR_GENERIC:
        return "GenericError";
    case QMP_ERROR_COMMAND_NOT_FOUND:
        return "CommandNotFound";
    case QMP_ERROR_DEVICE_NOT_ACTIVE:
        return "DeviceNotActive";
    case QMP_ERROR_DEVICE_NOT_FOUND:
        return "DeviceNotFound";
    case QMP_ERROR_KVM_MISSING_CAP:
        return "KVMMissingCap";
    }
    return "GenericError";
}

static void command_entry_free(gpointer p)
{
    QmpCommandEntry *e = p;

    g_free(e->name);
    g_free(e);
}

void qmp_dispatch_init(QmpServer *s)
{
    s->commands = g_hash_table_new_full(g_str_hash, g_str_equal, NULL, command_entry_free);
    s->command_order = g_ptr_array_new();
}

void qmp_dispatch_finalize(QmpServer *s)
{
    g_clear_pointer(&s->command_order, g_ptr_array_unref);
    g_clear_pointer(&s->commands, g_hash_table_unref);
}

void qmp_server_register(QmpServer *s, const QmpCommand *cmd, gpointer user_data)
{
    QmpCommandEntry *old;
    QmpCommandEntry *e;

    g_return_if_fail(s && cmd && cmd->name && cmd->func);

    old = g_hash_table_lookup(s->commands, cmd->name);
    if (old && strcmp(cmd->name, "qmp_capabilities") == 0) {
        /* negotiation state lives in the built-in handler */
        g_warning("QMP: qmp_capabilities cannot be replaced");
        return;
    }
    e = g_new0(QmpCommandEntry, 1);
    e->name = g_strdup(cmd->name);
    e->func = cmd->func;
    e->args = cmd->args;
    e->user_data = user_data;
    if (old)
        g_ptr_array_remove(s->command_order, old);
    g_ptr_array_add(s->command_order, e);
    /* the key is the entry's own name, so replace (not insert) to update it */
    g_hash_table_replace(s->commands, e->name, e);
}

/* Builds {"return": ret} or {"error": {...}}, plus "id" when given. Consumes @ret. */
static char *response_text(JsonNode *ret, const GError *error, JsonNode *id)
{
    g_autoptr(JsonObject) rsp = json_object_new();
    g_autoptr(JsonNode) root = json_node_new(JSON_NODE_OBJECT);

    if (error) {
        JsonObject *err = json_object_new();
        int code = error->domain == QMP_ERROR ? error->code : QMP_ERROR_GENERIC;

        json_object_set_string_member(err, "class", qmp_error_class_name(code));
        json_object_set_string_member(err, "desc", error->message);
        json_object_set_object_member(rsp, "error", err);
        if (ret)
            json_node_unref(ret);
    } else {
        json_object_set_member(rsp, "return", ret);
    }
    if (id)
        json_object_set_member(rsp, "id", json_node_copy(id));
    json_node_set_object(root, rsp);
    return qmp_json_to_string(root);
}

char *qmp_dispatch_error_text(const GError *error)
{
    return response_text(NULL, error, NULL);
}

static const char *arg_type_name(QmpArgType type)
{
    switch (type) {
    case QMP_ARG_STR:
        return "string";
    case QMP_ARG_INT:
        return "integer";
    case QMP_ARG_BOOL:
        return "boolean";
    case QMP_ARG_NUMBER:
        return "number";
    case QMP_ARG_OBJECT:
        return "object";
    case QMP_ARG_ARRAY:
        return "array";
    case QMP_ARG_ANY:
        break;
    }
    return "any";
}

static gboolean arg_type_ok(JsonNode *node, QmpArgType type)
{
    GType vt;

    switch (type) {
    case QMP_ARG_ANY:
        return TRUE;
    case QMP_ARG_OBJECT:
        return JSON_NODE_HOLDS_OBJECT(node);
    case QMP_ARG_ARRAY:
        return JSON_NODE_HOLDS_ARRAY(node);
    default:
        break;
    }
    if (!JSON_NODE_HOLDS_VALUE(node))
        return FALSE;
    vt = json_node_get_value_type(node);
    switch (type) {
    case QMP_ARG_STR:
        return vt == G_TYPE_STRING;
    case QMP_ARG_INT:
        return vt == G_TYPE_INT64;
    case QMP_ARG_BOOL:
        return vt == G_TYPE_BOOLEAN;
    case QMP_ARG_NUMBER:
        return vt == G_TYPE_INT64 || vt == G_TYPE_DOUBLE;
    default:
        return FALSE;
    }
}

static const QmpArgSpec *find_arg(const QmpArgSpec *specs, const char *name)
{
    for (const QmpArgSpec *a = specs; a && a->name; a++) {
        if (strcmp(a->name, name) == 0)
            return a;
    }
    return NULL;
}

/*
 * Like QEMU's input visitor: declared members in order (missing, wrong type),
 * then members nobody declared.
 */
static gboolean check_args(const QmpCommandEntry *cmd, JsonObject *args, GError **error)
{
    g_autoptr(GList) members = NULL;

    for (const QmpArgSpec *a = cmd->args; a && a->name; a++) {
        JsonNode *node = json_object_get_member(args, a->name);

        if (!node) {
            if (a->optional)
                continue;
            g_set_error(error, QMP_ERROR, QMP_ERROR_GENERIC, "Parameter '%s' is missing", a->name);
            return FALSE;
        }
        if (!arg_type_ok(node, a->type)) {
            g_set_error(error, QMP_ERROR, QMP_ERROR_GENERIC,
                        "Invalid parameter type for '%s', expected: %s", a->name,
                        arg_type_name(a->type));
            return FALSE;
        }
    }
    members = json_object_get_members(args);
    for (GList *l = members; l; l = l->next) {
        if (!find_arg(cmd->args, l->data)) {
            g_set_error(error, QMP_ERROR, QMP_ERROR_GENERIC, "Parameter '%s' is unexpected",
                        (const char *)l->data);
            return FALSE;
        }
    }
    return TRUE;
}

/* QEMU's qmp_dispatch_check_obj(): the request's own members. */
static gboolean check_request(JsonObject *req, GError **error)
{
    g_autoptr(GList) members = json_object_get_members(req);
    gboolean has_execute = FALSE;

    for (GList *l = members; l; l = l->next) {
        const char *key = l->data;
        JsonNode *val = json_object_get_member(req, key);

        if (strcmp(key, "execute") == 0) {
            if (!JSON_NODE_HOLDS_VALUE(val) || json_node_get_value_type(val) != G_TYPE_STRING) {
                g_set_error(error, QMP_ERROR, QMP_ERROR_GENERIC,
                            "QMP input member 'execute' must be a string");
                return FALSE;
            }
            has_execute = TRUE;
        } else if (strcmp(key, "arguments") == 0) {
            if (!JSON_NODE_HOLDS_OBJECT(val)) {
                g_set_error(error, QMP_ERROR, QMP_ERROR_GENERIC,
                            "QMP input member 'arguments' must be an object");
                return FALSE;
            }
        } else if (strcmp(key, "id") != 0) {
            /* includes "exec-oob" and "control": out-of-band is not offered */
            g_set_error(error, QMP_ERROR, QMP_ERROR_GENERIC, "QMP input member '%s' is unexpected",
                        key);
            return FALSE;
        }
    }
    if (!has_execute) {
        g_set_error(error, QMP_ERROR, QMP_ERROR_GENERIC, "QMP input lacks member 'execute'");
        return FALSE;
    }
    return TRUE;
}

/* Runs a checked request; returns the "return" value or NULL with @error set. */
static JsonNode *execute(QmpServer *s, QmpClient *client, JsonObject *req, GError **error)
{
    const char *name = json_object_get_string_member(req, "execute");
    QmpCommandEntry *cmd = g_hash_table_lookup(s->commands, name);
    g_autoptr(JsonObject) empty = NULL;
    JsonObject *args;
    JsonNode *ret;
    GError *err = NULL;

    if (!client->negotiated && strcmp(name, "qmp_capabilities") != 0) {
        /* QEMU says this for any other command, known or not */
        g_set_error(error, QMP_ERROR, QMP_ERROR_COMMAND_NOT_FOUND,
                    "Expecting capabilities negotiation with 'qmp_capabilities'");
        return NULL;
    }
    if (!cmd) {
        g_set_error(error, QMP_ERROR, QMP_ERROR_COMMAND_NOT_FOUND,
                    "The command %s has not been found", name);
        return NULL;
    }
    if (json_object_has_member(req, "arguments")) {
        args = json_object_get_object_member(req, "arguments");
    } else {
        empty = json_object_new();
        args = empty;
    }
    if (!check_args(cmd, args, error))
        return NULL;

    ret = cmd->func(client, args, cmd->user_data, &err);
    if (err) {
        if (ret)
            json_node_unref(ret);
        g_propagate_error(error, err);
        return NULL;
    }
    if (!ret) {
        g_warning("QMP: command %s returned neither a value nor an error", name);
        g_set_error(error, QMP_ERROR, QMP_ERROR_GENERIC, "Command %s failed", name);
        return NULL;
    }
    return ret;
}

char *qmp_server_dispatch_text(QmpServer *s, QmpClient *client_or_null, const char *json, gsize len)
{
    QmpClient *client = client_or_null ? client_or_null : s->detached;
    g_autoptr(JsonParser) parser = json_parser_new();
    g_autoptr(GError) error = NULL;
    JsonNode *root;
    JsonObject *req;
    JsonNode *id;
    JsonNode *ret;

    g_return_val_if_fail(s && json, NULL);

    if (len > G_MAXSSIZE)
        len = G_MAXSSIZE;
    if (!json_parser_load_from_data(parser, json, (gssize)len, &error)) {
        /* json-glib says "<data>:1:8: Parse error: unexpected ..."; keep the useful part */
        const char *why = strstr(error->message, "Parse error: ");
        g_autoptr(GError) wrapped =
            g_error_new(QMP_ERROR, QMP_ERROR_GENERIC, "JSON parse error, %s",
                        why ? why + strlen("Parse error: ") : error->message);

        return response_text(NULL, wrapped, NULL);
    }
    root = json_parser_get_root(parser);
    if (!root)
        return NULL; /* only whitespace */
    if (!JSON_NODE_HOLDS_OBJECT(root)) {
        g_set_error(&error, QMP_ERROR, QMP_ERROR_GENERIC, "QMP input must be a JSON object");
        return response_text(NULL, error, NULL);
    }
    req = json_node_get_object(root);
    id = json_object_get_member(req, "id");
    if (!check_request(req, &error))
        return response_text(NULL, error, id);
    ret = execute(s, client, req, &error);
    return response_text(ret, error, id);
}
