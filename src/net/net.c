/*
 * A VM's network (net.h, docs/NET.md): net_create and its undoing, the namespace's contents
 * (run on the namespace thread of net_relay.c), the cow child's own network, the reaper of
 * host-side leftovers, and the status object.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <linux/sockios.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "net/net.h"
#include "net/net_impl.h"
#include "util/clock.h"
#include "util/errmsg.h"
#include "util/fdio.h"
#include "util/log.h"

/*
 * The gateway's MAC, the same on every VM's TAP (as its address is): a clone's guest keeps the
 * gateway in its neighbour cache from before the branch or restore, so a TAP with another MAC
 * would swallow the clone's first packets out until that entry expired.
 */
static const uint8_t net_gateway_mac[6] = { 0x02, 0x66, 0x76, 0x6d, 0x00, 0x01 };

/* The network net_create made in this process; one VM per process. A fork()ed copy finds
 * its parent's here (net_create_child). */
static struct net *current;

const struct net *net_current(void)
{
	return current;
}

void net_set_current(struct net *n)
{
	current = n;
}

/* A descriptor (O_CLOEXEC) of the calling thread's network namespace, or -errno: from a
 * socket made here (SIOCGSKNS, CAP_NET_ADMIN), not /proc/thread-self, which the network
 * broker's private root does not hold. */
static int ns_fd_here(void)
{
	int s = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0), fd;

	if (s < 0)
		return -errno;
	fd = ioctl(s, SIOCGSKNS);
	if (fd < 0)
		fd = -errno;
	close(s);
	return fd;
}

/* /proc/sys/net/ipv4/ip_forward of the calling thread's namespace: 0/1 or -errno. */
static int ip_forward_get(void)
{
	char c = 0;
	int fd = open("/proc/sys/net/ipv4/ip_forward", O_RDONLY | O_CLOEXEC), ret;

	if (fd < 0)
		return -errno;
	ret = read(fd, &c, 1) == 1 ? c == '1' : -EIO;
	close(fd);
	return ret;
}

/* Write value to /proc/sys/net/ipv4/NAME of the calling thread's namespace: 0 or -errno. */
static int ipv4_sysctl_set(const char *name, const char *value)
{
	char path[96];
	int fd, ret;

	snprintf(path, sizeof(path), "/proc/sys/net/ipv4/%s", name);
	fd = open(path, O_WRONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	ret = fd_write_all(fd, value, strlen(value));
	close(fd);
	return ret;
}

static int ip_forward_set(bool on)
{
	return ipv4_sysctl_set("ip_forward", on ? "1\n" : "0\n");
}

/*
 * The namespace's own TCP sockets are the relay's, towards the guest. One the relay closed
 * gracefully lingers until the guest acknowledges its end, and holds the namespace (and so
 * the veth) while it does: if the guest is gone, for minutes with the defaults (8 orphan
 * retries, 60 s in FIN-WAIT-2). Here: one retry and 5 s, so a namespace goes within seconds
 * of its VMM. (A VMM killed outright resets them at once: SO_LINGER 0, net_relay.c.)
 */
static const char *const ns_sysctls[][2] = {
	{ "ip_forward", "1\n" },
	{ "tcp_orphan_retries", "1\n" },
	{ "tcp_fin_timeout", "5\n" },
};

/* The TAP, inside the namespace: non-blocking, virtio-net headers, no packet info. */
static int tap_open(struct fvm_err *err)
{
	struct ifreq ifr = { .ifr_flags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR };
	int hdr = NET_VNET_HDR_LEN, ret;
	int fd = open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC);

	if (fd < 0) {
		ret = errno == ENOENT ? -ENODEV : -errno;
		return errmsg(err, ret, "opening /dev/net/tun: %s%s", strerror(errno),
			      errno == ENOENT ? " (no TUN device: load the tun module, or create the "
						"node: mknod /dev/net/tun c 10 200)" : "");
	}
	snprintf(ifr.ifr_name, IFNAMSIZ, "%s", NET_TAP_NAME);
	if (ioctl(fd, TUNSETIFF, &ifr) < 0) {
		ret = errmsg(err, -errno, "creating TAP %s (TUNSETIFF): %s%s", NET_TAP_NAME,
			     strerror(errno), errno == EPERM ? " (needs CAP_NET_ADMIN)" : "");
		goto fail;
	}
	if (ioctl(fd, TUNSETVNETHDRSZ, &hdr) < 0) {
		ret = errmsg(err, -errno, "TAP %s: vnet header size %d (TUNSETVNETHDRSZ): %s",
			     NET_TAP_NAME, hdr, strerror(errno));
		goto fail;
	}
	return fd;
fail:
	close(fd);
	return ret;
}

