/*
 * Device state (vmm/devstate.h, vmm/dev_*.c): the registry walk, an end-to-end
 * save/load of every device between two VMs running the dirty guest, and hostile
 * payloads. Needs /dev/kvm.
 */
#include "boot.h"
#include "devstate.h"
#include "guests.h"
#include "multiboot.h"

#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

/* ---- A small VM: RAM, vCPUs, COM1 and the device handlers ---- */

typedef struct TestVm {
    Vm *vm;
    Chardev serial;
    Uart uart;
    DevState *ds;
    GMutex lock;
    char *fatal; /* first fatal notice from a vCPU */
} TestVm;

static void uart_irq(void *opaque, int level)
{
    vm_set_irq(opaque, UART_COM1_IRQ, level);
}

static void on_notice(void *opaque, VmNoticeKind kind, int code, const char *message)
{
    TestVm *t = opaque;
    g_mutex_lock(&t->lock);
    if (kind == VM_NOTICE_FATAL && !t->fatal)
        t->fatal = g_strdup(message);
    g_mutex_unlock(&t->lock);
}

static bool have_kvm(void)
{
    if (access("/dev/kvm", R_OK | W_OK) == 0)
        return true;
    g_test_skip("/dev/kvm is not usable here: device state needs KVM");
    return false;
}

static TestVm *tvm_new(unsigned cpus, bool boot)
{
    g_autoptr(GError) error = NULL;
    TestVm *t = g_new0(TestVm, 1);
    VmConfig cfg = { .memory = 64u << 20, .cpus = cpus, .backing = RAM_BACKING_ANON };

    g_mutex_init(&t->lock);
    t->vm = vm_new(&cfg, &error);
    g_assert_no_error(error);
    t->vm->notice = on_notice;
    t->vm->notice_opaque = t;
    g_assert_true(chardev_open(&t->serial, "none", 0, &error));
    uart_init(&t->uart, &t->serial, uart_irq, t->vm);
    g_assert_true(pio_register(&t->vm->pio, UART_COM1_BASE, 8, uart_pio, &t->uart, "serial"));
    if (boot) {
        MultibootImage img;
        g_assert_true(multiboot_load(vmsnap_guest_dirty_elf, vmsnap_guest_dirty_elf_len, "dirty",
                                     "", &t->vm->ram, &img, &error));
        g_assert_no_error(error);
        g_assert_true(boot_multiboot_vcpus(t->vm, &img, &error));
        g_assert_no_error(error);
    }
    t->ds = devstate_new(t->vm, &t->uart, &error);
    g_assert_no_error(error);
    g_assert_nonnull(t->ds);
    return t;
}

static void tvm_free(TestVm *t)
{
    if (!t)
        return;
    devstate_free(t->ds);
    vm_free(t->vm);
    uart_destroy(&t->uart);
    chardev_close(&t->serial);
    g_mutex_clear(&t->lock);
    g_free(t->fatal);
    g_free(t);
}

G_DEFINE_AUTOPTR_CLEANUP_FUNC(TestVm, tvm_free)

static const VmsnapDevice *find_dev(TestVm *t, const char *name, uint32_t instance)
{
    g_autoptr(GError) error = NULL;
    const VmsnapDevice *d = devstate_find(t->ds, name, instance, &error);
    g_assert_no_error(error);
    return d;
}

static GBytes *save_dev(const VmsnapDevice *d)
{
    g_autoptr(GError) error = NULL;
    GBytes *b = devstate_save_payload(d, &error);
    g_assert_no_error(error);
    g_assert_nonnull(b);
    return b;
}

static void load_ok(const VmsnapDevice *d, GBytes *payload)
{
    g_autoptr(GError) error = NULL;
    gsize len;
    const void *data = g_bytes_get_data(payload, &len);
    bool ok = devstate_load_payload(d, data, len, d->version, &error);
    g_assert_no_error(error);
    g_assert_true(ok);
}

/* Loads a payload that must be refused; returns the error message. */
static char *load_fails(const VmsnapDevice *d, const void *data, size_t len, uint32_t version)
{
    g_autoptr(GError) error = NULL;
    g_assert_false(devstate_load_payload(d, data, len, version, &error));
    g_assert_nonnull(error);
    g_test_message("refused as expected: %s", error->message);
    return g_strdup(error->message);
}

/* ---- The guest's status block (docs/GUEST.md) ---- */

