/* rtnetlink through libmnl: links, addresses, the default route, veth pairs. A socket works in
 * the network namespace of the thread that opened it, whichever thread uses it later. */
#include <arpa/inet.h>
#include <errno.h>
#include <stdbool.h>
#include <libmnl/libmnl.h>
#include <linux/if.h>
#include <linux/if_link.h>
#include <linux/rtnetlink.h>
#include <linux/veth.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "net/net_impl.h"
#include "util/errmsg.h"

#define NL_BUF 32768
/* How many times a dump interrupted by concurrent link changes (NLM_F_DUMP_INTR) is taken. */
#define NL_DUMP_TRIES 20

int nl_open(struct nl *nl, struct fvm_err *err)
{
	int ret = 0;

	*nl = (struct nl){ 0 };
	nl->sock = mnl_socket_open2(NETLINK_ROUTE, SOCK_CLOEXEC);
	if (!nl->sock)
		return errmsg(err, -errno, "opening an rtnetlink socket: %s", strerror(errno));
	if (mnl_socket_bind(nl->sock, 0, MNL_SOCKET_AUTOPID) < 0) {
		ret = errmsg(err, -errno, "binding the rtnetlink socket: %s", strerror(errno));
		mnl_socket_close(nl->sock);
		nl->sock = NULL;
		return ret;
	}
	nl->portid = mnl_socket_get_portid(nl->sock);
	return 0;
}

void nl_close(struct nl *nl)
{
	if (nl->sock)
		mnl_socket_close(nl->sock);
	nl->sock = NULL;
}

static struct nlmsghdr *nl_msg(char *buf, uint16_t type, uint16_t flags)
{
	struct nlmsghdr *nlh = mnl_nlmsg_put_header(buf);

	nlh->nlmsg_type = type;
	nlh->nlmsg_flags = (uint16_t)(NLM_F_REQUEST | NLM_F_ACK | flags);
	return nlh;
}

/* Send one request, run cb on every answer until its ack (or the dump's end): 0 or -errno. */
/* Whether a buffer of replies holds the end of a dump (DONE, or an error that ends it). */
static bool dump_ended(const void *buf, size_t len)
{
	const struct nlmsghdr *nlh = buf;
	int left = (int)len;

	for (; mnl_nlmsg_ok(nlh, left); nlh = mnl_nlmsg_next(nlh, &left))
		if (nlh->nlmsg_type == NLMSG_DONE || nlh->nlmsg_type == NLMSG_ERROR)
			return true;
	return false;
}

/* Send one request and run cb on each reply. -EINTR: a dump the kernel marked interrupted
 * (its replies consumed); anything else as the kernel or libmnl said it. */
static int nl_talk(struct nl *nl, struct nlmsghdr *nlh, mnl_cb_t cb, void *data)
{
	char *buf = malloc(NL_BUF);
	int ret = 0;

	if (!buf)
		return -ENOMEM;
	nlh->nlmsg_seq = ++nl->seq;
	if (mnl_socket_sendto(nl->sock, nlh, nlh->nlmsg_len) < 0) {
		ret = -errno;
		goto out;
	}
	for (;;) {
		ssize_t n = mnl_socket_recvfrom(nl->sock, buf, NL_BUF);
		if (n < 0) {
			ret = -errno;
			break;
		}
		if (ret == -EINTR) {
			/* An interrupted dump: read the rest of it (up to its DONE) and drop it, so
			 * the socket's next request does not read stale parts. */
			if (dump_ended(buf, (size_t)n))
				break;
			continue;
		}
		errno = 0;
		int r = mnl_cb_run(buf, (size_t)n, nl->seq, nl->portid, cb, data);
		if (r < 0 && errno == EINTR) {
			/* NLM_F_DUMP_INTR: the links changed during the dump (another VMM made or
			 * removed one); the caller dumps again. */
			ret = -EINTR;
			if (dump_ended(buf, (size_t)n))
				break;
			continue;
		}
		if (r < 0) {
			ret = errno ? -errno : -EIO;
			break;
		}
		if (r == MNL_CB_STOP)
			break;
	}
out:
	free(buf);
	return ret;
}

struct index_ans {
	int index;
};

static int on_link_index(const struct nlmsghdr *nlh, void *data)
{
	const struct ifinfomsg *ifm = mnl_nlmsg_get_payload(nlh);
	struct index_ans *a = data;

	if (nlh->nlmsg_type == RTM_NEWLINK)
		a->index = ifm->ifi_index;
	return MNL_CB_OK;
}

int nl_link_index(struct nl *nl, const char *name, struct fvm_err *err)
{
	char buf[MNL_SOCKET_BUFFER_SIZE];
	struct nlmsghdr *nlh = nl_msg(buf, RTM_GETLINK, 0);
	struct ifinfomsg *ifm = mnl_nlmsg_put_extra_header(nlh, sizeof(*ifm));
	struct index_ans a = { 0 };
	int ret;

	ifm->ifi_family = AF_UNSPEC;
	mnl_attr_put_strz(nlh, IFLA_IFNAME, name);
	ret = nl_talk(nl, nlh, on_link_index, &a);
	if (ret == 0 && a.index <= 0)
		ret = -ENODEV;
	if (ret)
		return errmsg(err, ret, "looking up interface %s (RTM_GETLINK): %s", name,
			      strerror(-ret));
	return a.index;
}

