/* snap_decode (what `snapshot verify` and restore both run): refuses what it cannot restore. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "devices/serial.h"
#include "snapshot/snapshot.h"
#include "util/errmsg.h"
#include "x86/layout.h"

#define MEM (64ULL << 20)
#define XSAVE 4096u

/* One change from the good snapshot (all zero: the good snapshot itself). */
struct variant {
	uint32_t drop_type, drop_inst;		/* leave this section out */
	uint32_t extra_type, extra_inst;	/* add this section (8 zero bytes) */
	uint64_t vsock_len;			/* vsock section length (0: the right one) */
	uint32_t guest_kind;			/* 0: linux */
	uint64_t tsc_khz;			/* 0: 2 GHz; ~0: write 0 */
	uint64_t cid;				/* 0: 3 */
	uint16_t rx_num;			/* rx queue entries (0: 128) */
	uint64_t rx_desc;			/* rx descriptor ring (0: 0x10000) */
	uint64_t serial_len;			/* 0: the right one */
	const char *cpu_features;		/* NULL: "" */
	bool no_vsock;				/* neither vsock section */
	/* Disks: ndisks of them in slots disk_slot, disk_slot + 1, ... (blk + virtio_mmio). */
	int ndisks;
	uint32_t disk_slot;			/* 0: slot 1 */
	bool disk_slot_zero;			/* the first disk in slot 0 */
	uint64_t blk_len;			/* 0: the right one */
	bool no_disk_mmio, no_blk;		/* half a disk */
	uint32_t claim_slot;			/* st.slot (0: the instance) */
	uint32_t nlayers;
	const char *base_path;			/* NULL: "/images/base.img" */
	uint64_t disk_size;			/* 0: the base's, rounded to 512 */
	uint16_t disk_qnum;			/* 0: 128 */
	/* A NIC (net + virtio_mmio) in nic_slot (0: slot 3); a second one in nic_slot2. */
	bool nic, no_nic_mmio, nic_slot_zero;
	uint32_t nic_slot, nic_slot2;
	uint64_t nic_len;			/* 0: the right one */
	uint8_t nic_mac0;			/* 0: 0x02 */
	uint64_t nic_features;			/* 0: every offered one */
	uint16_t nic_qnum;			/* 0: 256 */
};

static void add(struct snap_buf *b, const struct variant *v, uint32_t type, uint32_t inst,
		const void *data, uint64_t len)
{
	if (v->drop_type == type && v->drop_inst == inst)
		return;
	snap_buf_add(b, type, inst, data, len);
}

static void add_disks(struct snap_buf *b, const struct variant *v, const uint8_t *zero)
{
	uint32_t slot0 = v->disk_slot_zero ? 0 : v->disk_slot ? v->disk_slot : 1;

	for (int i = 0; i < v->ndisks; i++) {
		uint32_t slot = slot0 + (uint32_t)i;
		struct snap_disk_state st = { .slot = v->claim_slot ? v->claim_slot : slot,
					      .base_size = 10000, .size = v->disk_size ? v->disk_size : 10240,
					      .nlayers = v->nlayers, .cluster_size = DISK_CLUSTER_SIZE };
		struct virtio_mmio_regs mm = { 0 };

		snprintf(st.base_path, sizeof(st.base_path), "%s",
			 v->base_path ? v->base_path : "/images/base.img");
		snprintf(st.serial, sizeof(st.serial), "base.img");
		mm.q[0] = (struct virtq_state){ .num = v->disk_qnum ? v->disk_qnum : 128, .ready = 1,
						.desc_gpa = 0x40000, .avail_gpa = 0x50000,
						.used_gpa = 0x60000 };
		if (!v->no_disk_mmio)
			snap_buf_add(b, SNAP_SEC_VIRTIO_MMIO, slot, &mm, sizeof(mm));
		if (!v->no_blk)
			snap_buf_add(b, SNAP_SEC_BLK, slot, v->blk_len ? (const void *)zero : &st,
				     v->blk_len ? v->blk_len : sizeof(st));
	}
}

