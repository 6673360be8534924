/* migration/transport.c: unix:, tcp:, exec: and fd: streams. */
#include "transport.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

static char *tmpdir;

static MigrateUri parse(const char *text)
{
    MigrateUri u;
    g_autoptr(GError) error = NULL;
    g_assert_true(migrate_uri_parse(text, &u, &error));
    g_assert_no_error(error);
    return u;
}

typedef struct Peer {
    TransportListener *l;
    VStream *s;
    GError *error;
} Peer;

static gpointer accept_thread(gpointer data)
{
    Peer *p = data;
    p->s = transport_accept(p->l, 10000, &p->error);
    return NULL;
}

/* Connects to `l` through `uri`, sends data both ways and closes cleanly. */
static void exchange(TransportListener *l, const MigrateUri *uri)
{
    Peer peer = { .l = l };
    GThread *t = g_thread_new("accept", accept_thread, &peer);
    g_autoptr(GError) error = NULL;
    VStream *c = transport_connect(uri, &error);
    g_assert_no_error(error);
    g_thread_join(t);
    g_assert_no_error(peer.error);
    VStream *s = peer.s;

    char buf[16];
    g_assert_true(vstream_write_all(c, "ping", 4, &error));
    g_assert_true(vstream_read_all(s, buf, 4, NULL, &error));
    g_assert_cmpmem(buf, 4, "ping", 4);
    g_assert_true(vstream_write_all(s, "pong!", 5, &error));
    g_assert_true(vstream_read_all(c, buf, 5, NULL, &error));
    g_assert_cmpmem(buf, 5, "pong!", 5);

    /* finish shuts down the write side: the other end sees a clean EOF. */
    g_assert_true(transport_stream_finish(c, &error));
    bool clean = false;
    g_assert_false(vstream_read_all(s, buf, 1, &clean, &error));
    g_assert_true(clean);
    g_clear_error(&error);
    g_assert_true(transport_stream_finish(s, &error));
    g_assert_false(vstream_read_all(c, buf, 1, &clean, &error));
    g_assert_true(clean);
    vstream_free(c);
    vstream_free(s);
}

static void test_unix(void)
{
    g_autofree char *path = g_build_filename(tmpdir, "mig.sock", NULL);
    g_autofree char *text = g_strdup_printf("unix:%s", path);
    MigrateUri u = parse(text);
    g_autoptr(GError) error = NULL;
    TransportListener *l = transport_listen(&u, &error);
    g_assert_no_error(error);
    g_assert_cmpstr(transport_listener_type(l), ==, "unix");
    g_assert_cmpstr(transport_listener_host(l), ==, path);
    g_assert_null(transport_listener_port(l));
    g_assert_cmpint(transport_listener_fd(l), >=, 0);
    struct stat st;
    g_assert_cmpint(stat(path, &st), ==, 0);
    g_assert_cmpint(st.st_mode & 0777, ==, 0600);

    exchange(l, &u);
    /* multifd: more connections to the same address */
    Peer peer = { .l = l };
    GThread *t = g_thread_new("accept", accept_thread, &peer);
    VStream *extra = transport_connect_extra(&u, &error);
    g_assert_no_error(error);
    g_thread_join(t);
    g_assert_no_error(peer.error);
    g_assert_cmpstr(peer.s->name, ==, text);
    vstream_free(extra);
    vstream_free(peer.s);

    transport_listener_free(l);
    g_assert_cmpint(access(path, F_OK), <, 0); /* removed */
    migrate_uri_clear(&u);
}

