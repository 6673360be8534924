/*
 * A listening unix socket that appears at its path only once it listens. A client
 * that waits for the file and then connects (as QMP clients and the test harness
 * do) would otherwise meet the window between bind() and listen() and get
 * ECONNREFUSED: seen once in CI (test_incoming_defer).
 */
#pragma once

#include <sys/stat.h>

/* Binds a temporary name beside `path` (or `path` itself when that name would not
 * fit sockaddr_un), sets mode 0600, listens with `backlog`, then renames it to
 * `path`. Returns the socket (non-blocking, close-on-exec) and fills *st with the
 * socket file's identity; or -1 with errno set and *step naming the call that
 * failed ("socket", "bind", "chmod", "listen", "rename"); nothing is left behind. */
int unix_listen_ready(const char *path, int backlog, struct stat *st, const char **step);
