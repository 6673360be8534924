/* Loading DEVICE sections (from a snapshot file or a stream) into the VMM's device
 * handlers: every section must find its device and every device its section. */
#include "snapfile.h"

#include <string.h>

static bool skipped(const char *const *skip, const char *name)
{
    for (; skip && *skip; skip++)
        if (!strcmp(*skip, name))
            return true;
    return false;
}

static bool load_one(const char *what, const VmsnapSectionPayload *sec, const VmsnapDevice *d,
                     GError **error)
{
    if (sec->version > d->version || sec->version < d->min_version) {
        g_set_error(error, G_IO_ERROR, G_IO_ERROR_NOT_SUPPORTED,
                    "%s: section '%s' instance %u has version %u, this vmsnap loads versions "
                    "%u to %u",
                    what, sec->name, sec->instance, sec->version, d->min_version, d->version);
        return false;
    }
    gsize len;
    const void *data = g_bytes_get_data(sec->fields, &len);
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
        g_prefix_error(error, "%s: ", what);
        return false;
    }
    if (!vmsnap_fr_finish(r, error)) {
        g_prefix_error(error, "%s: ", what);
        return false;
    }
    return true;
}

bool vmsnap_load_device_sections(const char *what, const VmsnapSectionPayload *sections,
                                 unsigned n_sections, const VmsnapDevice *devices,
                                 unsigned n_devices, const char *const *skip, GError **error)
{
    for (unsigned i = 0; i < n_sections; i++) {
        const VmsnapSectionPayload *sec = &sections[i];
        bool found = false;
        for (unsigned j = 0; j < n_devices && !found; j++)
            found = !strcmp(devices[j].name, sec->name) && devices[j].instance == sec->instance;
        if (!found) {
            g_set_error(error, G_IO_ERROR, G_IO_ERROR_NOT_SUPPORTED,
                        "%s: section '%s' instance %u (version %u) has no device in this VM", what,
                        sec->name, sec->instance, sec->version);
            return false;
        }
    }
    for (unsigned j = 0; j < n_devices; j++) {
        const VmsnapDevice *d = &devices[j];
        const VmsnapSectionPayload *sec = NULL;
        for (unsigned i = 0; i < n_sections && !sec; i++)
            if (!strcmp(sections[i].name, d->name) && sections[i].instance == d->instance)
                sec = &sections[i];
        if (!sec) {
            g_set_error(error, G_IO_ERROR, G_IO_ERROR_INVALID_DATA,
                        "%s: no section for device '%s' instance %u", what, d->name, d->instance);
            return false;
        }
        if (!skipped(skip, d->name) && !load_one(what, sec, d, error))
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
    g_autofree VmsnapSectionPayload *secs = g_new0(VmsnapSectionPayload, f->n_sections + 1);
    unsigned n = 0;
    for (unsigned i = 0; i < f->n_sections; i++) {
        if (f->sections[i].type != FORMAT_SECTION_DEVICE)
            continue;
        secs[n++] = (VmsnapSectionPayload){ f->sections[i].name, f->sections[i].instance,
                                            f->sections[i].version, f->payloads[i] };
    }
    return vmsnap_load_device_sections(s->what, secs, n, devices, n_devices, skip, error);
}
