#include "machine.h"

#include "boot.h"
#include "boot_linux.h"
#include "config.h"
#include "dev_legacy.h"
#include "devstate.h"
#include "guests.h"
#include "migration.h"
#include "multiboot.h"

#include <glib-unix.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <xxhash.h>

#define DEBUG_EXIT_PORT 0xf4 /* QEMU's isa-debug-exit: status = (value << 1) | 1 */
#define POST_PORT       0x80

void machine_config_clear(MachineConfig *cfg)
{
    g_clear_pointer(&cfg->kernel, g_free);
    g_clear_pointer(&cfg->initrd, g_free);
    g_clear_pointer(&cfg->append, g_free);
    g_clear_pointer(&cfg->serial, g_free);
    g_clear_pointer(&cfg->qmp, g_free);
    g_clear_pointer(&cfg->name, g_free);
    g_clear_pointer(&cfg->uuid, g_free);
    g_clear_pointer(&cfg->skip_devices, g_strfreev);
    g_clear_pointer(&cfg->incoming_uri, g_free);
}

static void copy_config(MachineConfig *dst, const MachineConfig *src)
{
    *dst = *src;
    dst->kernel = g_strdup(src->kernel);
    dst->initrd = g_strdup(src->initrd);
    dst->append = g_strdup(src->append);
    dst->serial = g_strdup(src->serial);
    dst->qmp = g_strdup(src->qmp);
    dst->name = g_strdup(src->name);
    dst->uuid = src->uuid ? g_strdup(src->uuid) : g_uuid_string_random();
    dst->skip_devices = g_strdupv(src->skip_devices);
    dst->incoming_uri = g_strdup(src->incoming_uri);
}

static void uart_irq(void *opaque, int level)
{
    vm_set_irq(opaque, UART_COM1_IRQ, level);
}

/* The serial port's receive path: the backend offers what the UART has room for; the
 * UART kicks the backend (eventfd) when room appears. */
static size_t serial_can_receive(void *opaque)
{
    return uart_rx_room(opaque);
}

static size_t serial_receive(void *opaque, const uint8_t *buf, size_t len)
{
    return uart_receive(opaque, buf, len);
}

static void serial_kick(void *opaque)
{
    chardev_kick(opaque);
}

static void debug_exit_pio(void *opaque, uint16_t port, bool is_write, uint8_t *data, unsigned size)
{
    Vm *vm = opaque;
    if (!is_write) {
        memset(data, 0xff, size);
        return;
    }
    /* Find the vCPU on this thread is not needed: report through vCPU 0's notice. */
    vm_vcpu_notice(&vm->vcpus[0], VM_NOTICE_DEBUG_EXIT, (data[0] << 1) | 1,
                   "guest wrote 0x%02x to the debug-exit port", data[0]);
}

static void post_pio(void *opaque, uint16_t port, bool is_write, uint8_t *data, unsigned size)
{
    if (!is_write)
        memset(data, 0xff, size);
}

typedef struct Notice {
    Machine *m;
    VmNoticeKind kind;
    int code;
    char *message;
} Notice;

static gboolean notice_in_main(gpointer data)
{
    Notice *n = data;
    Machine *m = n->m;

    if (n->kind == VM_NOTICE_FATAL) {
        fprintf(stderr, "vmsnap: %s\n", n->message);
        machine_stop(m, RUN_STATE_INTERNAL_ERROR);
        machine_shutdown(m, MACHINE_EXIT_FAILED, true, "guest-reset");
    } else if (n->kind == VM_NOTICE_DEBUG_EXIT) {
        machine_shutdown(m, n->code, true, "guest-shutdown");
    }
    return G_SOURCE_REMOVE;
}

static void notice_free(gpointer data)
{
    Notice *n = data;
    g_free(n->message);
    g_free(n);
}

void machine_call_in_main(Machine *m, gint priority, GSourceFunc fn, gpointer data,
                          GDestroyNotify notify)
{
    GSource *src = g_idle_source_new();
    g_source_set_priority(src, priority);
    g_source_set_callback(src, fn, data, notify);
    g_source_attach(src, g_main_loop_get_context(m->loop));
    g_source_unref(src);
}

