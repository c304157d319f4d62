/* virtio-mmio register file: feature negotiation, status state machine, queue setup, notify. */
#include "devices/virtio_mmio.h"

#include <stdlib.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "util/log.h"
#include "core/vm.h"
#include "x86/layout.h"

static struct virtq *cur_queue(struct virtio_mmio *m)
{
	return m->r.queue_sel < (uint32_t)m->nqueues ? &m->vq[m->r.queue_sel] : NULL;
}

static void device_reset(struct virtio_mmio *m)
{
	if (m->ops->reset)
		m->ops->reset(m->opaque);
	for (int i = 0; i < VIRTIO_MMIO_MAX_QUEUES; i++)
		virtq_reset(&m->vq[i]);
	m->r = (struct virtio_mmio_regs){ .config_gen = m->r.config_gen };
}

/* FEATURES_OK sticks only for a subset of what we offer that includes VERSION_1 and that the
 * device accepts (features_ok). */
static void write_status(struct virtio_mmio *m, uint32_t v)
{
	uint32_t old = m->r.status;

	if (v == 0) {
		device_reset(m);
		return;
	}
	if ((v & VIRTIO_STATUS_FEATURES_OK) && !(old & VIRTIO_STATUS_FEATURES_OK)) {
		if ((m->r.driver_features & ~m->device_features) ||
		    !(m->r.driver_features & VIRTIO_F_VERSION_1) ||
		    (m->ops->features_ok && !m->ops->features_ok(m->opaque, m->r.driver_features)))
			v &= ~(uint32_t)VIRTIO_STATUS_FEATURES_OK;
	}
	if ((v & VIRTIO_STATUS_DRIVER_OK) && !(v & VIRTIO_STATUS_FEATURES_OK))
		v &= ~(uint32_t)VIRTIO_STATUS_DRIVER_OK; /* out of order: refuse */
	m->r.status = v;
	if ((v & VIRTIO_STATUS_DRIVER_OK) && !(old & VIRTIO_STATUS_DRIVER_OK) && m->ops->activate)
		m->ops->activate(m->opaque);
}

static void set_half(uint64_t *v, bool high, uint32_t val)
{
	*v = high ? (*v & 0xffffffffULL) | ((uint64_t)val << 32)
		  : (*v & ~0xffffffffULL) | val;
}

static void write_queue_reg(struct virtio_mmio *m, uint64_t off, uint32_t v)
{
	struct virtq *q = cur_queue(m);

	/* Queue registers are writable only between FEATURES_OK and DRIVER_OK and while the
	 * queue is not live (4.2.3.2). */
	if (!q || q->s.ready || !(m->r.status & VIRTIO_STATUS_FEATURES_OK) ||
	    (m->r.status & VIRTIO_STATUS_DRIVER_OK && off != VMMIO_QUEUE_READY))
		return;
	switch (off) {
	case VMMIO_QUEUE_NUM: q->s.num = (uint16_t)v; break;
	case VMMIO_QUEUE_DESC_LO: case VMMIO_QUEUE_DESC_HI:
		set_half(&q->s.desc_gpa, off == VMMIO_QUEUE_DESC_HI, v); break;
	case VMMIO_QUEUE_AVAIL_LO: case VMMIO_QUEUE_AVAIL_HI:
		set_half(&q->s.avail_gpa, off == VMMIO_QUEUE_AVAIL_HI, v); break;
	case VMMIO_QUEUE_USED_LO: case VMMIO_QUEUE_USED_HI:
		set_half(&q->s.used_gpa, off == VMMIO_QUEUE_USED_HI, v); break;
	case VMMIO_QUEUE_READY:
		if (v == 1 && virtq_activate(q, &m->vm->mem, m->queue_max)) {
			log_warn("virtio-mmio slot %d: queue %u setup rejected (num %u, rings 0x%llx "
				 "0x%llx 0x%llx)", m->slot, m->r.queue_sel, q->s.num,
				 (unsigned long long)q->s.desc_gpa, (unsigned long long)q->s.avail_gpa,
				 (unsigned long long)q->s.used_gpa);
			m->r.status |= VIRTIO_STATUS_NEEDS_RESET;
		}
		break;
	}
}

