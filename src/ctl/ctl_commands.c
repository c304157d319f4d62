/* The control commands: the table that drives dispatch, and their handlers. */
#include <errno.h>
#include <inttypes.h>
#include <string.h>
#include <stdlib.h>
#include <unistd.h>

#include "core/vm.h"
#include "core/vm_state.h"
#include "util/base64.h"
#include "ctl/ctl.h"
#include "ctl/ctl_server.h"
#include "devices/probe_dev.h"
#include "devices/virtio_blk.h"
#include "devices/virtio_net.h"
#include "disk/disk.h"
#include "devices/vmgenid.h"
#include "fork/branch.h"
#include "jail/scope.h"
#include "net/net.h"
#include "util/clock.h"
#include "util/page.h"
#include "x86/layout.h"

/* Each disk: where the guest finds it, its base, its private top and chain, its counters. */
static json_t *disks_json(struct vm *vm)
{
	json_t *list = json_array();

	for (int i = 0; i < vm->nblk; i++) {
		struct virtio_blk *b = vm->blk[i];
		const struct disk *d = b->disk;

		pthread_mutex_lock(&b->mmio->lock);
		json_array_append_new(list, json_pack(
			"{s:i,s:I,s:s,s:I,s:s?,s:i,s:b,s:I,s:I,s:I,s:I,s:I,s:I}", "slot", b->mmio->slot,
			"mmio", (json_int_t)b->mmio->base, "base", d->base_path, "bytes",
			(json_int_t)d->size, "top", d->has_top ? d->layers[d->nlayers - 1]->path : NULL,
			"sealed_layers", disk_nsealed(d), "read_only", !d->has_top, "reads",
			(json_int_t)b->stats.reads, "writes", (json_int_t)b->stats.writes, "flushes",
			(json_int_t)b->stats.flushes, "bytes_read", (json_int_t)b->stats.bytes_read,
			"bytes_written", (json_int_t)b->stats.bytes_written, "errors",
			(json_int_t)b->stats.errors));
		pthread_mutex_unlock(&b->mmio->lock);
	}
	return list;
}

/* The NIC (docs/NET.md, "Device"): where the guest finds it, its TAP, link, features, thread. */
static json_t *nic_json(struct virtio_net *n)
{
	struct virtio_net_info in;
	char mac[18];

	virtio_net_get_info(n, &in);
	virtio_net_format_mac(in.mac, mac, sizeof(mac));
	return json_pack("{s:i,s:I,s:s,s:s?,s:b,s:b,s:b,s:I,s:i,s:{s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,"
			 "s:I,s:I}}", "slot", in.slot, "mmio", (json_int_t)in.mmio, "mac", mac, "tap",
			 in.attached ? in.ifname : NULL, "attached", in.attached, "link_up",
			 (in.status & VIRTIO_NET_S_LINK_UP) != 0, "announce",
			 (in.status & VIRTIO_NET_S_ANNOUNCE) != 0, "driver_features",
			 (json_int_t)in.driver_features, "tid", (int)in.tid, "stats", "rx_frames",
			 (json_int_t)in.stats.rx_frames, "rx_bytes", (json_int_t)in.stats.rx_bytes,
			 "rx_dropped", (json_int_t)in.stats.rx_dropped, "tx_frames",
			 (json_int_t)in.stats.tx_frames, "tx_bytes", (json_int_t)in.stats.tx_bytes,
			 "tx_dropped", (json_int_t)in.stats.tx_dropped, "tx_errors",
			 (json_int_t)in.stats.tx_errors, "ctrl_cmds", (json_int_t)in.stats.ctrl_cmds,
			 "announces", (json_int_t)in.stats.announces, "malformed",
			 (json_int_t)in.stats.malformed);
}

/* Huge pages put back after cow forks (mem/thp_repair.h): the last finished pass. */
static json_t *thp_status(struct vm *vm)
{
	struct thp_repair_report r;

	thp_repair_report(thp_repair_get(&vm->thp), &r);
	return json_pack("{s:b,s:s?,s:I,s:f,s:{s:i,s:i,s:i,s:i}}", "pending", r.pending,
			 "unavailable", r.unavailable ? r.why : NULL, "passes", (json_int_t)r.passes,
			 "last_pass_ms", (double)r.pass_ns / 1e6, "last", "huge", (int)r.last.huge,
			 "shared", (int)r.last.shared, "sparse", (int)r.last.sparse, "failed",
			 (int)r.last.failed);
}

