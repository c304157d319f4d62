/*
 * Host networking of one VM (docs/NET.md): a network namespace of its own, created by the
 * VMM without moving the VMM into it, holding the VM's TAP device (the guest's gateway) and
 * one end of a veth pair whose other end is in the host namespace; egress policy and NAT with
 * nftables inside that namespace; TCP port forwarding from host ports to guest ports.
 *
 * Every VM's guest has the same address (default 10.254.0.2/24, gateway 10.254.0.1 on the
 * TAP), so a restored or branched guest needs no reconfiguration; what differs per VM is the
 * veth pair, a /30 of the pool 10.253.0.0/16 picked by slot (the namespace end .2, the host
 * end .1), which the guest never sees: its traffic leaves the namespace source-NATed to the
 * namespace end's address.
 *
 * Lifetime: the namespace lives as long as the VMM holds its fds (the namespace fd, the TAP,
 * relay sockets), so it and everything in it vanish when the VMM dies, kill -9 included. What
 * lives in the host namespace (the veth's host end, the per-VM nft table of NAT mode) is
 * removed by net_destroy, and after a crash by the next net_create or net_reap; the slot is a
 * flock the kernel releases when the VMM dies.
 *
 * Layer: util only (tests/layers/check_layers.py); rtnetlink through libmnl, packet rules
 * through libnftables, no command is run.
 */
#ifndef FORKVM_NET_NET_H
#define FORKVM_NET_NET_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "util/errmsg.h"

enum net_mode {
	NET_NONE,	/* no NIC, no namespace (the default) */
	NET_ISOLATED,	/* namespace + TAP: published ports only, no egress at all */
	NET_NAT,	/* egress through NAT, filtered by the allow/deny lists */
};

#define NET_MAX_CIDRS 64
#define NET_MAX_PUBLISH 16
#define NET_DEFAULT_MTU 1500
#define NET_DEFAULT_MAX_CONNS 256
/* The slot locks: one file per slot, flock'ed by the VMM that holds it (root only). */
#define NET_STATE_DIR "/run/forkvm-net"
/* The pool of per-VM /30s and the guest-side defaults. */
#define NET_POOL "10.253.0.0/16"
#define NET_POOL_SLOTS 16384
#define NET_GUEST_ADDR "10.254.0.2/24"
#define NET_GUEST_GATEWAY "10.254.0.1"
/* Names: the TAP and the veth's namespace end inside the namespace; the host end by slot. */
#define NET_TAP_NAME "tap0"
#define NET_NS_VETH "veth0"
#define NET_HOST_VETH_PREFIX "forkvm"	/* forkvm<slot>, e.g. forkvm17 */
#define NET_HOST_TABLE_PREFIX "forkvm_"	/* ip table forkvm_<pid>_<slot> (NAT mode) */
/* The vnet header size set on the TAP: virtio 1.x's struct virtio_net_hdr_v1. */
#define NET_VNET_HDR_LEN 12

/* An IPv4 prefix, host byte order, addr already masked. */
struct net_cidr {
	uint32_t addr;
	uint8_t prefix;
};

/* --publish [IP:]HOSTPORT:GUESTPORT (TCP). */
struct net_publish {
	uint32_t host_ip;	/* host byte order; default 127.0.0.1 */
	uint16_t host_port;	/* 0: a free port, reported in struct net_port */
	uint16_t guest_port;
};

struct net_opts {
	enum net_mode mode;
	struct net_cidr allow[NET_MAX_CIDRS];	/* NAT: only these destinations (none: all) */
	int nallow;
	struct net_cidr deny[NET_MAX_CIDRS];	/* NAT: never these (wins over allow) */
	int ndeny;
	struct net_publish publish[NET_MAX_PUBLISH];
	int npublish;
	uint32_t guest_addr, gateway;	/* host byte order */
	uint8_t guest_prefix;
	int mtu;			/* the TAP's MTU, what the guest should use */
	int max_conns;			/* relayed connections at once, all publishes together */
	const char *state_dir;		/* slot locks; NULL: NET_STATE_DIR */
	/*
	 * Called on the relay thread once its namespace is set up, before it serves anything
	 * (the VMM loads the thread's seccomp filter there); nonzero ends the thread and fails
	 * net_create. NULL: nothing. The net layer knows nothing of seccomp.
	 */
	int (*relay_thread_init)(void);
};

/* One published port as bound. */
struct net_port {
	struct net_publish spec;	/* as asked */
	uint16_t host_port;		/* as bound (spec.host_port, or the one picked for 0) */
	int fd;				/* the listening socket, in the host namespace */
};

