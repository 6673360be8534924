/* Test-only selection of device state not to load (devskip.h). */
#include "devskip.h"

#include <stdlib.h>
#include <string.h>

/* The section names of the device registry (devstate.c; checked by test-devskip). */
static const char *const sections[] = {
    "cpu", "pic", "ioapic", "pit", "kvmclock", "serial", NULL,
};

/* The parts of a "cpu" section that dev_cpu.c can leave out one by one. */
static const char *const cpu_parts[] = {
    "sregs",        "regs",         "xsave",    "lapic",  "msrs",      "tsc",
    "tsc_deadline", "kvmclock_msr", "mp_state", "events", "debugregs", NULL,
};

#define ANY          (-1)
#define MAX_INSTANCE 4095

typedef struct SkipItem {
    int section;  /* index into sections[] */
    int instance; /* ANY or >= 0 */
    int part;     /* ANY or index into cpu_parts[] */
} SkipItem;

struct DevSkip {
    GArray *items; /* SkipItem */
};

const char *const *devskip_sections(void)
{
    return sections;
}

const char *const *devskip_cpu_parts(void)
{
    return cpu_parts;
}

static int find(const char *const *names, const char *name, size_t len)
{
    for (int i = 0; names[i]; i++)
        if (strlen(names[i]) == len && !strncmp(names[i], name, len))
            return i;
    return -1;
}

static bool bad_spec(GError **error, const char *spec, const char *why)
{
    g_autofree char *secs = g_strjoinv(", ", (char **)sections);
    g_autofree char *parts = g_strjoinv(", ", (char **)cpu_parts);
    g_set_error(error, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                "'%s': %s; the form is SECTION[N][.PART], sections: %s; parts (cpu only): %s", spec,
                why, secs, parts);
    return false;
}

static bool parse_one(DevSkip *s, const char *spec, GError **error)
{
    const char *p = spec;
    size_t name_len = 0;
    while (p[name_len] && p[name_len] != '.' && !g_ascii_isdigit(p[name_len]))
        name_len++;
    if (name_len == 0)
        return bad_spec(error, spec, "no section name");
    SkipItem item = { .section = find(sections, p, name_len), .instance = ANY, .part = ANY };
    if (item.section < 0) {
        g_autofree char *name = g_strndup(p, name_len);
        g_autofree char *why = g_strdup_printf("unknown section '%s'", name);
        return bad_spec(error, spec, why);
    }
    p += name_len;
    if (g_ascii_isdigit(*p)) {
        size_t n = 0;
        while (g_ascii_isdigit(p[n]))
            n++;
        if (n > 4 || (n > 1 && p[0] == '0'))
            return bad_spec(error, spec, "bad instance number");
        g_autofree char *digits = g_strndup(p, n);
        long v = strtol(digits, NULL, 10);
        if (v > MAX_INSTANCE)
            return bad_spec(error, spec, "instance number too large");
        item.instance = (int)v;
        p += n;
    }
    if (*p == '.') {
        p++;
        if (strcmp(sections[item.section], "cpu") != 0)
            return bad_spec(error, spec, "only cpu sections have parts");
        item.part = find(cpu_parts, p, strlen(p));
        if (item.part < 0) {
            g_autofree char *why = g_strdup_printf("unknown cpu part '%s'", p);
            return bad_spec(error, spec, why);
        }
    } else if (*p) {
        return bad_spec(error, spec, "unexpected text after the section name");
    }
    g_array_append_val(s->items, item);
    return true;
}

DevSkip *devskip_parse(const char *const *specs, GError **error)
{
    g_autoptr(DevSkip) s = g_new0(DevSkip, 1);
    s->items = g_array_new(FALSE, FALSE, sizeof(SkipItem));
    for (; specs && *specs; specs++) {
        g_autofree char *whole = g_strstrip(g_strdup(*specs));
        if (!*whole) {
            bad_spec(error, *specs, "empty");
            return NULL;
        }
        g_auto(GStrv) list = g_strsplit(whole, ",", -1);
        for (char **it = list; *it; it++) {
            g_strstrip(*it);
            if (!**it)
                continue; /* "a,,b" or a trailing comma */
            if (!parse_one(s, *it, error))
                return NULL;
        }
    }
    return g_steal_pointer(&s);
}

bool devskip_is_empty(const DevSkip *s)
{
    return !s || s->items->len == 0;
}

static bool match(const DevSkip *s, const char *section, unsigned instance, int part)
{
    if (!s)
        return false;
    int sec = find(sections, section, strlen(section));
    if (sec < 0)
        return false;
    for (unsigned i = 0; i < s->items->len; i++) {
        const SkipItem *it = &g_array_index(s->items, SkipItem, i);
        if (it->section != sec)
            continue;
        if (it->instance != ANY && (unsigned)it->instance != instance)
            continue;
        if (it->part == ANY || it->part == part)
            return true;
    }
    return false;
}

bool devskip_section(const DevSkip *s, const char *section, unsigned instance)
{
    return match(s, section, instance, ANY);
}

bool devskip_part(const DevSkip *s, const char *section, unsigned instance, const char *part)
{
    int p = find(cpu_parts, part, strlen(part));
    if (p < 0)
        return devskip_section(s, section, instance);
    return match(s, section, instance, p);
}

char *devskip_describe(const DevSkip *s)
{
    GString *out = g_string_new(NULL);
    for (unsigned i = 0; s && i < s->items->len; i++) {
        const SkipItem *it = &g_array_index(s->items, SkipItem, i);
        if (out->len)
            g_string_append_c(out, ',');
        g_string_append(out, sections[it->section]);
        if (it->instance != ANY)
            g_string_append_printf(out, "%d", it->instance);
        if (it->part != ANY)
            g_string_append_printf(out, ".%s", cpu_parts[it->part]);
    }
    return g_string_free(out, FALSE);
}

void devskip_free(DevSkip *s)
{
    if (!s)
        return;
    if (s->items)
        g_array_free(s->items, TRUE);
    g_free(s);
}
