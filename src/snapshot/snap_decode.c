/* Decode and validate every vmstate section before a VM is created from it. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/vm.h"
#include "devices/serial.h"
#include "devices/vsock_proto.h"
#include "snapshot/snapshot.h"
#include "util/errmsg.h"
#include "x86/cpuid.h"
#include "x86/layout.h"

#define VSOCK_QUEUES 3		/* rx, tx, event */
#define VSOCK_QUEUE_MAX 256	/* as vsock_create sets up its transport */
#define TSC_KHZ_MAX 100000000ULL	/* 100 GHz: anything above is not a real clock */

static const struct snap_section *need(const struct snapshot *snap, uint32_t type, uint32_t inst,
				       uint64_t len, struct fvm_err *err)
{
	const struct snap_section *s = snap_state_find(&snap->state, type, inst);

	if (!s)
		errf(err, "vmstate: section '%s' instance %u is missing",
			 snap_section_name(type), inst);
	else if (len && s->len != len)
		errf(err, "vmstate: section '%s' instance %u has %llu bytes, expected %llu",
			 snap_section_name(type), inst, (unsigned long long)s->len,
			 (unsigned long long)len);
	else
		return s;
	return NULL;
}

#define COPY_FIXED(type, inst, dst)                                                       \
	do {                                                                               \
		const struct snap_section *s_ = need(snap, type, inst, sizeof(dst), err); \
		if (!s_)                                                                   \
			goto bad;                                                          \
		memcpy(&(dst), s_->data, sizeof(dst));                                     \
	} while (0)

/* Variable-size kvm_cpuid2 / kvm_msrs: the count inside must match the section length. */
static void *copy_counted(const struct snapshot *snap, uint32_t type, uint32_t inst, size_t hdr,
			  size_t elem, struct fvm_err *err)
{
	const struct snap_section *s = need(snap, type, inst, 0, err);
	uint32_t count;
	void *copy;

	if (!s)
		return NULL;
	if (s->len < hdr) {
		errf(err, "vmstate: section '%s' instance %u is too short",
			 snap_section_name(type), inst);
		return NULL;
	}
	memcpy(&count, s->data, sizeof(count));
	if (count > 4096 || s->len != hdr + (uint64_t)count * elem) {
		errf(err, "vmstate: section '%s' instance %u: %u entries do not fit %llu bytes",
			 snap_section_name(type), inst, count, (unsigned long long)s->len);
		return NULL;
	}
	copy = malloc(s->len);
	if (copy)
		memcpy(copy, s->data, s->len);
	else
		errf(err, "out of memory");
	return copy;
}

static int decode_vcpu(const struct snapshot *snap, uint32_t id, uint32_t xsave_size,
		       struct vcpu_state *v, struct fvm_err *err)
{
	const struct snap_section *xs;

	COPY_FIXED(SNAP_SEC_MP_STATE, id, v->mp);
	COPY_FIXED(SNAP_SEC_REGS, id, v->regs);
	COPY_FIXED(SNAP_SEC_SREGS, id, v->sregs);
	COPY_FIXED(SNAP_SEC_XCRS, id, v->xcrs);
	COPY_FIXED(SNAP_SEC_DEBUGREGS, id, v->debugregs);
	COPY_FIXED(SNAP_SEC_LAPIC, id, v->lapic);
	COPY_FIXED(SNAP_SEC_TSC_KHZ, id, v->tsc_khz);
	if (v->tsc_khz == 0 || v->tsc_khz > TSC_KHZ_MAX) {
		errf(err, "vmstate: section 'tsc_khz' instance %u: %llu kHz is not a TSC "
			 "frequency (1 to %llu)", id, (unsigned long long)v->tsc_khz, TSC_KHZ_MAX);
		goto bad;
	}
	COPY_FIXED(SNAP_SEC_VCPU_EVENTS, id, v->events);
	xs = need(snap, SNAP_SEC_XSAVE, id, xsave_size, err);
	if (!xs)
		goto bad;
	v->xsave_size = xsave_size;
	v->xsave = malloc(xsave_size);
	v->cpuid = copy_counted(snap, SNAP_SEC_CPUID, id, sizeof(struct kvm_cpuid2),
				sizeof(struct kvm_cpuid_entry2), err);
	v->msrs = copy_counted(snap, SNAP_SEC_MSRS, id, sizeof(struct kvm_msrs),
			       sizeof(struct kvm_msr_entry), err);
	if (!v->xsave || !v->cpuid || !v->msrs)
		goto bad;
	memcpy(v->xsave, xs->data, xsave_size);
	return 0;
bad:
	return -EINVAL;
}

