/* Probe doorbell ports: WAIT idles the vCPU, DONE completes a request, LOG prints a line. */
#include "devices/probe_dev.h"

#include <pthread.h>
#include <stdlib.h>

#include "util/log.h"
#include "core/vm.h"
#include "mem/dirty_log.h"
#include "util/clock.h"
#include "x86/layout.h"

struct probe_slot {
	struct probe_mailbox *mb;
	bool busy;
	uint64_t seq;
	uint64_t posted_ns;
	probe_done_fn fn;
	void *ctx;
};

struct probe_dev {
	struct vm *vm;
	pthread_mutex_t lock;
	struct probe_slot slot[LAYOUT_MAX_VCPUS];
};

/* Called on every doorbell: finish the slot's request if the guest has answered it. */
static void probe_collect(struct probe_dev *dev, int id)
{
	struct probe_slot *slot = &dev->slot[id];
	struct probe_result res = { 0 };
	probe_done_fn fn = NULL;
	void *ctx = NULL;

	pthread_mutex_lock(&dev->lock);
	if (slot->busy && slot->mb && probe_result_decode(slot->mb, slot->seq, &res) == 0) {
		res.latency_ns = monotonic_ns() - slot->posted_ns;
		fn = slot->fn;
		ctx = slot->ctx;
		slot->busy = false;
		slot->fn = NULL;
	}
	pthread_mutex_unlock(&dev->lock);
	if (fn)
		fn(ctx, id, &res);
}

static void probe_log(struct probe_dev *dev, int id)
{
	struct probe_mailbox *mb = dev->slot[id].mb;
	uint32_t len;

	if (!mb)
		return;
	len = mb->log_len < PROBE_LOG_MAX ? mb->log_len : PROBE_LOG_MAX;
	log_info("probe[%d]: %.*s", id, (int)len, mb->log);
}

static int probe_access(void *opaque, struct vcpu *vcpu, uint64_t offset, void *data, int len,
			bool is_write)
{
	struct probe_dev *dev = opaque;

	if (!is_write) {
		memset(data, 0, (size_t)len);
		return 0;
	}
	switch (offset + PROBE_PORT_WAIT) {
	case PROBE_PORT_WAIT:
		probe_collect(dev, vcpu->id);
		return BUS_WAIT;
	case PROBE_PORT_DONE:
		probe_collect(dev, vcpu->id);
		return 0;
	default:
		probe_log(dev, vcpu->id);
		return 0;
	}
}

int probe_dev_create(struct vm *vm, struct probe_dev **out)
{
	struct probe_dev *dev = calloc(1, sizeof(*dev));
	struct bus_dev bus = { .name = "probe", .base = PROBE_PORT_WAIT, .len = 3,
			       .access = probe_access };
	int err;

	if (!dev)
		return log_errno(-ENOMEM, "allocating probe device");
	dev->vm = vm;
	pthread_mutex_init(&dev->lock, NULL);
	bus.opaque = dev;
	err = bus_register(&vm->pio, &bus);
	if (err) {
		free(dev);
		return err;
	}
	*out = dev;
	return 0;
}

void probe_dev_destroy(struct probe_dev *dev)
{
	if (!dev)
		return;
	pthread_mutex_destroy(&dev->lock);
	free(dev);
}

void probe_dev_attach(struct probe_dev *dev, int vcpu_id, struct probe_mailbox *mb)
{
	pthread_mutex_lock(&dev->lock);
	dev->slot[vcpu_id].mb = mb;
	pthread_mutex_unlock(&dev->lock);
}

int probe_post(struct probe_dev *dev, int vcpu_id, const struct probe_request *req,
	       probe_done_fn fn, void *ctx)
{
	struct probe_slot *slot;
	int err = 0;

	if (!dev || vcpu_id < 0 || vcpu_id >= dev->vm->nvcpus)
		return -ENODEV;
	slot = &dev->slot[vcpu_id];
	pthread_mutex_lock(&dev->lock);
	if (!slot->mb) {
		err = -ENODEV;
		goto out;
	}
	if (slot->busy) {
		err = -EBUSY;
		goto out;
	}
	err = probe_request_check(slot->mb, req);
	if (err)
		goto out;
	slot->busy = true;
	slot->fn = fn;
	slot->ctx = ctx;
	slot->posted_ns = monotonic_ns();
	slot->seq = probe_request_encode(slot->mb, req);
	/* A host write KVM's dirty log cannot see: diff snapshots must still carry it. */
	guest_mem_mark_dirty(&dev->vm->mem, LAYOUT_PROBE_MAILBOX + (uint64_t)vcpu_id * LAYOUT_PAGE_SIZE,
			     LAYOUT_PAGE_SIZE);
out:
	pthread_mutex_unlock(&dev->lock);
	if (!err)
		vcpu_wake(&dev->vm->vcpus[vcpu_id]);
	return err;
}

void probe_forget(struct probe_dev *dev, void *ctx)
{
	if (!dev)
		return;
	pthread_mutex_lock(&dev->lock);
	for (int i = 0; i < LAYOUT_MAX_VCPUS; i++)
		if (dev->slot[i].busy && dev->slot[i].ctx == ctx)
			dev->slot[i].fn = NULL;
	pthread_mutex_unlock(&dev->lock);
}