/* Runs on a vCPU thread: hand over to the main loop. */
static void vm_notice(void *opaque, VmNoticeKind kind, int code, const char *message)
{
    Machine *m = opaque;
    Notice *n = g_new0(Notice, 1);
    n->m = m;
    n->kind = kind;
    n->code = code;
    n->message = g_strdup(message);
    machine_call_in_main(m, G_PRIORITY_HIGH, notice_in_main, n, notice_free);
}

static bool load_kernel(Machine *m, GError **error)
{
    g_autofree uint8_t *file = NULL;
    const uint8_t *image;
    gsize len;
    const char *what;

    if (m->cfg.kernel) {
        if (!g_file_get_contents(m->cfg.kernel, (char **)&file, &len, error)) {
            g_prefix_error(error, "--kernel: ");
            return false;
        }
        image = file;
        what = m->cfg.kernel;
    } else {
        image = vmsnap_guest_dirty_elf;
        len = vmsnap_guest_dirty_elf_len;
        what = "embedded guest/dirty";
    }
    m->kernel_desc = m->cfg.kernel ? g_strdup(m->cfg.kernel) : g_strdup("embedded:guest/dirty");
    m->kernel_xxh3 = XXH3_64bits(image, len);
    LinuxKind kind;
    if (linux_detect(image, len, &kind)) {
        g_autofree uint8_t *initrd = NULL;
        gsize initrd_len = 0;
        if (m->cfg.initrd &&
            !g_file_get_contents(m->cfg.initrd, (char **)&initrd, &initrd_len, error)) {
            g_prefix_error(error, "--initrd: ");
            return false;
        }
        LinuxBoot lb;
        if (!linux_load(image, len, what, m->cfg.append, initrd, initrd_len, m->cfg.initrd,
                        &m->vm->ram, &lb, error))
            return false;
        return boot_linux_vcpus(m->vm, &lb, error);
    }
    if (m->cfg.initrd) {
        g_set_error(error, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT,
                    "--initrd: %s is a multiboot kernel, and vmsnap does not support multiboot "
                    "modules; --initrd needs a Linux kernel (bzImage or vmlinux)",
                    what);
        return false;
    }
    MultibootImage img;
    if (!multiboot_load(image, len, what, m->cfg.append ? m->cfg.append : "", &m->vm->ram, &img,
                        error))
        return false;
    return boot_multiboot_vcpus(m->vm, &img, error);
}

static bool open_qmp(Machine *m, GError **error)
{
    if (!m->cfg.qmp)
        return true;
    if (!g_str_has_prefix(m->cfg.qmp, "unix:") || !m->cfg.qmp[5]) {
        g_set_error(error, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT, "--qmp: '%s' is not unix:PATH",
                    m->cfg.qmp);
        return false;
    }
    m->qmp = qmp_server_new("vmsnap " VMSNAP_VERSION, VMSNAP_VERSION_MAJOR, VMSNAP_VERSION_MINOR,
                            VMSNAP_VERSION_MICRO);
    machine_register_qmp(m);
    migration_register_qmp(m);
    /* With --incoming URI the socket appears once the incoming side listens
     * (machine_listen_qmp): a client that sees it can start the source at once. */
    return m->cfg.incoming_uri || machine_listen_qmp(m, error);
}

bool machine_listen_qmp(Machine *m, GError **error)
{
    if (!m->qmp || m->qmp_listening)
        return true;
    if (!qmp_server_listen_unix(m->qmp, m->cfg.qmp + 5, error)) {
        g_prefix_error(error, "--qmp: ");
        return false;
    }
    m->qmp_listening = true;
    return true;
}

