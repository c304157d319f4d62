/* Decode and validate every vmstate section before a VM is created from it. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/vm.h"
#include "snapshot/snapshot.h"
#include "x86/layout.h"

static const struct snap_section *need(const struct snapshot *snap, uint32_t type, uint32_t inst,
				       uint64_t len, char *err, size_t errlen)
{
	const struct snap_section *s = snap_state_find(&snap->state, type, inst);

	if (!s)
		snprintf(err, errlen, "vmstate: section '%s' instance %u is missing",
			 snap_section_name(type), inst);
	else if (len && s->len != len)
		snprintf(err, errlen, "vmstate: section '%s' instance %u has %llu bytes, expected %llu",
			 snap_section_name(type), inst, (unsigned long long)s->len,
			 (unsigned long long)len);
	else
		return s;
	return NULL;
}

#define COPY_FIXED(type, inst, dst)                                                       \
	do {                                                                               \
		const struct snap_section *s_ = need(snap, type, inst, sizeof(dst), err, errlen); \
		if (!s_)                                                                   \
			goto bad;                                                          \
		memcpy(&(dst), s_->data, sizeof(dst));                                     \
	} while (0)

/* Variable-size kvm_cpuid2 / kvm_msrs: the count inside must match the section length. */
static void *copy_counted(const struct snapshot *snap, uint32_t type, uint32_t inst, size_t hdr,
			  size_t elem, char *err, size_t errlen)
{
	const struct snap_section *s = need(snap, type, inst, 0, err, errlen);
	uint32_t count;
	void *copy;

	if (!s)
		return NULL;
	if (s->len < hdr) {
		snprintf(err, errlen, "vmstate: section '%s' instance %u is too short",
			 snap_section_name(type), inst);
		return NULL;
	}
	memcpy(&count, s->data, sizeof(count));
	if (count > 4096 || s->len != hdr + (uint64_t)count * elem) {
		snprintf(err, errlen, "vmstate: section '%s' instance %u: %u entries do not fit %llu bytes",
			 snap_section_name(type), inst, count, (unsigned long long)s->len);
		return NULL;
	}
	copy = malloc(s->len);
	if (copy)
		memcpy(copy, s->data, s->len);
	else
		snprintf(err, errlen, "out of memory");
	return copy;
}

static int decode_vcpu(const struct snapshot *snap, uint32_t id, uint32_t xsave_size,
		       struct vcpu_state *v, char *err, size_t errlen)
{
	const struct snap_section *xs;

	COPY_FIXED(SNAP_SEC_MP_STATE, id, v->mp);
	COPY_FIXED(SNAP_SEC_REGS, id, v->regs);
	COPY_FIXED(SNAP_SEC_SREGS, id, v->sregs);
	COPY_FIXED(SNAP_SEC_XCRS, id, v->xcrs);
	COPY_FIXED(SNAP_SEC_DEBUGREGS, id, v->debugregs);
	COPY_FIXED(SNAP_SEC_LAPIC, id, v->lapic);
	COPY_FIXED(SNAP_SEC_TSC_KHZ, id, v->tsc_khz);
	COPY_FIXED(SNAP_SEC_VCPU_EVENTS, id, v->events);
	xs = need(snap, SNAP_SEC_XSAVE, id, xsave_size, err, errlen);
	if (!xs)
		goto bad;
	v->xsave_size = xsave_size;
	v->xsave = malloc(xsave_size);
	v->cpuid = copy_counted(snap, SNAP_SEC_CPUID, id, sizeof(struct kvm_cpuid2),
				sizeof(struct kvm_cpuid_entry2), err, errlen);
	v->msrs = copy_counted(snap, SNAP_SEC_MSRS, id, sizeof(struct kvm_msrs),
			       sizeof(struct kvm_msr_entry), err, errlen);
	if (!v->xsave || !v->cpuid || !v->msrs)
		goto bad;
	memcpy(v->xsave, xs->data, xsave_size);
	return 0;
bad:
	return -EINVAL;
}

int snap_decode(const struct snapshot *snap, struct snap_machine *m, char *err, size_t errlen)
{
	const struct snap_section *serial, *vsock_sec[2];

	memset(m, 0, sizeof(*m));
	COPY_FIXED(SNAP_SEC_CONFIG, 0, m->config);
	if (m->config.nvcpus < 1 || m->config.nvcpus > LAYOUT_MAX_VCPUS ||
	    m->config.xsave_size < sizeof(struct kvm_xsave) || m->config.xsave_size > (1u << 20) ||
	    (m->config.guest_kind != SNAP_GUEST_PROBE && m->config.guest_kind != SNAP_GUEST_LINUX)) {
		snprintf(err, errlen, "vmstate: configuration is invalid (vcpus %u, xsave %u bytes)",
			 m->config.nvcpus, m->config.xsave_size);
		goto bad;
	}
	m->nvcpus = (int)m->config.nvcpus;
	for (uint32_t i = 0; i < m->config.nvcpus; i++)
		if (decode_vcpu(snap, i, m->config.xsave_size, &m->vcpus[i], err, errlen))
			goto bad;
	COPY_FIXED(SNAP_SEC_PIC_MASTER, 0, m->arch.pic_master);
	COPY_FIXED(SNAP_SEC_PIC_SLAVE, 0, m->arch.pic_slave);
	COPY_FIXED(SNAP_SEC_IOAPIC, 0, m->arch.ioapic);
	COPY_FIXED(SNAP_SEC_PIT2, 0, m->arch.pit);
	COPY_FIXED(SNAP_SEC_CLOCK, 0, m->arch.clock);
	serial = snap_state_find(&snap->state, SNAP_SEC_SERIAL, LAYOUT_SERIAL_PORT);
	if (serial && serial->len <= sizeof(m->serial)) {
		memcpy(m->serial, serial->data, serial->len);
		m->has_serial = true;
	}
	vsock_sec[0] = snap_state_find(&snap->state, SNAP_SEC_VIRTIO_MMIO, 0);
	vsock_sec[1] = snap_state_find(&snap->state, SNAP_SEC_VSOCK, 0);
	if (vsock_sec[0] && vsock_sec[1] && vsock_sec[0]->len == sizeof(m->vsock_mmio) &&
	    vsock_sec[1]->len == sizeof(m->vsock)) {
		memcpy(&m->vsock_mmio, vsock_sec[0]->data, sizeof(m->vsock_mmio));
		memcpy(&m->vsock, vsock_sec[1]->data, sizeof(m->vsock));
		m->has_vsock = true;
	}
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
