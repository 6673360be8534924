/*
 * Listening unix sockets (the QMP socket, `unix:` migration listeners, `--serial`
 * sockets): a stale socket file is replaced, and the socket appears at its path only
 * once it listens. A client that waits for the file and then connects (as QMP
 * clients and the test harness do) would otherwise meet the window between bind()
 * and listen() and get ECONNREFUSED: seen once in CI (test_incoming_defer).
 */
#pragma once

#include <gio/gio.h>
#include <sys/stat.h>

/* Binds a temporary name beside `path` (or `path` itself when that name would not
 * fit sockaddr_un), sets mode 0600, listens with `backlog`, then renames it to
 * `path`. Returns the socket (non-blocking, close-on-exec) and fills *st with the
 * socket file's identity; or -1 with errno set and *step naming the call that
 * failed ("socket", "bind", "chmod", "listen", "rename"); nothing is left behind. */
int unix_listen_ready(const char *path, int backlog, struct stat *st, const char **step);

/* The whole sequence: frees `path` if it holds a stale socket file (one nobody
 * listens on, left by a process that died), then unix_listen_ready(). A socket that
 * answers, or anything that is not a socket, is left alone and refused. Returns the
 * socket, or -1 with an error starting with `who` (e.g. "unix:/tmp/m.sock"):
 * G_IO_ERROR_EXISTS (not a socket), G_IO_ERROR_ADDRESS_IN_USE (a process listens on
 * it), G_IO_ERROR_INVALID_ARGUMENT (too long for a socket address), or the failed
 * call's errno. */
int unix_listen_path(const char *path, int backlog, const char *who, struct stat *st,
                     GError **error);