static json_t *cmd_status(struct ctl_server *srv, struct ctl_request *req)
{
	struct vm *vm = ctl_vm(srv);
	json_t *reply = ctl_reply_ok(), *vcpus = json_array();
	bool paused = vm_is_paused(vm);

	/* A long operation running off the loop ("branch", "snapshot"), or null. */
	json_object_set_new(reply, "busy", srv->busy ? json_string(srv->busy) : json_null());

	for (int i = 0; i < vm->nvcpus; i++) {
		struct vcpu *v = &vm->vcpus[i];
		struct probe_mailbox *mb = guest_mem_ptr(&vm->mem, LAYOUT_PROBE_MAILBOX + i * PAGE_4K,
							 sizeof(*mb));
		json_t *o = json_pack("{s:i,s:I,s:I}", "id", i, "exits_io", (json_int_t)v->stats.exits_io,
				      "exits_mmio", (json_int_t)v->stats.exits_mmio);
		if (mb && mb->magic == PROBE_MAGIC) {
			json_object_set_new(o, "probe_counter", json_integer((json_int_t)mb->counter));
			json_object_set_new(o, "probe_dirty_active", json_boolean(mb->dirty_active));
		}
		json_array_append_new(vcpus, o);
	}
	json_object_set_new(reply, "state", json_string(paused ? "paused" : "running"));
	json_object_set_new(reply, "pid", json_integer(getpid()));
	json_object_set_new(reply, "mem_bytes", json_integer((json_int_t)vm->mem.size));
	json_object_set_new(reply, "backing", json_string(guest_mem_backing_name(vm->mem.backing)));
	json_object_set_new(reply, "uptime_ms",
			    json_integer((json_int_t)((monotonic_ns() - vm->start_ns) / 1000000)));
	json_object_set_new(reply, "pause_count", json_integer((json_int_t)vm->pause_count));
	json_object_set_new(reply, "last_pause_us", json_real((double)vm->last_pause_ns / 1e3));
	json_object_set_new(reply, "thp_repair", thp_status(vm));
	/* its signals reach only itself and the VMs it makes (jail/scope.h) */
	json_object_set_new(reply, "signals_scoped", json_boolean(jail_signals_scoped()));
	json_object_set_new(reply, "vcpus", vcpus);
	if (vm->nblk)
		json_object_set_new(reply, "disks", disks_json(vm));
	if (vm->net)
		json_object_set_new(reply, "nic", nic_json(vm->net));
	if (vm->vmgenid.present) {
		char hex[VMGENID_HEX_LEN + 1];

		vmgenid_hex(vm->vmgenid.id, hex);
		json_object_set_new(reply, "vmgenid", json_string(hex));
	}
	/* The host side of its network (docs/NET.md): mode, addresses, published ports. */
	if (net_current())
		json_object_set_new(reply, "net", net_status_json(net_current()));
	return reply;
}

static json_t *cmd_pause(struct ctl_server *srv, struct ctl_request *req)
{
	struct vm *vm = ctl_vm(srv);
	int err = vm_pause(vm);

	if (err == -EALREADY)
		return ctl_reply_error("VM is already paused");
	if (err)
		return ctl_reply_error("pause failed: %s", strerror(-err));
	json_t *reply = ctl_reply_ok();
	json_object_set_new(reply, "pause_us", json_real((double)vm->last_pause_ns / 1e3));
	return reply;
}

/* What each vCPU is doing (vm_describe_vcpus): a VM that stopped answering, looked at. */
static json_t *cmd_vcpus(struct ctl_server *srv, struct ctl_request *req)
{
	char text[4096];
	json_t *reply;

	vm_describe_vcpus(ctl_vm(srv), text, sizeof(text));
	reply = ctl_reply_ok();
	json_object_set_new(reply, "vcpus", json_string(text));
	return reply;
}

/*
 * kvmclock and vCPU 0's guest TSC, read back to back while briefly paused: a restored clone must
 * keep the source's distance between them (core/vm_state.h), and this shows whether it did.
 */
