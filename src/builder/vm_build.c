/* VM assembly in explicit order: KVM → VM fd → irqchip/PIT → RAM → vCPUs → devices. */
#include "builder/builder.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "util/log.h"
#include "core/vcpu_state.h"
#include "devices/acpi_pm.h"
#include "devices/i8042.h"
#include "devices/probe_dev.h"
#include "devices/serial.h"
#include "devices/virtio_blk.h"
#include "devices/virtio_net.h"
#include "devices/vmgenid.h"
#include "devices/vsock.h"
#include "disk/disk.h"
#include "util/clock.h"
#include "x86/layout.h"

static int vm_setup_arch(struct vm *vm)
{
	struct kvm_pit_config pit = { .flags = 0 };
	uint64_t identity = LAYOUT_KVM_IDENTITY_MAP;

	if (ioctl(vm->fd, KVM_SET_TSS_ADDR, (unsigned long)LAYOUT_KVM_TSS) < 0)
		return log_errno(-errno, "KVM_SET_TSS_ADDR 0x%llx", LAYOUT_KVM_TSS);
	if (ioctl(vm->fd, KVM_SET_IDENTITY_MAP_ADDR, &identity) < 0)
		return log_errno(-errno, "KVM_SET_IDENTITY_MAP_ADDR 0x%llx", LAYOUT_KVM_IDENTITY_MAP);
	if (ioctl(vm->fd, KVM_CREATE_IRQCHIP, 0) < 0)
		return log_errno(-errno, "KVM_CREATE_IRQCHIP");
	if (ioctl(vm->fd, KVM_CREATE_PIT2, &pit) < 0)
		return log_errno(-errno, "KVM_CREATE_PIT2");
	return 0;
}

