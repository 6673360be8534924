/* SPDX-License-Identifier: MIT */
/* QMP framing: byte stream -> JSON texts. See qmp_stream.h for the rules. */
#include "qmp_stream.h"
#include "qmp.h"

typedef enum {
    ST_IDLE,      /* between texts */
    ST_CONTAINER, /* inside a top-level object or array */
    ST_SCALAR,    /* inside a top-level scalar (number, keyword, string, junk) */
} StreamState;

/* Above this a buffer that held a large text is given back after use. */
#define KEEP_ALLOCATED 65536

struct QmpStream {
    gsize max_size;
    guint max_depth;
    QmpStreamFunc func;
    gpointer user_data;

    GString *buf;
    StreamState state;
    gboolean discarding; /* over a limit: still tracking the text, not buffering it */
    char quote;          /* 0 outside a string, else the opening quote */
    gboolean escape;     /* the previous byte was a backslash inside a string */
    /* 64 bits: a discarded text is not bounded in size, so neither is its depth */
    gint64 braces;
    gint64 brackets;
};

QmpStream *qmp_stream_new(gsize max_size, guint max_depth, QmpStreamFunc func, gpointer user_data)
{
    QmpStream *s = g_new0(QmpStream, 1);

    s->max_size = max_size;
    s->max_depth = max_depth;
    s->func = func;
    s->user_data = user_data;
    s->buf = g_string_new(NULL);
    return s;
}

void qmp_stream_reset(QmpStream *s)
{
    s->state = ST_IDLE;
    s->discarding = FALSE;
    s->quote = 0;
    s->escape = FALSE;
    s->braces = 0;
    s->brackets = 0;
    if (s->buf->allocated_len > KEEP_ALLOCATED) {
        g_string_free(s->buf, TRUE);
        s->buf = g_string_new(NULL);
    } else {
        g_string_truncate(s->buf, 0);
    }
}

gsize qmp_stream_pending(const QmpStream *s)
{
    return s->buf->len;
}

void qmp_stream_free(QmpStream *s)
{
    if (!s)
        return;
    g_string_free(s->buf, TRUE);
    g_free(s);
}

static gboolean report(QmpStream *s, const char *fmt, ...) G_GNUC_PRINTF(2, 3);

static gboolean report(QmpStream *s, const char *fmt, ...)
{
    va_list ap;
    g_autoptr(GError) error = NULL;

    va_start(ap, fmt);
    error = g_error_new_valist(QMP_ERROR, QMP_ERROR_GENERIC, fmt, ap);
    va_end(ap);
    return s->func(NULL, 0, error, s->user_data);
}

/* Hands the buffered text to the callback and returns to ST_IDLE. */
static gboolean emit(QmpStream *s)
{
    gboolean cont = s->func(s->buf->str, s->buf->len, NULL, s->user_data);

    qmp_stream_reset(s);
    return cont;
}

/* Appends unless discarding; switches to discarding (and reports) past max_size. */
static gboolean append(QmpStream *s, char c)
{
    if (s->discarding)
        return TRUE;
    if (s->buf->len >= s->max_size) {
        s->discarding = TRUE;
        g_string_truncate(s->buf, 0);
        return report(
            s, "JSON parse error, message exceeds the maximum size of %" G_GSIZE_FORMAT " bytes",
            s->max_size);
    }
    g_string_append_c(s->buf, c);
    return TRUE;
}

static gboolean is_space(guchar c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

/* Bytes that can never occur in JSON text outside a string; see qmp_stream.h. */
static gboolean is_reset_byte(guchar c)
{
    return (c < 0x20 && c != '\t' && c != '\r' && c != '\n') || c >= 0xFE;
}

/* Tracks string state; returns TRUE if @c was consumed by a string. */
static gboolean in_string(QmpStream *s, char c)
{
    if (!s->quote)
        return FALSE;
    if (s->escape)
        s->escape = FALSE;
    else if (c == '\\')
        s->escape = TRUE;
    else if (c == s->quote)
        s->quote = 0;
    return TRUE;
}

static gboolean feed_container(QmpStream *s, char c)
{
    gint64 depth;

    if (!append(s, c))
        return FALSE;
    if (in_string(s, c))
        return TRUE;

    switch (c) {
    case '"':
    case '\'':
        s->quote = c;
        return TRUE;
    case '{':
        s->braces++;
        break;
    case '}':
        s->braces--;
        break;
    case '[':
        s->brackets++;
        break;
    case ']':
        s->brackets--;
        break;
    default:
        return TRUE;
    }

    if (s->braces < 0 || s->brackets < 0) {
        gboolean reported = s->discarding;

        qmp_stream_reset(s);
        return reported || report(s, "JSON parse error, unbalanced '%c'", c);
    }
    if (s->braces == 0 && s->brackets == 0) {
        if (s->discarding) {
            qmp_stream_reset(s);
            return TRUE;
        }
        return emit(s);
    }
    depth = s->braces + s->brackets;
    if (depth > s->max_depth && !s->discarding) {
        s->discarding = TRUE;
        g_string_truncate(s->buf, 0);
        return report(s, "JSON parse error, nesting depth limit of %u exceeded", s->max_depth);
    }
    return TRUE;
}

static gboolean feed_idle(QmpStream *s, char c)
{
    if (is_space(c))
        return TRUE;
    switch (c) {
    case '{':
    case '[':
        s->state = ST_CONTAINER;
        return feed_container(s, c);
    case '}':
    case ']':
        return report(s, "JSON parse error, unbalanced '%c'", c);
    case '"':
    case '\'':
        s->quote = c;
        break;
    default:
        break;
    }
    s->state = ST_SCALAR;
    return append(s, c);
}

/* Returns FALSE to stop; sets *again when @c must be fed once more (in ST_IDLE). */
static gboolean feed_scalar(QmpStream *s, char c, gboolean *again)
{
    gboolean cont;

    if (in_string(s, c))
        return append(s, c);
    if (is_space(c) || c == '{' || c == '[') {
        if (s->discarding) {
            qmp_stream_reset(s);
            cont = TRUE;
        } else {
            cont = emit(s);
        }
        *again = !is_space(c);
        return cont;
    }
    if (c == '"' || c == '\'')
        s->quote = c;
    return append(s, c);
}

/* A reset byte, or a control character inside a string: abandon the text. */
static gboolean lexical_error(QmpStream *s, guchar c)
{
    gboolean silent = s->state == ST_IDLE || s->discarding;
    gboolean was_string = s->quote != 0;

    qmp_stream_reset(s);
    if (silent)
        return TRUE;
    if (was_string && !is_reset_byte(c))
        return report(s, "JSON parse error, control character 0x%02x in string", c);
    return report(s, "JSON parse error, invalid byte 0x%02x", c);
}

gboolean qmp_stream_feed(QmpStream *s, const char *data, gsize len)
{
    for (gsize i = 0; i < len; i++) {
        guchar c = (guchar)data[i];
        gboolean cont = TRUE;
        gboolean again = FALSE;

        if (is_reset_byte(c) || (s->quote && c < 0x20)) {
            cont = lexical_error(s, c);
        } else {
            switch (s->state) {
            case ST_IDLE:
                cont = feed_idle(s, (char)c);
                break;
            case ST_CONTAINER:
                cont = feed_container(s, (char)c);
                break;
            case ST_SCALAR:
                cont = feed_scalar(s, (char)c, &again);
                break;
            }
            /* an opening brace/bracket ended a scalar and starts the next text */
            if (cont && again)
                cont = feed_idle(s, (char)c);
        }
        if (!cont)
            return FALSE;
    }
    return TRUE;
}