static json_t *cmd_clock(struct ctl_server *srv, struct ctl_request *req)
{
	struct vm *vm = ctl_vm(srv);
	uint64_t clock = 0, tsc = 0, spread = 0;
	int err = vm_pause(vm), khz;
	json_t *reply;

	if (err && err != -EALREADY)
		return ctl_reply_error("clock: pausing the VM: %s", strerror(-err));
	khz = vm_clock_read(vm, &clock, &tsc, &spread);
	if (!err)
		vm_resume(vm);
	if (khz < 0)
		return ctl_reply_error("clock: reading kvmclock and the TSC: %s", strerror(-khz));
	reply = ctl_reply_ok();
	json_object_set_new(reply, "kvmclock_ns", json_integer((json_int_t)clock));
	json_object_set_new(reply, "tsc", json_integer((json_int_t)tsc));
	json_object_set_new(reply, "tsc_khz", json_integer(khz));
	json_object_set_new(reply, "spread_ns", json_integer((json_int_t)spread));
	return reply;
}

static json_t *cmd_resume(struct ctl_server *srv, struct ctl_request *req)
{
	if (vm_resume(ctl_vm(srv)) == -EALREADY)
		return ctl_reply_error("VM is not paused");
	return ctl_reply_ok();
}

static json_t *cmd_stop(struct ctl_server *srv, struct ctl_request *req)
{
	vm_request_end(ctl_vm(srv), VM_END_STOPPED, "stop requested");
	return ctl_reply_ok();
}

static json_t *cmd_memhash(struct ctl_server *srv, struct ctl_request *req)
{
	struct vm *vm = ctl_vm(srv);
	uint64_t gpa = ctl_req_u64(req, "gpa", 0), len = ctl_req_u64(req, "len", 0);
	const uint8_t *host = guest_mem_ptr(&vm->mem, gpa, len);
	char hex[32];

	if (!host || len == 0 || (gpa | len) % PAGE_4K)
		return ctl_reply_error("range 0x%" PRIx64 "+0x%" PRIx64
				       " is not page aligned inside one RAM region", gpa, len);
	snprintf(hex, sizeof(hex), "0x%016" PRIx64, probe_hash_memory(host, len));
	json_t *reply = ctl_reply_ok();
	json_object_set_new(reply, "checksum", json_string(hex));
	return reply;
}

/* Raw guest RAM for tests and debugging: base64 of at most 64 KiB. */
static json_t *cmd_peek(struct ctl_server *srv, struct ctl_request *req)
{
	struct vm *vm = ctl_vm(srv);
	uint64_t gpa = ctl_req_u64(req, "gpa", 0), len = ctl_req_u64(req, "len", 0);
	const uint8_t *host = guest_mem_ptr(&vm->mem, gpa, len);
	json_t *reply;
	char *b64;

	if (!host || len == 0 || len > 65536)
		return ctl_reply_error("range 0x%" PRIx64 "+0x%" PRIx64
				       " is not 1..65536 bytes inside one RAM region", gpa, len);
	b64 = malloc(base64_encoded_size(len));
	if (b64)
		base64_encode(host, len, b64);
	if (!b64)
		return ctl_reply_error("out of memory");
	reply = ctl_reply_ok();
	json_object_set_new(reply, "data", json_string(b64));
	free(b64);
	return reply;
}