static void test_unix_stale(void)
{
    g_autofree char *path = g_build_filename(tmpdir, "stale.sock", NULL);
    g_autofree char *text = g_strdup_printf("unix:%s", path);
    /* A socket file left behind by a process that died. */
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    struct sockaddr_un addr = { .sun_family = AF_UNIX };
    strcpy(addr.sun_path, path);
    g_assert_cmpint(bind(fd, (struct sockaddr *)&addr, sizeof(addr)), ==, 0);
    close(fd);

    MigrateUri u = parse(text);
    g_autoptr(GError) error = NULL;
    /* Connecting to it: refused, named. */
    g_assert_null(transport_connect(&u, &error));
    g_autofree char *want = g_strdup_printf("%s: connect failed: Connection refused", text);
    g_assert_cmpstr(error->message, ==, want);
    g_clear_error(&error);

    TransportListener *l = transport_listen(&u, &error);
    g_assert_no_error(error);
    exchange(l, &u);
    /* A live one is not replaced (the probe leaves a closed connection in the queue). */
    g_assert_null(transport_listen(&u, &error));
    g_assert_error(error, G_IO_ERROR, G_IO_ERROR_ADDRESS_IN_USE);
    g_assert_nonnull(strstr(error->message, text));
    g_clear_error(&error);
    transport_listener_free(l);

    /* A regular file is never removed. */
    g_assert_true(g_file_set_contents(path, "data", 4, NULL));
    g_assert_null(transport_listen(&u, &error));
    g_assert_error(error, G_IO_ERROR, G_IO_ERROR_EXISTS);
    g_assert_cmpint(access(path, F_OK), ==, 0);
    unlink(path);
    migrate_uri_clear(&u);
}

static void test_unix_nothing(void)
{
    g_autofree char *text = g_strdup_printf("unix:%s/none.sock", tmpdir);
    MigrateUri u = parse(text);
    g_autoptr(GError) error = NULL;
    g_assert_null(transport_connect(&u, &error));
    g_assert_error(error, G_IO_ERROR, G_IO_ERROR_NOT_FOUND);
    g_autofree char *want = g_strdup_printf("%s: connect failed: No such file or directory", text);
    g_assert_cmpstr(error->message, ==, want);
    migrate_uri_clear(&u);

    /* Too long for sun_path. */
    g_autofree char *longp = g_strdup_printf("unix:/tmp/%0200d", 0);
    u = parse(longp);
    g_clear_error(&error);
    g_assert_null(transport_connect(&u, &error));
    g_assert_nonnull(strstr(error->message, "longer than"));
    migrate_uri_clear(&u);
}

static void test_tcp(gconstpointer data)
{
    const char *host = data;
    bool v6 = strchr(host, ':') != NULL;
    g_autofree char *text =
        v6 ? g_strdup_printf("tcp:[%s]:0", host) : g_strdup_printf("tcp:%s:0", host);
    MigrateUri u = parse(text);
    g_autoptr(GError) error = NULL;
    TransportListener *l = transport_listen(&u, &error);
    if (!l && v6) {
        g_test_skip("no IPv6 loopback here");
        migrate_uri_clear(&u);
        return;
    }
    g_assert_no_error(error);
    g_assert_cmpstr(transport_listener_type(l), ==, "inet");
    g_assert_cmpstr(transport_listener_host(l), ==, host);
    const char *port = transport_listener_port(l);
    g_assert_nonnull(port);
    g_assert_cmpstr(port, !=, "0");
    g_autofree char *real =
        v6 ? g_strdup_printf("tcp:[%s]:%s", host, port) : g_strdup_printf("tcp:%s:%s", host, port);
    MigrateUri r = parse(real);
    exchange(l, &r);
    transport_listener_free(l);

    /* Now nothing listens on that port. */
    g_assert_null(transport_connect(&r, &error));
    g_assert_error(error, G_IO_ERROR, G_IO_ERROR_CONNECTION_REFUSED);
    g_autofree char *want = g_strdup_printf("%s: connect failed: Connection refused", real);
    g_assert_cmpstr(error->message, ==, want);
    migrate_uri_clear(&u);
    migrate_uri_clear(&r);
}

static void test_tcp_bad_host(void)
{
    MigrateUri u = parse("tcp:no-such-host.invalid:4444");
    g_autoptr(GError) error = NULL;
    g_assert_null(transport_connect(&u, &error));
    g_assert_true(
        g_str_has_prefix(error->message, "tcp:no-such-host.invalid:4444: cannot resolve"));
    migrate_uri_clear(&u);
}

