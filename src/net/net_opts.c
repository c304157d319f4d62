/* The network options of a VM: defaults, the CLI's strings with precise errors, the checks
 * across options, and what the guest is told (its kernel argument, its MAC). */
#include <arpa/inet.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "net/net.h"
#include "net/net_impl.h"
#include "util/errmsg.h"

void net_opts_init(struct net_opts *o)
{
	*o = (struct net_opts){ .mode = NET_NONE, .mtu = NET_DEFAULT_MTU,
				.max_conns = NET_DEFAULT_MAX_CONNS };
	/* The defaults are constants of this file: they parse. */
	net_parse_cidr(NET_GUEST_ADDR, false, &o->guest_addr, &o->guest_prefix);
	net_parse_ip(NET_GUEST_GATEWAY, &o->gateway);
}

const char *net_mode_name(enum net_mode mode)
{
	switch (mode) {
	case NET_NONE: return "none";
	case NET_ISOLATED: return "isolated";
	case NET_NAT: return "nat";
	}
	return "?";
}

int net_parse_ip(const char *s, uint32_t *ip)
{
	struct in_addr a;

	if (inet_pton(AF_INET, s, &a) != 1)
		return -EINVAL;
	*ip = ntohl(a.s_addr);
	return 0;
}

uint32_t net_mask(uint8_t prefix)
{
	return prefix ? ~0u << (32 - prefix) : 0;
}

/* "A.B.C.D[/P]"; keep_host: the address may have host bits (an interface address). */
int net_parse_cidr(const char *s, bool keep_host, uint32_t *addr, uint8_t *prefix)
{
	char ip[INET_ADDRSTRLEN], *end;
	const char *slash = strchr(s, '/');
	size_t iplen = slash ? (size_t)(slash - s) : strlen(s);
	unsigned long p = 32;

	if (iplen == 0 || iplen >= sizeof(ip))
		return -EINVAL;
	memcpy(ip, s, iplen);
	ip[iplen] = '\0';
	if (net_parse_ip(ip, addr))
		return -EINVAL;
	if (slash) {
		errno = 0;
		p = strtoul(slash + 1, &end, 10);
		if (!slash[1] || *end || errno || p > 32 || slash[1] == '+' || slash[1] == '-')
			return -EINVAL;
	}
	*prefix = (uint8_t)p;
	if (!keep_host && (*addr & ~net_mask(*prefix)))
		return -ERANGE;
	return 0;
}

void net_format_ip(uint32_t ip, char buf[INET_ADDRSTRLEN])
{
	struct in_addr a = { .s_addr = htonl(ip) };

	if (!inet_ntop(AF_INET, &a, buf, INET_ADDRSTRLEN))
		snprintf(buf, INET_ADDRSTRLEN, "?");
}

/* A port 0-65535 (min 1 for guest ports), digits only. */
static int parse_port(const char *s, size_t len, unsigned min, uint16_t *port)
{
	unsigned long v = 0;

	if (len == 0 || len > 5)
		return -EINVAL;
	for (size_t i = 0; i < len; i++) {
		if (s[i] < '0' || s[i] > '9')
			return -EINVAL;
		v = v * 10 + (unsigned long)(s[i] - '0');
	}
	if (v < min || v > 65535)
		return -EINVAL;
	*port = (uint16_t)v;
	return 0;
}

int net_opts_mode(struct net_opts *o, const char *mode, struct fvm_err *err)
{
	if (strcmp(mode, "none") == 0 || strcmp(mode, "off") == 0)
		o->mode = NET_NONE;
	else if (strcmp(mode, "isolated") == 0)
		o->mode = NET_ISOLATED;
	else if (strcmp(mode, "nat") == 0)
		o->mode = NET_NAT;
	else
		return errmsg(err, -EINVAL, "--net '%s': need none, isolated or nat", mode);
	return 0;
}