static json_t *cmd_probe(struct ctl_server *srv, struct ctl_request *req, uint32_t cmd)
{
	struct probe_request preq = { .cmd = cmd };

	switch (cmd) {
	case PROBE_CMD_PING:
		preq.arg[0] = ctl_req_u64(req, "nonce", 0x1234);
		break;
	case PROBE_CMD_FILL:
		preq.arg[2] = ctl_req_u64(req, "seed", 0);
		/* fall through */
	case PROBE_CMD_CHECKSUM:
		preq.arg[0] = ctl_req_u64(req, "gpa", 0);
		preq.arg[1] = ctl_req_u64(req, "len", 0);
		break;
	case PROBE_CMD_VSOCK_LISTEN:
		/* The probe drives whatever answers at mmio: without our vsock device there (no
		 * --vsock, or another address) it would fault and take the guest down. */
		if (!srv->vm->vsock || !srv->vm->virtio[0])
			return ctl_reply_error("vsock_listen: this VM has no vsock device (start it with "
					       "--vsock PATH)");
		if (ctl_req_u64(req, "mmio", 0) != 0 &&
		    ctl_req_u64(req, "mmio", 0) != LAYOUT_VIRTIO_MMIO_BASE)
			return ctl_reply_error("vsock_listen: field 'mmio' must be 0 or 0x%llx (the vsock "
					       "device's MMIO window), not 0x%" PRIx64,
					       (unsigned long long)LAYOUT_VIRTIO_MMIO_BASE,
					       ctl_req_u64(req, "mmio", 0));
		preq.arg[0] = ctl_req_u64(req, "port", 0);
		preq.arg[1] = ctl_req_u64(req, "area", 16ULL << 20);
		preq.arg[2] = ctl_req_u64(req, "mmio", 0);
		break;
	case PROBE_CMD_BLK_IO: {
		/* The probe drives whatever answers at mmio: only a disk's window is safe. */
		uint64_t mmio = ctl_req_u64(req, "mmio", srv->vm->nblk ? srv->vm->blk[0]->mmio->base : 0);
		bool found = false;
		for (int i = 0; i < srv->vm->nblk; i++)
			found |= srv->vm->blk[i]->mmio->base == mmio;
		if (!found)
			return ctl_reply_error("blk_io: this VM has no virtio-blk device at 0x%" PRIx64
					       " (start it with --disk PATH)", mmio);
		preq.arg[0] = ctl_req_u64(req, "type", 0);
		preq.arg[1] = ctl_req_u64(req, "sector", 0);
		preq.arg[2] = ctl_req_u64(req, "buf", 0);
		preq.arg[3] = ctl_req_u64(req, "len", 0);
		preq.arg[4] = ctl_req_u64(req, "area", 12ULL << 20);
		preq.arg[5] = mmio;
		break;
	}
	case PROBE_CMD_NET_UP: {
		/* The probe drives whatever answers at mmio: only the NIC's window is safe. */
		struct virtio_mmio *t = srv->vm->net ? virtio_net_transport(srv->vm->net) : NULL;
		uint64_t mmio = ctl_req_u64(req, "mmio", t ? t->base : 0);

		if (!t || mmio != t->base)
			return ctl_reply_error("net_up: this VM has no NIC at 0x%" PRIx64 " (start it with "
					       "--tap IFNAME)", mmio);
		preq.arg[0] = ctl_req_u64(req, "area", 20ULL << 20);
		preq.arg[1] = mmio;
		preq.arg[2] = ctl_req_u64(req, "features", VIRTIO_NET_FEATURES);
		preq.arg[3] = ctl_req_u64(req, "rx_buffers", PROBE_NET_QN);
		preq.arg[4] = ctl_req_u64(req, "rx_size", 0);
		break;
	}
	case PROBE_CMD_NET_SEND:
	case PROBE_CMD_NET_RECV:
	case PROBE_CMD_NET_STATS:
		if (!srv->vm->net)
			return ctl_reply_error("%s: this VM has no NIC (start it with --tap IFNAME)",
					       probe_cmd_name(cmd));
		if (cmd == PROBE_CMD_NET_SEND) {
			preq.arg[0] = ctl_req_u64(req, "count", 1);
			preq.arg[1] = ctl_req_u64(req, "len", 0);
			preq.arg[2] = ctl_req_u64(req, "seed", 0);
			preq.arg[3] = ctl_req_u64(req, "ethertype", 0);
		} else if (cmd == PROBE_CMD_NET_RECV) {
			preq.arg[0] = ctl_req_u64(req, "buf", 0);
			preq.arg[1] = ctl_req_u64(req, "len", 0);
			preq.arg[2] = ctl_req_u64(req, "post", PROBE_NET_QN);
			preq.arg[3] = ctl_req_u64(req, "max", 0);
		}
		break;
	case PROBE_CMD_DIRTY:
		preq.arg[0] = ctl_req_u64(req, "gpa", LAYOUT_PROBE_WORK);
		preq.arg[1] = ctl_req_u64(req, "pages", 0);
		preq.arg[2] = ctl_req_u64(req, "stride", 1);
		preq.arg[3] = ctl_req_u64(req, "seed", 1);
		break;
	}
	return ctl_probe_submit(srv, req, (int)ctl_req_u64(req, "vcpu", 0), &preq);
}

