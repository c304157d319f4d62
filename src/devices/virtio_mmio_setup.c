/* virtio-mmio slot lifecycle: bus registration, irqfd/ioeventfd wiring, snapshot save/restore. */
#include <stdlib.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "util/log.h"
#include "core/vm.h"
#include "devices/virtio_mmio.h"
#include "x86/layout.h"

/* KVM signals the queue's eventfd for a 4-byte write of the queue index to QueueNotify. */
static void setup_ioeventfd(struct virtio_mmio *m, int q)
{
	struct kvm_ioeventfd io = { .datamatch = (uint64_t)q, .addr = m->base + VMMIO_QUEUE_NOTIFY,
				    .len = 4, .fd = m->notify_fd[q],
				    .flags = KVM_IOEVENTFD_FLAG_DATAMATCH };

	if (m->vm->fd < 0)
		return;
	if (ioctl(m->vm->fd, KVM_IOEVENTFD, &io) < 0) {
		log_warn("virtio-mmio slot %d: KVM_IOEVENTFD for queue %d: %s (notify exits to "
			 "userspace instead)", m->slot, q, strerror(errno));
		return;
	}
	m->ioeventfd[q] = true;
}

static int setup_irqfd(struct virtio_mmio *m)
{
	struct kvm_irqfd irqfd = { .gsi = m->gsi };

	m->irq_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (m->irq_fd < 0)
		return log_errno(-errno, "eventfd for the irqfd of virtio-mmio slot %d", m->slot);
	if (m->vm->fd < 0)
		return 0;
	irqfd.fd = (uint32_t)m->irq_fd;
	if (ioctl(m->vm->fd, KVM_IRQFD, &irqfd) < 0)
		return log_errno(-errno, "KVM_IRQFD gsi %u for virtio-mmio slot %d", m->gsi, m->slot);
	return 0;
}

int virtio_mmio_create(struct vm *vm, int slot, uint32_t device_id, uint64_t features,
		       int nqueues, uint16_t queue_max, const struct virtio_dev_ops *ops,
		       void *opaque, struct virtio_mmio **out)
{
	struct virtio_mmio *m = calloc(1, sizeof(*m));
	struct bus_dev bus = { .name = "virtio-mmio", .len = LAYOUT_VIRTIO_MMIO_SIZE,
			       .access = virtio_mmio_access };
	int err;

	if (!m)
		return log_errno(-ENOMEM, "allocating virtio-mmio slot %d", slot);
	if (slot < 0 || slot >= LAYOUT_VIRTIO_MMIO_SLOTS || nqueues > VIRTIO_MMIO_MAX_QUEUES) {
		free(m);
		return log_errno(-EINVAL, "virtio-mmio slot %d with %d queues", slot, nqueues);
	}
	if (vm->virtio[slot]) {
		free(m);
		return log_errno(-EBUSY, "virtio-mmio slot %d is taken", slot);
	}
	*m = (struct virtio_mmio){ .vm = vm, .slot = slot, .device_id = device_id,
				   .base = LAYOUT_VIRTIO_MMIO_BASE + (uint64_t)slot * LAYOUT_VIRTIO_MMIO_SIZE,
				   .gsi = LAYOUT_VIRTIO_MMIO_IRQ + (uint32_t)slot,
				   .device_features = features | VIRTIO_F_VERSION_1,
				   .nqueues = nqueues, .queue_max = queue_max, .ops = ops,
				   .opaque = opaque, .irq_fd = -1 };
	pthread_mutex_init(&m->lock, NULL);
	for (int q = 0; q < VIRTIO_MMIO_MAX_QUEUES; q++)
		m->notify_fd[q] = -1;
	for (int q = 0; q < nqueues; q++) {
		m->notify_fd[q] = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
		if (m->notify_fd[q] < 0) {
			err = log_errno(-errno, "eventfd for queue %d of virtio-mmio slot %d", q, slot);
			goto err;
		}
		setup_ioeventfd(m, q);
	}
	err = setup_irqfd(m);
	if (err)
		goto err;
	bus.base = m->base;
	bus.opaque = m;
	err = bus_register(&vm->mmio, &bus);
	if (err)
		goto err;
	vm->virtio[slot] = m;
	if (vm->nvirtio < slot + 1)
		vm->nvirtio = slot + 1;
	*out = m;
	return 0;
err:
	virtio_mmio_destroy(m);
	return err;
}

void virtio_mmio_destroy(struct virtio_mmio *m)
{
	if (!m)
		return;
	for (int q = 0; q < VIRTIO_MMIO_MAX_QUEUES; q++) {
		if (m->ioeventfd[q]) {
			struct kvm_ioeventfd io = { .datamatch = (uint64_t)q,
						    .addr = m->base + VMMIO_QUEUE_NOTIFY, .len = 4,
						    .fd = m->notify_fd[q],
						    .flags = KVM_IOEVENTFD_FLAG_DATAMATCH |
							     KVM_IOEVENTFD_FLAG_DEASSIGN };
			ioctl(m->vm->fd, KVM_IOEVENTFD, &io); /* the VM fd may be going anyway */
		}
		if (m->notify_fd[q] >= 0)
			close(m->notify_fd[q]);
	}
	if (m->irq_fd >= 0)
		close(m->irq_fd);
	if (m->vm && m->vm->virtio[m->slot] == m)
		m->vm->virtio[m->slot] = NULL;
	pthread_mutex_destroy(&m->lock);
	free(m);
}

void virtio_mmio_save(struct virtio_mmio *m, struct virtio_mmio_regs *out)
{
	pthread_mutex_lock(&m->lock);
	*out = m->r;
	for (int q = 0; q < VIRTIO_MMIO_MAX_QUEUES; q++)
		out->q[q] = m->vq[q].s;
	pthread_mutex_unlock(&m->lock);
}

int virtio_mmio_restore(struct virtio_mmio *m, const struct virtio_mmio_regs *in)
{
	int err = 0;

	pthread_mutex_lock(&m->lock);
	m->r = *in;
	for (int q = 0; q < m->nqueues; q++) {
		virtq_reset(&m->vq[q]);
		m->vq[q].s = in->q[q];
		m->vq[q].s.ready = 0;
		if (in->q[q].ready && virtq_activate(&m->vq[q], &m->vm->mem, m->queue_max)) {
			err = log_errno(-EINVAL, "restoring queue %d of virtio-mmio slot %d", q, m->slot);
			break;
		}
	}
	pthread_mutex_unlock(&m->lock);
	return err;
}
