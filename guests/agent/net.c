/*
 * Guest networking (docs/NET.md, "The guest"): the VMM's NIC gets the same address in every
 * clone (its namespace on the host is what differs), so the agent configures it once at boot
 * from the kernel command line; net_config re-addresses a clone for users who want unique
 * guest addresses. Plain ioctls: the initramfs has no ip(8), and IPv4 is all that is needed.
 */
#include "net.h"
#include "log.h"
#include "ops.h"
#include "reply.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <net/route.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define NET_BOOT_WAIT_MS 2000

int net_parse_addr(const char *text, uint32_t *addr)
{
	struct in_addr in;

	if (!text || inet_pton(AF_INET, text, &in) != 1)
		return -EINVAL;
	*addr = ntohl(in.s_addr);
	return 0;
}

int net_parse_cidr(const char *text, uint32_t *addr, int *prefix)
{
	char buf[32], *slash, *end;
	long p;

	if (!text || strlen(text) >= sizeof(buf))
		return -EINVAL;
	strcpy(buf, text);
	slash = strchr(buf, '/');
	if (!slash)
		return -EINVAL;
	*slash = '\0';
	errno = 0;
	p = strtol(slash + 1, &end, 10);
	if (errno || end == slash + 1 || *end || p < 0 || p > 32)
		return -EINVAL;
	*prefix = (int)p;
	return net_parse_addr(buf, addr);
}

static void set_sin(struct sockaddr *sa, uint32_t addr)
{
	struct sockaddr_in sin = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(addr) };

	memcpy(sa, &sin, sizeof(sin));
}

static int if_up(int s, const char *ifname, struct fvm_err *e)
{
	struct ifreq ifr = { 0 };

	snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "%s", ifname);
	if (ioctl(s, SIOCGIFFLAGS, &ifr) < 0)
		return errmsg(e, -errno, "%s: get flags: %s", ifname, strerror(errno));
	ifr.ifr_flags |= IFF_UP;
	if (ioctl(s, SIOCSIFFLAGS, &ifr) < 0)
		return errmsg(e, -errno, "%s: bring up: %s", ifname, strerror(errno));
	return 0;
}

/* Replace the default route with one through gw. */
static int set_default_route(int s, const char *ifname, uint32_t gw, struct fvm_err *e)
{
	struct rtentry rt = { 0 };

	set_sin(&rt.rt_dst, 0);
	set_sin(&rt.rt_genmask, 0);
	/* an old default (another clone's address plan) goes first; none is fine */
	if (ioctl(s, SIOCDELRT, &rt) < 0 && errno != ESRCH && errno != ENOENT)
		return errmsg(e, -errno, "remove the old default route: %s", strerror(errno));
	set_sin(&rt.rt_gateway, gw);
	rt.rt_flags = RTF_UP | RTF_GATEWAY;
	rt.rt_dev = (char *)ifname;
	if (ioctl(s, SIOCADDRT, &rt) < 0)
		return errmsg(e, -errno, "default route via %u.%u.%u.%u on %s: %s", gw >> 24,
				  (gw >> 16) & 255, (gw >> 8) & 255, gw & 255, ifname,
				  strerror(errno));
	return 0;
}

int net_apply(const struct net_request *r, struct fvm_err *e)
{
	const char *ifname = r->interface ? r->interface : "eth0";
	uint32_t mask = r->prefix ? 0xffffffffu << (32 - r->prefix) : 0;
	struct ifreq ifr = { 0 };
	int s, ret;

	if (strlen(ifname) >= IFNAMSIZ)
		return errmsg(e, -EINVAL, "interface name '%s' is too long", ifname);
	s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (s < 0)
		return errmsg(e, -errno, "socket for interface configuration: %s",
				  strerror(errno));
	ret = if_up(s, "lo", e);
	if (ret < 0)
		goto out;
	snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "%s", ifname);
	if (r->mtu) {
		ifr.ifr_mtu = r->mtu;
		if (ioctl(s, SIOCSIFMTU, &ifr) < 0) {
			ret = errmsg(e, -errno, "%s: MTU %d: %s", ifname, r->mtu, strerror(errno));
			goto out;
		}
	}
	set_sin(&ifr.ifr_addr, r->addr);
	if (ioctl(s, SIOCSIFADDR, &ifr) < 0) {
		ret = errmsg(e, -errno, "%s: set address: %s", ifname, strerror(errno));
		goto out;
	}
	set_sin(&ifr.ifr_netmask, mask);
	if (ioctl(s, SIOCSIFNETMASK, &ifr) < 0) {
		ret = errmsg(e, -errno, "%s: set netmask /%d: %s", ifname, r->prefix,
				 strerror(errno));
		goto out;
	}
	ret = if_up(s, ifname, e);
	if (ret == 0 && r->has_gateway)
		ret = set_default_route(s, ifname, r->gateway, e);
