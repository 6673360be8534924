#include "progress.h"

#include <math.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

char *progress_format_bytes(uint64_t bytes)
{
    static const char *const units[] = { "KiB", "MiB", "GiB", "TiB", "PiB" };
    if (bytes < 1024)
        return g_strdup_printf("%" G_GUINT64_FORMAT " B", bytes);
    double v = (double)bytes / 1024.0;
    unsigned u = 0;
    /* Switch units at 1023.95 so that rounding never prints "1024.0 KiB". */
    while (v >= 1023.95 && u + 1 < G_N_ELEMENTS(units)) {
        v /= 1024.0;
        u++;
    }
    return g_strdup_printf("%.1f %s", v, units[u]);
}

char *progress_format_rate(double bps)
{
    if (!isfinite(bps) || bps < 0)
        return g_strdup("-");
    if (bps < 1000)
        return g_strdup_printf("%.0f B/s", bps);
    if (bps < 999.95e3)
        return g_strdup_printf("%.1f kB/s", bps / 1e3);
    if (bps < 999.95e6)
        return g_strdup_printf("%.1f MB/s", bps / 1e6);
    return g_strdup_printf("%.2f GB/s", bps / 1e9);
}

char *progress_format_eta(double seconds)
{
    if (!isfinite(seconds) || seconds < 0 || seconds >= 100.0 * 3600)
        return g_strdup("--:--");
    uint64_t s = (uint64_t)seconds;
    if ((double)s < seconds) /* round up: "0:01" until it is really done */
        s++;
    if (s >= 3600)
        return g_strdup_printf("%" G_GUINT64_FORMAT ":%02u:%02u", s / 3600, (unsigned)(s / 60 % 60),
                               (unsigned)(s % 60));
    return g_strdup_printf("%u:%02u", (unsigned)(s / 60), (unsigned)(s % 60));
}

char *progress_format_duration(double seconds)
{
    if (!isfinite(seconds) || seconds < 0)
        return g_strdup("-");
    if (seconds < 1.0)
        return g_strdup_printf("%.0f ms", seconds * 1000.0);
    if (seconds < 60.0)
        return g_strdup_printf("%.2f s", seconds);
    uint64_t s = (uint64_t)(seconds + 0.5);
    if (s < 3600)
        return g_strdup_printf("%u min %02u s", (unsigned)(s / 60), (unsigned)(s % 60));
    return g_strdup_printf("%" G_GUINT64_FORMAT " h %02u min", s / 3600, (unsigned)(s / 60 % 60));
}

double progress_eta_seconds(uint64_t remaining, double bps)
{
    if (remaining == 0)
        return 0;
    if (!isfinite(bps) || bps <= 0)
        return -1;
    return (double)remaining / bps;
}

char *progress_render(const ProgressLine *p, unsigned width)
{
    g_autoptr(GString) tail = g_string_new(NULL);
    g_autofree char *done = progress_format_bytes(p->done);
    int percent = -1;

    if (p->total) {
        g_autofree char *total = progress_format_bytes(p->total);
        uint64_t d = MIN(p->done, p->total);
        percent = (int)((double)d * 100.0 / (double)p->total);
        g_string_append_printf(tail, "%3d%%  %s / %s", percent, done, total);
    } else {
        g_string_append(tail, done);
    }
    if (p->rate > 0) {
        g_autofree char *rate = progress_format_rate(p->rate);
        g_string_append_printf(tail, "  %s", rate);
    }
    if (p->total) {
        g_autofree char *eta = progress_format_eta(p->eta);
        g_string_append_printf(tail, "  ETA %s", eta);
    }

    g_autoptr(GString) line = g_string_new(NULL);
    if (p->label && *p->label)
        g_string_append_printf(line, "%s ", p->label);
    /* The bar gets what is left, between 10 and 40 cells, or nothing. */
    size_t fixed = line->len + tail->len + 3; /* "[", "] " */
    if (percent >= 0 && width > fixed + 10) {
        unsigned cells = MIN(40u, width - (unsigned)fixed);
        unsigned full = (unsigned)((uint64_t)percent * cells / 100);
        g_string_append_c(line, '[');
        for (unsigned i = 0; i < cells; i++)
            g_string_append_c(line, i < full ? '#' : '.');
        g_string_append(line, "] ");
    }
    g_string_append(line, tail->str);
    if (width > 0 && line->len > width)
        g_string_truncate(line, width);
    return g_string_free(g_steal_pointer(&line), FALSE);
}

unsigned progress_term_width(FILE *f, unsigned fallback)
{
    struct winsize ws;
    if (ioctl(fileno(f), TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0)
        return ws.ws_col;
    return fallback;
}

void progress_draw(FILE *f, const ProgressLine *p)
{
    /* One column spare: writing the last column makes some terminals wrap. */
    unsigned width = progress_term_width(f, 80);
    g_autofree char *line = progress_render(p, width > 1 ? width - 1 : width);
    fprintf(f, "\r%s\033[K", line);
    fflush(f);
}

void progress_clear(FILE *f)
{
    fputs("\r\033[K", f);
    fflush(f);
}
