/* virtio-mmio transport, version 2 (virtio 1.x section 4.2), with irqfd and ioeventfd. */
#ifndef FORKVM_VIRTIO_MMIO_H
#define FORKVM_VIRTIO_MMIO_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "devices/virtqueue.h"

struct vm;
struct vcpu;

#define VIRTIO_MMIO_MAGIC 0x74726976 /* "virt" */
#define VIRTIO_MMIO_VERSION 2
#define VIRTIO_MMIO_VENDOR 0x4d564b46 /* "FKVM" */
#define VIRTIO_MMIO_MAX_QUEUES 4
#define VIRTIO_F_VERSION_1 (1ULL << 32)

/* Register offsets. */
enum {
	VMMIO_MAGIC = 0x000, VMMIO_VERSION = 0x004, VMMIO_DEVICE_ID = 0x008,
	VMMIO_VENDOR_ID = 0x00c, VMMIO_DEV_FEATURES = 0x010, VMMIO_DEV_FEATURES_SEL = 0x014,
	VMMIO_DRV_FEATURES = 0x020, VMMIO_DRV_FEATURES_SEL = 0x024, VMMIO_QUEUE_SEL = 0x030,
	VMMIO_QUEUE_NUM_MAX = 0x034, VMMIO_QUEUE_NUM = 0x038, VMMIO_QUEUE_READY = 0x044,
	VMMIO_QUEUE_NOTIFY = 0x050, VMMIO_INT_STATUS = 0x060, VMMIO_INT_ACK = 0x064,
	VMMIO_STATUS = 0x070, VMMIO_QUEUE_DESC_LO = 0x080, VMMIO_QUEUE_DESC_HI = 0x084,
	VMMIO_QUEUE_AVAIL_LO = 0x090, VMMIO_QUEUE_AVAIL_HI = 0x094, VMMIO_QUEUE_USED_LO = 0x0a0,
	VMMIO_QUEUE_USED_HI = 0x0a4, VMMIO_CONFIG_GEN = 0x0fc, VMMIO_CONFIG = 0x100,
};

/* Device status bits. */
#define VIRTIO_STATUS_ACK 1
#define VIRTIO_STATUS_DRIVER 2
#define VIRTIO_STATUS_DRIVER_OK 4
#define VIRTIO_STATUS_FEATURES_OK 8
#define VIRTIO_STATUS_NEEDS_RESET 64
#define VIRTIO_STATUS_FAILED 128
#define VIRTIO_INT_USED 1
#define VIRTIO_INT_CONFIG 2

/* What a device type plugs in; called with the transport lock held. */
struct virtio_dev_ops {
	void (*config_read)(void *opaque, uint64_t off, void *data, int len);
	void (*reset)(void *opaque);
	void (*activate)(void *opaque); /* DRIVER_OK was set */
	/* The driver sets FEATURES_OK for these features (a subset of the offered ones, with
	 * VERSION_1): false refuses a combination the device cannot serve (FEATURES_OK does not
	 * stick). NULL: every such subset is fine. */
	bool (*features_ok)(void *opaque, uint64_t features);
};

/* The transport's registers: also the snapshot image. */
struct virtio_mmio_regs {
	uint64_t driver_features;
	uint32_t dev_feat_sel, drv_feat_sel, queue_sel, status, isr, config_gen;
	struct virtq_state q[VIRTIO_MMIO_MAX_QUEUES];
};

struct virtio_mmio {
	struct vm *vm;
	int slot;
	uint64_t base;
	uint32_t gsi;
	uint32_t device_id;
	uint64_t device_features;
	int nqueues;
	uint16_t queue_max;
	pthread_mutex_t lock; /* registers and queues; device code runs under it too */
	struct virtio_mmio_regs r;
	struct virtq vq[VIRTIO_MMIO_MAX_QUEUES];
	int notify_fd[VIRTIO_MMIO_MAX_QUEUES]; /* readable when the driver notified the queue */
	bool ioeventfd[VIRTIO_MMIO_MAX_QUEUES];	/* KVM signals it without a userspace exit */
	int irq_fd;				/* KVM_IRQFD on gsi (if the VM has an fd) */
	const struct virtio_dev_ops *ops;
	void *opaque;
	uint64_t interrupts, notifies; /* statistics */
};

/* Create slot `slot` on vm's MMIO bus (vm->fd < 0: no irqfd/ioeventfd, for unit tests). */
int virtio_mmio_create(struct vm *vm, int slot, uint32_t device_id, uint64_t features,
		       int nqueues, uint16_t queue_max, const struct virtio_dev_ops *ops,
		       void *opaque, struct virtio_mmio **out);
void virtio_mmio_destroy(struct virtio_mmio *m);
/* Register access as the bus delivers it (exposed for unit tests). */
int virtio_mmio_access(void *opaque, struct vcpu *vcpu, uint64_t off, void *data, int len,
		       bool is_write);
/* Raise the used-buffer interrupt (lock held): irqfd, plus waking a polling probe guest. */
void virtio_mmio_signal(struct virtio_mmio *m, uint32_t why);
bool virtio_mmio_driver_ok(const struct virtio_mmio *m);
/* Drain a queue's notify eventfd (device thread). */
void virtio_mmio_ack_notify(struct virtio_mmio *m, int queue);

/* Snapshot support: registers and queue state; restore re-maps the rings. */
void virtio_mmio_save(struct virtio_mmio *m, struct virtio_mmio_regs *out);
int virtio_mmio_restore(struct virtio_mmio *m, const struct virtio_mmio_regs *in);

#endif