static json_t *cmd_ping(struct ctl_server *s, struct ctl_request *r) { return cmd_probe(s, r, PROBE_CMD_PING); }
static json_t *cmd_fill(struct ctl_server *s, struct ctl_request *r) { return cmd_probe(s, r, PROBE_CMD_FILL); }
static json_t *cmd_checksum(struct ctl_server *s, struct ctl_request *r) { return cmd_probe(s, r, PROBE_CMD_CHECKSUM); }
static json_t *cmd_dirty(struct ctl_server *s, struct ctl_request *r) { return cmd_probe(s, r, PROBE_CMD_DIRTY); }
static json_t *cmd_counter(struct ctl_server *s, struct ctl_request *r) { return cmd_probe(s, r, PROBE_CMD_COUNTER); }
static json_t *cmd_crash(struct ctl_server *s, struct ctl_request *r) { return cmd_probe(s, r, PROBE_CMD_CRASH); }
static json_t *cmd_vsock_listen(struct ctl_server *s, struct ctl_request *r) { return cmd_probe(s, r, PROBE_CMD_VSOCK_LISTEN); }
static json_t *cmd_vsock_stats(struct ctl_server *s, struct ctl_request *r) { return cmd_probe(s, r, PROBE_CMD_VSOCK_STATS); }
static json_t *cmd_blk_io(struct ctl_server *s, struct ctl_request *r) { return cmd_probe(s, r, PROBE_CMD_BLK_IO); }
static json_t *cmd_net_up(struct ctl_server *s, struct ctl_request *r) { return cmd_probe(s, r, PROBE_CMD_NET_UP); }
static json_t *cmd_net_send(struct ctl_server *s, struct ctl_request *r) { return cmd_probe(s, r, PROBE_CMD_NET_SEND); }
static json_t *cmd_net_recv(struct ctl_server *s, struct ctl_request *r) { return cmd_probe(s, r, PROBE_CMD_NET_RECV); }
static json_t *cmd_net_stats(struct ctl_server *s, struct ctl_request *r) { return cmd_probe(s, r, PROBE_CMD_NET_STATS); }

json_t *ctl_cmd_snapshot(struct ctl_server *srv, struct ctl_request *req);
json_t *ctl_cmd_branch(struct ctl_server *srv, struct ctl_request *req);
/* ctl_seccomp_probe.c */
json_t *ctl_cmd_seccomp_probe(struct ctl_server *srv, struct ctl_request *req);

/* Range limits of integer fields whose handlers store them in narrower types. */
#define CTL_VCPU_MAX (LAYOUT_MAX_VCPUS - 1)
#define CTL_TIMEOUT_MS_MAX INT32_MAX
#define CTL_PORT_MAX UINT32_MAX

#define VCPU_FIELD { "vcpu", CTL_U64, false, CTL_VCPU_MAX }