struct net_relay;

/* A VM's network, filled by net_create. Fds are O_CLOEXEC; -1 when not held. */
struct net {
	struct net_opts opts;		/* a copy of what net_create was given */
	bool active;
	pid_t owner;			/* the process that created it: a fork()ed copy is not */
	int ns_fd;			/* the namespace, held open for the VM's life */
	int tap_fd;			/* the TAP, non-blocking: for vm_config.net.tap_fd; owned
					 * here (net_destroy closes it), the NIC only uses it */
	int slot;			/* in the pool; -1 none */
	int slot_fd;			/* the flock'ed slot file */
	char veth_host[16];		/* forkvm<slot>, in the host namespace */
	uint32_t host_addr, ns_addr;	/* the veth ends' addresses (/30) */
	char host_table[48];		/* the host-side nft table ("" when none) */
	struct net_port ports[NET_MAX_PUBLISH];
	int nports;
	struct net_relay *relay;	/* the relay thread, with published ports */
	uint64_t create_ns;		/* how long net_create took */
	/* A network the family's broker made (net_broker_open): this process holds only the
	 * TAP and the lifeline, whose closing removes the network; -1 / NULL otherwise. */
	int lifeline_fd;
	json_t *remote;			/* the broker's status object at creation */
};

/* Defaults: NET_NONE, the guest address and gateway, MTU 1500, 256 connections. */
void net_opts_init(struct net_opts *o);
/* The CLI's strings, each with a precise message in err; 0 or -EINVAL (-ENOSPC: too many). */
int net_opts_mode(struct net_opts *o, const char *mode, struct fvm_err *err);
int net_opts_publish(struct net_opts *o, const char *spec, struct fvm_err *err);
int net_opts_cidr(struct net_opts *o, bool allow, const char *cidr, struct fvm_err *err);
/* "A.B.C.D/PREFIX[,GATEWAY]" (default gateway: the first address of the subnet). */
int net_opts_address(struct net_opts *o, const char *spec, struct fvm_err *err);
int net_opts_mtu(struct net_opts *o, const char *mtu, struct fvm_err *err);
/*
 * After every option: --publish alone turns networking on as NET_ISOLATED; allow/deny lists
 * need NET_NAT; the guest subnet must not overlap the pool, the gateway and guest address
 * must differ and sit in the subnet. 0 or -EINVAL with err.
 */
int net_opts_finish(struct net_opts *o, struct fvm_err *err);
const char *net_mode_name(enum net_mode mode);
/*
 * o as `forkvm run` options (--net, --allow, --deny, --publish, --net-addr, --net-mtu) for a
 * child VMM of the same network plan: appended to argv (at most cap entries, the strings in
 * a->text), each publish with host port 0 when new_ports (children serve on ports of their
 * own). NET_NONE appends nothing. Returns the count appended, or -ENOSPC.
 */
struct net_argv {
	char text[2 * NET_MAX_CIDRS + NET_MAX_PUBLISH + 4][40];
	int used;
};
int net_opts_argv(const struct net_opts *o, bool new_ports, struct net_argv *a,
		  const char **argv, int cap);

/* The Linux guest's kernel argument "forkvm.net=ADDR/PREFIX,GATEWAY,MTU" (docs/AGENT.md). */
int net_kernel_arg(const struct net_opts *o, char *buf, size_t len);
/* A random locally administered unicast MAC (the guest NIC's, when none is given). */
void net_random_mac(uint8_t mac[6]);

/*
 * Create the VM's network as o says (NET_NONE: n->active stays false, nothing is made).
 * Order: stale host leftovers reaped, published ports bound (port in use: -EADDRINUSE, err
 * names it), a slot locked, then the namespace made by a thread that unshare()s itself (the
 * VMM's other threads stay in the host namespace), its TAP, lo, veth, route and nft rules,
 * then the host end and, for NAT, ip_forward and the host table. The relay thread keeps
 * running while there are published ports. On failure everything made is undone and err
 * says which step on which object failed: -ENODEV no /dev/net/tun, -EPERM not root,
 * -ENOENT/-EPROTONOSUPPORT nftables missing, -EADDRINUSE a port, -ENOSPC the pool.
 * Call it where every signal the VMM blocks is blocked: the relay thread inherits the mask.
 */
int net_create(const struct net_opts *o, struct net *n, struct fvm_err *err);
/*
 * Undo net_create: the relay stopped and joined, listeners, TAP and namespace closed, the
 * veth's host end and the host table removed, the slot released. In a process that is not
 * the owner (a fork()ed copy) it only forgets (net_forget(n, true): no fd is closed, the
 * numbers may have been reused). Idempotent.
 */