/* Is every section one this forkvm restores, at an instance the configuration allows? */
static int check_sections(const struct snapshot *snap, uint32_t nvcpus, struct fvm_err *err)
{
	for (int i = 0; i < snap->state.nsections; i++) {
		const struct snap_section *s = &snap->state.sections[i];
		bool ok;

		switch (s->type) {
		case SNAP_SEC_CPUID:
		case SNAP_SEC_MP_STATE:
		case SNAP_SEC_REGS:
		case SNAP_SEC_SREGS:
		case SNAP_SEC_XSAVE:
		case SNAP_SEC_XCRS:
		case SNAP_SEC_DEBUGREGS:
		case SNAP_SEC_LAPIC:
		case SNAP_SEC_MSRS:
		case SNAP_SEC_VCPU_EVENTS:
		case SNAP_SEC_TSC_KHZ:
			ok = s->instance < nvcpus;
			break;
		case SNAP_SEC_SERIAL:
			ok = s->instance == LAYOUT_SERIAL_PORT;
			break;
		case SNAP_SEC_CONFIG:
		case SNAP_SEC_PIC_MASTER:
		case SNAP_SEC_PIC_SLAVE:
		case SNAP_SEC_IOAPIC:
		case SNAP_SEC_PIT2:
		case SNAP_SEC_CLOCK:
		case SNAP_SEC_VSOCK:
			ok = s->instance == 0;
			break;
		case SNAP_SEC_VIRTIO_MMIO: /* slot 0: vsock (paired below), a disk or the NIC; others:
					    * disks or the NIC */
			ok = s->instance < LAYOUT_VIRTIO_MMIO_SLOTS &&
			     (s->instance == 0 || snap_state_find(&snap->state, SNAP_SEC_BLK, s->instance) ||
			      snap_state_find(&snap->state, SNAP_SEC_NET, s->instance));
			break;
		case SNAP_SEC_BLK:
			ok = s->instance < LAYOUT_VIRTIO_MMIO_SLOTS &&
			     !(s->instance == 0 && snap_state_find(&snap->state, SNAP_SEC_VSOCK, 0)) &&
			     !snap_state_find(&snap->state, SNAP_SEC_NET, s->instance);
			break;
		case SNAP_SEC_NET: /* one slot, one device: not vsock's, not a disk's */
			ok = s->instance < LAYOUT_VIRTIO_MMIO_SLOTS &&
			     !(s->instance == 0 && snap_state_find(&snap->state, SNAP_SEC_VSOCK, 0)) &&
			     !snap_state_find(&snap->state, SNAP_SEC_BLK, s->instance);
			break;
		default: /* unknown types, and 'probe', which no forkvm writes or restores */
			return errmsg(err, -EINVAL,
				      "vmstate: section type %u ('%s') instance %u is not one this "
				 "forkvm restores", s->type, snap_section_name(s->type), s->instance);
		}
		if (!ok) {
			return errmsg(err, -EINVAL,
				      "vmstate: unexpected section '%s' instance %u (%u vCPUs, "
				 "serial port 0x%x, one vsock device in slot 0, disks and a NIC in slots "
				 "0-%d, one device per slot, each virtio_mmio section with its device's)",
				 snap_section_name(s->type),
				 s->instance, nvcpus, LAYOUT_SERIAL_PORT, LAYOUT_VIRTIO_MMIO_SLOTS - 1);
		}
	}
	return 0;
}

/* [gpa, gpa + len) inside one RAM region of the configuration. */
static bool in_ram(const struct snap_config *c, uint64_t gpa, uint64_t len)
{
	for (uint32_t i = 0; i < c->nregions && i < SNAP_CONFIG_MAX_REGIONS; i++) {
		uint64_t start = c->regions[i].gpa, size = c->regions[i].size;

		if (gpa >= start && gpa - start <= size && len <= size - (gpa - start))
			return true;
	}
	return false;
}

/* What virtq_activate will demand of each ready queue when the device is restored. */
int snap_check_queues(const struct snap_config *c, const struct virtio_mmio_regs *r, int nqueues,
		      uint16_t qmax, const char *what, struct fvm_err *err)
{
	for (int q = 0; q < VIRTIO_MMIO_MAX_QUEUES; q++) {
		const struct virtq_state *v = &r->q[q];
		uint64_t n = v->num;

		if (!v->ready)
			continue;
		if (q >= nqueues || n == 0 || n > qmax || (n & (n - 1)) ||
		    (v->desc_gpa & 15) || (v->avail_gpa & 1) || (v->used_gpa & 3) ||
		    !in_ram(c, v->desc_gpa, 16 * n) || !in_ram(c, v->avail_gpa, 6 + 2 * n) ||
		    !in_ram(c, v->used_gpa, 6 + 8 * n)) {
			return errmsg(err, -EINVAL,
				      "vmstate: section 'virtio_mmio': %s queue %d (%llu "
				 "entries, rings at 0x%llx 0x%llx 0x%llx) cannot be restored", what, q,
				 (unsigned long long)n, (unsigned long long)v->desc_gpa,
				 (unsigned long long)v->avail_gpa, (unsigned long long)v->used_gpa);
		}
	}
	return 0;
}

