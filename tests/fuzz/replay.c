/*
 * Replays fuzz inputs through LLVMFuzzerTestOneInput() without libFuzzer, so
 * `meson test` runs the corpus with any compiler (and under ASan/UBSan in a
 * sanitize build). Arguments are files or directories (every regular file in
 * them, sorted). Prints TAP: one test per input; a crash is the failure.
 */
#include <glib.h>
#include <stdint.h>
#include <stdio.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static gint compare(gconstpointer a, gconstpointer b)
{
    return g_strcmp0(*(char *const *)a, *(char *const *)b);
}

int main(int argc, char **argv)
{
    g_autoptr(GPtrArray) files = g_ptr_array_new_with_free_func(g_free);
    for (int i = 1; i < argc; i++) {
        if (!g_file_test(argv[i], G_FILE_TEST_IS_DIR)) {
            g_ptr_array_add(files, g_strdup(argv[i]));
            continue;
        }
        g_autoptr(GError) error = NULL;
        g_autoptr(GDir) dir = g_dir_open(argv[i], 0, &error);
        if (dir == NULL) {
            printf("Bail out! %s\n", error->message);
            return 1;
        }
        const char *name;
        while ((name = g_dir_read_name(dir)) != NULL) {
            char *path = g_build_filename(argv[i], name, NULL);
            if (g_file_test(path, G_FILE_TEST_IS_REGULAR)) {
                g_ptr_array_add(files, path);
            } else {
                g_free(path);
            }
        }
    }
    g_ptr_array_sort(files, compare);
    if (files->len == 0) {
        printf("Bail out! no inputs (usage: %s FILE|DIR...)\n", argv[0]);
        return 1;
    }
    printf("1..%u\n", files->len);
    for (guint i = 0; i < files->len; i++) {
        const char *path = files->pdata[i];
        g_autofree char *data = NULL;
        gsize len = 0;
        g_autoptr(GError) error = NULL;
        if (!g_file_get_contents(path, &data, &len, &error)) {
            printf("not ok %u %s: %s\n", i + 1, path, error->message);
            continue;
        }
        /* An exact-size copy, so ASan sees any over-read. */
        g_autofree uint8_t *copy = g_memdup2(data, len);
        LLVMFuzzerTestOneInput(copy, len);
        g_autofree char *base = g_path_get_basename(path);
        printf("ok %u %s\n", i + 1, base);
        fflush(stdout);
    }
    return 0;
}