static int vm_open_console(struct vm *vm)
{
	if (!vm->cfg.console_path || strcmp(vm->cfg.console_path, "-") == 0) {
		vm->console_fd = dup(STDOUT_FILENO);
		if (vm->console_fd < 0)
			return log_errno(-errno, "dup stdout for the console");
		return 0;
	}
	vm->console_fd = open(vm->cfg.console_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
	if (vm->console_fd < 0)
		return log_errno(-errno, "open console log %s", vm->cfg.console_path);
	return 0;
}

static int first_free_slot(const struct vm *vm)
{
	for (int i = 0; i < LAYOUT_VIRTIO_MMIO_SLOTS; i++)
		if (!vm->virtio[i])
			return i;
	return -1;
}

/* Disk i: open its chain with a new private top next to the control socket, then the device. */
static int vm_create_disk(struct vm *vm, const struct vm_disk_config *c)
{
	char top[PATH_MAX + 8], prefix[PATH_MAX];
	const char *name = strrchr(c->base, '/');
	int slot = c->slot >= 0 ? c->slot : first_free_slot(vm), err;
	struct disk_open_opts o = { .base = c->base, .layers = c->layers, .nlayers = c->nlayers,
				    .expect_ids = c->layer_ids, .expect_base = c->base_id };
	struct disk *d;

	if (slot < 0 || slot >= LAYOUT_VIRTIO_MMIO_SLOTS)
		return log_errno(-ENOSPC, "disk %s: no free virtio-mmio slot", c->base);
	if (!c->read_only && !vm->cfg.disk_top_prefix)
		return log_errno(-EINVAL, "disk %s: no directory for its writable top", c->base);
	snprintf(prefix, sizeof(prefix), "%s.disk%d", vm->cfg.disk_top_prefix ? vm->cfg.disk_top_prefix : "",
		 slot);
	if (!c->read_only) {
		snprintf(top, sizeof(top), "%s.ovl", prefix);
		o.create_top = top;
	}
	err = disk_open(&o, &d, NULL);
	if (err)
		return err;
	err = virtio_blk_create(vm, slot, d, c->serial ? c->serial : name ? name + 1 : c->base,
				c->read_only ? NULL : prefix, &vm->blk[vm->nblk]);
	if (!err)
		vm->nblk++;
	return err;
}

/* A TAP the configuration handed over that no NIC took (vm_create failed first): closed. */
static void vm_drop_tap(struct vm *vm)
{
	if (vm->cfg.net.present && vm->cfg.net.tap_fd >= 0)
		close(vm->cfg.net.tap_fd);
	vm->cfg.net.tap_fd = -1;
}

/* The NIC: at the snapshot's slot on a restore, else the first free one (after vsock and the
 * disks, so a VM's slots do not move when it gains a NIC). It owns the TAP from here on. */
static int vm_create_net(struct vm *vm)
{
	const struct vm_net_config *c = &vm->cfg.net;
	int slot = c->fixed_slot ? c->slot : first_free_slot(vm), fd = c->tap_fd;

	vm->cfg.net.tap_fd = -1;
	if (slot < 0 || slot >= LAYOUT_VIRTIO_MMIO_SLOTS) {
		if (fd >= 0)
			close(fd);
		return log_errno(-ENOSPC, "the NIC: virtio-mmio slot %d is not one of 0-%d", slot,
				 LAYOUT_VIRTIO_MMIO_SLOTS - 1);
	}
	return virtio_net_create(vm, slot, fd, c->mac, &vm->net);
}

static int vm_create_devices(struct vm *vm)
{
	int err = serial_create(vm, LAYOUT_SERIAL_PORT, LAYOUT_SERIAL_IRQ, vm->console_fd,
				&vm->serial);
	if (!err)
		err = i8042_create(vm);
	if (!err)
		err = acpi_pm_create(vm);
	if (!err && vm->cfg.vsock_path)
		err = vsock_create(vm, 0, vm->cfg.vsock_path, vm->cfg.vsock_cid, &vm->vsock);
	if (!err && vm->cfg.ndisks > VM_MAX_DISKS)
		err = log_errno(-EINVAL, "%d disks (at most %d)", vm->cfg.ndisks, VM_MAX_DISKS);
	for (int i = 0; !err && i < vm->cfg.ndisks; i++)
		err = vm_create_disk(vm, &vm->cfg.disks[i]);
	if (!err && vm->cfg.net.present)
		err = vm_create_net(vm);
	if (err)
		return err;
	return probe_dev_create(vm, &vm->probe);
}

int vm_create(struct vm *vm, const struct vm_config *cfg)
{
	struct guest_mem_opts mem_opts = cfg->mem;
	int err;

	*vm = (struct vm){ .cfg = *cfg, .fd = -1, .console_fd = -1, .end_eventfd = -1 };
	vm->kvm.fd = -1;
	vm->mem.fd = -1;
	vm->pio.name = "pio";
	vm->mmio.name = "mmio";
	pthread_mutex_init(&vm->lock, NULL);
	pthread_cond_init(&vm->cond, NULL);
	if (cfg->nvcpus < 1 || cfg->nvcpus > LAYOUT_MAX_VCPUS) {
		log_err("%d vCPUs requested; forkvm supports 1 to %d", cfg->nvcpus, LAYOUT_MAX_VCPUS);
		vm_drop_tap(vm);
		return -EINVAL;
	}
	err = vcpu_signal_init();
	if (err)
		goto err;
	if (cfg->inherit_kvm)
		vm->kvm = *cfg->inherit_kvm; /* /dev/kvm fds are not tied to a process; VM fds are */
	else if ((err = kvm_open(&vm->kvm, cfg->kvm_path)))
		goto err;
	vm->end_eventfd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (vm->end_eventfd < 0) {
		err = log_errno(-errno, "eventfd for VM end");
		goto err;
	}
	vm->fd = ioctl(vm->kvm.fd, KVM_CREATE_VM, 0);
	if (vm->fd < 0) {
		err = log_errno(-errno, "KVM_CREATE_VM");
		goto err;
	}
	/*
	 * Guest RAM before the irqchip: creating the irqchip leaves an SRCU grace period of
	 * kvm->srcu under way, and a memslot set while it runs waits for its end, a jiffy or
	 * more (measured on Linux 6.18: 5.5 ms after KVM_CREATE_IRQCHIP, 0.15 ms before it).
	 * That wait was most of a cow child's start (docs/PERFORMANCE.md).
	 */
	mem_opts.size = cfg->mem_size;
	if (cfg->inherit_mem)
		vm->mem = *cfg->inherit_mem;
	else if ((err = guest_mem_create(&vm->mem, &mem_opts)))
		goto err;
	err = guest_mem_register(&vm->mem, vm->fd, false);
	if (err)
		goto err;
	err = vm_setup_arch(vm);
	if (err)
		goto err;
	vm->vcpus = calloc((size_t)cfg->nvcpus, sizeof(*vm->vcpus));
	if (!vm->vcpus) {
		err = log_errno(-ENOMEM, "allocating %d vCPUs", cfg->nvcpus);
		goto err;
	}
	for (int i = 0; i < cfg->nvcpus; i++) {
		err = vcpu_create(vm, i, &vm->vcpus[i]);
		if (err)
			goto err;
		vm->nvcpus = i + 1;
		err = cfg->cpuid_from_state ? 0 : vcpu_set_cpuid(&vm->vcpus[i]);
		if (err)
			goto err;
	}
	err = vm_open_console(vm);
	if (err)
		goto err;
	err = vm_create_devices(vm);
	if (!err && !cfg->defer_device_threads)
		err = vm_start_devices(vm);
	if (err)
		goto err;
	return 0;
err:
	vm_destroy(vm);
	return err;
}

int vm_start_devices(struct vm *vm)
{
	int err = vm->vsock ? vsock_start(vm->vsock) : 0;

	for (int i = 0; !err && i < vm->cfg.ndisks; i++)
		if (vm->blk[i])
			err = virtio_blk_start(vm->blk[i]);
	if (!err && vm->net)
		err = virtio_net_start(vm->net);
	return err;
}

int vm_start(struct vm *vm)
{
	uint32_t *msrs, nmsrs;
	int err = vmgenid_start(vm); /* before any vCPU runs: a clone never runs on the old ID */

	if (err)
		return err;
	/* Learn the restorable MSRs now, not inside the first snapshot's or branch's pause. */
	if (vm->nvcpus > 0 && kvm_msr_list(&vm->kvm, &vm->vcpus[0], &msrs, &nmsrs) < 0)
		log_warn("could not list MSRs; the first snapshot will try again");

	pthread_mutex_lock(&vm->lock);
	vm->started = true;
	vm->start_ns = monotonic_ns();
	vm->pause_requested = vm->cfg.start_paused;
	for (int i = 0; i < vm->nvcpus; i++) {
		err = vcpu_start_thread(&vm->vcpus[i]);
		if (err) {
			vm_request_end_locked(vm, VM_END_ERROR, "starting vcpu %d: %s", i,
					      strerror(-err));
			break;
		}
		vm->live_threads++;
	}
	pthread_mutex_unlock(&vm->lock);
	return err;
}

void vm_destroy(struct vm *vm)
{
	if (vm->started) {
		vm_request_end(vm, VM_END_STOPPED, "VM destroyed");
		vm_join(vm);
	}
	vsock_destroy(vm->vsock);
	vm->vsock = NULL;
	for (int i = 0; i < vm->nblk; i++)
		virtio_blk_destroy(vm->blk[i]);
	vm->nblk = 0;
	virtio_net_destroy(vm->net);
	vm->net = NULL;
	vm_drop_tap(vm);
	probe_dev_destroy(vm->probe);
	serial_destroy(vm->serial);
	vm->probe = NULL;
	vm->serial = NULL;
	for (int i = 0; i < vm->nvcpus; i++)
		vcpu_destroy(&vm->vcpus[i]);
	free(vm->vcpus);
	vm->vcpus = NULL;
	vm->nvcpus = 0;
	thp_repair_free(vm->thp);
	vm->thp = NULL;
	guest_mem_destroy(&vm->mem);
	if (vm->fd >= 0)
		close(vm->fd);
	if (vm->end_eventfd >= 0)
		close(vm->end_eventfd);
	if (vm->console_fd >= 0)
		close(vm->console_fd);
	vm->fd = vm->end_eventfd = vm->console_fd = -1;
	kvm_close(&vm->kvm);
}