static void test_accept_timeout(void)
{
    MigrateUri u = parse("tcp:127.0.0.1:0");
    g_autoptr(GError) error = NULL;
    TransportListener *l = transport_listen(&u, &error);
    g_assert_no_error(error);
    gint64 t0 = g_get_monotonic_time();
    g_assert_null(transport_accept(l, 100, &error));
    gint64 dt = g_get_monotonic_time() - t0;
    g_assert_error(error, G_IO_ERROR, G_IO_ERROR_TIMED_OUT);
    g_assert_cmpint(dt, >=, 90000);
    g_assert_nonnull(strstr(error->message, "no connection within 100 ms"));
    g_assert_true(g_str_has_prefix(error->message, "tcp:127.0.0.1:"));
    transport_listener_free(l);
    migrate_uri_clear(&u);
}

static void test_exec_source(void)
{
    g_autofree char *out = g_build_filename(tmpdir, "exec-out", NULL);
    g_autofree char *text = g_strdup_printf("exec:cat > '%s'", out);
    MigrateUri u = parse(text);
    g_autoptr(GError) error = NULL;
    VStream *s = transport_connect(&u, &error);
    g_assert_no_error(error);
    g_assert_cmpstr(s->name, ==, text);
    g_autofree uint8_t *data = g_malloc(3 << 20);
    for (size_t i = 0; i < (3u << 20); i++)
        data[i] = (uint8_t)(i * 31 + (i >> 12));
    g_assert_true(vstream_write_all(s, data, 3 << 20, &error));
    g_assert_true(transport_stream_finish(s, &error));
    g_assert_no_error(error);
    vstream_free(s);
    g_autofree char *got = NULL;
    gsize len;
    g_assert_true(g_file_get_contents(out, &got, &len, NULL));
    g_assert_cmpmem(got, len, data, 3 << 20);
    /* exec: cannot carry extra channels */
    g_assert_null(transport_connect_extra(&u, &error));
    g_assert_error(error, G_IO_ERROR, G_IO_ERROR_NOT_SUPPORTED);
    migrate_uri_clear(&u);
}

static void test_exec_dest(void)
{
    g_autoptr(GError) error = NULL;
    VStream *s = transport_exec_read("printf 'hello\\nworld'", &error);
    g_assert_no_error(error);
    char buf[16];
    g_assert_true(vstream_read_all(s, buf, 11, NULL, &error));
    g_assert_cmpmem(buf, 11, "hello\nworld", 11);
    bool clean = false;
    g_assert_false(vstream_read_all(s, buf, 1, &clean, &error));
    g_assert_true(clean);
    g_clear_error(&error);
    g_assert_true(transport_stream_finish(s, &error));
    g_assert_no_error(error);
    vstream_free(s);
}

static void test_exec_status(void)
{
    g_autoptr(GError) error = NULL;
    MigrateUri u = parse("exec:cat >/dev/null; exit 3");
    VStream *s = transport_connect(&u, &error);
    g_assert_no_error(error);
    g_assert_true(vstream_write_all(s, "abc", 3, &error));
    g_assert_false(transport_stream_finish(s, &error));
    g_assert_cmpstr(error->message, ==,
                    "exec:cat >/dev/null; exit 3: the command exited with status 3");
    vstream_free(s);
    migrate_uri_clear(&u);

    g_clear_error(&error);
    s = transport_exec_read("printf x; exit 3", &error);
    g_assert_no_error(error);
    char c;
    g_assert_true(vstream_read_all(s, &c, 1, NULL, &error));
    g_assert_false(transport_stream_finish(s, &error));
    g_assert_cmpstr(error->message, ==, "exec:printf x; exit 3: the command exited with status 3");
    vstream_free(s);

    /* A reader that hits EOF learns why the command stopped. */
    g_clear_error(&error);
    s = transport_exec_read("printf x; exit 4", &error);
    g_assert_no_error(error);
    char two[2];
    g_assert_false(vstream_read_all(s, two, 2, NULL, &error));
    g_assert_cmpstr(error->message, ==,
                    "exec:printf x; exit 4: unexpected end of stream after "
                    "1 bytes: the command exited with status 4");
    vstream_free(s);
}