int net_opts_publish(struct net_opts *o, const char *spec, struct fvm_err *err)
{
	const char *last = strrchr(spec, ':'), *first = strchr(spec, ':');
	struct net_publish p = { .host_ip = INADDR_LOOPBACK };
	char ip[INET_ADDRSTRLEN];

	if (o->npublish == NET_MAX_PUBLISH)
		return errmsg(err, -ENOSPC, "--publish '%s': at most %d published ports",
			      spec, NET_MAX_PUBLISH);
	if (!last)
		return errmsg(err, -EINVAL, "--publish '%s': need [IP:]HOSTPORT:GUESTPORT, "
			      "e.g. 8080:80 or 0.0.0.0:8080:80", spec);
	if (parse_port(last + 1, strlen(last + 1), 1, &p.guest_port))
		return errmsg(err, -EINVAL, "--publish '%s': guest port '%s' is not 1-65535",
			      spec, last + 1);
	if (first != last) {
		size_t iplen = (size_t)(first - spec);
		if (iplen == 0 || iplen >= sizeof(ip))
			return errmsg(err, -EINVAL, "--publish '%s': need an IPv4 address "
				      "before the host port", spec);
		memcpy(ip, spec, iplen);
		ip[iplen] = '\0';
		if (net_parse_ip(ip, &p.host_ip))
			return errmsg(err, -EINVAL, "--publish '%s': '%s' is not an IPv4 "
				      "address", spec, ip);
		first++;
	} else {
		first = spec;
	}
	if (parse_port(first, (size_t)(last - first), 0, &p.host_port))
		return errmsg(err, -EINVAL, "--publish '%s': host port '%.*s' is not 0-65535 "
			      "(0: any free port)", spec, (int)(last - first), first);
	for (int i = 0; i < o->npublish; i++)
		if (p.host_port && o->publish[i].host_port == p.host_port &&
		    (o->publish[i].host_ip == p.host_ip || !p.host_ip || !o->publish[i].host_ip))
			return errmsg(err, -EINVAL, "--publish '%s': host port %u is "
				      "published twice", spec, p.host_port);
	o->publish[o->npublish++] = p;
	return 0;
}

int net_opts_cidr(struct net_opts *o, bool allow, const char *cidr, struct fvm_err *err)
{
	const char *opt = allow ? "--allow" : "--deny";
	int *count = allow ? &o->nallow : &o->ndeny;
	struct net_cidr c;
	char net[INET_ADDRSTRLEN];
	int ret;

	if (*count == NET_MAX_CIDRS)
		return errmsg(err, -ENOSPC, "%s '%s': at most %d prefixes", opt, cidr,
			      NET_MAX_CIDRS);
	ret = net_parse_cidr(cidr, false, &c.addr, &c.prefix);
	if (ret == -ERANGE) {
		net_format_ip(c.addr & net_mask(c.prefix), net);
		return errmsg(err, -EINVAL, "%s '%s': host bits set after the /%u prefix "
			      "(did you mean %s/%u?)", opt, cidr, c.prefix, net, c.prefix);
	}
	if (ret)
		return errmsg(err, -EINVAL, "%s '%s': need an IPv4 address or prefix, e.g. "
			      "192.0.2.0/24 or 192.0.2.7", opt, cidr);
	(allow ? o->allow : o->deny)[(*count)++] = c;
	return 0;
}

int net_opts_address(struct net_opts *o, const char *spec, struct fvm_err *err)
{
	char buf[64], *comma;
	uint32_t addr, gw, mask;
	uint8_t prefix;

	if (snprintf(buf, sizeof(buf), "%s", spec) >= (int)sizeof(buf))
		return errmsg(err, -EINVAL, "--net-addr '%s': too long", spec);
	comma = strchr(buf, ',');
	if (comma)
		*comma++ = '\0';
	if (!strchr(buf, '/') || net_parse_cidr(buf, true, &addr, &prefix))
		return errmsg(err, -EINVAL, "--net-addr '%s': need A.B.C.D/PREFIX[,GATEWAY], "
			      "e.g. " NET_GUEST_ADDR "," NET_GUEST_GATEWAY, spec);
	if (prefix < 8 || prefix > 30)
		return errmsg(err, -EINVAL, "--net-addr '%s': the prefix must be /8 to /30",
			      spec);
	mask = net_mask(prefix);
	gw = (addr & mask) + 1;
	if (comma && net_parse_ip(comma, &gw))
		return errmsg(err, -EINVAL, "--net-addr '%s': gateway '%s' is not an IPv4 "
			      "address", spec, comma);
	o->guest_addr = addr;
	o->guest_prefix = prefix;
	o->gateway = gw;
	return 0;
}

int net_opts_mtu(struct net_opts *o, const char *mtu, struct fvm_err *err)
{
	char *end;
	unsigned long v;

	errno = 0;
	v = strtoul(mtu, &end, 10);
	if (!*mtu || *end || errno || v < 68 || v > 65535 || *mtu == '-' || *mtu == '+')
		return errmsg(err, -EINVAL, "--net-mtu '%s': need 68 to 65535", mtu);
	o->mtu = (int)v;
	return 0;
}