static uint32_t status_u32(TestVm *t, uint32_t off)
{
    const uint32_t *p = ram_ptr(&t->vm->ram, VMSNAP_DIRTY_STATUS_GPA + off, 4);
    g_assert_nonnull(p);
    return __atomic_load_n(p, __ATOMIC_ACQUIRE);
}

static uint32_t passes(TestVm *t, unsigned cpu)
{
    return status_u32(t, VMSNAP_DIRTY_OFF_SLOTS + cpu * VMSNAP_DIRTY_SLOT_SIZE +
                             VMSNAP_DIRTY_SLOT_PASSES);
}

static void assert_no_guest_error(TestVm *t)
{
    g_mutex_lock(&t->lock);
    if (t->fatal)
        g_error("a vCPU stopped: %s", t->fatal);
    g_mutex_unlock(&t->lock);
    /* The header is valid once the magic is there (vCPU 0 writes it last). */
    if (status_u32(t, VMSNAP_DIRTY_OFF_MAGIC) != VMSNAP_DIRTY_MAGIC)
        return;
    uint32_t page = status_u32(t, VMSNAP_DIRTY_OFF_ERROR_PAGE);
    if (page != VMSNAP_DIRTY_NO_ERROR)
        g_error("the guest found a bad page 0x%x (word0 0x%x, expected 0x%x; vCPU %u)", page,
                status_u32(t, VMSNAP_DIRTY_OFF_ERROR_FOUND),
                status_u32(t, VMSNAP_DIRTY_OFF_ERROR_EXPECTED),
                status_u32(t, VMSNAP_DIRTY_OFF_ERROR_CPU));
}

/* Waits until every vCPU's pass counter exceeds min[i] (or 0), at most `seconds`. */
static void wait_passes(TestVm *t, const uint32_t *min, double seconds)
{
    gint64 deadline = g_get_monotonic_time() + (gint64)(seconds * G_USEC_PER_SEC);
    for (;;) {
        assert_no_guest_error(t);
        bool all = status_u32(t, VMSNAP_DIRTY_OFF_MAGIC) == VMSNAP_DIRTY_MAGIC;
        for (unsigned i = 0; i < t->vm->n_vcpus && all; i++)
            all = passes(t, i) > (min ? min[i] : 0);
        if (all)
            return;
        if (g_get_monotonic_time() > deadline)
            break;
        g_usleep(20000);
    }
    for (unsigned i = 0; i < t->vm->n_vcpus; i++)
        g_test_message("vCPU %u: %u passes (needed more than %u)", i, passes(t, i),
                       min ? min[i] : 0);
    g_error("the guest made no progress in %.1f s", seconds);
}

/* ---- Registry walk ---- */

static void test_registry(void)
{
    if (!have_kvm())
        return;
    static const char *const order[] = { "cpu", "pic", "ioapic", "pit", "kvmclock", "serial" };
    g_assert_cmpuint(devstate_n_types(), ==, G_N_ELEMENTS(order));
    g_assert_null(devstate_type_name(devstate_n_types()));

    g_autoptr(TestVm) a = tvm_new(2, false);
    g_autoptr(TestVm) b = tvm_new(2, false);
    unsigned n, k = 0;
    const VmsnapDevice *devs = devstate_devices(a->ds, &n);

    for (unsigned i = 0; i < devstate_n_types(); i++) {
        const char *name = devstate_type_name(i);
        g_assert_cmpstr(name, ==, order[i]);
        g_assert_cmpuint(strlen(name), <=, 23);
        g_assert_cmpuint(devstate_type_min_version(i), >=, 1);
        g_assert_cmpuint(devstate_type_version(i), >=, devstate_type_min_version(i));
        unsigned count = devstate_type_instances(a->ds, i);
        g_assert_cmpuint(count, >=, 1);
        /* The handlers come in registry order, instances counting up. */
        for (unsigned j = 0; j < count; j++, k++) {
            const VmsnapDevice *d = &devs[k];
            g_assert_cmpuint(k, <, n);
            g_assert_cmpuint(d->struct_size, ==, sizeof(VmsnapDevice));
            g_assert_cmpstr(d->name, ==, name);
            g_assert_cmpuint(d->instance, ==, j);
            g_assert_cmpuint(d->version, ==, devstate_type_version(i));
            g_assert_cmpuint(d->min_version, ==, devstate_type_min_version(i));

            /* Saves, prints as fields, loads into another VM and into itself. */
            g_autoptr(GBytes) p = save_dev(d);
            g_autoptr(GString) text = g_string_new(NULL);
            g_autoptr(GError) error = NULL;
            g_autofree char *prefix = g_strdup_printf("%s%u", name, j);
            gsize len;
            const void *data = g_bytes_get_data(p, &len);
            g_assert_true(vmsnap_fields_print(data, len, prefix, false, text, &error));
            g_assert_no_error(error);
            g_assert_true(g_str_has_prefix(text->str, prefix));
            load_ok(find_dev(b, name, j), p);
            load_ok(d, p);
        }
    }
    g_assert_cmpuint(k, ==, n);

    /* Without a UART there is no serial section. */
    g_autoptr(GError) error = NULL;
    g_autoptr(DevState) noserial = devstate_new(a->vm, NULL, &error);
    g_assert_no_error(error);
    g_assert_cmpuint(devstate_type_instances(noserial, devstate_n_types() - 1), ==, 0);
    g_assert_null(devstate_find(noserial, "serial", 0, &error));
    g_assert_nonnull(strstr(error->message, "no serial device"));
}

