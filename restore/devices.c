/* Loading DEVICE sections into the VMM's device handlers. */
#include "snapfile.h"

#include <string.h>

static bool skipped(const char *const *skip, const char *name)
{
    for (; skip && *skip; skip++)
        if (!strcmp(*skip, name))
            return true;
    return false;
}

static bool load_one(const VmsnapSnapshot *s, unsigned idx, const VmsnapDevice *d,
                     GError **error)
{
    const FormatSection *sec = &s->fmt->sections[idx];
    if (sec->version > d->version || sec->version < d->min_version) {
        g_set_error(error, G_IO_ERROR, G_IO_ERROR_NOT_SUPPORTED,
                    "%s: section '%s' instance %u has version %u, this vmsnap loads versions "
                    "%u to %u", s->what, sec->name, sec->instance, sec->version, d->min_version,
                    d->version);
        return false;
    }
    gsize len;
    const void *data = g_bytes_get_data(s->fmt->payloads[idx], &len);
    VmsnapFieldReader *r = vmsnap_fr_new(data, len, sec->name, sec->instance, sec->version);
    if (!d->load(d->opaque, r, sec->version, error)) {
        /* Prefer the reader's own message (it names the field) when it has one. */
        GError *local = NULL;
        if (vmsnap_fr_failed(r) && !vmsnap_fr_finish(r, &local)) {
            g_clear_error(error);
            g_propagate_error(error, local);
        } else {
            vmsnap_fr_free(r);
        }
        g_prefix_error(error, "%s: ", s->what);
        return false;
    }
    if (!vmsnap_fr_finish(r, error)) {
        g_prefix_error(error, "%s: ", s->what);
        return false;
    }
    return true;
}

bool vmsnap_snapshot_load_devices(VmsnapSnapshot *s, const VmsnapDevice *devices,
                                  unsigned n_devices, const char *const *skip, GError **error)
{
    const FormatSnapshot *f = s->fmt;
    if (f->header.state != FORMAT_STATE_DONE) {
        g_set_error(error, G_IO_ERROR, G_IO_ERROR_INVALID_DATA,
                    "%s: incomplete snapshot (state PART): the save did not finish", s->what);
        return false;
    }
    /* Every device section must belong to a device of this VMM. */
    for (unsigned i = 0; i < f->n_sections; i++) {
        const FormatSection *sec = &f->sections[i];
        if (sec->type != FORMAT_SECTION_DEVICE)
            continue;
        bool found = false;
        for (unsigned j = 0; j < n_devices && !found; j++)
            found = !strcmp(devices[j].name, sec->name) && devices[j].instance == sec->instance;
        if (!found) {
            g_set_error(error, G_IO_ERROR, G_IO_ERROR_NOT_SUPPORTED,
                        "%s: section '%s' instance %u (version %u) has no device in this VM",
                        s->what, sec->name, sec->instance, sec->version);
            return false;
        }
    }
    for (unsigned j = 0; j < n_devices; j++) {
        const VmsnapDevice *d = &devices[j];
        int idx = -1;
        for (unsigned i = 0; i < f->n_sections && idx < 0; i++)
            if (f->sections[i].type == FORMAT_SECTION_DEVICE &&
                !strcmp(f->sections[i].name, d->name) && f->sections[i].instance == d->instance)
                idx = (int)i;
        if (idx < 0) {
            g_set_error(error, G_IO_ERROR, G_IO_ERROR_INVALID_DATA,
                        "%s: no section for device '%s' instance %u", s->what, d->name,
                        d->instance);
            return false;
        }
        if (skipped(skip, d->name))
            continue;
        if (!load_one(s, (unsigned)idx, d, error))
            return false;
    }
    return true;
}
