/* CPUID as KVM supports it, adjusted per vCPU (APIC IDs, topology). */
#pragma once

#include <gio/gio.h> /* G_IO_ERROR */
#include <linux/kvm.h>
#include <stdbool.h>

/* KVM_GET_SUPPORTED_CPUID; returns NULL with an error. Free with g_free(). */
struct kvm_cpuid2 *cpuid_supported(int kvm_fd, GError **error);

/* Sets the CPUID of vCPU `index` of `count` from `base`. Returns false with an error. */
bool cpuid_apply(int vcpu_fd, const struct kvm_cpuid2 *base, unsigned index, unsigned count,
                 GError **error);
