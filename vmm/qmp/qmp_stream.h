/* SPDX-License-Identifier: MIT */
/*
 * QMP framing: splits a byte stream into JSON texts, like QEMU's JSON streamer.
 *
 * A text is a top-level object or array, complete when its braces and brackets
 * (counted outside strings) balance, or a top-level scalar, complete at the next
 * whitespace or opening brace/bracket. Newlines play no part. Strings may use
 * double or single quotes (QEMU and json-glib accept both) and backslash escapes.
 *
 * Errors are reported through the callback and never stop the stream:
 * - a text larger than max_size or nested deeper than max_depth is reported once
 *   and the rest of it is discarded up to its end;
 * - a raw control character inside a string, a control character other than
 *   \t \r \n, or a 0xFE/0xFF byte anywhere (QMP's documented way to force the
 *   parser back into a known state) abandons the text in progress (reported if
 *   there was one) and framing restarts after that byte;
 * - a closing brace or bracket without an opening one is reported and dropped.
 */
#pragma once

#include <glib.h>

typedef struct QmpStream QmpStream;

/*
 * Called for each complete text (@json of @len bytes, NUL-terminated, @error
 * NULL) or each framing error (@json NULL, @error set, domain QMP_ERROR).
 * Returns FALSE to stop processing the rest of the current qmp_stream_feed().
 */
typedef gboolean (*QmpStreamFunc)(const char *json, gsize len, const GError *error,
                                  gpointer user_data);

/* Returns a new framer; never NULL. */
QmpStream *qmp_stream_new(gsize max_size, guint max_depth, QmpStreamFunc func, gpointer user_data);

/*
 * Feeds @len bytes. Returns FALSE if the callback stopped the processing (the
 * remaining bytes of @data are dropped), TRUE otherwise.
 */
gboolean qmp_stream_feed(QmpStream *s, const char *data, gsize len);

/* Forgets any partial text. */
void qmp_stream_reset(QmpStream *s);

/* Returns the number of bytes of the partial text currently buffered. */
gsize qmp_stream_pending(const QmpStream *s);

void qmp_stream_free(QmpStream *s);

G_DEFINE_AUTOPTR_CLEANUP_FUNC(QmpStream, qmp_stream_free)
