#include "parse.h"

#include <string.h>

static bool bad_size(const char *text, const char *why, GError **error)
{
    g_set_error(error, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE, "invalid size '%s': %s", text,
                why);
    return false;
}

bool parse_size(const char *text, uint64_t default_unit, uint64_t *out, GError **error)
{
    const char *p = text;
    uint64_t whole = 0, frac = 0, frac_scale = 1;

    if (!text || !g_ascii_isdigit(*p))
        return bad_size(text ? text : "", "expected a number with an optional K/M/G/T suffix",
                        error);
    for (; g_ascii_isdigit(*p); p++) {
        if (whole > (UINT64_MAX - 9) / 10)
            return bad_size(text, "too large", error);
        whole = whole * 10 + (uint64_t)(*p - '0');
    }
    if (*p == '.') {
        p++;
        if (!g_ascii_isdigit(*p))
            return bad_size(text, "expected digits after '.'", error);
        for (; g_ascii_isdigit(*p); p++) {
            if (frac_scale >= 1000000ull) /* keeps frac * unit below 2^64 */
                return bad_size(text, "too many decimal places", error);
            frac = frac * 10 + (uint64_t)(*p - '0');
            frac_scale *= 10;
        }
    }
    uint64_t unit = default_unit;
    if (*p) {
        switch (g_ascii_toupper(*p)) {
        case 'B':
            unit = 1;
            break;
        case 'K':
            unit = 1ull << 10;
            break;
        case 'M':
            unit = 1ull << 20;
            break;
        case 'G':
            unit = 1ull << 30;
            break;
        case 'T':
            unit = 1ull << 40;
            break;
        default:
            return bad_size(text, "unknown suffix (use K, M, G or T)", error);
        }
        p++;
        if (unit > 1 && (!g_ascii_strcasecmp(p, "iB") || !g_ascii_strcasecmp(p, "B")))
            p += strlen(p);
        if (*p)
            return bad_size(text, "unexpected characters after the suffix", error);
    }
    if (whole > UINT64_MAX / unit)
        return bad_size(text, "too large", error);
    uint64_t bytes = whole * unit;
    if (frac) {
        /* frac / frac_scale * unit must be a whole number of bytes */
        if (unit % frac_scale && (frac * unit) % frac_scale)
            return bad_size(text, "not a whole number of bytes", error);
        uint64_t extra =
            unit % frac_scale == 0 ? frac * (unit / frac_scale) : frac * unit / frac_scale;
        if (bytes > UINT64_MAX - extra)
            return bad_size(text, "too large", error);
        bytes += extra;
    }
    *out = bytes;
    return true;
}

bool parse_uint(const char *text, const char *what, uint64_t min, uint64_t max, uint64_t *out,
                GError **error)
{
    guint64 v;
    g_autoptr(GError) local = NULL;
    if (!g_ascii_string_to_unsigned(text, 10, min, max, &v, &local)) {
        g_set_error(error, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                    "%s: '%s' is not a whole number from %" G_GUINT64_FORMAT
                    " to %" G_GUINT64_FORMAT,
                    what, text, min, max);
        return false;
    }
    *out = v;
    return true;
}