static void add_nic(struct snap_buf *b, const struct variant *v, uint32_t slot, const uint8_t *zero)
{
	struct virtio_net_state st = { .mac = { v->nic_mac0 ? v->nic_mac0 : 0x02, 1, 2, 3, 4, 5 },
				       .status = VIRTIO_NET_S_LINK_UP };
	struct virtio_mmio_regs mm = {
		.driver_features = v->nic_features ? v->nic_features
						   : VIRTIO_NET_FEATURES | VIRTIO_F_VERSION_1,
		.status = 0xf };

	for (int q = 0; q < VIRTIO_NET_QUEUES; q++)
		mm.q[q] = (struct virtq_state){ .num = v->nic_qnum ? v->nic_qnum : 256, .ready = 1,
						.desc_gpa = 0x100000 * (q + 1), .avail_gpa = 0x100000 * (q + 1) + 0x1000,
						.used_gpa = 0x100000 * (q + 1) + 0x2000 };
	if (!v->no_nic_mmio)
		snap_buf_add(b, SNAP_SEC_VIRTIO_MMIO, slot, &mm, sizeof(mm));
	snap_buf_add(b, SNAP_SEC_NET, slot, v->nic_len ? (const void *)zero : &st,
		     v->nic_len ? v->nic_len : sizeof(st));
}

/* A complete two-vCPU linux snapshot with a vsock device, changed as v says. */
static int decode(const struct variant *v, struct fvm_err *err)
{
	static uint8_t zero[XSAVE + 64 * 1024];
	struct snapshot snap;
	struct snap_machine m;
	struct snap_config c = { .mem_size = MEM, .nvcpus = 2, .guest_kind = SNAP_GUEST_LINUX,
				 .nregions = 1, .xsave_size = XSAVE, .ndevices = 1 };
	struct virtio_mmio_regs mmio = { 0 };
	struct vsock_state vs = { .cid = v->cid ? v->cid : 3 };
	uint64_t tsc = v->tsc_khz == ~0ULL ? 0 : v->tsc_khz ? v->tsc_khz : 2000000;
	struct snap_buf b;
	int ret;

	c.regions[0].size = MEM;
	if (v->guest_kind)
		c.guest_kind = v->guest_kind;
	snprintf(c.cpu_features, sizeof(c.cpu_features), "%s", v->cpu_features ? v->cpu_features : "");
	mmio.q[0] = (struct virtq_state){ .num = v->rx_num ? v->rx_num : 128, .ready = 1,
					  .desc_gpa = v->rx_desc ? v->rx_desc : 0x10000,
					  .avail_gpa = 0x20000, .used_gpa = 0x30000 };
	snap_buf_init(&b);
	add(&b, v, SNAP_SEC_CONFIG, 0, &c, sizeof(c));
	for (uint32_t i = 0; i < 2; i++) {
		add(&b, v, SNAP_SEC_MP_STATE, i, zero, sizeof(struct kvm_mp_state));
		add(&b, v, SNAP_SEC_CPUID, i, zero, sizeof(struct kvm_cpuid2));
		add(&b, v, SNAP_SEC_REGS, i, zero, sizeof(struct kvm_regs));
		add(&b, v, SNAP_SEC_SREGS, i, zero, sizeof(struct kvm_sregs));
		add(&b, v, SNAP_SEC_XSAVE, i, zero, XSAVE);
		add(&b, v, SNAP_SEC_XCRS, i, zero, sizeof(struct kvm_xcrs));
		add(&b, v, SNAP_SEC_DEBUGREGS, i, zero, sizeof(struct kvm_debugregs));
		add(&b, v, SNAP_SEC_LAPIC, i, zero, sizeof(struct kvm_lapic_state));
		add(&b, v, SNAP_SEC_MSRS, i, zero, sizeof(struct kvm_msrs));
		add(&b, v, SNAP_SEC_TSC_KHZ, i, &tsc, sizeof(tsc));
		add(&b, v, SNAP_SEC_VCPU_EVENTS, i, zero, sizeof(struct kvm_vcpu_events));
	}
	add(&b, v, SNAP_SEC_PIC_MASTER, 0, zero, sizeof(struct kvm_irqchip));
	add(&b, v, SNAP_SEC_PIC_SLAVE, 0, zero, sizeof(struct kvm_irqchip));
	add(&b, v, SNAP_SEC_IOAPIC, 0, zero, sizeof(struct kvm_irqchip));
	add(&b, v, SNAP_SEC_PIT2, 0, zero, sizeof(struct kvm_pit_state2));
	add(&b, v, SNAP_SEC_CLOCK, 0, zero, sizeof(struct kvm_clock_data));
	add(&b, v, SNAP_SEC_SERIAL, LAYOUT_SERIAL_PORT, zero,
	    v->serial_len ? v->serial_len : sizeof(struct serial_regs));
	if (!v->no_vsock) {
		add(&b, v, SNAP_SEC_VIRTIO_MMIO, 0, &mmio, sizeof(mmio));
		if (v->vsock_len)
			add(&b, v, SNAP_SEC_VSOCK, 0, zero, v->vsock_len);
		else
			add(&b, v, SNAP_SEC_VSOCK, 0, &vs, sizeof(vs));
	}
	add_disks(&b, v, zero);
	if (v->nic)
		add_nic(&b, v, v->nic_slot_zero ? 0 : v->nic_slot ? v->nic_slot : 3, zero);
	if (v->nic_slot2)
		add_nic(&b, v, v->nic_slot2, zero);
	if (v->extra_type)
		snap_buf_add(&b, v->extra_type, v->extra_inst, zero, 8);
	assert_int_equal(snap_buf_finish(&b), 0);
	memset(&snap, 0, sizeof(snap));
	snprintf(snap.dir, sizeof(snap.dir), "(test)");
	ret = snap_state_parse(b.data, b.len, &snap.state, err);
	if (ret)
		fail_msg("parse: %s", err);
	ret = snap_decode(&snap, &m, err);
	if (!ret)
		snap_machine_free(&m);
	snap_state_free(&snap.state);
	return ret;
}