int net_opts_finish(struct net_opts *o, struct fvm_err *err)
{
	uint32_t mask = net_mask(o->guest_prefix), pool;
	uint8_t pool_prefix;
	char a[INET_ADDRSTRLEN], g[INET_ADDRSTRLEN];

	if (o->mode == NET_NONE && o->npublish)
		o->mode = NET_ISOLATED;
	if (o->mode != NET_NAT && (o->nallow || o->ndeny))
		return errmsg(err, -EINVAL, "--allow and --deny filter egress, which needs "
			      "--net nat (the mode is %s)", net_mode_name(o->mode));
	net_format_ip(o->guest_addr, a);
	net_format_ip(o->gateway, g);
	if ((o->gateway & mask) != (o->guest_addr & mask) || o->gateway == o->guest_addr)
		return errmsg(err, -EINVAL, "guest address %s/%u and gateway %s: the gateway "
			      "must be another address of the guest's subnet", a, o->guest_prefix, g);
	for (int i = 0; i < 2; i++) {
		uint32_t ip = i ? o->gateway : o->guest_addr, host = ip & ~mask;
		if (host == 0 || host == ~mask)
			return errmsg(err, -EINVAL, "%s %s is the subnet's network or broadcast "
				      "address", i ? "gateway" : "guest address", i ? g : a);
	}
	net_parse_cidr(NET_POOL, false, &pool, &pool_prefix);
	uint8_t shorter = o->guest_prefix < pool_prefix ? o->guest_prefix : pool_prefix;
	if ((o->guest_addr & net_mask(shorter)) == (pool & net_mask(shorter)))
		return errmsg(err, -EINVAL, "guest subnet %s/%u overlaps the host-side pool "
			      NET_POOL, a, o->guest_prefix);
	if (o->max_conns < 1)
		o->max_conns = NET_DEFAULT_MAX_CONNS;
	return 0;
}

int net_kernel_arg(const struct net_opts *o, char *buf, size_t len)
{
	char a[INET_ADDRSTRLEN], g[INET_ADDRSTRLEN];
	int n;

	net_format_ip(o->guest_addr, a);
	net_format_ip(o->gateway, g);
	n = snprintf(buf, len, "forkvm.net=%s/%u,%s,%d", a, o->guest_prefix, g, o->mtu);
	return n < 0 || (size_t)n >= len ? -ENAMETOOLONG : 0;
}

void net_random_mac(uint8_t mac[6])
{
	if (getrandom(mac, 6, 0) != 6) {
		/* Only if the kernel's pool fails: still distinct per process and time. */
		uint64_t x = (uint64_t)getpid() * 0x9E3779B97F4A7C15ULL ^ (uint64_t)time(NULL);
		memcpy(mac, &x, 6);
	}
	mac[0] = (uint8_t)((mac[0] & 0xfe) | 0x02); /* unicast, locally administered */
}

/* The next text slot of a, printed; NULL when full. */
static const char *argv_text(struct net_argv *a, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
static const char *argv_text(struct net_argv *a, const char *fmt, ...)
{
	va_list ap;

	if (a->used >= (int)(sizeof(a->text) / sizeof(a->text[0])))
		return NULL;
	va_start(ap, fmt);
	vsnprintf(a->text[a->used], sizeof(a->text[0]), fmt, ap);
	va_end(ap);
	return a->text[a->used++];
}

int net_opts_argv(const struct net_opts *o, bool new_ports, struct net_argv *a,
		  const char **argv, int cap)
{
	char ip[INET_ADDRSTRLEN], gw[INET_ADDRSTRLEN];
	int n = 0;

#define PUT(flag, value)                                                                      \
	do {                                                                                  \
		const char *v_ = (value);                                                    \
		if (n + 2 > cap || !v_)                                                       \
			return -ENOSPC;                                                       \
		argv[n++] = (flag);                                                           \
		argv[n++] = v_;                                                               \
	} while (0)
	if (o->mode == NET_NONE)
		return 0;
	PUT("--net", net_mode_name(o->mode));
	for (int i = 0; i < o->nallow; i++) {
		net_format_ip(o->allow[i].addr, ip);
		PUT("--allow", argv_text(a, "%s/%u", ip, o->allow[i].prefix));
	}
	for (int i = 0; i < o->ndeny; i++) {
		net_format_ip(o->deny[i].addr, ip);
		PUT("--deny", argv_text(a, "%s/%u", ip, o->deny[i].prefix));
	}
	for (int i = 0; i < o->npublish; i++) {
		net_format_ip(o->publish[i].host_ip, ip);
		PUT("--publish", argv_text(a, "%s:%u:%u", ip,
					   new_ports ? 0u : o->publish[i].host_port,
					   o->publish[i].guest_port));
	}
	net_format_ip(o->guest_addr, ip);
	net_format_ip(o->gateway, gw);
	PUT("--net-addr", argv_text(a, "%s/%u,%s", ip, o->guest_prefix, gw));
	PUT("--net-mtu", argv_text(a, "%d", o->mtu));
#undef PUT
	return n;
}