/* ---- End to end ---- */

/*
 * Paths whose value legitimately changes between the save of the source and the
 * re-save of the freshly loaded copy:
 *  - cpuN.msrs[k].value where msrs[k].index is IA32_TSC (0x10): the guest TSC runs
 *    in real time even while the vCPUs are paused;
 *  - pit0.channels[i].count_load_time: KVM_SET_PIT2 restarts each counter "now";
 *  - kvmclock0.clock: kvmclock runs in real time while the VM is paused.
 */
static bool exempt(const char *line, const char *tsc_value_path)
{
    if (tsc_value_path && g_str_has_prefix(line, tsc_value_path))
        return true;
    return (g_str_has_prefix(line, "pit0.channels[") && strstr(line, "].count_load_time = ")) ||
           g_str_has_prefix(line, "kvmclock0.clock = ");
}

static void compare_payloads(const VmsnapDevice *d, GBytes *before, GBytes *after)
{
    g_autoptr(GError) error = NULL;
    g_autofree char *prefix = g_strdup_printf("%s%u", d->name, d->instance);
    g_autoptr(GString) t1 = g_string_new(NULL), t2 = g_string_new(NULL);
    gsize l1, l2;
    const void *p1 = g_bytes_get_data(before, &l1), *p2 = g_bytes_get_data(after, &l2);
    g_assert_true(vmsnap_fields_print(p1, l1, prefix, true, t1, &error));
    g_assert_true(vmsnap_fields_print(p2, l2, prefix, true, t2, &error));
    g_assert_no_error(error);
    if (strcmp(t1->str, t2->str) == 0)
        return;

    g_auto(GStrv) a = g_strsplit(t1->str, "\n", -1), b = g_strsplit(t2->str, "\n", -1);
    g_assert_cmpuint(g_strv_length(a), ==, g_strv_length(b));
    g_autofree char *tsc_value = NULL;
    for (unsigned i = 0; a[i]; i++) {
        /* ".msrs[k].index = (u32) 0x00000010" names the element whose value may move */
        const char *m = strstr(a[i], ".index = (u32) 0x00000010");
        if (g_str_has_prefix(a[i], prefix) && strstr(a[i], ".msrs[") && m) {
            g_free(tsc_value);
            tsc_value = g_strdup_printf("%.*s.value = ", (int)(m - a[i]), a[i]);
        }
        if (strcmp(a[i], b[i]) == 0)
            continue;
        if (exempt(a[i], tsc_value)) {
            g_test_message("moved as expected: %s -> %s", a[i], strstr(b[i], " = ") + 3);
        } else {
            g_test_message("saved:    %s", a[i]);
            g_test_message("reloaded: %s", b[i]);
            g_error("%s: the re-saved state differs from the loaded one", prefix);
        }
    }
}

