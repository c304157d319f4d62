/* Unit-test helpers: a VM without KVM (fd -1) whose RAM is real, and a polled virtio driver. */
#ifndef FORKVM_TEST_VIRTIO_TESTVM_H
#define FORKVM_TEST_VIRTIO_TESTVM_H

#include <string.h>

#include "core/vm.h"
#include "devices/virtio_mmio.h"

#define TVM_MEM (16ULL << 20)

static inline int tvm_init(struct vm *vm)
{
	struct guest_mem_opts o = { .backing = GUEST_MEM_ANON, .size = TVM_MEM, .no_hugepage = true };

	memset(vm, 0, sizeof(*vm));
	vm->fd = -1;
	vm->mmio.name = "mmio";
	vm->pio.name = "pio";
	pthread_mutex_init(&vm->lock, NULL);
	pthread_cond_init(&vm->cond, NULL);
	return guest_mem_create(&vm->mem, &o);
}

static inline uint32_t tvm_rd(struct virtio_mmio *m, uint64_t off)
{
	uint32_t v = 0xdeadbeef;

	virtio_mmio_access(m, NULL, off, &v, 4, false);
	return v;
}

static inline void tvm_wr(struct virtio_mmio *m, uint64_t off, uint32_t v)
{
	virtio_mmio_access(m, NULL, off, &v, 4, true);
}

/* Program queue q with num entries; rings at gpa (desc), +0x1000 (avail), +0x2000 (used). */
static inline void tvm_queue(struct virtio_mmio *m, uint32_t q, uint32_t num, uint64_t gpa)
{
	tvm_wr(m, VMMIO_QUEUE_SEL, q);
	tvm_wr(m, VMMIO_QUEUE_NUM, num);
	tvm_wr(m, VMMIO_QUEUE_DESC_LO, (uint32_t)gpa);
	tvm_wr(m, VMMIO_QUEUE_DESC_HI, (uint32_t)(gpa >> 32));
	tvm_wr(m, VMMIO_QUEUE_AVAIL_LO, (uint32_t)(gpa + 0x1000));
	tvm_wr(m, VMMIO_QUEUE_AVAIL_HI, 0);
	tvm_wr(m, VMMIO_QUEUE_USED_LO, (uint32_t)(gpa + 0x2000));
	tvm_wr(m, VMMIO_QUEUE_USED_HI, 0);
	tvm_wr(m, VMMIO_QUEUE_READY, 1);
}

/* ACK, DRIVER, features = VERSION_1, FEATURES_OK. */
static inline void tvm_negotiate(struct virtio_mmio *m)
{
	tvm_wr(m, VMMIO_STATUS, VIRTIO_STATUS_ACK | VIRTIO_STATUS_DRIVER);
	tvm_wr(m, VMMIO_DRV_FEATURES_SEL, 1);
	tvm_wr(m, VMMIO_DRV_FEATURES, 1);
	tvm_wr(m, VMMIO_STATUS, VIRTIO_STATUS_ACK | VIRTIO_STATUS_DRIVER | VIRTIO_STATUS_FEATURES_OK);
}

#endif