const struct ctl_command ctl_commands[] = {
	{ "status", "VM state, memory, vCPUs and exit counts", cmd_status, { { 0 } } },
	{ "pause", "park every vCPU", cmd_pause, { { 0 } } },
	{ "resume", "run the vCPUs again", cmd_resume, { { 0 } } },
	{ "stop", "end the VM", cmd_stop, { { 0 } } },
	{ "clock", "kvmclock and vCPU 0's TSC, read back to back (pauses briefly)", cmd_clock,
	  { { 0 } } },
	{ "vcpus", "what each vCPU is doing: exits, mp_state, RIP, pending events (pauses briefly)",
	  cmd_vcpus, { { 0 } } },
	{ "snapshot", "pause, write a snapshot directory, resume", ctl_cmd_snapshot,
	  { { "dir", CTL_STR, true, 0 }, { "force", CTL_BOOL, false, 0 }, { "source", CTL_STR, false, 0 } } },
	{ "branch", "make children of this VM (strategy full, diff, live or cow)", ctl_cmd_branch,
	  { { "strategy", CTL_STR, true, 0 }, { "count", CTL_U64, false, BRANCH_MAX_CHILDREN }, { "prefix", CTL_STR, true, 0 },
	    { "run_dir", CTL_STR, true, 0 }, { "dir", CTL_STR, false, 0 }, { "paused", CTL_BOOL, false, 0 },
	    { "record_hashes", CTL_BOOL, false, 0 }, { "timeout_ms", CTL_U64, false, CTL_TIMEOUT_MS_MAX },
	    { "no_agent_sync", CTL_BOOL, false, 0 } } },
	{ "memhash", "host-side hash of guest RAM (racy unless paused)", cmd_memhash,
	  { { "gpa", CTL_U64, true, 0 }, { "len", CTL_U64, true, 0 } } },
	{ "ping", "probe guest round trip", cmd_ping, { VCPU_FIELD, { "nonce", CTL_U64, false, 0 } } },
	{ "fill", "probe guest writes a seeded pattern", cmd_fill,
	  { VCPU_FIELD, { "gpa", CTL_U64, true, 0 }, { "len", CTL_U64, true, 0 }, { "seed", CTL_U64, false, 0 } } },
	{ "checksum", "probe guest hashes a range", cmd_checksum,
	  { VCPU_FIELD, { "gpa", CTL_U64, true, 0 }, { "len", CTL_U64, true, 0 } } },
	{ "dirty", "probe guest keeps rewriting pages (pages=0 stops)", cmd_dirty,
	  { VCPU_FIELD, { "gpa", CTL_U64, false, 0 }, { "pages", CTL_U64, true, 0 },
	    { "stride", CTL_U64, false, 0 }, { "seed", CTL_U64, false, 0 } } },
	{ "counter", "probe guest's work counter", cmd_counter, { VCPU_FIELD } },
	{ "crash", "probe guest faults on purpose (tests the crash path)", cmd_crash, { VCPU_FIELD } },
	{ "vsock_listen", "probe guest drives virtio-vsock and echoes connections to port",
	  cmd_vsock_listen, { VCPU_FIELD, { "port", CTL_U64, true, CTL_PORT_MAX }, { "area", CTL_U64, false, 0 },
			      { "mmio", CTL_U64, false, 0 } } },
	{ "vsock_stats", "probe guest's vsock counters", cmd_vsock_stats, { VCPU_FIELD } },
	{ "blk_io", "probe guest runs one virtio-blk request (type, sector, len bytes at buf)",
	  cmd_blk_io, { VCPU_FIELD, { "type", CTL_U64, true, UINT32_MAX }, { "sector", CTL_U64, false, 0 },
			{ "buf", CTL_U64, false, 0 }, { "len", CTL_U64, false, 0 },
			{ "area", CTL_U64, false, 0 }, { "mmio", CTL_U64, false, 0 } } },
	{ "net_up", "probe guest sets up virtio-net (features, rx buffers) in a work-area area",
	  cmd_net_up, { VCPU_FIELD, { "area", CTL_U64, false, 0 }, { "mmio", CTL_U64, false, 0 },
			{ "features", CTL_U64, false, 0 }, { "rx_buffers", CTL_U64, false, PROBE_NET_QN },
			{ "rx_size", CTL_U64, false, PROBE_NET_RXBUF_MAX } } },
	{ "net_send", "probe guest sends count seeded frames of len bytes", cmd_net_send,
	  { VCPU_FIELD, { "count", CTL_U64, false, PROBE_NET_SEND_MAX }, { "len", CTL_U64, true, PROBE_NET_FRAME_MAX },
	    { "seed", CTL_U64, false, 0 }, { "ethertype", CTL_U64, false, 0xffff } } },
	{ "net_recv", "probe guest copies received frames into buf, re-posts rx buffers", cmd_net_recv,
	  { VCPU_FIELD, { "buf", CTL_U64, true, 0 }, { "len", CTL_U64, true, 0 },
	    { "post", CTL_U64, false, PROBE_NET_QN }, { "max", CTL_U64, false, 0 } } },
	{ "net_stats", "probe guest's NIC status and frame counters", cmd_net_stats, { VCPU_FIELD } },
	{ "seccomp_probe", "test hook (FORKVM_TEST_SECCOMP_PROBE=1): a forbidden syscall", ctl_cmd_seccomp_probe,
	  { { "role", CTL_STR, false, 0 }, { "call", CTL_STR, false, 0 },
	    { "pid", CTL_U64, false, INT32_MAX } } },
	{ "peek", "read up to 64 KiB of guest RAM (base64)", cmd_peek,
	  { { "gpa", CTL_U64, true, 0 }, { "len", CTL_U64, true, 0 } } },
	{ NULL, NULL, NULL, { { 0 } } },
};