Machine *machine_new(const MachineConfig *cfg, GError **error)
{
    Machine *m = g_new0(Machine, 1);
    copy_config(&m->cfg, cfg);
    m->loop = g_main_loop_new(NULL, FALSE);
    m->state = cfg->incoming ? RUN_STATE_INMIGRATE
               : cfg->paused ? RUN_STATE_PRELAUNCH
                             : RUN_STATE_RUNNING;

    if (!chardev_open(&m->serial, m->cfg.serial, cfg->serial_no_stdin ? CHARDEV_OPEN_NO_STDIN : 0,
                      error))
        goto fail;
    VmConfig vc = { .memory = cfg->memory, .cpus = cfg->cpus, .backing = cfg->backing };
    m->vm = vm_new(&vc, error);
    if (!m->vm)
        goto fail;
    m->vm->notice = vm_notice;
    m->vm->notice_opaque = m;
    uart_init(&m->uart, &m->serial, uart_irq, m->vm);
    /* Guest input waits while the VM is not running (machine_set_state()). */
    uart_set_rx_hold(&m->uart, m->state != RUN_STATE_RUNNING);
    uart_set_rx_notify(&m->uart, serial_kick, &m->serial);
    chardev_attach(&m->serial, serial_can_receive, serial_receive, &m->uart);
    pio_register(&m->vm->pio, UART_COM1_BASE, 8, uart_pio, &m->uart, "serial");
    pio_register(&m->vm->pio, DEBUG_EXIT_PORT, 1, debug_exit_pio, m->vm, "debug-exit");
    pio_register(&m->vm->pio, POST_PORT, 1, post_pio, NULL, "post");
    /* Linux probes these early (PCI early quirks, the RTC): answer "nothing here".
     * Registered for every VM, so a restored Linux guest finds them too. */
    legacy_register_pci(&m->vm->pio);
    legacy_register_cmos(&m->vm->pio);
    m->devstate = devstate_new(m->vm, &m->uart, error);
    if (!m->devstate)
        goto fail;
    if (cfg->skip_devices && cfg->skip_devices[0]) {
        /* Test-only: device state every incoming kind (file, streams) leaves out. */
        DevSkip *skip = devskip_parse((const char *const *)cfg->skip_devices, error);
        if (!skip) {
            g_prefix_error(error, "--x-skip-device-load: ");
            goto fail;
        }
        g_autofree char *what = devskip_describe(skip);
        fprintf(stderr, "vmsnap: test only: incoming device state not loaded: %s\n", what);
        devstate_set_skip(m->devstate, skip);
    }
    if (!cfg->incoming && !load_kernel(m, error))
        goto fail;
    if (!open_qmp(m, error))
        goto fail;
    return m;

fail:
    machine_free(m);
    return NULL;
}

/* For benchmarks: VMSNAP_TRACE_RESUME=1 prints when the vCPUs start running, on the
 * same CLOCK_MONOTONIC a launcher can read. */
static void trace_resume(void)
{
    if (g_getenv("VMSNAP_TRACE_RESUME"))
        fprintf(stderr, "vmsnap-trace: vcpus running at monotonic %" G_GINT64_FORMAT " us\n",
                g_get_monotonic_time());
}

static gboolean on_signal(gpointer data)
{
    machine_shutdown(data, MACHINE_EXIT_OK, false, "host-signal");
    return G_SOURCE_CONTINUE;
}

int machine_run(Machine *m)
{
    GError *error = NULL;

    m->signal_sources[0] = g_unix_signal_add(SIGINT, on_signal, m);
    m->signal_sources[1] = g_unix_signal_add(SIGTERM, on_signal, m);
    m->signal_sources[2] = g_unix_signal_add(SIGHUP, on_signal, m);
    signal(SIGPIPE, SIG_IGN);

    if (!vm_start(m->vm, &error)) {
        fprintf(stderr, "vmsnap: %s\n", error->message);
        g_error_free(error);
        return MACHINE_EXIT_FAILED;
    }
    if (m->state == RUN_STATE_RUNNING) {
        vm_resume(m->vm);
        trace_resume();
    }
    g_main_loop_run(m->loop);
    if (m->qmp)
        qmp_server_flush(m->qmp);
    return m->exit_code;
}

