#include "chardev_spec.h"

#include <gio/gio.h>
#include <string.h>

#define SPEC_FORMS "stdio, file:PATH[,input=INPATH], unix:PATH or none"

void chardev_spec_clear(ChardevSpec *spec)
{
    g_clear_pointer(&spec->path, g_free);
    g_clear_pointer(&spec->input, g_free);
    spec->kind = CHARDEV_NONE;
}

/* Splits "a,,b,key=v" at single commas into unescaped parts. */
static GPtrArray *split_parts(const char *s)
{
    GPtrArray *parts = g_ptr_array_new_with_free_func(g_free);
    GString *cur = g_string_new(NULL);
    for (const char *p = s;; p++) {
        if (*p == ',' && p[1] == ',') {
            g_string_append_c(cur, ',');
            p++;
        } else if (*p == ',' || !*p) {
            g_ptr_array_add(parts, g_string_free(g_steal_pointer(&cur), FALSE));
            if (!*p)
                break;
            cur = g_string_new(NULL);
        } else {
            g_string_append_c(cur, *p);
        }
    }
    return parts;
}

static bool fail(GError **error, const char *option, const char *fmt, ...) G_GNUC_PRINTF(3, 4);

static bool fail(GError **error, const char *option, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    g_autofree char *msg = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    g_set_error(error, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT, "%s: %s", option, msg);
    return false;
}

bool chardev_spec_parse(const char *text, const char *option, ChardevSpec *out, GError **error)
{
    memset(out, 0, sizeof(*out));
    if (!text || !strcmp(text, "stdio")) {
        out->kind = CHARDEV_STDIO;
        return true;
    }
    if (!strcmp(text, "none")) {
        out->kind = CHARDEV_NONE;
        return true;
    }
    const char *colon = strchr(text, ':');
    g_autofree char *kind = colon ? g_strndup(text, (gsize)(colon - text)) : g_strdup(text);
    if (!strcmp(kind, "stdio") || !strcmp(kind, "none"))
        return fail(error, option, "'%s' takes no arguments (in '%s')", kind, text);
    if (!colon || (strcmp(kind, "file") && strcmp(kind, "unix")))
        return fail(error, option, "unknown backend '%s' in '%s' (expected " SPEC_FORMS ")", kind,
                    text);

    g_autoptr(GPtrArray) parts = split_parts(colon + 1);
    const char *path = parts->pdata[0];
    if (!*path)
        return fail(error, option, "'%s:' needs a PATH (in '%s')", kind, text);
    out->kind = !strcmp(kind, "file") ? CHARDEV_FILE : CHARDEV_UNIX;
    out->path = g_strdup(path);
    for (guint i = 1; i < parts->len; i++) {
        const char *opt = parts->pdata[i];
        if (out->kind == CHARDEV_FILE && g_str_has_prefix(opt, "input=")) {
            if (out->input) {
                chardev_spec_clear(out);
                return fail(error, option, "'input=' given twice in '%s'", text);
            }
            if (!opt[6]) {
                chardev_spec_clear(out);
                return fail(error, option, "'input=' needs a PATH (in '%s')", text);
            }
            out->input = g_strdup(opt + 6);
            continue;
        }
        chardev_spec_clear(out);
        if (!*opt)
            return fail(error, option,
                        "empty option after ',' in '%s' (write ',,' for a comma "
                        "in a path)",
                        text);
        return fail(error, option, "unknown option '%s' for '%s:' in '%s' (%s)", opt, kind, text,
                    !strcmp(kind, "file") ? "only input=INPATH" : "it takes none");
    }
    return true;
}
