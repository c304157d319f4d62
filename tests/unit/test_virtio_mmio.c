/* virtio-mmio register semantics: identity, features, status machine, queues, notify, reset. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <poll.h>
#include <unistd.h>

#include "virtio_testvm.h"
#include "x86/layout.h"

#define ALL (VIRTIO_STATUS_ACK | VIRTIO_STATUS_DRIVER | VIRTIO_STATUS_FEATURES_OK)

struct fixture {
	struct vm vm;
	struct virtio_mmio *m;
	int resets, activations;
};

static void cfg_read(void *opaque, uint64_t off, void *data, int len)
{
	memset(data, (int)(0x40 + off), (size_t)len);
}
static void on_reset(void *opaque) { ((struct fixture *)opaque)->resets++; }
static void on_activate(void *opaque) { ((struct fixture *)opaque)->activations++; }
static const struct virtio_dev_ops ops = { .config_read = cfg_read, .reset = on_reset,
					    .activate = on_activate };

static int setup(void **state)
{
	static struct fixture f;

	memset(&f, 0, sizeof(f));
	if (tvm_init(&f.vm))
		return -1;
	/* Offer feature bit 3 besides VERSION_1; 2 queues of at most 64. */
	if (virtio_mmio_create(&f.vm, 1, 19, 1ULL << 3, 2, 64, &ops, &f, &f.m))
		return -1;
	*state = &f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;

	virtio_mmio_destroy(f->m);
	guest_mem_destroy(&f->vm.mem);
	return 0;
}

static void test_identity(void **state)
{
	struct fixture *f = *state;
	uint8_t b = 0;

	assert_int_equal(tvm_rd(f->m, VMMIO_MAGIC), 0x74726976);
	assert_int_equal(tvm_rd(f->m, VMMIO_VERSION), 2);
	assert_int_equal(tvm_rd(f->m, VMMIO_DEVICE_ID), 19);
	assert_int_equal(tvm_rd(f->m, VMMIO_VENDOR_ID), VIRTIO_MMIO_VENDOR);
	assert_int_equal(f->m->base, LAYOUT_VIRTIO_MMIO_BASE + LAYOUT_VIRTIO_MMIO_SIZE);
	assert_int_equal(f->m->gsi, LAYOUT_VIRTIO_MMIO_IRQ + 1);
	assert_ptr_equal(f->vm.virtio[1], f->m);
	/* Registers are 32-bit: a byte read of one yields 0; config space passes through. */
	virtio_mmio_access(f->m, NULL, VMMIO_MAGIC, &b, 1, false);
	assert_int_equal(b, 0);
	virtio_mmio_access(f->m, NULL, VMMIO_CONFIG + 2, &b, 1, false);
	assert_int_equal(b, 0x42);
	/* And the bus routes guest-physical addresses to this slot. */
	assert_non_null(bus_find(&f->vm.mmio, f->m->base + VMMIO_STATUS, 4));
	assert_null(bus_find(&f->vm.mmio, LAYOUT_VIRTIO_MMIO_BASE, 4));
}

static void test_features(void **state)
{
	struct fixture *f = *state;

	tvm_wr(f->m, VMMIO_DEV_FEATURES_SEL, 0);
	assert_int_equal(tvm_rd(f->m, VMMIO_DEV_FEATURES), 1u << 3);
	tvm_wr(f->m, VMMIO_DEV_FEATURES_SEL, 1);
	assert_int_equal(tvm_rd(f->m, VMMIO_DEV_FEATURES), 1); /* VERSION_1 */
	tvm_wr(f->m, VMMIO_DEV_FEATURES_SEL, 2);
	assert_int_equal(tvm_rd(f->m, VMMIO_DEV_FEATURES), 0);
	tvm_wr(f->m, VMMIO_STATUS, VIRTIO_STATUS_ACK | VIRTIO_STATUS_DRIVER);
	/* Without VERSION_1 FEATURES_OK does not stick. */
	tvm_wr(f->m, VMMIO_STATUS, ALL);
	assert_int_equal(tvm_rd(f->m, VMMIO_STATUS), VIRTIO_STATUS_ACK | VIRTIO_STATUS_DRIVER);
	/* Nor with a bit we never offered. */
	tvm_wr(f->m, VMMIO_DRV_FEATURES_SEL, 1);
	tvm_wr(f->m, VMMIO_DRV_FEATURES, 1);
	tvm_wr(f->m, VMMIO_DRV_FEATURES_SEL, 0);
	tvm_wr(f->m, VMMIO_DRV_FEATURES, 1u << 4);
	tvm_wr(f->m, VMMIO_STATUS, ALL);
	assert_false(tvm_rd(f->m, VMMIO_STATUS) & VIRTIO_STATUS_FEATURES_OK);
	/* A subset is accepted, and then features are frozen. */
	tvm_wr(f->m, VMMIO_DRV_FEATURES, 1u << 3);
	tvm_wr(f->m, VMMIO_STATUS, ALL);
	assert_int_equal(tvm_rd(f->m, VMMIO_STATUS), ALL);
	tvm_wr(f->m, VMMIO_DRV_FEATURES, 0);
	assert_int_equal(f->m->r.driver_features, VIRTIO_F_VERSION_1 | (1u << 3));
}