static void run_end_to_end(unsigned cpus)
{
    g_autoptr(TestVm) src = tvm_new(cpus, true);
    g_autoptr(GError) error = NULL;

    g_assert_true(vm_start(src->vm, &error));
    vm_resume(src->vm);
    gint64 t0 = g_get_monotonic_time();
    wait_passes(src, NULL, 30);
    gint64 ran = g_get_monotonic_time() - t0;
    if (ran < G_USEC_PER_SEC / 2)
        g_usleep(G_USEC_PER_SEC / 2 - ran);
    vm_pause(src->vm);
    assert_no_guest_error(src);

    unsigned n;
    const VmsnapDevice *devs = devstate_devices(src->ds, &n);
    g_autoptr(GPtrArray) saved = g_ptr_array_new_with_free_func((GDestroyNotify)g_bytes_unref);
    for (unsigned i = 0; i < n; i++)
        g_ptr_array_add(saved, save_dev(&devs[i]));

    /* A second VM with the same configuration: RAM copied block by block, then
     * every device loaded in restore order. */
    g_autoptr(TestVm) dst = tvm_new(cpus, false);
    g_assert_cmpuint(dst->vm->ram.n_blocks, ==, src->vm->ram.n_blocks);
    for (unsigned i = 0; i < src->vm->ram.n_blocks; i++) {
        g_assert_cmpuint(dst->vm->ram.blocks[i].size, ==, src->vm->ram.blocks[i].size);
        memcpy(dst->vm->ram.blocks[i].host, src->vm->ram.blocks[i].host,
               src->vm->ram.blocks[i].size);
    }
    unsigned n2;
    const VmsnapDevice *devs2 = devstate_devices(dst->ds, &n2);
    g_assert_cmpuint(n2, ==, n);
    for (unsigned i = 0; i < n; i++) {
        g_assert_cmpstr(devs2[i].name, ==, devs[i].name);
        g_assert_cmpuint(devs2[i].instance, ==, devs[i].instance);
        load_ok(&devs2[i], saved->pdata[i]);
    }
    /* Saving what was just loaded gives the same fields (see exempt()). */
    for (unsigned i = 0; i < n; i++) {
        g_autoptr(GBytes) again = save_dev(&devs2[i]);
        compare_payloads(&devs2[i], saved->pdata[i], again);
    }

    uint32_t before[VM_MAX_VCPUS];
    for (unsigned i = 0; i < cpus; i++) {
        before[i] = passes(dst, i);
        g_assert_cmpuint(before[i], ==, passes(src, i));
        g_test_message("vCPU %u: %u passes at the save", i, before[i]);
    }
    g_assert_true(vm_start(dst->vm, &error));
    vm_resume(dst->vm);
    /* Two more passes: one that started before the save, one entirely after. */
    uint32_t need[VM_MAX_VCPUS];
    for (unsigned i = 0; i < cpus; i++)
        need[i] = before[i] + 1;
    wait_passes(dst, need, 30);
    vm_pause(dst->vm);
    assert_no_guest_error(dst);
    for (unsigned i = 0; i < cpus; i++) {
        uint32_t state = status_u32(dst, VMSNAP_DIRTY_OFF_SLOTS + i * VMSNAP_DIRTY_SLOT_SIZE +
                                             VMSNAP_DIRTY_SLOT_STATE);
        g_assert_cmpuint(state, ==, VMSNAP_DIRTY_STATE_WALKING);
        g_test_message("vCPU %u: %u passes after the restore", i, passes(dst, i));
    }
}

static void test_end_to_end_1cpu(void)
{
    if (have_kvm())
        run_end_to_end(1);
}

static void test_end_to_end_2cpu(void)
{
    if (have_kvm())
        run_end_to_end(2);
}

/* ---- Hostile payloads ---- */

/* The encoded header of a named field: kind, name length, name. */
static GByteArray *field_head(uint8_t kind, const char *name)
{
    GByteArray *h = g_byte_array_new();
    uint8_t hdr[2] = { kind, (uint8_t)strlen(name) };
    g_byte_array_append(h, hdr, 2);
    g_byte_array_append(h, (const uint8_t *)name, (guint)strlen(name));
    return h;
}

/* Offset of the first occurrence of field (kind, name) at or after `from`. */
static size_t find_field(const GByteArray *p, size_t from, uint8_t kind, const char *name)
{
    g_autoptr(GByteArray) h = field_head(kind, name);
    for (size_t i = from; i + h->len <= p->len; i++)
        if (memcmp(p->data + i, h->data, h->len) == 0)
            return i;
    g_error("field '%s' not found in the payload", name);
}

static GByteArray *copy_payload(GBytes *b)
{
    gsize len;
    const uint8_t *data = g_bytes_get_data(b, &len);
    GByteArray *a = g_byte_array_sized_new((guint)len);
    g_byte_array_append(a, data, (guint)len);
    return a;
}

enum { K_U8 = 1, K_U16, K_U32, K_U64, K_I64, K_BOOL, K_BYTES, K_STR, K_STRUCT, K_ARRAY };

