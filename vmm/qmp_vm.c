/* The VM's QMP commands: run control, identity, and test-only guest memory access. */
#include "dirty.h"
#include "machine.h"
#include "xxh.h"

#include <string.h>
#include <xxhash.h>

#define MEMORY_ACCESS_MAX 65536u /* x-guest-memory-read/-write are for small probes */

static JsonNode *empty_object(void)
{
    JsonNode *n = json_node_new(JSON_NODE_OBJECT);
    json_node_take_object(n, json_object_new());
    return n;
}

static JsonNode *builder_finish(JsonBuilder *b)
{
    JsonNode *root = json_builder_get_root(b);
    g_object_unref(b);
    return root;
}

static JsonNode *cmd_query_status(QmpClient *c, JsonObject *args, gpointer opaque, GError **error)
{
    Machine *m = opaque;
    JsonBuilder *b = json_builder_new();
    json_builder_begin_object(b);
    json_builder_set_member_name(b, "running");
    RunState state = machine_state(m);
    json_builder_add_boolean_value(b, runstate_is_running(state));
    json_builder_set_member_name(b, "singlestep");
    json_builder_add_boolean_value(b, FALSE);
    json_builder_set_member_name(b, "status");
    json_builder_add_string_value(b, runstate_name(state));
    json_builder_end_object(b);
    return builder_finish(b);
}

static JsonNode *cmd_stop(QmpClient *c, JsonObject *args, gpointer opaque, GError **error)
{
    Machine *m = opaque;
    if (machine_state(m) == RUN_STATE_INMIGRATE) {
        /* QEMU: stop during an incoming migration means "do not autostart" (read by
         * the receive thread when the stream is in). */
        __atomic_store_n(&m->cfg.paused, true, __ATOMIC_RELEASE);
        return empty_object();
    }
    if (runstate_is_running(machine_state(m)))
        machine_stop(m, RUN_STATE_PAUSED);
    return empty_object();
}

static JsonNode *cmd_cont(QmpClient *c, JsonObject *args, gpointer opaque, GError **error)
{
    return machine_cont(opaque, error) ? empty_object() : NULL;
}

static gboolean quit_later(gpointer opaque)
{
    machine_shutdown(opaque, MACHINE_EXIT_OK, false, "host-qmp-quit");
    return G_SOURCE_REMOVE;
}

static JsonNode *cmd_quit(QmpClient *c, JsonObject *args, gpointer opaque, GError **error)
{
    /* Like QEMU: the reply goes out first, then SHUTDOWN, then the process exits. */
    g_idle_add(quit_later, opaque);
    return empty_object();
}

static JsonNode *cmd_query_name(QmpClient *c, JsonObject *args, gpointer opaque, GError **error)
{
    Machine *m = opaque;
    JsonBuilder *b = json_builder_new();
    json_builder_begin_object(b);
    if (m->cfg.name) {
        json_builder_set_member_name(b, "name");
        json_builder_add_string_value(b, m->cfg.name);
    }
    json_builder_end_object(b);
    return builder_finish(b);
}

static JsonNode *cmd_query_uuid(QmpClient *c, JsonObject *args, gpointer opaque, GError **error)
{
    Machine *m = opaque;
    JsonBuilder *b = json_builder_new();
    json_builder_begin_object(b);
    json_builder_set_member_name(b, "UUID");
    json_builder_add_string_value(b, m->cfg.uuid);
    json_builder_end_object(b);
    return builder_finish(b);
}

static JsonNode *cmd_query_kvm(QmpClient *c, JsonObject *args, gpointer opaque, GError **error)
{
    JsonBuilder *b = json_builder_new();
    json_builder_begin_object(b);
    json_builder_set_member_name(b, "enabled");
    json_builder_add_boolean_value(b, TRUE);
    json_builder_set_member_name(b, "present");
    json_builder_add_boolean_value(b, TRUE);
    json_builder_end_object(b);
    return builder_finish(b);
}

