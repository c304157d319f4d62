/* VM generation ID: a fresh random identity for every booted, restored and branched Linux VM. */
#ifndef FORKVM_DEVICES_VMGENID_H
#define FORKVM_DEVICES_VMGENID_H

#include <stdbool.h>
#include <stdint.h>

#include "core/vm.h" /* struct vmgenid, VMGENID_SIZE */

#define VMGENID_HEX_LEN (2 * VMGENID_SIZE)

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