int nl_link_up(struct nl *nl, int index, const char *name, int mtu, const uint8_t *mac,
	       struct fvm_err *err)
{
	char buf[MNL_SOCKET_BUFFER_SIZE];
	struct nlmsghdr *nlh = nl_msg(buf, RTM_NEWLINK, 0);
	struct ifinfomsg *ifm = mnl_nlmsg_put_extra_header(nlh, sizeof(*ifm));
	int ret;

	ifm->ifi_family = AF_UNSPEC;
	ifm->ifi_index = index;
	ifm->ifi_flags = IFF_UP;
	ifm->ifi_change = IFF_UP;
	if (mtu > 0)
		mnl_attr_put_u32(nlh, IFLA_MTU, (uint32_t)mtu);
	if (mac)
		mnl_attr_put(nlh, IFLA_ADDRESS, 6, mac);
	ret = nl_talk(nl, nlh, NULL, NULL);
	if (ret)
		return errmsg(err, ret, "bringing up %s%s%s (RTM_NEWLINK): %s", name,
			      mtu > 0 ? " with its MTU" : "", mac ? " and MAC" : "", strerror(-ret));
	return 0;
}

int nl_addr_add(struct nl *nl, int index, const char *name, uint32_t addr, uint8_t prefix,
		struct fvm_err *err)
{
	char buf[MNL_SOCKET_BUFFER_SIZE], a[INET_ADDRSTRLEN];
	struct nlmsghdr *nlh = nl_msg(buf, RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL);
	struct ifaddrmsg *ifa = mnl_nlmsg_put_extra_header(nlh, sizeof(*ifa));
	int ret;

	ifa->ifa_family = AF_INET;
	ifa->ifa_prefixlen = prefix;
	ifa->ifa_scope = RT_SCOPE_UNIVERSE;
	ifa->ifa_index = (uint32_t)index;
	mnl_attr_put_u32(nlh, IFA_LOCAL, htonl(addr));
	mnl_attr_put_u32(nlh, IFA_ADDRESS, htonl(addr));
	if (prefix < 31)
		mnl_attr_put_u32(nlh, IFA_BROADCAST, htonl(addr | ~net_mask(prefix)));
	ret = nl_talk(nl, nlh, NULL, NULL);
	if (ret) {
		net_format_ip(addr, a);
		return errmsg(err, ret, "adding address %s/%u to %s (RTM_NEWADDR): %s", a,
			      prefix, name, strerror(-ret));
	}
	return 0;
}

int nl_route_default(struct nl *nl, int oif, const char *name, uint32_t gateway,
		     struct fvm_err *err)
{
	char buf[MNL_SOCKET_BUFFER_SIZE], g[INET_ADDRSTRLEN];
	struct nlmsghdr *nlh = nl_msg(buf, RTM_NEWROUTE, NLM_F_CREATE | NLM_F_EXCL);
	struct rtmsg *rtm = mnl_nlmsg_put_extra_header(nlh, sizeof(*rtm));
	int ret;

	rtm->rtm_family = AF_INET;
	rtm->rtm_table = RT_TABLE_MAIN;
	rtm->rtm_protocol = RTPROT_STATIC;
	rtm->rtm_scope = RT_SCOPE_UNIVERSE;
	rtm->rtm_type = RTN_UNICAST;
	mnl_attr_put_u32(nlh, RTA_GATEWAY, htonl(gateway));
	mnl_attr_put_u32(nlh, RTA_OIF, (uint32_t)oif);
	ret = nl_talk(nl, nlh, NULL, NULL);
	if (ret) {
		net_format_ip(gateway, g);
		return errmsg(err, ret, "adding the default route via %s dev %s "
			      "(RTM_NEWROUTE): %s", g, name, strerror(-ret));
	}
	return 0;
}

int nl_veth_create(struct nl *nl, const char *name, const char *peer, int peer_ns_fd, int mtu,
		   struct fvm_err *err)
{
	char buf[MNL_SOCKET_BUFFER_SIZE];
	struct nlmsghdr *nlh = nl_msg(buf, RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL);
	struct ifinfomsg *ifm = mnl_nlmsg_put_extra_header(nlh, sizeof(*ifm));
	struct nlattr *info, *data, *peer_attr;
	int ret;