static uint32_t read_reg(struct virtio_mmio *m, uint64_t off)
{
	struct virtq *q = cur_queue(m);

	switch (off) {
	case VMMIO_MAGIC: return VIRTIO_MMIO_MAGIC;
	case VMMIO_VERSION: return VIRTIO_MMIO_VERSION;
	case VMMIO_DEVICE_ID: return m->device_id;
	case VMMIO_VENDOR_ID: return VIRTIO_MMIO_VENDOR;
	case VMMIO_DEV_FEATURES:
		return m->r.dev_feat_sel > 1 ? 0 : (uint32_t)(m->device_features >> (32 * m->r.dev_feat_sel));
	case VMMIO_QUEUE_NUM_MAX: return q ? m->queue_max : 0;
	case VMMIO_QUEUE_READY: return q ? q->s.ready : 0;
	case VMMIO_INT_STATUS: return m->r.isr;
	case VMMIO_STATUS: return m->r.status;
	case VMMIO_CONFIG_GEN: return m->r.config_gen;
	default: return 0;
	}
}

static void write_reg(struct virtio_mmio *m, uint64_t off, uint32_t v)
{
	switch (off) {
	case VMMIO_DEV_FEATURES_SEL: m->r.dev_feat_sel = v; break;
	case VMMIO_DRV_FEATURES_SEL: m->r.drv_feat_sel = v; break;
	case VMMIO_DRV_FEATURES:
		if (m->r.drv_feat_sel <= 1 && !(m->r.status & VIRTIO_STATUS_FEATURES_OK))
			set_half(&m->r.driver_features, m->r.drv_feat_sel == 1, v);
		break;
	case VMMIO_QUEUE_SEL: m->r.queue_sel = v; break;
	case VMMIO_QUEUE_NOTIFY:
		/* Only reached without ioeventfd: wake the device thread the same way. */
		if (v < (uint32_t)m->nqueues) {
			uint64_t one = 1;
			m->notifies++;
			if (write(m->notify_fd[v], &one, sizeof(one)) < 0)
				log_warn("virtio-mmio slot %d: notify eventfd: %s", m->slot, strerror(errno));
		}
		break;
	case VMMIO_INT_ACK: m->r.isr &= ~v; break;
	case VMMIO_STATUS: write_status(m, v); break;
	default: write_queue_reg(m, off, v); break;
	}
}

int virtio_mmio_access(void *opaque, struct vcpu *vcpu, uint64_t off, void *data, int len,
		       bool is_write)
{
	struct virtio_mmio *m = opaque;
	uint32_t v = 0;

	pthread_mutex_lock(&m->lock);
	if (off >= VMMIO_CONFIG) {
		if (!is_write && m->ops->config_read)
			m->ops->config_read(m->opaque, off - VMMIO_CONFIG, data, len);
		/* Config space is read-only for our devices: writes are dropped. */
	} else if (len != 4 || (off & 3)) {
		if (!is_write)
			memset(data, 0, (size_t)len); /* registers are 32-bit only (4.2.2.2) */
	} else if (is_write) {
		memcpy(&v, data, 4);
		write_reg(m, off, v);
	} else {
		v = read_reg(m, off);
		memcpy(data, &v, 4);
	}
	pthread_mutex_unlock(&m->lock);
	return 0;
}

void virtio_mmio_signal(struct virtio_mmio *m, uint32_t why)
{
	uint64_t one = 1;

	m->r.isr |= why;
	m->interrupts++;
	if (m->irq_fd >= 0 && write(m->irq_fd, &one, sizeof(one)) < 0)
		log_warn("virtio-mmio slot %d: irqfd write: %s", m->slot, strerror(errno));
	/* The probe guest runs with interrupts off and idles on its WAIT port: wake it. */
	if (m->vm->probe_guest && m->vm->nvcpus > 0)
		vcpu_wake(&m->vm->vcpus[0]);
}

bool virtio_mmio_driver_ok(const struct virtio_mmio *m)
{
	return (m->r.status & VIRTIO_STATUS_DRIVER_OK) && !(m->r.status & VIRTIO_STATUS_NEEDS_RESET);
}

void virtio_mmio_ack_notify(struct virtio_mmio *m, int queue)
{
	uint64_t v;

	if (read(m->notify_fd[queue], &v, sizeof(v)) < 0 && errno != EAGAIN)
		log_warn("virtio-mmio slot %d: notify eventfd read: %s", m->slot, strerror(errno));
}
