#include "uri.h"

#include <stdarg.h>
#include <string.h>

static G_GNUC_PRINTF(2, 3) bool bad(GError **error, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    g_autofree char *msg = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    g_set_error_literal(error, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE, msg);
    return false;
}

/* file:PATH[,offset=N]: N is decimal or 0x-hex. A comma in PATH is allowed when
 * it is not followed by "offset=". */
static bool parse_file(const char *rest, MigrateUri *u, GError **error)
{
    const char *opt = g_strrstr(rest, ",offset=");
    if (opt) {
        const char *num = opt + strlen(",offset=");
        guint64 v;
        g_autoptr(GError) local = NULL;
        bool hex = g_str_has_prefix(num, "0x") || g_str_has_prefix(num, "0X");
        if (!*num || !g_ascii_string_to_unsigned(hex ? num + 2 : num, hex ? 16 : 10, 0, G_MAXINT64,
                                                 &v, &local))
            return bad(error, "file: offset '%s' is not a number", num);
        u->offset = v;
        u->has_offset = true;
        u->path = g_strndup(rest, (gsize)(opt - rest));
    } else {
        u->path = g_strdup(rest);
    }
    if (!*u->path)
        return bad(error, "file: needs a path (file:PATH[,offset=N])");
    return true;
}

static bool parse_tcp(const char *rest, MigrateUri *u, GError **error)
{
    const char *colon;
    if (rest[0] == '[') { /* [v6addr]:port */
        const char *close = strchr(rest, ']');
        if (!close || close[1] != ':')
            return bad(error, "tcp: '%s' is not [ADDRESS]:PORT", rest);
        u->host = g_strndup(rest + 1, (gsize)(close - rest - 1));
        colon = close + 1;
    } else {
        colon = strrchr(rest, ':');
        if (!colon)
            return bad(error, "tcp: '%s' is not HOST:PORT", rest);
        u->host = g_strndup(rest, (gsize)(colon - rest));
    }
    u->port = g_strdup(colon + 1);
    if (!*u->port)
        return bad(error, "tcp: '%s' has no port", rest);
    return true;
}

bool migrate_uri_parse(const char *uri, MigrateUri *out, GError **error)
{
    memset(out, 0, sizeof(*out));
    const char *colon = uri ? strchr(uri, ':') : NULL;
    if (!colon)
        return bad(error, "Parameter 'uri' expects a valid migration protocol");
    const char *rest = colon + 1;
    g_autofree char *scheme = g_strndup(uri, (gsize)(colon - uri));
    bool ok;

    if (!strcmp(scheme, "file")) {
        out->kind = MIGRATE_URI_FILE;
        ok = parse_file(rest, out, error);
    } else if (!strcmp(scheme, "fd")) {
        out->kind = MIGRATE_URI_FD;
        out->fdname = g_strdup(rest);
        ok = *rest || bad(error, "fd: needs a name given to getfd (fd:NAME)");
    } else if (!strcmp(scheme, "exec")) {
        out->kind = MIGRATE_URI_EXEC;
        out->command = g_strdup(rest);
        ok = *rest || bad(error, "exec: needs a command (exec:CMD)");
    } else if (!strcmp(scheme, "unix")) {
        out->kind = MIGRATE_URI_UNIX;
        out->path = g_strdup(rest);
        ok = *rest || bad(error, "unix: needs a socket path (unix:PATH)");
    } else if (!strcmp(scheme, "tcp")) {
        out->kind = MIGRATE_URI_TCP;
        ok = parse_tcp(rest, out, error);
    } else {
        ok = bad(error, "Parameter 'uri' expects a valid migration protocol");
    }
    if (!ok)
        migrate_uri_clear(out);
    return ok;
}

void migrate_uri_clear(MigrateUri *u)
{
    g_clear_pointer(&u->path, g_free);
    g_clear_pointer(&u->fdname, g_free);
    g_clear_pointer(&u->command, g_free);
    g_clear_pointer(&u->host, g_free);
    g_clear_pointer(&u->port, g_free);
}

const char *migrate_uri_kind_name(MigrateUriKind k)
{
    static const char *const names[] = { "file", "fd", "exec", "unix", "tcp" };
    return (unsigned)k < G_N_ELEMENTS(names) ? names[k] : "?";
}