static void test_driver_ok_needs_features_ok(void **state)
{
	struct fixture *f = *state;

	tvm_wr(f->m, VMMIO_STATUS, VIRTIO_STATUS_ACK | VIRTIO_STATUS_DRIVER | VIRTIO_STATUS_DRIVER_OK);
	assert_false(tvm_rd(f->m, VMMIO_STATUS) & VIRTIO_STATUS_DRIVER_OK);
	assert_int_equal(f->activations, 0);
	tvm_negotiate(f->m);
	tvm_wr(f->m, VMMIO_STATUS, ALL | VIRTIO_STATUS_DRIVER_OK);
	assert_true(virtio_mmio_driver_ok(f->m));
	assert_int_equal(f->activations, 1);
}

static void test_queue_setup(void **state)
{
	struct fixture *f = *state;

	/* Before FEATURES_OK queue registers are ignored. */
	tvm_queue(f->m, 0, 16, 0x100000);
	assert_int_equal(tvm_rd(f->m, VMMIO_QUEUE_READY), 0);
	tvm_negotiate(f->m);
	tvm_wr(f->m, VMMIO_QUEUE_SEL, 0);
	assert_int_equal(tvm_rd(f->m, VMMIO_QUEUE_NUM_MAX), 64);
	tvm_wr(f->m, VMMIO_QUEUE_SEL, 2); /* no such queue */
	assert_int_equal(tvm_rd(f->m, VMMIO_QUEUE_NUM_MAX), 0);
	/* Too large, not a power of two, outside RAM: refused, device needs reset. */
	tvm_queue(f->m, 0, 128, 0x100000);
	assert_int_equal(tvm_rd(f->m, VMMIO_QUEUE_READY), 0);
	assert_true(tvm_rd(f->m, VMMIO_STATUS) & VIRTIO_STATUS_NEEDS_RESET);
	tvm_queue(f->m, 0, 24, 0x100000);
	assert_int_equal(tvm_rd(f->m, VMMIO_QUEUE_READY), 0);
	tvm_queue(f->m, 0, 16, TVM_MEM - 0x1000);
	assert_int_equal(tvm_rd(f->m, VMMIO_QUEUE_READY), 0);
	tvm_queue(f->m, 1, 16, 0x100000);
	assert_int_equal(tvm_rd(f->m, VMMIO_QUEUE_READY), 1);
	assert_int_equal(f->m->vq[1].s.avail_gpa, 0x101000);
	assert_int_equal(f->m->vq[1].s.used_gpa, 0x102000);
	/* A live queue cannot be reprogrammed. */
	tvm_wr(f->m, VMMIO_QUEUE_NUM, 8);
	assert_int_equal(f->m->vq[1].s.num, 16);
}

static void test_notify_interrupt_reset(void **state)
{
	struct fixture *f = *state;
	struct pollfd p = { .events = POLLIN };

	tvm_negotiate(f->m);
	tvm_queue(f->m, 1, 16, 0x100000);
	/* No KVM here, so QueueNotify reaches the handler and signals the queue's eventfd. */
	p.fd = f->m->notify_fd[1];
	assert_int_equal(poll(&p, 1, 0), 0);
	tvm_wr(f->m, VMMIO_QUEUE_NOTIFY, 1);
	assert_int_equal(poll(&p, 1, 0), 1);
	virtio_mmio_ack_notify(f->m, 1);
	assert_int_equal(poll(&p, 1, 0), 0);
	tvm_wr(f->m, VMMIO_QUEUE_NOTIFY, 7); /* out of range: ignored */
	virtio_mmio_signal(f->m, VIRTIO_INT_USED);
	assert_int_equal(tvm_rd(f->m, VMMIO_INT_STATUS), VIRTIO_INT_USED);
	tvm_wr(f->m, VMMIO_INT_ACK, VIRTIO_INT_USED);
	assert_int_equal(tvm_rd(f->m, VMMIO_INT_STATUS), 0);
	/* Writing 0 to status resets the device and its queues. */
	tvm_wr(f->m, VMMIO_STATUS, 0);
	assert_int_equal(f->resets, 1);
	assert_int_equal(tvm_rd(f->m, VMMIO_STATUS), 0);
	tvm_wr(f->m, VMMIO_QUEUE_SEL, 1);
	assert_int_equal(tvm_rd(f->m, VMMIO_QUEUE_READY), 0);
	assert_int_equal(f->m->r.driver_features, 0);
}

static void test_save_restore(void **state)
{
	struct fixture *f = *state;
	struct virtio_mmio_regs regs;

	tvm_negotiate(f->m);
	tvm_queue(f->m, 0, 32, 0x200000);
	tvm_wr(f->m, VMMIO_STATUS, ALL | VIRTIO_STATUS_DRIVER_OK);
	f->m->vq[0].s.last_avail = 5;
	virtio_mmio_save(f->m, &regs);
	tvm_wr(f->m, VMMIO_STATUS, 0);
	assert_int_equal(virtio_mmio_restore(f->m, &regs), 0);
	assert_true(virtio_mmio_driver_ok(f->m));
	assert_int_equal(f->m->vq[0].s.last_avail, 5);
	assert_non_null(f->m->vq[0].desc);
	/* A saved queue that points outside RAM is refused. */
	regs.q[0].desc_gpa = TVM_MEM;
	assert_int_not_equal(virtio_mmio_restore(f->m, &regs), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_identity, setup, teardown),
		cmocka_unit_test_setup_teardown(test_features, setup, teardown),
		cmocka_unit_test_setup_teardown(test_driver_ok_needs_features_ok, setup, teardown),
		cmocka_unit_test_setup_teardown(test_queue_setup, setup, teardown),
		cmocka_unit_test_setup_teardown(test_notify_interrupt_reset, setup, teardown),
		cmocka_unit_test_setup_teardown(test_save_restore, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
