/* VM generation ID: a fresh random identity for every booted, restored and branched Linux VM. */
#ifndef FORKVM_DEVICES_VMGENID_H
#define FORKVM_DEVICES_VMGENID_H

#include <stdbool.h>
#include <stdint.h>

struct vm;

#define VMGENID_SIZE 16
#define VMGENID_HEX_LEN (2 * VMGENID_SIZE)

/* Per-VM state (in struct vm). Only Linux guests have the device; the probe guest has no ACPI. */
struct vmgenid {
	bool present;			/* the guest's DSDT declares VGEN + GED (docs/LINUX.md) */
	bool renew;			/* restored or branched: new ID + notify in vm_start */
	uint8_t id[VMGENID_SIZE];	/* the ID now in guest RAM at LAYOUT_VMGENID */
};

/* Draw a new random ID (getrandom; never all zero), store it in dst and in id. */
int vmgenid_fresh(uint8_t *dst, uint8_t id[VMGENID_SIZE]);
/* The ID as hex digits in guest-memory byte order, NUL-terminated. */
void vmgenid_hex(const uint8_t id[VMGENID_SIZE], char out[VMGENID_HEX_LEN + 1]);

/* First boot of a Linux guest: write the first ID (the driver reads it when it binds). */
int vmgenid_boot(struct vm *vm);
/* A Linux guest's state was restored into vm: vm_start gives it a new ID before it runs. */
void vmgenid_mark_restored(struct vm *vm);
/* From vm_start, after every restore step (irqchip, vCPUs, and the uffd page server's ack):
 * if marked, write a new ID and pulse the GED interrupt so the guest reseeds its CRNG. */
int vmgenid_start(struct vm *vm);

#endif
