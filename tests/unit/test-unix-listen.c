/* io/unix_listen.c: the socket is listening when its path appears, and nothing else
 * is left in the directory, on success or failure; unix_listen_path() replaces a
 * stale socket file and refuses a live socket, a regular file and a long path. */
#include <errno.h>
#include <glib.h>
#include <glib/gstdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "unix_listen.h"

static unsigned dir_entries(const char *dir)
{
    GDir *d = g_dir_open(dir, 0, NULL);
    g_assert_nonnull(d);
    unsigned n = 0;
    while (g_dir_read_name(d))
        n++;
    g_dir_close(d);
    return n;
}

static void test_listens_at_path(void)
{
    g_autofree char *dir = g_dir_make_tmp("vmsnap-ul-XXXXXX", NULL);
    g_autofree char *path = g_build_filename(dir, "s.sock", NULL);
    struct stat st, now;
    const char *step = NULL;
    int fd = unix_listen_ready(path, 4, &st, &step);
    g_assert_cmpint(fd, >=, 0);
    g_assert_cmpuint(dir_entries(dir), ==, 1); /* the temporary name is gone */
    g_assert_cmpint(lstat(path, &now), ==, 0);
    g_assert_true(S_ISSOCK(now.st_mode));
    g_assert_cmpuint(now.st_ino, ==, st.st_ino);
    g_assert_cmpuint(now.st_mode & 0777, ==, 0600);

    struct sockaddr_un addr = { .sun_family = AF_UNIX };
    g_strlcpy(addr.sun_path, path, sizeof(addr.sun_path));
    int c = socket(AF_UNIX, SOCK_STREAM, 0);
    g_assert_cmpint(connect(c, (struct sockaddr *)&addr, sizeof(addr)), ==, 0);
    close(c);
    close(fd);
    g_unlink(path);
    g_rmdir(dir);
}

static void test_failure_leaves_nothing(void)
{
    g_autofree char *dir = g_dir_make_tmp("vmsnap-ul-XXXXXX", NULL);
    g_autofree char *path = g_build_filename(dir, "missing", "s.sock", NULL);
    struct stat st;
    const char *step = NULL;
    g_assert_cmpint(unix_listen_ready(path, 4, &st, &step), ==, -1);
    g_assert_cmpint(errno, ==, ENOENT);
    g_assert_cmpstr(step, ==, "bind");
    g_assert_cmpuint(dir_entries(dir), ==, 0);
    g_rmdir(dir);
}

/* A socket file whose process died: bound, never listened, closed. */
static void make_stale(const char *path)
{
    struct sockaddr_un addr = { .sun_family = AF_UNIX };
    g_strlcpy(addr.sun_path, path, sizeof(addr.sun_path));
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    g_assert_cmpint(bind(fd, (struct sockaddr *)&addr, sizeof(addr)), ==, 0);
    close(fd);
}

static void test_path_replaces_stale(void)
{
    g_autofree char *dir = g_dir_make_tmp("vmsnap-ul-XXXXXX", NULL);
    g_autofree char *path = g_build_filename(dir, "s.sock", NULL);
    make_stale(path);
    struct stat st, now;
    g_autoptr(GError) error = NULL;
    int fd = unix_listen_path(path, 4, "test socket", &st, &error);
    g_assert_no_error(error);
    g_assert_cmpint(fd, >=, 0);
    g_assert_cmpint(lstat(path, &now), ==, 0);
    g_assert_cmpuint(now.st_ino, ==, st.st_ino);
    g_assert_cmpuint(dir_entries(dir), ==, 1);
    /* (the inode number may be reused: what tells is that it answers now) */
    struct sockaddr_un addr = { .sun_family = AF_UNIX };
    g_strlcpy(addr.sun_path, path, sizeof(addr.sun_path));
    int c = socket(AF_UNIX, SOCK_STREAM, 0);
    g_assert_cmpint(connect(c, (struct sockaddr *)&addr, sizeof(addr)), ==, 0);
    close(c);

    /* Now live: a second listener is refused and the first keeps its file. */
    struct stat st2;
    g_assert_cmpint(unix_listen_path(path, 4, "test socket", &st2, &error), ==, -1);
    g_assert_error(error, G_IO_ERROR, G_IO_ERROR_ADDRESS_IN_USE);
    g_assert_cmpstr(error->message, ==, "test socket: another process is listening on this socket");
    g_assert_cmpint(lstat(path, &now), ==, 0);
    g_assert_cmpuint(now.st_ino, ==, st.st_ino);
    close(fd);
    g_unlink(path);
    g_rmdir(dir);
}

static void test_path_refuses(void)
{
    g_autofree char *dir = g_dir_make_tmp("vmsnap-ul-XXXXXX", NULL);
    g_autofree char *path = g_build_filename(dir, "plain", NULL);
    g_assert_true(g_file_set_contents(path, "data", 4, NULL));
    struct stat st;
    g_autoptr(GError) error = NULL;
    g_assert_cmpint(unix_listen_path(path, 4, "who", &st, &error), ==, -1);
    g_assert_error(error, G_IO_ERROR, G_IO_ERROR_EXISTS);
    g_assert_cmpstr(error->message, ==, "who: the path exists and is not a socket");
    g_autofree char *data = NULL;
    g_assert_true(g_file_get_contents(path, &data, NULL, NULL));
    g_assert_cmpstr(data, ==, "data");
    g_clear_error(&error);

    g_autofree char *longp = g_strdup_printf("%s/%0120d", dir, 0);
    g_assert_cmpint(unix_listen_path(longp, 4, "who", &st, &error), ==, -1);
    g_assert_error(error, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT);
    g_assert_nonnull(strstr(error->message, "longer than"));
    g_clear_error(&error);

    g_autofree char *nodir = g_build_filename(dir, "missing", "s.sock", NULL);
    g_assert_cmpint(unix_listen_path(nodir, 4, "who", &st, &error), ==, -1);
    g_assert_error(error, G_IO_ERROR, G_IO_ERROR_NOT_FOUND);
    g_assert_cmpstr(error->message, ==, "who: cannot bind: No such file or directory");
    g_assert_cmpuint(dir_entries(dir), ==, 1);
    g_unlink(path);
    g_rmdir(dir);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/unix-listen/listens-at-path", test_listens_at_path);
    g_test_add_func("/unix-listen/failure-leaves-nothing", test_failure_leaves_nothing);
    g_test_add_func("/unix-listen/path/replaces-stale", test_path_replaces_stale);
    g_test_add_func("/unix-listen/path/refuses", test_path_refuses);
    return g_test_run();
}