static JsonNode *cmd_query_cpus_fast(QmpClient *c, JsonObject *args, gpointer opaque,
                                     GError **error)
{
    Machine *m = opaque;
    JsonBuilder *b = json_builder_new();
    json_builder_begin_array(b);
    for (unsigned i = 0; i < m->vm->n_vcpus; i++) {
        json_builder_begin_object(b);
        json_builder_set_member_name(b, "cpu-index");
        json_builder_add_int_value(b, i);
        json_builder_set_member_name(b, "qom-path");
        g_autofree char *path = g_strdup_printf("/machine/unattached/device[%u]", i);
        json_builder_add_string_value(b, path);
        json_builder_set_member_name(b, "target");
        json_builder_add_string_value(b, "x86_64");
        json_builder_end_object(b);
    }
    json_builder_end_array(b);
    return builder_finish(b);
}

static bool require_stopped(Machine *m, const char *what, GError **error)
{
    if (!runstate_is_running(machine_state(m)))
        return true;
    g_set_error(error, QMP_ERROR, QMP_ERROR_GENERIC,
                "%s needs a stopped VM (status is %s): run 'stop' first", what,
                runstate_name(m->state));
    return false;
}

static JsonNode *cmd_memory_digest(QmpClient *c, JsonObject *args, gpointer opaque, GError **error)
{
    Machine *m = opaque;
    if (!require_stopped(m, "x-guest-memory-digest", error))
        return NULL;

    XXH3_state_t *all = XXH3_createState();
    XXH3_64bits_reset(all);
    JsonBuilder *b = json_builder_new();
    json_builder_begin_object(b);
    json_builder_set_member_name(b, "blocks");
    json_builder_begin_array(b);
    for (unsigned i = 0; i < m->vm->ram.n_blocks; i++) {
        const RamBlock *blk = &m->vm->ram.blocks[i];
        uint64_t h = vs_xxh3(blk->host, blk->size);
        uint64_t rec[3] = { blk->gpa, blk->size, h };
        XXH3_64bits_update(all, rec, sizeof(rec));
        g_autofree char *hex = g_strdup_printf("%016" G_GINT64_MODIFIER "x", h);
        json_builder_begin_object(b);
        json_builder_set_member_name(b, "name");
        json_builder_add_string_value(b, blk->name);
        json_builder_set_member_name(b, "gpa");
        json_builder_add_int_value(b, (gint64)blk->gpa);
        json_builder_set_member_name(b, "size");
        json_builder_add_int_value(b, (gint64)blk->size);
        json_builder_set_member_name(b, "xxh3");
        json_builder_add_string_value(b, hex);
        json_builder_end_object(b);
    }
    json_builder_end_array(b);
    g_autofree char *hex = g_strdup_printf("%016" G_GINT64_MODIFIER "x", XXH3_64bits_digest(all));
    XXH3_freeState(all);
    json_builder_set_member_name(b, "digest");
    json_builder_add_string_value(b, hex);
    json_builder_end_object(b);
    return builder_finish(b);
}

/* Validates addr/size and returns the host pointer, or NULL with a QMP error. */
static uint8_t *guest_range(Machine *m, JsonObject *args, uint64_t size, GError **error)
{
    gint64 addr = json_object_get_int_member(args, "addr");
    if (addr < 0 || size == 0 || size > MEMORY_ACCESS_MAX) {
        g_set_error(error, QMP_ERROR, QMP_ERROR_GENERIC,
                    "Parameter 'addr'/'size': need addr >= 0 and 1 <= size <= %u",
                    MEMORY_ACCESS_MAX);
        return NULL;
    }
    uint8_t *p = ram_ptr(&m->vm->ram, (uint64_t)addr, size);
    if (!p)
        g_set_error(error, QMP_ERROR, QMP_ERROR_GENERIC,
                    "guest range 0x%" G_GINT64_MODIFIER "x+0x%" G_GINT64_MODIFIER
                    "x is not inside one RAM block",
                    (uint64_t)addr, size);
    return p;
}