/*
 * On the namespace thread, in the new namespace: lo up; the TAP with the gateway's address;
 * the veth pair (host end into the host namespace); the namespace end's address and, for NAT,
 * the default route through the host end; forwarding; the nft rules.
 */
int net_setup_namespace(struct net *n, struct net_setup *s, struct fvm_err *err)
{
	const struct net_opts *o = &n->opts;
	struct nl nl = { 0 };
	int ret, tap, veth;

	n->ns_fd = ns_fd_here();
	if (n->ns_fd < 0)
		return errmsg(err, n->ns_fd, "the new namespace's descriptor (SIOCGSKNS): %s",
			      strerror(-n->ns_fd));
	if ((ret = nl_open(&nl, err)) ||
	    (ret = nl_link_up(&nl, 1, "lo", 0, NULL, err)))
		goto out;
	ret = tap_open(err);
	if (ret < 0)
		goto out;
	n->tap_fd = ret;
	if ((tap = ret = nl_link_index(&nl, NET_TAP_NAME, err)) < 0 ||
	    (ret = nl_addr_add(&nl, tap, NET_TAP_NAME, o->gateway, o->guest_prefix, err)) ||
	    (ret = nl_link_up(&nl, tap, NET_TAP_NAME, o->mtu, net_gateway_mac, err)) ||
	    (ret = nl_veth_create(&nl, NET_NS_VETH, n->veth_host, s->host_ns_fd, 0, err)) ||
	    (veth = ret = nl_link_index(&nl, NET_NS_VETH, err)) < 0 ||
	    (ret = nl_addr_add(&nl, veth, NET_NS_VETH, n->ns_addr, 30, err)) ||
	    (ret = nl_link_up(&nl, veth, NET_NS_VETH, 0, NULL, err)))
		goto out;
	if (o->mode == NET_NAT &&
	    (ret = nl_route_default(&nl, veth, NET_NS_VETH, n->host_addr, err)))
		goto out;
	/*
	 * Forwarding on in both modes: the forward chain is the policy, and it rejects what it
	 * refuses, so the guest fails fast. With forwarding off the kernel would drop without a
	 * word and the guest would wait for its timeouts. Isolated has no default route besides.
	 */
	for (size_t i = 0; i < sizeof(ns_sysctls) / sizeof(ns_sysctls[0]); i++) {
		ret = ipv4_sysctl_set(ns_sysctls[i][0], ns_sysctls[i][1]);
		if (ret) {
			errmsg(err, ret, "setting net.ipv4.%s in the VM's namespace: %s",
			       ns_sysctls[i][0], strerror(-ret));
			goto out;
		}
	}
	ret = nft_ns_rules(o, n->ns_addr, err);
out:
	nl_close(&nl);
	return ret < 0 ? ret : 0;
}

