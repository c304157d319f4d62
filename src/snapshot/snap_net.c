/* The NIC in snapshots: capture, strict decoding (restore and `snapshot verify`), and restore
 * onto the restoring process's TAP (docs/NET.md, docs/SNAPSHOT.md). */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "util/errmsg.h"
#include "util/log.h"
#include "core/vm.h"
#include "devices/virtio_net.h"
#include "snapshot/snapshot.h"

void snap_net_capture(struct vm *vm, struct snap_buf *buf)
{
	struct virtio_mmio *m = virtio_net_transport(vm->net);
	struct virtio_mmio_regs regs;
	struct virtio_net_state st;

	virtio_mmio_save(m, &regs);
	virtio_net_save(vm->net, &st);
	snap_buf_add(buf, SNAP_SEC_VIRTIO_MMIO, (uint32_t)m->slot, &regs, sizeof(regs));
	snap_buf_add(buf, SNAP_SEC_NET, (uint32_t)m->slot, &st, sizeof(st));
}

/* Features a restored driver holds must be ones this device offers, hanging together. */
static int check_features(const struct snap_machine *m, struct fvm_err *err)
{
	uint64_t f = m->net_mmio.driver_features, offered = VIRTIO_NET_FEATURES | VIRTIO_F_VERSION_1;

	if (!(m->net_mmio.status & VIRTIO_STATUS_FEATURES_OK))
		return 0; /* no driver had finished negotiating */
	if ((f & ~offered) || !(f & VIRTIO_F_VERSION_1) || !virtio_net_features_valid(f)) {
		return errmsg(err, -EINVAL,
			      "vmstate: section 'virtio_mmio' instance %u: the NIC's driver "
			 "holds features 0x%llx, which this forkvm's virtio-net does not offer together "
			 "(0x%llx)", m->net_slot, (unsigned long long)f, (unsigned long long)offered);
	}
	return 0;
}

int snap_net_decode(const struct snap_state *state, struct snap_machine *m, struct fvm_err *err)
{
	const struct snap_section *net = NULL, *mmio;
	struct fvm_err why = FVM_ERR_INIT;

	for (int i = 0; i < state->nsections; i++) {
		const struct snap_section *s = &state->sections[i];

		if (s->type != SNAP_SEC_NET)
			continue;
		if (net) {
			return errmsg(err, -EINVAL,
				      "vmstate: sections 'net' instances %u and %u: a VM has one "
				 "NIC", net->instance, s->instance);
		}
		net = s;
	}
	if (!net)
		return 0;
	mmio = snap_state_find(state, SNAP_SEC_VIRTIO_MMIO, net->instance);
	if (net->len != sizeof(m->net)) {
		return errmsg(err, -EINVAL,
			      "vmstate: section 'net' instance %u has %llu bytes, expected %zu",
			      net->instance, (unsigned long long)net->len, sizeof(m->net));
	}
	if (!mmio || mmio->len != sizeof(m->net_mmio)) {
		return errmsg(err, -EINVAL,
			      "vmstate: section 'virtio_mmio' instance %u (the NIC's transport) "
			 "is %s", net->instance, mmio ? "of the wrong size" : "missing");
	}
	memcpy(&m->net, net->data, sizeof(m->net));
	memcpy(&m->net_mmio, mmio->data, sizeof(m->net_mmio));
	m->net_slot = net->instance;
	if (virtio_net_state_check(&m->net, &why)) {
		return errmsg(err, -EINVAL, "vmstate: section 'net' instance %u: %s", net->instance,
			      why.msg);
	}
	if (check_features(m, err) ||
	    snap_check_queues(&m->config, &m->net_mmio, VIRTIO_NET_QUEUES, VIRTIO_NET_QUEUE_MAX,
			      "NIC", err))
		return -EINVAL;
	m->has_net = true;
	return 0;
}

int snap_net_config(const struct snap_machine *m, struct vm_config *cfg, const char *what)
{
	char mac[18];

	if (!m->has_net) {
		if (cfg->net.present) {
			log_warn("%s: the snapshot has no NIC; the TAP given for one is closed unused", what);
			if (cfg->net.tap_fd >= 0)
				close(cfg->net.tap_fd);
			memset(&cfg->net, 0, sizeof(cfg->net));
		}
		return 0;
	}
	virtio_net_format_mac(m->net.mac, mac, sizeof(mac));
	if (!cfg->net.present)
		return log_errno(-ENODEV, "%s: restoring its NIC (virtio-net in virtio-mmio slot %u, MAC "
				 "%s): this process has no network for it; give it a TAP (--tap IFNAME) "
				 "or a network (--net)", what, m->net_slot, mac);
	/* The guest's driver knows the NIC by its slot and MAC: both come from the snapshot. */
	memcpy(cfg->net.mac, m->net.mac, sizeof(cfg->net.mac));
	cfg->net.fixed_slot = true;
	cfg->net.slot = (int)m->net_slot;
	return 0;
}

int snap_net_restore(struct vm *vm, const struct snap_machine *m)
{
	struct virtio_mmio *t = vm->net ? virtio_net_transport(vm->net) : NULL;

	if (!t || (uint32_t)t->slot != m->net_slot)
		return log_errno(-ENODEV, "restoring the NIC of virtio-mmio slot %u: this VM has %s",
				 m->net_slot, t ? "its NIC in another slot" : "no NIC");
	if (virtio_mmio_restore(t, &m->net_mmio) || virtio_net_restore(vm->net, &m->net))
		return log_errno(-EINVAL, "restoring the NIC of virtio-mmio slot %u", m->net_slot);
	return 0;
}
