/* `forkvm run` networking (docs/NET.md): the options, and the VM's network made before the VM
 * so that its NIC gets the TAP. */
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/run_opts.h"
#include "jail/cgroup.h"
#include "jail/seccomp.h"
#include "util/errmsg.h"
#include "util/log.h"

int run_net_opt(const struct cli_command *self, int opt, const char *arg, struct run_opts *o)
{
	struct fvm_err err = FVM_ERR_INIT;
	int ret;

	switch (opt) {
	case RUN_OPT_NET: ret = net_opts_mode(&o->net, arg, &err); break;
	case RUN_OPT_PUBLISH: ret = net_opts_publish(&o->net, arg, &err); break;
	case RUN_OPT_ALLOW: ret = net_opts_cidr(&o->net, true, arg, &err); break;
	case RUN_OPT_DENY: ret = net_opts_cidr(&o->net, false, arg, &err); break;
	case RUN_OPT_NET_ADDR: ret = net_opts_address(&o->net, arg, &err); break;
	case RUN_OPT_NET_MTU: ret = net_opts_mtu(&o->net, arg, &err); break;
	case RUN_OPT_NET_BROKER_FD: {
		char *end;
		long v = strtol(arg, &end, 10);
		if (*arg == '\0' || *end || v < 3 || v > 1 << 20)
			return cli_usage_error(self, "--net-broker-fd '%s': need a descriptor number "
					       "of 3 or more", arg);
		o->net_broker_fd = (int)v;
		return 0;
	}
	default: return cli_usage_error(self, "unknown option");
	}
	return ret ? cli_usage_error(self, "%s", err_text(&err)) : 0;
}

int run_net_finish(const struct cli_command *self, struct run_opts *o)
{
	char arg[96];
	struct fvm_err err = FVM_ERR_INIT;

	if (net_opts_finish(&o->net, &err))
		return cli_usage_error(self, "%s", err_text(&err));
	if (o->net.mode == NET_NONE)
		return 0;
	/* Inside a jail already (a child a jailed source exec'd), the network can only come from
	 * the family's broker (docs/NET.md, "Networks of jailed VMMs"). */
	if (getenv("FORKVM_JAILED") && o->net_broker_fd < 0)
		return cli_usage_error(self, "--net %s in a jailed VMM needs its family's network "
				       "broker (--net-broker-fd): a jailed process cannot make a "
				       "network", net_mode_name(o->net.mode));
	/* A Linux guest configures eth0 from forkvm.net= at boot (docs/AGENT.md), unless the
	 * command line already says how. */
	if (o->kernel && !(o->cmdline && strstr(o->cmdline, "forkvm.net="))) {
		if (net_kernel_arg(&o->net, arg, sizeof(arg)) ||
		    snprintf(o->net_cmdline, sizeof(o->net_cmdline), "%s %s",
			     o->cmdline ? o->cmdline : LINUX_DEFAULT_CMDLINE, arg) >=
			    (int)sizeof(o->net_cmdline))
			return cli_usage_error(self, "--net: the kernel command line gets too long");
		o->cmdline = o->net_cmdline;
	}
	return 0;
}

/* The relay thread's seccomp filter: sockets, epoll, reads and writes (the device role). */
static int relay_filter(void)
{
	return jail_seccomp_apply(JAIL_ROLE_DEVICE);
}

/* The network broker's: its own filter on every thread (the relays add theirs). */
/*
 * The broker (root, with capabilities) in a cgroup of its own, root's, out of the family's:
 * the jail's uid may move any process of the family's cgroup into a cgroup it makes there,
 * and kill, freeze or starve it through that one (docs/SECURITY.md). Single-threaded here.
 */
static pid_t broker_fork(void)
{
	const struct cgroup_opts *vm = jail_cgroup_opts();
	struct cgroup_opts none = { .no_cgroup = vm && vm->no_cgroup };
	struct cgroup_slot cg;

	jail_cgroup_prepare("netd", &none, &cg); /* ROOT/forkvm/netd-<the VMM's pid> */
	return jail_cgroup_fork(&cg);
}

static int broker_filter(void)
{
	return jail_seccomp_apply(JAIL_ROLE_NETD);
}

int run_net_create(struct run_opts *o)
{
	char ip[INET_ADDRSTRLEN], ports[512] = "";
	struct fvm_err err = FVM_ERR_INIT;
	struct net *n = &o->netw;
	size_t pos = 0;
	int ret, fd;

	o->net.relay_thread_init = relay_filter;
	if (o->net.mode == NET_NONE && o->net_broker_fd >= 0)
		close(o->net_broker_fd); /* no network asked: nothing of the broker's to keep */
	if (o->net.mode != NET_NONE && o->net_broker_fd >= 0) {
		/* A child of a jailed source: its source's broker makes its network. */
		ret = net_broker_adopt(o->net_broker_fd, &err);
		if (!ret)
			ret = net_broker_open(&o->net, o->name, n, &err);
	} else if (o->net.mode != NET_NONE && jail_enabled(&o->jail)) {
		/* Jailed, it could make none after the jail: a broker made now, while root,
		 * makes this VM's network and every one of its family's. */
		struct net_broker_hooks hooks = {
			.confine = broker_filter,
			.probe = jail_seccomp_probe_enabled() ? jail_seccomp_probe : NULL,
			.fork = broker_fork,
		};
		ret = net_broker_start(&o->net, &hooks, &err);
		if (!ret)
			ret = net_broker_open(&o->net, o->name, n, &err);
	} else {
		ret = net_create(&o->net, n, &err);
	}
	/* Filters loaded from now on keep the family's threads from shutting its socket down. */
	if (!ret && net_broker_fd() >= 0)
		jail_seccomp_guard_fd(net_broker_fd());
	if (ret) {
		log_err("network of %s: %s", o->name, err_text(&err));
		return ret;
	}
	if (!n->active)
		return 0;
	fd = net_tap_dup(n);
	if (fd < 0) {
		log_err("network of %s: a TAP fd for the NIC: %s", o->name, strerror(-fd));
		net_destroy(n);
		return fd;
	}
	o->vm.net.present = true;
	o->vm.net.tap_fd = fd;
	/* A MAC given on the command line wins; otherwise a random locally administered one. */
	static const uint8_t zero[6];
	if (!memcmp(o->vm.net.mac, zero, sizeof(zero)))
		net_random_mac(o->vm.net.mac);
	for (int i = 0; i < n->nports && pos < sizeof(ports); i++) {
		inet_ntop(AF_INET, &(struct in_addr){ htonl(n->ports[i].spec.host_ip) }, ip, sizeof(ip));
		pos += (size_t)snprintf(ports + pos, sizeof(ports) - pos, "%s %s:%u->%u",
					i ? "," : "; published", ip, n->ports[i].host_port,
					n->ports[i].spec.guest_port);
	}
	json_t *st = net_status_json(n);
	log_info("network: %s, guest %s via %s in its own namespace; host side %s %s (slot %d)%s; "
		 "ready in %.1f ms%s", net_mode_name(n->opts.mode),
		 json_string_value(json_object_get(st, "guest")),
		 json_string_value(json_object_get(st, "gateway")), n->veth_host,
		 json_string_value(json_object_get(st, "host_address")), n->slot, ports,
		 (double)n->create_ns / 1e6, n->lifeline_fd >= 0 ? " (by the network broker)" : "");
	json_decref(st);
	return 0;
}

void run_net_destroy(struct run_opts *o)
{
	net_destroy(&o->netw);
}
