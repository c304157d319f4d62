/*
 * VM generation ID (Microsoft's spec; Linux drivers/virt/vmgenid.c): 16 random bytes alone on a
 * page of the ACPI area, which the DSDT's VGEN device points at (src/x86/acpi.c). Every restored
 * or branched VM gets new bytes before its vCPUs run, then an edge on the Generic Event Device's
 * GSI: the guest's _EVT method notifies VGEN, and the driver reseeds the kernel's CRNG.
 */
#include "devices/vmgenid.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/random.h>

#include "util/log.h"
#include "core/vm.h"
#include "mem/dirty_log.h"
#include "x86/layout.h"

static bool all_zero(const uint8_t *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (p[i])
			return false;
	return true;
}

static int random_bytes(uint8_t *p, size_t n)
{
	size_t done = 0;

	while (done < n) {
		ssize_t r = getrandom(p + done, n - done, 0);

		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return -errno;
		done += (size_t)r;
	}
	return 0;
}

int vmgenid_fresh(uint8_t *dst, uint8_t id[VMGENID_SIZE])
{
	int err;

	/* All zero would read as "no ID" to some guests; 2^-128, but cheap to rule out. */
	do {
		err = random_bytes(id, VMGENID_SIZE);
		if (err)
			return log_errno(err, "getrandom for a VM generation ID");
	} while (all_zero(id, VMGENID_SIZE));
	memcpy(dst, id, VMGENID_SIZE);
	return 0;
}

void vmgenid_hex(const uint8_t id[VMGENID_SIZE], char out[VMGENID_HEX_LEN + 1])
{
	for (int i = 0; i < VMGENID_SIZE; i++)
		snprintf(out + 2 * i, 3, "%02x", id[i]);
}

/* A new ID into guest RAM; a diff snapshot taken later must carry the page (KVM sees no host
 * writes, so it is marked dirty by hand). */
static int vmgenid_write(struct vm *vm)
{
	uint8_t *dst = guest_mem_ptr(&vm->mem, LAYOUT_VMGENID, LAYOUT_VMGENID_SIZE);
	int err;

	if (!dst)
		return log_errno(-ENOSPC, "guest RAM has no room for the VM generation ID at 0x%llx",
				 LAYOUT_VMGENID);
	err = vmgenid_fresh(dst, vm->vmgenid.id);
	if (err)
		return err;
	guest_mem_mark_dirty(&vm->mem, LAYOUT_VMGENID, LAYOUT_VMGENID_SIZE);
	return 0;
}

/* One edge on the GED's pin of the in-kernel IOAPIC (GSI >= 16: no PIC input shares it). */
static int ged_pulse(struct vm *vm)
{
	struct kvm_irq_level irq = { .irq = LAYOUT_GED_GSI, .level = 1 };

	if (ioctl(vm->fd, KVM_IRQ_LINE, &irq) < 0)
		return log_errno(-errno, "KVM_IRQ_LINE GSI %d high (generation ID notify)",
				 LAYOUT_GED_GSI);
	irq.level = 0;
	if (ioctl(vm->fd, KVM_IRQ_LINE, &irq) < 0)
		return log_errno(-errno, "KVM_IRQ_LINE GSI %d low (generation ID notify)",
				 LAYOUT_GED_GSI);
	return 0;
}

int vmgenid_boot(struct vm *vm)
{
	char hex[VMGENID_HEX_LEN + 1];
	int err = vmgenid_write(vm);

	if (err)
		return err;
	vm->vmgenid.present = true;
	vmgenid_hex(vm->vmgenid.id, hex);
	log_info("vmgenid: generation ID %.8s at 0x%llx, GED on GSI %d", hex, LAYOUT_VMGENID,
		 LAYOUT_GED_GSI);
	return 0;
}

void vmgenid_mark_restored(struct vm *vm)
{
	vm->vmgenid.present = true;
	vm->vmgenid.renew = true;
}

int vmgenid_start(struct vm *vm)
{
	char hex[VMGENID_HEX_LEN + 1];
	int err;

	if (!vm->vmgenid.renew)
		return 0;
	err = vmgenid_write(vm);
	if (!err)
		err = ged_pulse(vm);
	if (err)
		return err;
	vm->vmgenid.renew = false;
	vmgenid_hex(vm->vmgenid.id, hex);
	log_info("vmgenid: new generation ID %.8s for this restored VM, guest notified on GSI %d",
		 hex, LAYOUT_GED_GSI);
	return 0;
}