	ifm->ifi_family = AF_UNSPEC;
	mnl_attr_put_strz(nlh, IFLA_IFNAME, name);
	if (mtu > 0)
		mnl_attr_put_u32(nlh, IFLA_MTU, (uint32_t)mtu);
	info = mnl_attr_nest_start(nlh, IFLA_LINKINFO);
	mnl_attr_put_strz(nlh, IFLA_INFO_KIND, "veth");
	data = mnl_attr_nest_start(nlh, IFLA_INFO_DATA);
	peer_attr = mnl_attr_nest_start(nlh, VETH_INFO_PEER);
	/* The peer's attributes follow a struct ifinfomsg of its own. */
	memset(mnl_nlmsg_get_payload_tail(nlh), 0, sizeof(struct ifinfomsg));
	nlh->nlmsg_len += MNL_ALIGN(sizeof(struct ifinfomsg));
	mnl_attr_put_strz(nlh, IFLA_IFNAME, peer);
	mnl_attr_put_u32(nlh, IFLA_NET_NS_FD, (uint32_t)peer_ns_fd);
	if (mtu > 0)
		mnl_attr_put_u32(nlh, IFLA_MTU, (uint32_t)mtu);
	mnl_attr_nest_end(nlh, peer_attr);
	mnl_attr_nest_end(nlh, data);
	mnl_attr_nest_end(nlh, info);
	ret = nl_talk(nl, nlh, NULL, NULL);
	if (ret == -EEXIST)
		return errmsg(err, ret, "creating the veth pair %s/%s: an interface %s is "
			      "left over in the host namespace (another VMM, or one that died; "
			      "forkvm removes it once its slot is free)", name, peer, peer);
	if (ret)
		return errmsg(err, ret, "creating the veth pair %s/%s (RTM_NEWLINK veth): %s",
			      name, peer, strerror(-ret));
	return 0;
}

int nl_link_del(struct nl *nl, const char *name, struct fvm_err *err)
{
	char buf[MNL_SOCKET_BUFFER_SIZE];
	struct nlmsghdr *nlh = nl_msg(buf, RTM_DELLINK, 0);
	struct ifinfomsg *ifm = mnl_nlmsg_put_extra_header(nlh, sizeof(*ifm));
	int ret;

	ifm->ifi_family = AF_UNSPEC;
	mnl_attr_put_strz(nlh, IFLA_IFNAME, name);
	ret = nl_talk(nl, nlh, NULL, NULL);
	if (ret)
		return errmsg(err, ret, "deleting interface %s (RTM_DELLINK): %s", name,
			      strerror(-ret));
	return 0;
}

struct name_list {
	const char *prefix;
	char (*names)[IFNAMSIZ];
	int n, cap;
	int ret;
};

static int on_link_attr(const struct nlattr *attr, void *data)
{
	const char **name = data;

	if (mnl_attr_get_type(attr) == IFLA_IFNAME && mnl_attr_validate(attr, MNL_TYPE_STRING) >= 0)
		*name = mnl_attr_get_str(attr);
	return MNL_CB_OK;
}

static int on_link_name(const struct nlmsghdr *nlh, void *data)
{
	struct name_list *l = data;
	const char *name = NULL;

	if (nlh->nlmsg_type != RTM_NEWLINK)
		return MNL_CB_OK;
	mnl_attr_parse(nlh, sizeof(struct ifinfomsg), on_link_attr, &name);
	if (!name || strncmp(name, l->prefix, strlen(l->prefix)) != 0)
		return MNL_CB_OK;
	if (l->n == l->cap) {
		int cap = l->cap ? l->cap * 2 : 16;
		char(*grown)[IFNAMSIZ] = realloc(l->names, (size_t)cap * IFNAMSIZ);
		if (!grown) {
			l->ret = -ENOMEM;
			return MNL_CB_OK;
		}
		l->names = grown;
		l->cap = cap;
	}
	snprintf(l->names[l->n++], IFNAMSIZ, "%s", name);
	return MNL_CB_OK;
}

int nl_link_each(struct nl *nl, const char *prefix, int (*fn)(const char *name, void *arg),
		 void *arg, struct fvm_err *err)
{
	char buf[MNL_SOCKET_BUFFER_SIZE];
	struct nlmsghdr *nlh = nl_msg(buf, RTM_GETLINK, NLM_F_DUMP);
	struct ifinfomsg *ifm = mnl_nlmsg_put_extra_header(nlh, sizeof(*ifm));
	struct name_list l = { .prefix = prefix };
	int ret;

	ifm->ifi_family = AF_UNSPEC;
	/* Other VMMs make and remove links all the time (cow children start in parallel): a
	 * dump they interrupt is taken again. */
	for (int tries = 0;; tries++) {
		l.n = 0;
		l.ret = 0;
		ret = nl_talk(nl, nlh, on_link_name, &l);
		if (ret != -EINTR || tries == NL_DUMP_TRIES - 1)
			break;
	}
	if (!ret)
		ret = l.ret;
	if (ret) {
		errmsg(err, ret, "listing interfaces (RTM_GETLINK dump): %s", strerror(-ret));
		goto out;
	}
	/* After the dump: fn may send requests of its own on this socket. */
	for (int i = 0; i < l.n && !ret; i++)
		ret = fn(l.names[i], arg);
out:
	free(l.names);
	return ret;
}