out:
	close(s);
	return ret;
}

/* The value of KEY= on the kernel command line, into out; false when absent. */
static bool cmdline_value(const char *key, char *out, size_t cap)
{
	char buf[4096], *tok, *save = NULL;
	size_t klen = strlen(key);
	ssize_t n;
	int fd = open("/proc/cmdline", O_RDONLY | O_CLOEXEC);

	if (fd < 0)
		return false;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return false;
	buf[n] = '\0';
	for (tok = strtok_r(buf, " \t\n", &save); tok; tok = strtok_r(NULL, " \t\n", &save))
		if (!strncmp(tok, key, klen) && tok[klen] == '=') {
			snprintf(out, cap, "%s", tok + klen + 1);
			return true;
		}
	return false;
}

void net_boot_config(void)
{
	struct net_request r = { .interface = "eth0" };
	struct fvm_err e = FVM_ERR_INIT;
	char spec[96], *gw, *mtu = NULL;
	struct timespec pause = { 0, 20 * 1000 * 1000 };

	if (!cmdline_value("forkvm.net", spec, sizeof(spec)))
		return;
	gw = strchr(spec, ',');
	if (gw) {
		*gw++ = '\0';
		mtu = strchr(gw, ',');
		if (mtu)
			*mtu++ = '\0';
	}
	if (net_parse_cidr(spec, &r.addr, &r.prefix) ||
	    (gw && *gw && net_parse_addr(gw, &r.gateway)) || (mtu && (r.mtu = atoi(mtu)) <= 0)) {
		log_warn("forkvm.net=%s: expected ADDR/PREFIX[,GATEWAY[,MTU]]; the network stays "
			 "unconfigured", spec);
		return;
	}
	r.has_gateway = gw && *gw;
	for (int waited = 0; !if_nametoindex("eth0") && waited < NET_BOOT_WAIT_MS; waited += 20)
		nanosleep(&pause, NULL);
	if (net_apply(&r, &e) < 0)
		log_warn("network configuration from the command line: %s", e.msg);
	else
		log_info("eth0 is %s%s%s", spec, r.has_gateway ? " via " : "",
			 r.has_gateway ? gw : "");
}

int op_net_config(const struct net_config_request *x, json_t *reply, struct fvm_err *e)
{
	struct net_request r = { .interface = x->interface ? x->interface : "eth0",
				 .mtu = (int)x->mtu };
	int ret;

	if (net_parse_cidr(x->address, &r.addr, &r.prefix))
		return errmsg(e, -EINVAL, "field 'address' must be A.B.C.D/PREFIX, not '%.64s'",
				  x->address);
	if (x->gateway && net_parse_addr(x->gateway, &r.gateway))
		return errmsg(e, -EINVAL, "field 'gateway' must be A.B.C.D, not '%.64s'",
				  x->gateway);
	r.has_gateway = x->gateway != NULL;
	if (!if_nametoindex(r.interface))
		return errmsg(e, -ENODEV, "no network interface '%.32s' in the guest",
				  r.interface);
	ret = net_apply(&r, e);
	if (ret == 0)
		ret = reply_set(reply, "interface", json_string(r.interface));
	if (ret == 0)
		ret = reply_set(reply, "address", json_string(x->address));
	if (ret == 0 && x->gateway)
		ret = reply_set(reply, "gateway", json_string(x->gateway));
	return ret == -ENOMEM ? errmsg(e, ret, "build net_config reply: %s", strerror(ENOMEM))
			      : ret;
}
