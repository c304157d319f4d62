/* Snapshot a running VM to a directory, and rebuild a VM from one. */
#ifndef FORKVM_SNAPSHOT_H
#define FORKVM_SNAPSHOT_H

#include <stdbool.h>
#include <stdint.h>

#include "core/vcpu_state.h"
#include "core/vm_state.h"
#include "devices/virtio_net.h"
#include "devices/vsock.h"
#include "mem/guest_mem.h"
#include "snapshot/snap_config.h"
#include "snapshot/snap_disk.h"
#include "snapshot/snap_format.h"
#include "util/errmsg.h"

struct vm;
struct vm_config;

struct snap_save_opts {
	const char *dir;
	bool force;		/* replace an existing snapshot at dir */
	const char *source;	/* free text for meta.json: VM name or socket */
	const char *parent;	/* parent snapshot (diff layers), or NULL */
	const char *strategy;	/* free text for meta.json, e.g. "full" */
};

struct snap_save_stats {
	uint64_t pause_ns;	/* pause request → every vCPU parked */
	uint64_t paused_ns;	/* first vCPU parked → last back in the guest (0: was paused) */
	uint64_t source_paused_ns; /* pause request → resumed, the control thread's view */
	uint64_t capture_ns;	/* reading vCPU/VM/device state */
	uint64_t write_ns;	/* vmstate + memory + meta, fsync'd and renamed */
	uint64_t vmstate_bytes;
	uint64_t memory_bytes_written;
	uint64_t memory_bytes_by_helper; /* of those, copied by the second writer thread */
};

/* Pause (unless paused), capture, write atomically, resume (if it was running); a failure
 * names its step and file in err. */
int snap_save(struct vm *vm, const struct snap_save_opts *opts, struct snap_save_stats *stats,
	      struct fvm_err *err);

/* Capture the whole VM state into a vmstate image; the VM must be paused. */
int snap_capture(struct vm *vm, struct snap_buf *buf);

/* Everything decoded from a vmstate, validated before any VM is created. */
struct snap_machine {
	struct snap_config config;
	struct vm_arch_state arch;
	int nvcpus;
	struct vcpu_state vcpus[16];
	bool has_serial;
	uint8_t serial[64];
	bool has_vsock; /* virtio-mmio slot 0 + vsock device (connections are not saved) */
	struct virtio_mmio_regs vsock_mmio;
	struct vsock_state vsock;
	int ndisks;	/* virtio-blk disks: transport, chain, base (snap_disk.h) */
	struct snap_disk disks[SNAP_MAX_DISKS];
	bool has_net;	/* a NIC: virtio_mmio + net sections at net_slot (snap_net.c) */
	uint32_t net_slot;
	struct virtio_mmio_regs net_mmio;
	struct virtio_net_state net;
};

int snap_decode(const struct snapshot *snap, struct snap_machine *m, struct fvm_err *err);
void snap_machine_free(struct snap_machine *m);
/* Each ready queue of a saved transport as virtq_activate will demand it (what: "vsock"). */
int snap_check_queues(const struct snap_config *c, const struct virtio_mmio_regs *r, int nqueues,
		      uint16_t qmax, const char *what, struct fvm_err *err);
/* Fail if this host's KVM cannot give the snapshot's CPUID features (names the first one). */
int snap_check_host(const struct snap_machine *m, const struct kvm_cpuid2 *supported,
		    struct fvm_err *err);

/* The NIC in snapshots (snap_net.c). Capture: its transport and device sections. */
void snap_net_capture(struct vm *vm, struct snap_buf *buf);
/* snap_decode: the one NIC (net + its virtio_mmio section) into m; one message in err. */
int snap_net_decode(const struct snap_state *state, struct snap_machine *m, struct fvm_err *err);
/* Restore: the snapshot's NIC slot and MAC on the restoring process's TAP (cfg->net); a
 * snapshot with a NIC and a cfg without a network is an error naming the step. */
int snap_net_config(const struct snap_machine *m, struct vm_config *cfg, const char *what);
/* After the vCPUs: the NIC's transport and device state. */
int snap_net_restore(struct vm *vm, const struct snap_machine *m);

/* Apply a decoded machine to a created VM: arch state, devices, vCPUs (not started). */
int vm_restore_machine(struct vm *vm, const struct snap_machine *m, const char *what);

/*
 * Called once guest RAM exists and before anything reads or writes it (diff layers, device and
 * vCPU state: KVM itself reads guest memory when kvmclock MSRs are set). A lazily populated
 * backing (uffd) attaches its page server here; otherwise the first such access would wait
 * for a server that is not there yet.
 */
struct restore_hooks {
	int (*mem_ready)(struct vm *vm, void *arg);
	void *arg;
};

/* Create the VM from a decoded snapshot on the chosen backing; vCPUs restored, not started.
 * base->net.tap_fd (with net.present) belongs to the call, as with vm_create. */
int vm_restore(struct vm *vm, const struct vm_config *base, const struct snapshot *snap,
	       const struct snap_machine *m, enum guest_mem_backing backing,
	       const struct restore_hooks *hooks);

#endif
