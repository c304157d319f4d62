/* Inside src/net/: addresses, rtnetlink (libmnl), nftables (libnftables), slots, the relay. */
#ifndef FORKVM_NET_IMPL_H
#define FORKVM_NET_IMPL_H

#include <netinet/in.h>
#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "net/net.h"
#include "util/errmsg.h"

/* Addresses, host byte order. */
int net_parse_ip(const char *s, uint32_t *ip);
/* "A.B.C.D[/P]": -EINVAL malformed, -ERANGE host bits set (unless keep_host). */
int net_parse_cidr(const char *s, bool keep_host, uint32_t *addr, uint8_t *prefix);
uint32_t net_mask(uint8_t prefix);
void net_format_ip(uint32_t ip, char buf[INET_ADDRSTRLEN]);

/*
 * rtnetlink (net_nl.c): a socket bound in the namespace of the thread that opened it, one
 * request at a time, each acknowledged. Every call returns 0 or -errno; the message in err
 * names the step and the interface.
 */
struct mnl_socket;
struct nl {
	struct mnl_socket *sock;
	uint32_t portid, seq;
};
int nl_open(struct nl *nl, struct fvm_err *err);
void nl_close(struct nl *nl);
/* The index of the interface called name: > 0, or -ENODEV. */
int nl_link_index(struct nl *nl, const char *name, struct fvm_err *err);
/* Up (and the MTU when mtu > 0). */
/* Up, with the MTU (> 0) and the hardware address (non-NULL) when given. */
int nl_link_up(struct nl *nl, int index, const char *name, int mtu, const uint8_t *mac,
	       struct fvm_err *err);
int nl_addr_add(struct nl *nl, int index, const char *name, uint32_t addr, uint8_t prefix,
		struct fvm_err *err);
int nl_route_default(struct nl *nl, int oif, const char *name, uint32_t gateway,
		     struct fvm_err *err);
/* A veth pair: name here, peer in the namespace of peer_ns_fd. */
int nl_veth_create(struct nl *nl, const char *name, const char *peer, int peer_ns_fd, int mtu,
		   struct fvm_err *err);
/* Delete the interface called name; -ENODEV if there is none. */
int nl_link_del(struct nl *nl, const char *name, struct fvm_err *err);
/* Call fn for each interface whose name starts with prefix; stops at fn's nonzero return. */
int nl_link_each(struct nl *nl, const char *prefix, int (*fn)(const char *name, void *arg),
		 void *arg, struct fvm_err *err);

/*
 * nftables (net_nft.c), in the namespace of the calling thread: one libnftables context per
 * call, commands as text. -errno with nft's own message in err.
 */
int nft_apply(const char *cmds, const char *what, struct fvm_err *err);
/* Open libnftables (once per process; every nft_* call does): 0, or -ELIBACC naming why. */
int nft_load(struct fvm_err *err);
/* The namespace's ruleset: input, forward (the egress policy), SNAT to ns_addr. */
int nft_ns_rules(const struct net_opts *o, uint32_t ns_addr, struct fvm_err *err);
/* The host table of NAT mode: the VM's /30 masqueraded when it leaves the host. */
int nft_host_table(const char *table, uint32_t ns_addr, struct fvm_err *err);
int nft_host_table_del(const char *table, struct fvm_err *err);
/* Call fn for each ip table of the host namespace whose name starts with prefix. */
int nft_tables_each(const char *prefix, int (*fn)(const char *name, void *arg), void *arg,
		    struct fvm_err *err);

/* Slots (net_slot.c): one flock'ed file per /30 under the state directory. */
const char *net_state_dir(const char *state_dir);
/* Lock the first free slot: its number, *fd the lock; -ENOSPC when all are taken. */
int net_slot_take(const char *state_dir, int *fd, struct fvm_err *err);
/* Lock slot if nobody holds it: the lock's fd (close it when done; meanwhile no VMM can take
 * the slot), -EWOULDBLOCK while a live VMM holds it, or another -errno. */
int net_slot_lock_free(const char *state_dir, int slot);
/* The /30 of a slot: host end .1, namespace end .2. */
void net_slot_addrs(int slot, uint32_t *host, uint32_t *ns);

/*
 * The namespace thread (net_relay.c): it unshare()s into a new network namespace, builds it
 * (net_setup_namespace), reports through this struct, then serves the published ports as the
 * relay, or ends when there are none.
 */
struct net_setup {
	int host_ns_fd;		/* the host namespace: where the veth's host end goes */
	pthread_mutex_t lock;
	pthread_cond_t cond;
	bool done;
	int ret;
	char err[512];
};
int net_relay_start(struct net *n, struct net_setup *setup, struct fvm_err *err);
void net_relay_stop(struct net *n);
/* Counters for status: connections open now, accepted in all, failed to reach the guest. */
void net_relay_stats(const struct net_relay *r, uint64_t out[3]);
/* A fork()ed copy: close the relay's fds unless fds_closed, forget it (no join, no free: the
 * copy may have been taken mid-update by the parent's relay thread). */
void net_relay_forget(struct net *n, bool fds_closed);

/*
 * What the namespace thread builds (net.c); runs on that thread, after it unshare()d.
 * Fills n->ns_fd and n->tap_fd. The relay calls it first, then serves.
 */
int net_setup_namespace(struct net *n, struct net_setup *s, struct fvm_err *err);

/* net.c for net_broker.c: n empty (no fd held) with o as its options; and the network
 * net_current() names from now on. */
void net_init_empty(struct net *n, const struct net_opts *o);
void net_set_current(struct net *n);

#endif