static void test_exec_signal(void)
{
    g_autoptr(GError) error = NULL;
    MigrateUri u = parse("exec:kill -9 $$");
    VStream *s = transport_connect(&u, &error);
    g_assert_no_error(error);
    g_assert_false(transport_stream_finish(s, &error));
    g_assert_cmpstr(error->message, ==,
                    "exec:kill -9 $$: the command was killed by signal 9 "
                    "(SIGKILL)");
    vstream_free(s);
    migrate_uri_clear(&u);
}

/* The command died early: the writer gets EPIPE (not SIGPIPE), finish the status. */
static void test_exec_dies_early(void)
{
    signal(SIGPIPE, SIG_DFL);
    g_autoptr(GError) error = NULL;
    MigrateUri u = parse("exec:exit 5");
    VStream *s = transport_connect(&u, &error);
    g_assert_no_error(error);
    g_autofree uint8_t *data = g_malloc0(1 << 20);
    g_assert_false(vstream_write_all(s, data, 1 << 20, &error));
    g_assert_error(error, G_IO_ERROR, G_IO_ERROR_BROKEN_PIPE);
    g_clear_error(&error);
    g_assert_false(transport_stream_finish(s, &error));
    g_assert_nonnull(strstr(error->message, "exited with status 5"));
    vstream_free(s);
    migrate_uri_clear(&u);
}

/* Freed without finish while the command ignores EOF: it is ended, not leaked. */
static void test_exec_free_kills(void)
{
    g_autoptr(GError) error = NULL;
    g_autofree char *pidfile = g_build_filename(tmpdir, "sleep.pid", NULL);
    g_autofree char *text = g_strdup_printf("exec:sleep 100 & echo $! > '%s'; wait", pidfile);
    MigrateUri u = parse(text);
    VStream *s = transport_connect(&u, &error);
    g_assert_no_error(error);
    g_autofree char *pidtext = NULL;
    for (int i = 0;
         i < 500 && !(g_file_get_contents(pidfile, &pidtext, NULL, NULL) && strchr(pidtext, '\n'));
         i++) {
        g_clear_pointer(&pidtext, g_free);
        g_usleep(10000);
    }
    g_assert_nonnull(pidtext);
    pid_t sleeper = (pid_t)atoi(pidtext);
    g_assert_cmpint(sleeper, >, 0);
    gint64 t0 = g_get_monotonic_time();
    vstream_free(s);
    g_assert_cmpint(g_get_monotonic_time() - t0, <, 5 * G_USEC_PER_SEC);
    /* The shell's child went with it (same process group); it may be a zombie of init
     * for a moment. */
    bool gone = false;
    for (int i = 0; i < 200 && !gone; i++) {
        g_autofree char *stat_path = g_strdup_printf("/proc/%d/stat", sleeper);
        g_autofree char *st = NULL;
        gone = !g_file_get_contents(stat_path, &st, NULL, NULL) || strstr(st, ") Z ");
        if (!gone)
            g_usleep(10000);
    }
    g_assert_true(gone);
    migrate_uri_clear(&u);
}