void machine_free(Machine *m)
{
    if (!m)
        return;
    for (unsigned i = 0; i < G_N_ELEMENTS(m->signal_sources); i++)
        if (m->signal_sources[i])
            g_source_remove(m->signal_sources[i]);
    /* A save thread reads guest memory and device state: stop it first, then the
     * vCPUs, before the devices they use go away. */
    migration_cleanup(m);
    devstate_free(m->devstate);
    vm_free(m->vm);
    if (m->qmp)
        qmp_server_free(m->qmp);
    uart_destroy(&m->uart);
    chardev_close(&m->serial);
    g_main_loop_unref(m->loop);
    machine_config_clear(&m->cfg);
    g_free(m->kernel_desc);
    g_free(m);
}

void machine_set_state(Machine *m, RunState s)
{
    /* Under the UART's lock: once a stopped state is visible, the host adds no more
     * input, so a device save that follows sees a UART that no longer changes. */
    uart_set_rx_hold(&m->uart, s != RUN_STATE_RUNNING);
    __atomic_store_n(&m->state, s, __ATOMIC_RELEASE);
}

RunState machine_state(const Machine *m)
{
    return __atomic_load_n(&m->state, __ATOMIC_ACQUIRE);
}

void machine_stop(Machine *m, RunState stopped_state)
{
    bool was_running = runstate_is_running(machine_state(m));
    if (was_running)
        vm_pause(m->vm);
    machine_set_state(m, stopped_state);
    if (was_running && m->qmp)
        qmp_server_emit_event(m->qmp, "STOP", NULL);
}

bool machine_cont(Machine *m, GError **error)
{
    switch (machine_state(m)) {
    case RUN_STATE_RUNNING:
        return true;
    case RUN_STATE_INMIGRATE:
        g_set_error(error, QMP_ERROR, QMP_ERROR_GENERIC,
                    "Guest is waiting for an incoming migration");
        return false;
    case RUN_STATE_INTERNAL_ERROR:
    case RUN_STATE_SHUTDOWN:
        g_set_error(error, QMP_ERROR, QMP_ERROR_GENERIC,
                    "Resetting the Virtual Machine is required");
        return false;
    case RUN_STATE_FINISH_MIGRATE:
    case RUN_STATE_SAVE_VM:
    case RUN_STATE_RESTORE_VM:
        g_set_error(error, QMP_ERROR, QMP_ERROR_GENERIC, "VM is busy (%s)",
                    runstate_name(m->state));
        return false;
    default:
        break;
    }
    machine_set_state(m, RUN_STATE_RUNNING);
    /* RESUME first, as QEMU sends it: once the vCPUs run they may take this thread's
     * CPU (2-CPU hosts), and the event's timestamp would tell of the scheduler. */
    if (m->qmp)
        qmp_server_emit_event(m->qmp, "RESUME", NULL);
    if (m->vm->vcpus[0].thread_started) {
        vm_resume(m->vm);
        trace_resume();
    }
    return true;
}

void machine_shutdown(Machine *m, int exit_code, bool guest, const char *reason)
{
    if (m->shutting_down)
        return;
    m->shutting_down = true;
    if (runstate_is_running(m->state))
        vm_pause(m->vm);
    uart_set_rx_hold(&m->uart, true);
    if (m->state != RUN_STATE_INTERNAL_ERROR)
        m->state = RUN_STATE_SHUTDOWN;
    m->exit_code = exit_code;
    if (m->qmp) {
        JsonBuilder *b = json_builder_new();
        json_builder_begin_object(b);
        json_builder_set_member_name(b, "guest");
        json_builder_add_boolean_value(b, guest);
        json_builder_set_member_name(b, "reason");
        json_builder_add_string_value(b, reason);
        json_builder_end_object(b);
        qmp_server_emit_event(m->qmp, "SHUTDOWN", json_builder_get_root(b));
        g_object_unref(b);
    }
    g_main_loop_quit(m->loop);
}