static void expect(const struct variant *v, const char *want)
{
	struct fvm_err err = FVM_ERR_INIT;

	assert_int_equal(decode(v, &err), -EINVAL);
	if (!strstr(err.msg, want))
		fail_msg("error '%s' does not mention '%s'", err.msg, want);
}

static void test_good_snapshots_decode(void **state)
{
	struct fvm_err err = FVM_ERR_INIT;

	assert_int_equal(decode(&(struct variant){ 0 }, &err), 0);
	/* Without a vsock device at all is fine: neither section. */
	assert_int_equal(decode(&(struct variant){ .no_vsock = true }, &err), 0);
	assert_int_equal(decode(&(struct variant){ .guest_kind = SNAP_GUEST_PROBE }, &err), 0);
}

static void test_vsock_half_or_wrong_length(void **state)
{
	expect(&(struct variant){ .drop_type = SNAP_SEC_VSOCK }, "section 'vsock' instance 0 is missing");
	expect(&(struct variant){ .drop_type = SNAP_SEC_VIRTIO_MMIO },
	       "section 'virtio_mmio' instance 0 is missing");
	expect(&(struct variant){ .vsock_len = 16 }, "section 'vsock' instance 0 has 16 bytes");
	expect(&(struct variant){ .vsock_len = 4 }, "section 'vsock' instance 0 has 4 bytes");
	expect(&(struct variant){ .cid = 2 }, "guest CID 2");
	expect(&(struct variant){ .rx_num = 100 }, "vsock queue 0");
	expect(&(struct variant){ .rx_num = 512 }, "vsock queue 0");
	expect(&(struct variant){ .rx_desc = MEM - 16 }, "vsock queue 0");
}

static void test_unknown_and_extra_sections(void **state)
{
	expect(&(struct variant){ .extra_type = 99 }, "section type 99");
	expect(&(struct variant){ .extra_type = SNAP_SEC_PROBE }, "'probe'");
	expect(&(struct variant){ .extra_type = SNAP_SEC_REGS, .extra_inst = 2 },
	       "unexpected section 'regs' instance 2");
	expect(&(struct variant){ .extra_type = SNAP_SEC_TSC_KHZ, .extra_inst = 16 },
	       "unexpected section 'tsc_khz' instance 16");
	expect(&(struct variant){ .extra_type = SNAP_SEC_PIT2, .extra_inst = 1 },
	       "unexpected section 'pit2' instance 1");
	expect(&(struct variant){ .extra_type = SNAP_SEC_SERIAL, .extra_inst = 0x2f8 },
	       "unexpected section 'serial'");
}

static void test_bad_values(void **state)
{
	expect(&(struct variant){ .guest_kind = 3 }, "guest kind 3");
	expect(&(struct variant){ .tsc_khz = ~0ULL }, "tsc_khz");
	expect(&(struct variant){ .tsc_khz = 1ULL << 40 }, "tsc_khz");
	expect(&(struct variant){ .serial_len = 64 }, "section 'serial'");
	expect(&(struct variant){ .cpu_features = "-nosuchfeature" }, "CPU feature policy");
	expect(&(struct variant){ .drop_type = SNAP_SEC_MSRS, .drop_inst = 1 },
	       "section 'msrs' instance 1 is missing");
}