static int check_vsock(const struct snap_machine *m, struct fvm_err *err)
{
	if (m->vsock.cid < 3 || m->vsock.cid >= UINT32_MAX) {
		return errmsg(err, -EINVAL,
			      "vmstate: section 'vsock': guest CID %llu is not valid (3 to %u)",
			 (unsigned long long)m->vsock.cid, UINT32_MAX - 1);
	}
	return snap_check_queues(&m->config, &m->vsock_mmio, VSOCK_QUEUES, VSOCK_QUEUE_MAX, "vsock",
				 err);
}

int snap_decode(const struct snapshot *snap, struct snap_machine *m, struct fvm_err *err)
{
	const struct snap_section *serial, *vsock_sec[2];
	struct cpuid_policy policy;
	struct fvm_err why = FVM_ERR_INIT;

	memset(m, 0, sizeof(*m));
	COPY_FIXED(SNAP_SEC_CONFIG, 0, m->config);
	if (m->config.nvcpus < 1 || m->config.nvcpus > LAYOUT_MAX_VCPUS ||
	    m->config.xsave_size < sizeof(struct kvm_xsave) || m->config.xsave_size > (1u << 20) ||
	    (m->config.guest_kind != SNAP_GUEST_PROBE && m->config.guest_kind != SNAP_GUEST_LINUX)) {
		errf(err, "vmstate: configuration is invalid (vcpus %u, xsave %u bytes, "
			 "guest kind %u)", m->config.nvcpus, m->config.xsave_size, m->config.guest_kind);
		goto bad;
	}
	if (!memchr(m->config.cpu_features, '\0', sizeof(m->config.cpu_features)) ||
	    cpuid_policy_parse(&policy, m->config.cpu_features, &why)) {
		errf(err, "vmstate: configuration: CPU feature policy: %s",
			 memchr(m->config.cpu_features, '\0', sizeof(m->config.cpu_features)) ?
			 why.msg : "not terminated");
		goto bad;
	}
	if (check_sections(snap, m->config.nvcpus, err))
		goto bad;
	m->nvcpus = (int)m->config.nvcpus;
	for (uint32_t i = 0; i < m->config.nvcpus; i++)
		if (decode_vcpu(snap, i, m->config.xsave_size, &m->vcpus[i], err))
			goto bad;
	COPY_FIXED(SNAP_SEC_PIC_MASTER, 0, m->arch.pic_master);
	COPY_FIXED(SNAP_SEC_PIC_SLAVE, 0, m->arch.pic_slave);
	COPY_FIXED(SNAP_SEC_IOAPIC, 0, m->arch.ioapic);
	COPY_FIXED(SNAP_SEC_PIT2, 0, m->arch.pit);
	COPY_FIXED(SNAP_SEC_CLOCK, 0, m->arch.clock);
	serial = snap_state_find(&snap->state, SNAP_SEC_SERIAL, LAYOUT_SERIAL_PORT);
	if (serial) {
		if (serial->len != sizeof(struct serial_regs)) {
			errf(err, "vmstate: section 'serial' instance %u has %llu bytes, "
				 "expected %zu", LAYOUT_SERIAL_PORT, (unsigned long long)serial->len,
				 sizeof(struct serial_regs));
			goto bad;
		}
		memcpy(m->serial, serial->data, serial->len);
		m->has_serial = true;
	}
	/* A vsock device is both sections or neither: half of one is a damaged snapshot. (A
	 * virtio_mmio section in slot 0 belongs to a disk or the NIC there if there is one.) */
	vsock_sec[0] = snap_state_find(&snap->state, SNAP_SEC_VIRTIO_MMIO, 0);
	vsock_sec[1] = snap_state_find(&snap->state, SNAP_SEC_VSOCK, 0);
	if ((snap_state_find(&snap->state, SNAP_SEC_BLK, 0) ||
	     snap_state_find(&snap->state, SNAP_SEC_NET, 0)) && !vsock_sec[1])
		vsock_sec[0] = NULL;
	if (vsock_sec[0] || vsock_sec[1]) {
		COPY_FIXED(SNAP_SEC_VIRTIO_MMIO, 0, m->vsock_mmio);
		COPY_FIXED(SNAP_SEC_VSOCK, 0, m->vsock);
		if (check_vsock(m, err))
			goto bad;
		m->has_vsock = true;
	}
	if (snap_disks_decode(&snap->state, m, err) ||
	    snap_net_decode(&snap->state, m, err))
		goto bad;
	return 0;
bad:
	snap_machine_free(m);
	return -EINVAL;
}

void snap_machine_free(struct snap_machine *m)
{
	for (int i = 0; i < 16; i++)
		vcpu_state_free(&m->vcpus[i]);
}
