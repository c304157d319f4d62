/* The one place a VM is assembled: KVM VM, RAM, vCPUs, then every device from its config
 * (serial, i8042, ACPI PM, vsock, disks, the NIC, probe); guest loading (probe or Linux);
 * start and teardown. Layers below (core, devices) know nothing of each other's assembly. */
#ifndef FORKVM_BUILDER_BUILDER_H
#define FORKVM_BUILDER_BUILDER_H

#include "core/vm.h"

/* Build vm from cfg in a fixed order (docs/ARCHITECTURE.md, "Init order"); on failure
 * everything built so far is destroyed. cfg->net.tap_fd (with net.present) belongs to the VM
 * from the call on, also when it fails. -errno, logged. */
int vm_create(struct vm *vm, const struct vm_config *cfg);
/* Start the device threads (vsock, disks, the NIC) vm_create left unstarted when
 * cfg->defer_device_threads was set; idempotent. -errno, logged. */
int vm_start_devices(struct vm *vm);
/* End the VM if it runs, join its vCPUs, destroy its devices, vCPUs, RAM and fds. */
void vm_destroy(struct vm *vm);

/* Load the probe guest and give every vCPU its CPL3 long-mode entry state. */
int vm_boot_probe(struct vm *vm);
/* Point the probe device at the mailboxes already in guest RAM (after a restore). */
void vm_attach_probe(struct vm *vm);

/* Start the vCPU threads; a restored Linux guest first gets a new generation ID + notify. */
int vm_start(struct vm *vm);

#endif