void net_destroy(struct net *n);
/*
 * A fork()ed copy of the VMM (a cow child): drop what was inherited from the parent without
 * touching the parent's network (no netlink, no nft, no unlock: the parent keeps its
 * namespace, veth, table, ports and slot). fds_closed: the caller already closed every
 * inherited fd (fds_close_except), so the numbers are only forgotten, never closed again.
 */
void net_forget(struct net *n, bool fds_closed);
/*
 * A cow child's own network, in the fork()ed copy: the parent's (the one net_current() names
 * in this copy) is forgotten (net_forget(parent, fds_closed)), then n gets a net_create with
 * the parent's options, except that every publish binds a new free host port (the parent
 * keeps its own): same guest address, its own namespace, TAP, slot and host ports. A parent
 * without networking: n inactive, 0. n must outlive the VM (net_destroy at its end).
 */
int net_create_child(struct net *n, bool fds_closed, struct fvm_err *err);
/*
 * branch_opts.child_tap for cow branches: in a cow child (after its fds_close_except),
 * net_create_child into a network of the child's own, logged; returns a TAP fd for the
 * child's NIC, or -errno (-ENODEV: the source has no network made by net_create).
 */
int net_child_tap(const char *child_name, void *arg);
/* net_destroy of the network net_current() names, if any: a cow child's end (after its
 * vm_destroy); without it the host table of a NAT child waits for the next reaper. */
void net_release_current(void);
/*
 * Networks of jailed VMMs (net_broker.c, docs/NET.md): a VMM started jailed with a network
 * forks a broker first, while still root, which makes every network of the VMM's family and
 * hands each VM its TAP. net_broker_start forks it with the family's plan (once per
 * process; 0 or -errno with err). net_broker_open asks it for the network of VM name: n gets
 * the TAP, a lifeline (closing it, or the VM's end, removes the network) and the status the
 * broker gave; net_destroy/net_forget/net_status_json/net_tap_dup work on n as on a local
 * one, and net_current() names it. net_broker_fd: this process's socket to its broker (kept
 * by cow templates and children, passed to exec'd children), -1 without one;
 * net_broker_adopt takes the one an exec'd child was given (--net-broker-fd).
 */
#define NET_BROKER_MAX 1024
/* What the layer above adds to the broker, called in it: confine once its private root is
 * in place, before it serves (the VMM loads the broker's seccomp filter there; nonzero: the
 * broker exits); probe, a test hook (NULL outside tests), called for a request naming
 * NET_BROKER_PROBE. And called in the VMM: fork, to fork the broker (NULL: fork(); the VMM
 * starts it in a cgroup of its own, out of its family's). The net layer knows nothing of
 * seccomp or cgroups. */
struct net_broker_hooks {
	int (*confine)(void);
	int (*probe)(void);
	pid_t (*fork)(void);
};
#define NET_BROKER_PROBE "seccomp-probe"
int net_broker_start(const struct net_opts *plan, const struct net_broker_hooks *hooks,
		     struct fvm_err *err);
int net_broker_open(const struct net_opts *o, const char *name, struct net *n,
		    struct fvm_err *err);
int net_broker_fd(void);
/* The broker this process started (net_broker_start), whose parent it is: -1 in any other
 * process (a fork of it, an exec'd child). Its end is this process's to reap and report. */
pid_t net_broker_child(void);
int net_broker_adopt(int fd, struct fvm_err *err);
/* A fresh status object from the broker (its relay counters), or the cached one. */
json_t *net_broker_status(const struct net *n);

/* A new O_CLOEXEC fd of the TAP for vm_config.net.tap_fd: the NIC closes its own when it is
 * destroyed, the net keeps n->tap_fd. -errno (-EBADF: no TAP). */
int net_tap_dup(const struct net *n);

/*
 * Remove host-side leftovers of VMMs that died without net_destroy (kill -9): nft tables
 * forkvm_<pid>_<slot> and veths forkvm<slot> whose slot nobody holds (or whose pid is gone).
 * state_dir NULL: NET_STATE_DIR. Returns how many it removed, or -errno with err.
 */
int net_reap(const char *state_dir, struct fvm_err *err);

/* The "net" object of the control `status` reply: mode, addresses, published ports. */
json_t *net_status_json(const struct net *n);
/* The network net_create made in this process (NULL: none); for the control server. */
const struct net *net_current(void);

#endif
