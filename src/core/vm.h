/* One microVM per process: KVM VM, guest RAM, vCPU threads, buses and devices. */
#ifndef FORKVM_VM_H
#define FORKVM_VM_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "core/bus.h"
#include "core/kvm.h"
#include "core/vcpu.h"
#include "mem/guest_mem.h"
#include "mem/thp_repair.h"
#include "util/clock.h"
#include "x86/cpuid.h"

struct serial;
struct probe_dev;
struct virtio_mmio;
struct vsock;
struct virtio_blk;
struct virtio_net;
struct disk_base_id;

#define VMGENID_SIZE 16

/* The VM generation ID's state (devices/vmgenid.c). Only Linux guests have the device; the
 * probe guest has no ACPI. */
struct vmgenid {
	bool present;			/* the guest's DSDT declares VGEN + GED (docs/LINUX.md) */
	bool renew;			/* restored or branched: new ID + notify in vm_start */
	uint8_t id[VMGENID_SIZE];	/* the ID now in guest RAM at LAYOUT_VMGENID */
};

#define VM_MAX_DISKS 4

/*
 * A virtio-net NIC (docs/NET.md): a TAP device the VMM already opened (IFF_TAP | IFF_NO_PI |
 * IFF_VNET_HDR, non-blocking) in the VM's network namespace (src/net/), and the MAC the guest
 * sees. present false (a zeroed config): no NIC. vm_create (and vm_restore) own tap_fd from
 * the call on: the NIC closes it, and so does a vm_create that fails. tap_fd -1: the NIC
 * starts detached (link down to the guest) until virtio_net_set_tap gives it a TAP.
 */
struct vm_net_config {
	bool present;
	int tap_fd;
	uint8_t mac[6];
	bool fixed_slot;	/* restores: the snapshot's virtio-mmio slot; else the first free */
	int slot;
};

/* A virtio-blk disk (docs/DISK.md): a base image, a sealed chain, a private writable top. */
struct vm_disk_config {
	const char *base;		/* raw image, never written */
	bool read_only;			/* no writable top: the guest sees a read-only disk */
	int slot;			/* virtio-mmio slot; -1: the first free one */
	const char *serial;		/* GET_ID answer; NULL: the base's file name */
	/* A restored chain: sealed layers oldest first, the ids and base they must carry. */
	int nlayers;
	const char *const *layers;
	const uint8_t (*layer_ids)[16];
	const struct disk_base_id *base_id;
};

struct vm_config {
	uint64_t mem_size;
	int nvcpus;
	struct guest_mem_opts mem;	/* backing and its options; size copied from mem_size */
	struct cpuid_policy cpuid_policy;
	const char *console_path;	/* serial output file; NULL = stdout */
	const char *kvm_path;		/* default /dev/kvm */
	bool start_paused;		/* vCPU threads park at once; `resume` runs them */
	/* vm_create leaves the device threads unstarted for vm_start_devices: a restore whose
	 * mem_ready hook enters the jail, which needs a single-threaded process. */
	bool defer_device_threads;
	/* A restore: each vCPU's CPUID comes with its saved state (vcpu_restore_state sets it
	 * first), so vm_create does not set the policy's before (~70 us per vCPU, per child). */
	bool cpuid_from_state;
	const char *vsock_path;		/* host side of virtio-vsock (Unix socket); NULL = none */
	uint32_t vsock_cid;		/* guest CID (default 3) */
	struct vm_disk_config disks[VM_MAX_DISKS];
	int ndisks;
	const char *disk_top_prefix;	/* writable tops: PREFIX.disk<slot>.ovl (the socket path) */
	struct vm_net_config net;	/* the NIC, if net.present */
	/* cow branch children: guest RAM and the /dev/kvm handle inherited across fork(). */
	const struct guest_mem *inherit_mem;
	const struct kvm *inherit_kvm;
};

enum vm_end_reason {
	VM_END_NONE,
	VM_END_STOPPED,		/* stop requested by the user */
	VM_END_GUEST_RESET,	/* triple fault or reset request */
	VM_END_GUEST_POWEROFF,	/* the guest asked to power off */
	VM_END_ERROR,		/* the VMM hit an error it cannot continue from */
};

struct vm {
	struct vm_config cfg;
	struct kvm kvm;
	int fd;
	struct guest_mem mem;
	int nvcpus;
	struct vcpu *vcpus;
	struct io_bus pio, mmio;
	struct serial *serial;
	struct probe_dev *probe;
	struct virtio_mmio *virtio[8];	/* slot i at LAYOUT_VIRTIO_MMIO_BASE + i * 4 KiB */
	int nvirtio;
	struct vsock *vsock;
	struct virtio_blk *blk[VM_MAX_DISKS];
	int nblk;
	struct virtio_net *net;	/* the NIC, if cfg.net.present (devices/virtio_net.h) */
	bool probe_guest;	/* the probe guest runs (its mailboxes are attached) */
	struct vmgenid vmgenid;	/* Linux guests: the generation ID (devices/vmgenid.c) */
	int console_fd;

	/* Run control, all under lock; cond is broadcast on every change. */
	pthread_mutex_t lock;
	pthread_cond_t cond;
	bool started;
	bool pause_requested;
	bool stop_requested;
	int parked;		/* vCPUs parked for a pause */
	int live_threads;	/* vCPU threads not yet exited */
	enum vm_end_reason end_reason;
	char end_detail[256];
	int end_eventfd;	/* readable once the VM has ended; the control loop polls it */

	uint64_t pause_count;
	uint64_t last_pause_ns;	/* request → all vCPUs parked */
	uint64_t first_parked_ns; /* the last pause: when its first vCPU left the guest */
	uint64_t all_running_ns;  /* ... and when its last vCPU went back (0: not yet) */
	uint64_t start_ns;	/* CLOCK_MONOTONIC when vCPUs started */

	/* Huge pages put back after cow forks (mem/thp_repair.h): NULL until this VMM forks. */
	struct thp_repair *thp;
};

/* Creating, booting, starting and destroying a VM: builder/builder.h. */
/* Park every vCPU; on return no vCPU runs guest code or touches guest memory. */
int vm_pause(struct vm *vm);
int vm_resume(struct vm *vm);
/*
 * vm_resume, then wait (up to 1 s) until every vCPU is back in the guest. Returns the pause
 * window the guest saw: its first vCPU parked → its last vCPU unparked, in ns; 0 if the VM
 * ended or a vCPU did not come back in time. The kick latency before the first vCPU stops
 * (the guest still runs) is not in it: that is vm->last_pause_ns.
 */
uint64_t vm_resume_window(struct vm *vm);
bool vm_is_paused(struct vm *vm);
/* One line per vCPU into buf (pauses and resumes the VM): exits, mp_state, RIP, IF, pending
 * events; or which vCPU threads did not park. For the error of a guest that stopped answering. */
void vm_describe_vcpus(struct vm *vm, char *buf, size_t len);
/* Ask the VM to end (vCPU threads exit); idempotent, first reason wins. */
void vm_request_end(struct vm *vm, enum vm_end_reason reason, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
void vm_request_end_locked(struct vm *vm, enum vm_end_reason reason, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
/* Join all vCPU threads after an end request. */
void vm_join(struct vm *vm);

const char *vm_end_reason_name(enum vm_end_reason reason);

#endif