static JsonNode *cmd_memory_read(QmpClient *c, JsonObject *args, gpointer opaque, GError **error)
{
    Machine *m = opaque;
    gint64 size = json_object_get_int_member(args, "size");
    const uint8_t *p = guest_range(m, args, size < 0 ? 0 : (uint64_t)size, error);
    if (!p)
        return NULL;
    GString *hex = g_string_sized_new((gsize)size * 2 + 1);
    for (gint64 i = 0; i < size; i++)
        g_string_append_printf(hex, "%02x", p[i]);
    JsonBuilder *b = json_builder_new();
    json_builder_begin_object(b);
    json_builder_set_member_name(b, "data");
    json_builder_add_string_value(b, hex->str);
    json_builder_end_object(b);
    g_string_free(hex, TRUE);
    return builder_finish(b);
}

static JsonNode *cmd_memory_write(QmpClient *c, JsonObject *args, gpointer opaque, GError **error)
{
    Machine *m = opaque;
    if (!require_stopped(m, "x-guest-memory-write", error))
        return NULL;
    const char *hex = json_object_get_string_member(args, "data");
    size_t len = strlen(hex);
    if (len % 2) {
        g_set_error(error, QMP_ERROR, QMP_ERROR_GENERIC,
                    "Parameter 'data' must be an even number of hex digits");
        return NULL;
    }
    g_autofree uint8_t *bytes = g_malloc(len / 2 + 1);
    for (size_t i = 0; i < len / 2; i++) {
        int hi = g_ascii_xdigit_value(hex[2 * i]), lo = g_ascii_xdigit_value(hex[2 * i + 1]);
        if (hi < 0 || lo < 0) {
            g_set_error(error, QMP_ERROR, QMP_ERROR_GENERIC,
                        "Parameter 'data' has a non-hex digit at offset %zu", 2 * i);
            return NULL;
        }
        bytes[i] = (uint8_t)(hi << 4 | lo);
    }
    uint8_t *p = guest_range(m, args, len / 2, error);
    if (!p)
        return NULL;
    memcpy(p, bytes, len / 2);
    dirty_log_mark(m->vm, (uint64_t)json_object_get_int_member(args, "addr"), len / 2);
    return empty_object();
}

/* For benchmarks: makes every page of guest RAM non-zero (its own address in the
 * first 8 bytes), so a save has to write all of RAM. Paused VMs only. */
static JsonNode *cmd_memory_fill(QmpClient *c, JsonObject *args, gpointer opaque, GError **error)
{
    Machine *m = opaque;
    if (!require_stopped(m, "x-guest-memory-fill", error))
        return NULL;
    for (unsigned i = 0; i < m->vm->ram.n_blocks; i++) {
        RamBlock *b = &m->vm->ram.blocks[i];
        for (uint64_t off = 0; off < b->size; off += b->page_size) {
            uint64_t v = (b->gpa + off) | 1;
            memcpy(b->host + off, &v, sizeof(v));
        }
        dirty_log_mark(m->vm, b->gpa, b->size);
    }
    return empty_object();
}

static const QmpArgSpec no_args[] = { { NULL } };
static const QmpArgSpec read_args[] = {
    { "addr", QMP_ARG_INT, FALSE },
    { "size", QMP_ARG_INT, FALSE },
    { NULL },
};
static const QmpArgSpec write_args[] = {
    { "addr", QMP_ARG_INT, FALSE },
    { "data", QMP_ARG_STR, FALSE },
    { NULL },
};

static const QmpCommand vm_commands[] = {
    { "query-status", cmd_query_status, no_args },
    { "stop", cmd_stop, no_args },
    { "cont", cmd_cont, no_args },
    { "quit", cmd_quit, no_args },
    { "query-name", cmd_query_name, no_args },
    { "query-uuid", cmd_query_uuid, no_args },
    { "query-kvm", cmd_query_kvm, no_args },
    { "query-cpus-fast", cmd_query_cpus_fast, no_args },
    { "x-guest-memory-digest", cmd_memory_digest, no_args },
    { "x-guest-memory-read", cmd_memory_read, read_args },
    { "x-guest-memory-write", cmd_memory_write, write_args },
    { "x-guest-memory-fill", cmd_memory_fill, no_args },
};

void machine_register_qmp(Machine *m)
{
    for (unsigned i = 0; i < G_N_ELEMENTS(vm_commands); i++)
        qmp_server_register(m->qmp, &vm_commands[i], m);
}