static void test_disks(void **state)
{
	struct fvm_err err = FVM_ERR_INIT;

	assert_int_equal(decode(&(struct variant){ .ndisks = 1 }, &err), 0);
	if (decode(&(struct variant){ .ndisks = 4, .nlayers = 64 }, &err))
		fail_msg("%s", err.msg);
	/* Slot 0 is a disk's only without a vsock device. */
	assert_int_equal(decode(&(struct variant){ .ndisks = 1, .disk_slot_zero = true,
						   .no_vsock = true }, &err), 0);
	expect(&(struct variant){ .ndisks = 1, .disk_slot_zero = true, .no_disk_mmio = true },
	       "unexpected section 'blk' instance 0");
	expect(&(struct variant){ .ndisks = 5 }, "more than 4 disks");
	expect(&(struct variant){ .ndisks = 1, .disk_slot = 8 }, "unexpected section 'virtio_mmio' instance 8");
	/* Half a disk, or a wrong length: refused, not restored without it. */
	expect(&(struct variant){ .ndisks = 1, .no_disk_mmio = true }, "has no transport section");
	expect(&(struct variant){ .ndisks = 1, .no_blk = true },
	       "unexpected section 'virtio_mmio' instance 1");
	expect(&(struct variant){ .ndisks = 1, .blk_len = 8 }, "section 'blk' instance 1 has 8 bytes");
	expect(&(struct variant){ .ndisks = 1, .blk_len = sizeof(struct snap_disk_state) + 8 },
	       "section 'blk' instance 1 has");
	/* Its fields. */
	expect(&(struct variant){ .ndisks = 1, .claim_slot = 2 }, "claims slot 2");
	expect(&(struct variant){ .ndisks = 1, .nlayers = 65 }, "65 layers");
	expect(&(struct variant){ .ndisks = 1, .base_path = "images/base.img" }, "absolute");
	expect(&(struct variant){ .ndisks = 1, .disk_size = 20480 }, "does not fit a base");
	expect(&(struct variant){ .ndisks = 1, .disk_qnum = 512 }, "disk 1 queue 0");
}

/* The NIC: one, its transport beside it, in a slot of its own, with sane fields and queues. */
static void test_nic(void **state)
{
	struct fvm_err err = FVM_ERR_INIT;

	if (decode(&(struct variant){ .nic = true, .ndisks = 2 }, &err))
		fail_msg("%s", err.msg);
	if (decode(&(struct variant){ .nic = true, .nic_slot_zero = true, .no_vsock = true }, &err))
		fail_msg("%s", err.msg);
	expect(&(struct variant){ .nic = true, .nic_slot_zero = true, .no_nic_mmio = true },
	       "unexpected section 'net' instance 0");
	expect(&(struct variant){ .nic = true, .ndisks = 1, .disk_slot = 3, .no_nic_mmio = true },
	       "unexpected section 'blk' instance 3");
	expect(&(struct variant){ .nic = true, .nic_slot = 8 }, "unexpected section 'virtio_mmio' instance 8");
	expect(&(struct variant){ .nic = true, .no_nic_mmio = true }, "(the NIC's transport) is missing");
	expect(&(struct variant){ .nic = true, .nic_len = 8 }, "section 'net' instance 3 has 8 bytes");
	expect(&(struct variant){ .nic = true, .nic_mac0 = 0x03 }, "not a unicast address");
	expect(&(struct variant){ .nic = true, .nic_features = VIRTIO_F_VERSION_1 | VIRTIO_NET_F_MTU },
	       "does not offer");
	expect(&(struct variant){ .nic = true, .nic_features = VIRTIO_F_VERSION_1 | VIRTIO_NET_F_GUEST_TSO4 },
	       "does not offer");
	expect(&(struct variant){ .nic = true, .nic_slot2 = 5 }, "a VM has one NIC");
	expect(&(struct variant){ .nic = true, .nic_qnum = 512 }, "NIC queue 0");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_good_snapshots_decode),
		cmocka_unit_test(test_vsock_half_or_wrong_length),
		cmocka_unit_test(test_unknown_and_extra_sections),
		cmocka_unit_test(test_bad_values),
		cmocka_unit_test(test_disks),
		cmocka_unit_test(test_nic),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