static void put_le(uint8_t *p, uint64_t v, unsigned n)
{
    for (unsigned i = 0; i < n; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static void assert_names(const char *msg, const char *section, const char *path)
{
    g_autofree char *s = g_strdup_printf("section '%s'", section);
    g_autofree char *f = g_strdup_printf("field '%s", path); /* a path prefix */
    if (!strstr(msg, s) || !strstr(msg, f))
        g_error("expected an error naming %s and field %s, got: %s", s, f, msg);
}

static void test_renamed_field(void)
{
    if (!have_kvm())
        return;
    g_autoptr(TestVm) t = tvm_new(1, false);
    const VmsnapDevice *cpu = find_dev(t, "cpu", 0);
    g_autoptr(GBytes) p = save_dev(cpu);
    g_autoptr(GByteArray) bad = copy_payload(p);
    size_t at = find_field(bad, 0, K_U64, "rip");
    bad->data[at + 3] = 'o'; /* "rip" -> "rop" */
    g_autofree char *msg = load_fails(cpu, bad->data, bad->len, cpu->version);
    assert_names(msg, "cpu", "regs.rip");
    g_assert_nonnull(strstr(msg, "rop"));

    const VmsnapDevice *pit = find_dev(t, "pit", 0);
    g_autoptr(GBytes) pp = save_dev(pit);
    g_autoptr(GByteArray) bad2 = copy_payload(pp);
    at = find_field(bad2, 0, K_U8, "gate");
    memcpy(bad2->data + at + 2, "gale", 4);
    g_autofree char *msg2 = load_fails(pit, bad2->data, bad2->len, pit->version);
    assert_names(msg2, "pit", "channels[0].gate");
}

static void test_truncated(void)
{
    if (!have_kvm())
        return;
    g_autoptr(TestVm) t = tvm_new(1, false);
    unsigned n;
    const VmsnapDevice *devs = devstate_devices(t->ds, &n);
    for (unsigned i = 0; i < n; i++) {
        g_autoptr(GBytes) p = save_dev(&devs[i]);
        gsize len;
        const uint8_t *data = g_bytes_get_data(p, &len);
        /* Every cut for the small devices, a spread of them for the CPU. */
        size_t step = len > 512 ? len / 97 : 1;
        for (size_t cut = 0; cut < len; cut += step) {
            g_autoptr(GError) error = NULL;
            g_autofree uint8_t *copy = g_memdup2(data, cut);
            g_assert_false(devstate_load_payload(&devs[i], copy, cut, devs[i].version, &error));
            g_assert_nonnull(error);
            g_autofree char *s = g_strdup_printf("section '%s'", devs[i].name);
            g_assert_nonnull(strstr(error->message, s));
        }
        /* Trailing garbage after the last field is refused too. */
        g_autoptr(GByteArray) longer = copy_payload(p);
        g_autoptr(GByteArray) extra = field_head(K_U8, "extra");
        g_byte_array_append(longer, extra->data, extra->len);
        g_byte_array_append(longer, (const uint8_t *)"\0", 1);
        g_autofree char *msg = load_fails(&devs[i], longer->data, longer->len, devs[i].version);
        g_assert_nonnull(strstr(msg, "extra"));
        /* The state is still loadable after all that. */
        load_ok(&devs[i], p);
    }
}

static void test_lapic_size(void)
{
    if (!have_kvm())
        return;
    g_autoptr(TestVm) t = tvm_new(1, false);
    const VmsnapDevice *cpu = find_dev(t, "cpu", 0);
    g_autoptr(GBytes) p = save_dev(cpu);
    g_autoptr(GByteArray) bad = copy_payload(p);

    /* Rewrite the LAPIC blob from 1024 to 1000 bytes. */
    size_t at = find_field(bad, 0, K_BYTES, "lapic");
    size_t len_at = at + 2 + 5;
    uint32_t len = bad->data[len_at] | bad->data[len_at + 1] << 8 | bad->data[len_at + 2] << 16 |
                   (uint32_t)bad->data[len_at + 3] << 24;
    g_assert_cmpuint(len, ==, 1024);
    put_le(bad->data + len_at, 1000, 4);
    g_byte_array_remove_range(bad, (guint)(len_at + 4 + 1000), 24);
    g_autofree char *msg = load_fails(cpu, bad->data, bad->len, cpu->version);
    assert_names(msg, "cpu", "lapic");
    g_assert_nonnull(strstr(msg, "1000"));
    g_assert_nonnull(strstr(msg, "1024"));

    /* The same for the XSAVE area: this host's size is named. */
    g_autoptr(GByteArray) bad2 = copy_payload(p);
    at = find_field(bad2, 0, K_BYTES, "xsave");
    len_at = at + 2 + 5;
    len = bad2->data[len_at] | bad2->data[len_at + 1] << 8 | bad2->data[len_at + 2] << 16 |
          (uint32_t)bad2->data[len_at + 3] << 24;
    put_le(bad2->data + len_at, len - 64, 4);
    g_byte_array_remove_range(bad2, (guint)(len_at + 4 + len - 64), 64);
    g_autofree char *msg2 = load_fails(cpu, bad2->data, bad2->len, cpu->version);
    assert_names(msg2, "cpu", "xsave");
    g_autofree char *host = g_strdup_printf("%u bytes", len);
    g_assert_nonnull(strstr(msg2, host));
}

/* Offset of the value of msrs[k].index == msr, or of its .value when `value`. */
static size_t find_msr(GByteArray *p, uint32_t msr, bool value)
{
    size_t at = find_field(p, 0, K_ARRAY, "msrs");
    for (;;) {
        at = find_field(p, at + 1, K_U32, "index");
        uint8_t *v = p->data + at + 2 + 5;
        if ((uint32_t)(v[0] | v[1] << 8 | v[2] << 16 | (uint32_t)v[3] << 24) == msr) {
            if (!value)
                return at + 2 + 5;
            return find_field(p, at, K_U64, "value") + 2 + 5;
        }
    }
}

static void test_msrs(void)
{
    if (!have_kvm())
        return;
    g_autoptr(TestVm) t = tvm_new(1, false);
    const VmsnapDevice *cpu = find_dev(t, "cpu", 0);
    g_autoptr(GBytes) p = save_dev(cpu);

    /* An index this KVM does not list: refused before anything is applied. */
    g_autoptr(GByteArray) bad = copy_payload(p);
    put_le(bad->data + find_msr(bad, 0x10, false), 0xdeadbeef, 4);
    g_autofree char *msg = load_fails(cpu, bad->data, bad->len, cpu->version);
    assert_names(msg, "cpu", "msrs[");
    g_assert_nonnull(strstr(msg, "0xdeadbeef"));

    /* The same MSR twice. */
    g_autoptr(GByteArray) dup = copy_payload(p);
    put_le(dup->data + find_msr(dup, 0x11, false), 0x10, 4);
    g_autofree char *msg2 = load_fails(cpu, dup->data, dup->len, cpu->version);
    g_assert_nonnull(strstr(msg2, "twice"));

    /* A listed MSR with a value KVM refuses: a non-canonical IA32_LSTAR. KVM_SET_MSRS
     * stops there, and the error names it. (This PVM host accepts a PAT with reserved
     * memory types from the host side, so PAT cannot serve here.) */
    g_autoptr(GByteArray) lstar = copy_payload(p);
    put_le(lstar->data + find_msr(lstar, 0xc0000082, true), 0x8000000000000000ull, 8);
    g_autofree char *msg3 = load_fails(cpu, lstar->data, lstar->len, cpu->version);
    assert_names(msg3, "cpu", "msrs[");
    g_assert_nonnull(strstr(msg3, "KVM refused MSR 0xc0000082 = 0x8000000000000000"));
}

static void test_vcpu_instance(void)
{
    if (!have_kvm())
        return;
    g_autoptr(TestVm) two = tvm_new(2, false);
    g_autoptr(TestVm) one = tvm_new(1, false);
    g_autoptr(GError) error = NULL;

    /* A section for vCPU 1 has no handler in a 1-vCPU VM. */
    g_assert_null(devstate_find(one->ds, "cpu", 1, &error));
    g_assert_nonnull(strstr(error->message, "section 'cpu' instance 1"));
    g_assert_nonnull(strstr(error->message, "has 1 vCPU (instance 0)"));
    g_clear_error(&error);
    g_assert_null(devstate_find(one->ds, "pic", 2, &error));
    g_assert_nonnull(strstr(error->message, "instance 2"));
    g_clear_error(&error);
    g_assert_null(devstate_find(one->ds, "gpu", 0, &error));
    g_assert_nonnull(strstr(error->message, "'gpu'"));
    g_clear_error(&error);

    /* vCPU 1's state carries its index: it is not loaded into vCPU 0, nor into a VM
     * that has no vCPU 1. */
    g_autoptr(GBytes) p1 = save_dev(find_dev(two, "cpu", 1));
    gsize len;
    const void *data = g_bytes_get_data(p1, &len);
    g_autofree char *msg = load_fails(find_dev(two, "cpu", 0), data, len, 1);
    assert_names(msg, "cpu", "index");
    g_autofree char *msg2 = load_fails(find_dev(one, "cpu", 0), data, len, 1);
    assert_names(msg2, "cpu", "index");
    g_assert_nonnull(strstr(msg2, "this VM has 1 vCPU"));
}

static void test_version(void)
{
    if (!have_kvm())
        return;
    g_autoptr(TestVm) t = tvm_new(1, false);
    unsigned n;
    const VmsnapDevice *devs = devstate_devices(t->ds, &n);
    for (unsigned i = 0; i < n; i++) {
        g_autoptr(GBytes) p = save_dev(&devs[i]);
        gsize len;
        const void *data = g_bytes_get_data(p, &len);
        g_autofree char *msg = load_fails(&devs[i], data, len, devs[i].version + 1);
        g_autofree char *newer = g_strdup_printf("version %u is newer", devs[i].version + 1);
        g_autofree char *known = g_strdup_printf("(%u)", devs[i].version);
        g_assert_nonnull(strstr(msg, newer));
        g_assert_nonnull(strstr(msg, known));
        g_autofree char *msg0 = load_fails(&devs[i], data, len, 0);
        g_assert_nonnull(strstr(msg0, "older"));
    }
}

static void test_out_of_range(void)
{
    if (!have_kvm())
        return;
    g_autoptr(TestVm) t = tvm_new(1, false);

    /* A code segment type above 15. */
    const VmsnapDevice *cpu = find_dev(t, "cpu", 0);
    g_autoptr(GBytes) pc = save_dev(cpu);
    g_autoptr(GByteArray) seg = copy_payload(pc);
    size_t at = find_field(seg, find_field(seg, 0, K_STRUCT, "cs"), K_U8, "type");
    seg->data[at + 2 + 4] = 16;
    g_autofree char *msg = load_fails(cpu, seg->data, seg->len, 1);
    assert_names(msg, "cpu", "sregs.cs.type");

    /* PIT mode 6 (KVM folds it into 2, so a saved state never has it). */
    const VmsnapDevice *pit = find_dev(t, "pit", 0);
    g_autoptr(GBytes) pp = save_dev(pit);
    g_autoptr(GByteArray) mode = copy_payload(pp);
    at = find_field(mode, 0, K_U8, "mode");
    mode->data[at + 2 + 4] = 6;
    g_autofree char *msg2 = load_fails(pit, mode->data, mode->len, 1);
    assert_names(msg2, "pit", "channels[0].mode");

    /* A redirection table of 23 entries: a well-formed array, one entry short. */
    const VmsnapDevice *ioapic = find_dev(t, "ioapic", 0);
    g_autoptr(GBytes) pi = save_dev(ioapic);
    g_autoptr(GByteArray) rt = copy_payload(pi);
    at = find_field(rt, 0, K_ARRAY, "redirtbl");
    put_le(rt->data + at + 2 + 8, 23, 4);
    size_t first = find_field(rt, at, K_U8, "vector");
    size_t second = find_field(rt, first + 1, K_U8, "vector");
    g_byte_array_remove_range(rt, (guint)first - 2, (guint)(second - first)); /* entry 0 */
    g_autofree char *msg3 = load_fails(ioapic, rt->data, rt->len, 1);
    assert_names(msg3, "ioapic", "redirtbl'");
    g_assert_nonnull(strstr(msg3, "23 entries"));
    /* A count above 24 is refused by the reader before anything is read. */
    put_le(rt->data + at + 2 + 8, 25, 4);
    g_autofree char *msg5 = load_fails(ioapic, rt->data, rt->len, 1);
    assert_names(msg5, "ioapic", "redirtbl'");

    /* A serial FIFO head past its end. */
    const VmsnapDevice *serial = find_dev(t, "serial", 0);
    g_autoptr(GBytes) ps = save_dev(serial);
    g_autoptr(GByteArray) head = copy_payload(ps);
    at = find_field(head, 0, K_U8, "rx_head");
    head->data[at + 2 + 7] = UART_FIFO_SIZE;
    g_autofree char *msg4 = load_fails(serial, head->data, head->len, 1);
    assert_names(msg4, "serial", "rx_head");
}

/* ---- --x-skip-device-load: validated, not applied ---- */

static struct kvm_mp_state get_mp(TestVm *t, unsigned cpu)
{
    struct kvm_mp_state mp = { 0 };
    g_assert_cmpint(ioctl(t->vm->vcpus[cpu].fd, KVM_GET_MP_STATE, &mp), ==, 0);
    return mp;
}

static struct kvm_regs get_regs(TestVm *t, unsigned cpu)
{
    struct kvm_regs regs;
    memset(&regs, 0, sizeof(regs));
    g_assert_cmpint(ioctl(t->vm->vcpus[cpu].fd, KVM_GET_REGS, &regs), ==, 0);
    return regs;
}

static void test_skip(void)
{
    if (!have_kvm())
        return;
    g_autoptr(TestVm) src = tvm_new(2, false);
    g_autoptr(TestVm) dst = tvm_new(2, false);
    /* The source's AP runs (the destination's waits for SIPI) and has another rip. */
    struct kvm_mp_state runnable = { .mp_state = KVM_MP_STATE_RUNNABLE };
    g_assert_cmpint(ioctl(src->vm->vcpus[1].fd, KVM_SET_MP_STATE, &runnable), ==, 0);
    struct kvm_regs regs = get_regs(src, 1);
    regs.rip = 0x1234;
    g_assert_cmpint(ioctl(src->vm->vcpus[1].fd, KVM_SET_REGS, &regs), ==, 0);
    g_assert_cmpuint(get_mp(dst, 1).mp_state, ==, KVM_MP_STATE_UNINITIALIZED);
    g_autoptr(GBytes) cpu1 = save_dev(find_dev(src, "cpu", 1));
    g_autoptr(GBytes) ioapic = save_dev(find_dev(src, "ioapic", 0));

    const char *const specs[] = { "cpu1.mp_state", "ioapic", NULL };
    g_autoptr(GError) error = NULL;
    DevSkip *skip = devskip_parse(specs, &error);
    g_assert_no_error(error);
    devstate_set_skip(dst->ds, skip);
    g_assert_true(devstate_skipped(dst->ds, "cpu", 1, "mp_state"));
    g_assert_false(devstate_skipped(dst->ds, "cpu", 0, "mp_state"));
    g_assert_false(devstate_skipped(dst->ds, "cpu", 1, "regs"));
    g_assert_true(devstate_skipped(dst->ds, "ioapic", 0, NULL));
    g_assert_false(devstate_skipped(dst->ds, "pit", 0, NULL));

    /* Loads succeed (every field consumed); the skipped part is left as it was. */
    load_ok(find_dev(dst, "cpu", 1), cpu1);
    load_ok(find_dev(dst, "ioapic", 0), ioapic);
    g_assert_cmpuint(get_mp(dst, 1).mp_state, ==, KVM_MP_STATE_UNINITIALIZED);
    g_assert_cmpuint(get_regs(dst, 1).rip, ==, 0x1234);

    /* Validation still runs on a skipped section. */
    g_autoptr(GByteArray) bad = copy_payload(cpu1);
    size_t at = find_field(bad, 0, K_U32, "mp_state");
    put_le(bad->data + at + 2 + 8, 77, 4);
    g_autofree char *msg = load_fails(find_dev(dst, "cpu", 1), bad->data, bad->len, 1);
    g_assert_nonnull(strstr(msg, "77 is not an x86 MP state"));

    /* Without the skip, the MP state is applied. */
    devstate_set_skip(dst->ds, NULL);
    load_ok(find_dev(dst, "cpu", 1), cpu1);
    g_assert_cmpuint(get_mp(dst, 1).mp_state, ==, KVM_MP_STATE_RUNNABLE);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/devstate/registry", test_registry);
    g_test_add_func("/devstate/end-to-end/1-cpu", test_end_to_end_1cpu);
    g_test_add_func("/devstate/end-to-end/2-cpus", test_end_to_end_2cpu);
    g_test_add_func("/devstate/bad/renamed-field", test_renamed_field);
    g_test_add_func("/devstate/bad/truncated", test_truncated);
    g_test_add_func("/devstate/bad/lapic-xsave-size", test_lapic_size);
    g_test_add_func("/devstate/bad/msrs", test_msrs);
    g_test_add_func("/devstate/bad/vcpu-instance", test_vcpu_instance);
    g_test_add_func("/devstate/bad/version", test_version);
    g_test_add_func("/devstate/bad/out-of-range", test_out_of_range);
    g_test_add_func("/devstate/skip", test_skip);
    return g_test_run();
}