/* The listening sockets of --publish, in the host namespace, before anything else. */
static int bind_ports(struct net *n, struct fvm_err *err)
{
	char ip[INET_ADDRSTRLEN];

	for (int i = 0; i < n->opts.npublish; i++) {
		struct net_port *p = &n->ports[i];
		struct sockaddr_in a = { .sin_family = AF_INET };
		socklen_t alen = sizeof(a);
		int one = 1;

		p->spec = n->opts.publish[i];
		a.sin_addr.s_addr = htonl(p->spec.host_ip);
		a.sin_port = htons(p->spec.host_port);
		net_format_ip(p->spec.host_ip, ip);
		n->nports = i + 1;
		p->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
		if (p->fd < 0)
			return errmsg(err, -errno, "--publish %s:%u:%u: socket: %s", ip,
				      p->spec.host_port, p->spec.guest_port, strerror(errno));
		if (setsockopt(p->fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0)
			return errmsg(err, -errno, "--publish %s:%u:%u: SO_REUSEADDR: %s", ip,
				      p->spec.host_port, p->spec.guest_port, strerror(errno));
		if (bind(p->fd, (struct sockaddr *)&a, sizeof(a)) < 0) {
			int e = errno;
			if (e == EADDRINUSE)
				return errmsg(err, -e, "--publish %s:%u:%u: host port %s:%u is "
					      "already in use", ip, p->spec.host_port,
					      p->spec.guest_port, ip, p->spec.host_port);
			return errmsg(err, -e, "--publish %s:%u:%u: binding %s:%u: %s", ip,
				      p->spec.host_port, p->spec.guest_port, ip, p->spec.host_port,
				      strerror(e));
		}
		if (listen(p->fd, 128) < 0 ||
		    getsockname(p->fd, (struct sockaddr *)&a, &alen) < 0)
			return errmsg(err, -errno, "--publish %s:%u:%u: listen: %s", ip,
				      p->spec.host_port, p->spec.guest_port, strerror(errno));
		p->host_port = ntohs(a.sin_port);
	}
	return 0;
}

struct reap_ctx {
	const char *state_dir;
	struct nl *nl;
	int removed;
	struct fvm_err *err;
};

/* forkvm_<pid>_<slot>: stale when the pid is gone or nobody holds the slot. */
static int reap_table(const char *name, void *arg)
{
	struct reap_ctx *c = arg;
	int pid, slot, lock = -1, ret = 0, end = 0;

	if (sscanf(name, NET_HOST_TABLE_PREFIX "%d_%d%n", &pid, &slot, &end) != 2 ||
	    name[end] != '\0')
		return 0;
	if (pid == getpid())
		return 0;
	if (kill(pid, 0) == 0 || errno == EPERM) {
		lock = net_slot_lock_free(c->state_dir, slot);
		if (lock < 0)
			return 0; /* its owner runs */
	}
	ret = nft_host_table_del(name, c->err);
	if (ret == -ENOENT) {
		ret = 0; /* another VMM's start reaped it first */
	} else if (!ret) {
		log_info("net: removed the host table ip %s of a VMM that died (pid %d)", name, pid);
		c->removed++;
	}
	if (lock >= 0)
		close(lock);
	return ret;
}

/* forkvm<slot> in the host namespace: stale while nobody holds the slot (we hold it now). */
static int reap_veth(const char *name, void *arg)
{
	struct reap_ctx *c = arg;
	int slot, end = 0, lock, ret;

	if (sscanf(name, NET_HOST_VETH_PREFIX "%d%n", &slot, &end) != 1 || name[end] != '\0')
		return 0;
	lock = net_slot_lock_free(c->state_dir, slot);
	if (lock < 0)
		return 0;
	ret = nl_link_del(c->nl, name, c->err);
	if (ret == -ENODEV) {
		ret = 0; /* its namespace's teardown took it meanwhile */
	} else if (!ret) {
		log_info("net: removed %s, left over by a VMM that died", name);
		c->removed++;
	}
	close(lock);
	return ret;
}

int net_reap(const char *state_dir, struct fvm_err *err)
{
	struct nl nl = { 0 };
	struct reap_ctx c = { .state_dir = state_dir, .nl = &nl, .err = err };
	int ret = nft_tables_each(NET_HOST_TABLE_PREFIX, reap_table, &c, err);

	if (!ret)
		ret = nl_open(&nl, err);
	if (!ret)
		ret = nl_link_each(&nl, NET_HOST_VETH_PREFIX, reap_veth, &c, err);
	nl_close(&nl);
	return ret ? ret : c.removed;
}

/* The host end (address, up) and, for NAT, forwarding and the host table. */
static int setup_host(struct net *n, struct nl *nl, struct fvm_err *err)
{
	int idx = nl_link_index(nl, n->veth_host, err), ret, fwd;

	if (idx < 0)
		return idx;
	if ((ret = nl_addr_add(nl, idx, n->veth_host, n->host_addr, 30, err)) ||
	    (ret = nl_link_up(nl, idx, n->veth_host, 0, NULL, err)))
		return ret;
	if (n->opts.mode != NET_NAT)
		return 0;
	fwd = ip_forward_get();
	if (fwd == 0) {
		ret = ip_forward_set(true);
		if (ret)
			return errmsg(err, ret, "turning on the host's ip_forward (NAT mode): %s",
				      strerror(-ret));
		log_info("net: turned on the host's net.ipv4.ip_forward (NAT mode needs it)");
	} else if (fwd < 0) {
		return errmsg(err, fwd, "reading the host's ip_forward: %s", strerror(-fwd));
	}
	snprintf(n->host_table, sizeof(n->host_table), NET_HOST_TABLE_PREFIX "%d_%d",
		 (int)getpid(), n->slot);
	ret = nft_host_table(n->host_table, n->ns_addr, err);
	if (ret)
		n->host_table[0] = '\0';
	return ret;
}

/* Undo whatever net_create got to, in reverse; warnings only: the rest still goes. */
static void teardown(struct net *n)
{
	struct fvm_err err = FVM_ERR_INIT;
	struct nl nl = { 0 };

	if (n->lifeline_fd >= 0) { /* the broker's: it removes the network when this closes */
		close(n->lifeline_fd);
		if (n->tap_fd >= 0)
			close(n->tap_fd);
		json_decref(n->remote);
		n->remote = NULL;
		n->lifeline_fd = n->tap_fd = n->slot = -1;
		n->active = false;
		if (current == n)
			current = NULL;
		return;
	}
	net_relay_stop(n);
	for (int i = 0; i < n->nports; i++)
		if (n->ports[i].fd >= 0)
			close(n->ports[i].fd);
	n->nports = 0;
	if (n->host_table[0] && nft_host_table_del(n->host_table, &err))
		log_warn("net: %s", err.msg);
	n->host_table[0] = '\0';
	if (n->slot >= 0) {
		/* Gone with the namespace too, but not at once: remove it now, while the slot is
		 * still ours. */
		int ret = nl_open(&nl, &err);
		if (!ret)
			ret = nl_link_del(&nl, n->veth_host, &err);
		if (ret && ret != -ENODEV)
			log_warn("net: %s", err.msg);
		nl_close(&nl);
	}
	if (n->tap_fd >= 0)
		close(n->tap_fd);
	if (n->ns_fd >= 0)
		close(n->ns_fd);
	if (n->slot_fd >= 0)
		close(n->slot_fd); /* releases the slot */
	n->tap_fd = n->ns_fd = n->slot_fd = n->slot = -1;
	n->active = false;
	if (current == n)
		current = NULL;
}

int net_tap_dup(const struct net *n)
{
	int fd = n->tap_fd >= 0 ? fcntl(n->tap_fd, F_DUPFD_CLOEXEC, 3) : -EBADF;

	return fd < 0 && n->tap_fd >= 0 ? -errno : fd;
}

void net_init_empty(struct net *n, const struct net_opts *o)
{
	*n = (struct net){ .opts = *o, .owner = getpid(), .ns_fd = -1, .tap_fd = -1, .slot = -1,
			   .slot_fd = -1, .lifeline_fd = -1 };
	for (int i = 0; i < NET_MAX_PUBLISH; i++)
		n->ports[i].fd = -1;
}

int net_create(const struct net_opts *o, struct net *n, struct fvm_err *err)
{
	struct net_opts opts = *o; /* o may be n->opts (a cow child) */
	struct net_setup s = { .host_ns_fd = -1, .lock = PTHREAD_MUTEX_INITIALIZER,
			       .cond = PTHREAD_COND_INITIALIZER };
	uint64_t t0 = monotonic_ns();
	struct nl nl = { 0 };
	int ret;

	net_init_empty(n, &opts);
	if ((ret = net_opts_finish(&n->opts, err)) || n->opts.mode == NET_NONE)
		return ret;
	/* Here, before the namespace thread, any seccomp filter or jail (net_nft.c). */
	if ((ret = nft_load(err)))
		return ret;
	if (access("/dev/net/tun", F_OK) < 0)
		return errmsg(err, -ENODEV, "no /dev/net/tun: this host has no TUN device "
			      "(load the tun module, or create the node: mknod /dev/net/tun c 10 200)");
	if (geteuid() != 0)
		return errmsg(err, -EPERM, "networking a VM needs root (its namespace, TAP, "
			      "veth and nft rules need CAP_SYS_ADMIN and CAP_NET_ADMIN); this is uid %d",
			      (int)geteuid());
	/* Leftovers of VMMs that died: their host tables and veths (also checks nftables). */
	ret = net_reap(n->opts.state_dir, err);
	if (ret < 0)
		goto fail;
	if ((ret = bind_ports(n, err)))
		goto fail;
	ret = net_slot_take(n->opts.state_dir, &n->slot_fd, err);
	if (ret < 0)
		goto fail;
	n->slot = ret;
	net_slot_addrs(n->slot, &n->host_addr, &n->ns_addr);
	snprintf(n->veth_host, sizeof(n->veth_host), NET_HOST_VETH_PREFIX "%d", n->slot);
	/* The slot is ours: an interface of its name is a dead VMM's, still being torn down. */
	if ((ret = nl_open(&nl, err)))
		goto fail;
	ret = nl_link_del(&nl, n->veth_host, err);
	if (ret && ret != -ENODEV)
		goto fail;
	if (!ret)
		log_info("net: removed %s, left over by a VMM that died", n->veth_host);
	s.host_ns_fd = ns_fd_here();
	if (s.host_ns_fd < 0) {
		ret = errmsg(err, s.host_ns_fd, "the host namespace's descriptor (SIOCGSKNS): %s",
			     strerror(-s.host_ns_fd));
		goto fail;
	}
	if ((ret = net_relay_start(n, &s, err)) || (ret = setup_host(n, &nl, err)))
		goto fail;
	close(s.host_ns_fd);
	nl_close(&nl);
	n->active = true;
	n->create_ns = monotonic_ns() - t0;
	current = n;
	return 0;
fail:
	if (s.host_ns_fd >= 0)
		close(s.host_ns_fd);
	nl_close(&nl);
	teardown(n);
	return ret < 0 ? ret : -EIO;
}

void net_forget(struct net *n, bool fds_closed)
{
	net_relay_forget(n, fds_closed);
	if (!fds_closed && n->lifeline_fd >= 0)
		close(n->lifeline_fd);
	json_decref(n->remote);
	if (!fds_closed) {
		/* Our copies only: the parent's namespace, TAP, ports and slot lock stay its own
		 * (an flock goes only when every fd of its open file is closed). */
		for (int i = 0; i < n->nports; i++)
			if (n->ports[i].fd >= 0)
				close(n->ports[i].fd);
		if (n->tap_fd >= 0)
			close(n->tap_fd);
		if (n->ns_fd >= 0)
			close(n->ns_fd);
		if (n->slot_fd >= 0)
			close(n->slot_fd);
	}
	if (current == n)
		current = NULL;
	net_init_empty(n, &n->opts);
}

void net_destroy(struct net *n)
{
	/* A fork()ed copy: its fd numbers may be reused by now; forget, close nothing. */
	if (getpid() != n->owner) {
		net_forget(n, true);
		return;
	}
	if (n->active || n->slot >= 0 || n->ns_fd >= 0 || n->lifeline_fd >= 0)
		teardown(n);
}

int net_create_child(struct net *n, bool fds_closed, struct fvm_err *err)
{
	struct net *parent = current;
	struct net_opts o;

	if (!parent) {
		net_opts_init(&o);
		net_init_empty(n, &o);
		return 0;
	}
	o = parent->opts;
	net_forget(parent, fds_closed);
	/* The parent keeps its host ports: every publish of the child gets a free one. */
	for (int i = 0; i < o.npublish; i++)
		o.publish[i].host_port = 0;
	return net_create(&o, n, err);
}

static json_t *cidrs_json(const struct net_cidr *c, int count)
{
	char a[INET_ADDRSTRLEN], buf[INET_ADDRSTRLEN + 4];
	json_t *list = json_array();

	for (int i = 0; i < count; i++) {
		net_format_ip(c[i].addr, a);
		snprintf(buf, sizeof(buf), "%s/%u", a, c[i].prefix);
		json_array_append_new(list, json_string(buf));
	}
	return list;
}

json_t *net_status_json(const struct net *n)
{
	char guest[INET_ADDRSTRLEN], gw[INET_ADDRSTRLEN], host[INET_ADDRSTRLEN],
		ns[INET_ADDRSTRLEN], ip[INET_ADDRSTRLEN], cidr[INET_ADDRSTRLEN + 4];
	json_t *o, *ports;
	uint64_t st[3];

	if (!n || !n->active)
		return json_pack("{s:s}", "mode", "none");
	if (n->lifeline_fd >= 0)
		return net_broker_status(n);
	ports = json_array();
	net_format_ip(n->opts.guest_addr, guest);
	net_format_ip(n->opts.gateway, gw);
	net_format_ip(n->host_addr, host);
	net_format_ip(n->ns_addr, ns);
	snprintf(cidr, sizeof(cidr), "%s/%u", guest, n->opts.guest_prefix);
	for (int i = 0; i < n->nports; i++) {
		net_format_ip(n->ports[i].spec.host_ip, ip);
		json_array_append_new(ports, json_pack("{s:s,s:i,s:i}", "host_ip", ip, "host_port",
						       n->ports[i].host_port, "guest_port",
						       n->ports[i].spec.guest_port));
	}
	net_relay_stats(n->relay, st);
	o = json_pack("{s:s,s:s,s:s,s:i,s:s,s:i,s:s,s:s,s:s,s:s?,s:o,s:o,s:o,s:{s:I,s:I,s:I},"
		      "s:f}",
		      "mode", net_mode_name(n->opts.mode), "guest", cidr, "gateway", gw, "mtu",
		      n->opts.mtu, "tap", NET_TAP_NAME, "slot", n->slot, "host_interface",
		      n->veth_host, "host_address", host, "ns_address", ns, "host_table",
		      n->host_table[0] ? n->host_table : NULL, "allow",
		      cidrs_json(n->opts.allow, n->opts.nallow), "deny",
		      cidrs_json(n->opts.deny, n->opts.ndeny), "published", ports, "connections",
		      "active", (json_int_t)st[0], "total", (json_int_t)st[1], "failed",
		      (json_int_t)st[2], "create_ms", (double)n->create_ns / 1e6);
	return o;
}

int net_child_tap(const char *child_name, void *arg)
{
	/* One per process: a cow child builds one VM. */
	static struct net child;
	struct fvm_err err = FVM_ERR_INIT;
	int ret;

	if (!current)
		return -ENODEV; /* the source has no network of forkvm's (none, or --tap) */
	if (current->lifeline_fd >= 0) { /* a jailed family's: its broker makes it */
		struct net_opts o = current->opts;
		net_forget(current, true);
		ret = net_broker_open(&o, child_name, &child, &err);
	} else {
		ret = net_create_child(&child, true, &err);
	}
	if (ret) {
		log_err("network of cow child %s: %s", child_name, err.msg);
		return ret == -ENODEV ? -EIO : ret; /* -ENODEV says "no network to copy" */
	}
	ret = net_tap_dup(&child);
	if (ret < 0) {
		log_err("network of cow child %s: a TAP fd for its NIC: %s", child_name,
			strerror(-ret));
		net_destroy(&child);
		return ret;
	}
	log_info("network of cow child %s: %s, host side %s (slot %d), %d published port%s, "
		 "ready in %.1f ms", child_name, net_mode_name(child.opts.mode), child.veth_host,
		 child.slot, child.nports, child.nports == 1 ? "" : "s",
		 (double)child.create_ns / 1e6);
	return ret;
}

void net_release_current(void)
{
	if (current)
		net_destroy(current);
}