/* The command gets fds 0, 1 and 2 only, not whatever the process has open. */
static void test_exec_fds(void)
{
    int leak = open("/dev/null", O_RDONLY); /* no O_CLOEXEC, on purpose */
    g_assert_cmpint(dup2(leak, 100), ==, 100);
    g_autoptr(GError) error = NULL;
    /* ls's own directory fd shows up as well: 3 */
    VStream *s = transport_exec_read("ls /proc/self/fd", &error);
    g_assert_no_error(error);
    char buf[4096];
    size_t len = 0;
    for (;;) {
        bool clean;
        if (!vstream_read_all(s, buf + len, 1, &clean, &error))
            break;
        len++;
        g_assert_cmpuint(len, <, sizeof(buf));
    }
    g_clear_error(&error);
    g_assert_true(transport_stream_finish(s, &error));
    vstream_free(s);
    buf[len] = 0;
    g_auto(GStrv) fds = g_strsplit_set(g_strstrip(buf), "\n ", -1);
    for (char **f = fds; *f; f++)
        g_assert_true(!strcmp(*f, "0") || !strcmp(*f, "1") || !strcmp(*f, "2") || !strcmp(*f, "3"));
    g_assert_cmpuint(g_strv_length(fds), <=, 4);
    close(leak);
    close(100);
}

static void test_exec_stdin_devnull(void)
{
    /* A destination command reads /dev/null, not the VMM's stdin. */
    g_autoptr(GError) error = NULL;
    VStream *s = transport_exec_read("readlink /proc/self/fd/0", &error);
    g_assert_no_error(error);
    char buf[10];
    g_assert_true(vstream_read_all(s, buf, 9, NULL, &error));
    g_assert_cmpmem(buf, 9, "/dev/null", 9);
    g_assert_true(transport_stream_finish(s, &error));
    vstream_free(s);
}

static void test_fd(void)
{
    int sv[2];
    g_assert_cmpint(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), ==, 0);
    VStream *a = transport_stream_from_fd(sv[0], "fd:mig");
    VStream *b = transport_stream_from_fd(sv[1], "fd:peer");
    g_autoptr(GError) error = NULL;
    g_assert_true(vstream_write_all(a, "xyz", 3, &error));
    g_assert_true(transport_stream_finish(a, &error));
    char buf[3];
    g_assert_true(vstream_read_all(b, buf, 3, NULL, &error));
    g_assert_cmpmem(buf, 3, "xyz", 3);
    vstream_free(a);
    vstream_free(b);

    MigrateUri u = parse("fd:mig");
    g_assert_null(transport_connect(&u, &error));
    g_assert_error(error, G_IO_ERROR, G_IO_ERROR_NOT_SUPPORTED);
    g_clear_error(&error);
    g_assert_null(transport_listen(&u, &error));
    g_assert_error(error, G_IO_ERROR, G_IO_ERROR_NOT_SUPPORTED);
    migrate_uri_clear(&u);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_autoptr(GError) error = NULL;
    tmpdir = g_dir_make_tmp("test-transport-XXXXXX", &error);
    g_assert_no_error(error);
    g_test_add_func("/transport/unix", test_unix);
    g_test_add_func("/transport/unix-stale", test_unix_stale);
    g_test_add_func("/transport/unix-nothing", test_unix_nothing);
    g_test_add_data_func("/transport/tcp4", "127.0.0.1", test_tcp);
    g_test_add_data_func("/transport/tcp6", "::1", test_tcp);
    g_test_add_func("/transport/tcp-bad-host", test_tcp_bad_host);
    g_test_add_func("/transport/accept-timeout", test_accept_timeout);
    g_test_add_func("/transport/exec-source", test_exec_source);
    g_test_add_func("/transport/exec-dest", test_exec_dest);
    g_test_add_func("/transport/exec-status", test_exec_status);
    g_test_add_func("/transport/exec-signal", test_exec_signal);
    g_test_add_func("/transport/exec-dies-early", test_exec_dies_early);
    g_test_add_func("/transport/exec-free-kills", test_exec_free_kills);
    g_test_add_func("/transport/exec-fds", test_exec_fds);
    g_test_add_func("/transport/exec-stdin-devnull", test_exec_stdin_devnull);
    g_test_add_func("/transport/fd", test_fd);
    int r = g_test_run();
    g_autofree char *cmd = g_strdup_printf("rm -rf '%s'", tmpdir);
    if (system(cmd) != 0)
        r = r ? r : 1;
    g_free(tmpdir);
    return r;
}
