/*
 * Device "pit", instance 0: the in-kernel i8254, through KVM_GET/SET_PIT2. The three
 * channels are an array of structs holding every field of kvm_pit_channel_state.
 */
#include "devstate.h"

#include <errno.h>
#include <string.h>
#include <sys/ioctl.h>

#define PIT_VERSION     1
#define PIT_CHANNELS    3
#define PIT_MODE_UNSET  0xff /* KVM's mode after reset, before the guest programs it */
#define PIT_FLAGS_KNOWN (KVM_PIT_FLAGS_HPET_LEGACY | KVM_PIT_FLAGS_SPEAKER_DATA_ON)

static unsigned pit_count(const DevState *ds)
{
    return 1;
}

static bool pit_save(DevState *ds, unsigned instance, VmsnapFieldWriter *w, GError **error)
{
    struct kvm_pit_state2 ps;
    memset(&ps, 0, sizeof(ps));
    if (ioctl(devstate_vm(ds)->vm_fd, KVM_GET_PIT2, &ps) < 0)
        return devstate_ioctl_error(error, errno, "KVM_GET_PIT2", "pit", instance);

    vmsnap_fw_array_begin(w, "channels", PIT_CHANNELS);
    for (unsigned i = 0; i < PIT_CHANNELS; i++) {
        const struct kvm_pit_channel_state *c = &ps.channels[i];
        vmsnap_fw_struct_begin(w, NULL);
        vmsnap_fw_u32(w, "count", c->count);
        vmsnap_fw_u16(w, "latched_count", c->latched_count);
        vmsnap_fw_u8(w, "count_latched", c->count_latched);
        vmsnap_fw_u8(w, "status_latched", c->status_latched);
        vmsnap_fw_u8(w, "status", c->status);
        vmsnap_fw_u8(w, "read_state", c->read_state);
        vmsnap_fw_u8(w, "write_state", c->write_state);
        vmsnap_fw_u8(w, "write_latch", c->write_latch);
        vmsnap_fw_u8(w, "rw_mode", c->rw_mode);
        vmsnap_fw_u8(w, "mode", c->mode);
        vmsnap_fw_u8(w, "bcd", c->bcd);
        vmsnap_fw_u8(w, "gate", c->gate);
        /* Host monotonic ns; KVM_SET_PIT2 restarts the counter "now" and ignores it. */
        vmsnap_fw_i64(w, "count_load_time", c->count_load_time);
        vmsnap_fw_struct_end(w);
    }
    vmsnap_fw_array_end(w);
    vmsnap_fw_u32(w, "flags", ps.flags);
    return true;
}

/* Ranges: what KVM's i8254 emulation can produce (arch/x86/kvm/i8254.c). */
static void read_channel(VmsnapFieldReader *r, struct kvm_pit_channel_state *c)
{
    int64_t load_time = 0;

    vmsnap_fr_struct_begin(r, NULL);
    if (vmsnap_fr_u32(r, "count", &c->count) && (c->count == 0 || c->count > 0x10000))
        vmsnap_fr_fail(r, "%u is out of range (1 to 65536)", c->count);
    vmsnap_fr_u16(r, "latched_count", &c->latched_count);
    devstate_rd_u8_max(r, "count_latched", 3, &c->count_latched); /* an rw_mode */
    devstate_rd_u8_max(r, "status_latched", 1, &c->status_latched);
    vmsnap_fr_u8(r, "status", &c->status);
    devstate_rd_u8_max(r, "read_state", 4, &c->read_state); /* RW_STATE_LSB..WORD1 */
    devstate_rd_u8_max(r, "write_state", 4, &c->write_state);
    vmsnap_fr_u8(r, "write_latch", &c->write_latch);
    devstate_rd_u8_max(r, "rw_mode", 3, &c->rw_mode);
    /* KVM folds modes 6 and 7 into 2 and 3. */
    if (vmsnap_fr_u8(r, "mode", &c->mode) && c->mode > 5 && c->mode != PIT_MODE_UNSET)
        vmsnap_fr_fail(r, "mode %u is out of range (0 to 5, or 0xff before programming)", c->mode);
    devstate_rd_u8_max(r, "bcd", 1, &c->bcd);
    devstate_rd_u8_max(r, "gate", 1, &c->gate);
    vmsnap_fr_i64(r, "count_load_time", &load_time);
    c->count_load_time = load_time;
    vmsnap_fr_struct_end(r);
}

static bool pit_load(DevState *ds, unsigned instance, VmsnapFieldReader *r, uint32_t version,
                     GError **error)
{
    struct kvm_pit_state2 ps;
    memset(&ps, 0, sizeof(ps));

    uint32_t n = 0;
    vmsnap_fr_array_begin(r, "channels", PIT_CHANNELS, &n);
    for (unsigned i = 0; i < n && !vmsnap_fr_failed(r); i++)
        read_channel(r, &ps.channels[i]);
    /* Checked after array_end, so that the error names the array. */
    if (vmsnap_fr_array_end(r) && n != PIT_CHANNELS)
        vmsnap_fr_fail(r, "%u channels, the PIT has %u", n, PIT_CHANNELS);
    if (vmsnap_fr_u32(r, "flags", &ps.flags) && (ps.flags & ~PIT_FLAGS_KNOWN))
        vmsnap_fr_fail(r, "unknown flags 0x%x (known: 0x%x)", ps.flags & ~PIT_FLAGS_KNOWN,
                       PIT_FLAGS_KNOWN);
    if (vmsnap_fr_failed(r))
        return false;
    if (devstate_skipped(ds, "pit", instance, NULL))
        return true;

    if (ioctl(devstate_vm(ds)->vm_fd, KVM_SET_PIT2, &ps) < 0)
        return devstate_ioctl_error(error, errno, "KVM_SET_PIT2", "pit", instance);
    return true;
}

const DevType devtype_pit = {
    .name = "pit",
    .version = PIT_VERSION,
    .min_version = 1,
    .count = pit_count,
    .save = pit_save,
    .load = pit_load,
};
