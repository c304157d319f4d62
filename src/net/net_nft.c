/* nftables through libnftables: the rules inside a VM's namespace, the host table of NAT mode,
 * listing tables for the reaper. Each call makes its own context, whose netlink socket is in
 * the namespace of the calling thread. */
#include <dlfcn.h>
#include <errno.h>
#include <jansson.h>
#include <nftables/libnftables.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "net/net_impl.h"
#include "util/errmsg.h"

/*
 * libnftables is opened on first use (dlopen), not linked: with its dependencies it is five
 * libraries, ~25 mappings in every VMM, and a VMM's fork() copies every mapping: the cow pause
 * window, the template's fork of each child (docs/PERFORMANCE.md). Only VMMs with --net and
 * the host-side reaper use it; run_net_create loads it before any seccomp filter or jail.
 */
static struct {
	__typeof__(nft_ctx_new) *ctx_new;
	__typeof__(nft_ctx_free) *ctx_free;
	__typeof__(nft_ctx_output_set_flags) *output_set_flags;
	__typeof__(nft_ctx_buffer_output) *buffer_output;
	__typeof__(nft_ctx_buffer_error) *buffer_error;
	__typeof__(nft_ctx_get_output_buffer) *get_output_buffer;
	__typeof__(nft_ctx_get_error_buffer) *get_error_buffer;
	__typeof__(nft_run_cmd_from_buffer) *run_cmd_from_buffer;
} nft;
static pthread_once_t nft_once = PTHREAD_ONCE_INIT;
static char nft_load_error[300];

static void nft_load_once(void)
{
	static const char lib[] = "libnftables.so.1";
	void *h = dlopen(lib, RTLD_NOW | RTLD_LOCAL);
	void **slot = (void **)&nft;
	static const char *const names[] = {
		"nft_ctx_new", "nft_ctx_free", "nft_ctx_output_set_flags", "nft_ctx_buffer_output",
		"nft_ctx_buffer_error", "nft_ctx_get_output_buffer", "nft_ctx_get_error_buffer",
		"nft_run_cmd_from_buffer",
	};
	_Static_assert(sizeof(names) / sizeof(names[0]) == sizeof(nft) / sizeof(void *),
		       "one name per libnftables entry point");

	if (!h) {
		snprintf(nft_load_error, sizeof(nft_load_error), "%s", dlerror());
		return;
	}
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		slot[i] = dlsym(h, names[i]);
		if (!slot[i]) {
			snprintf(nft_load_error, sizeof(nft_load_error), "%s has no %s", lib, names[i]);
			nft.ctx_new = NULL;
			return;
		}
	}
}

int nft_load(struct fvm_err *err)
{
	pthread_once(&nft_once, nft_load_once);
	if (!nft.ctx_new)
		return errmsg(err, -ELIBACC, "loading libnftables (packet rules; Debian package "
			      "libnftables1): %s", nft_load_error);
	return 0;
}

/* nft's message without its trailing newlines, for one-line errors. */
static void nft_message(struct nft_ctx *ctx, char *msg, size_t len)
{
	const char *e = nft.get_error_buffer(ctx);
	size_t n;

	snprintf(msg, len, "%s", e && *e ? e : "no message");
	n = strlen(msg);
	while (n && (msg[n - 1] == '\n' || msg[n - 1] == ' '))
		msg[--n] = '\0';
	for (char *p = msg; *p; p++)
		if (*p == '\n')
			*p = ' ';
}

/* Run cmds; out (if not NULL) gets a malloc'd copy of nft's output (JSON when json). */
static int nft_run(const char *cmds, const char *what, bool json, char **out, struct fvm_err *err)
{
	struct nft_ctx *ctx;
	char msg[1024];
	int ret = nft_load(err);

	if (ret)
		return ret;
	ctx = nft.ctx_new(NFT_CTX_DEFAULT);
	if (!ctx)
		return errmsg(err, -ENOMEM, "%s: cannot create an nftables context", what);
	if (json)
		nft.output_set_flags(ctx, NFT_CTX_OUTPUT_JSON);
	if (nft.buffer_output(ctx) || nft.buffer_error(ctx)) {
		ret = errmsg(err, -ENOMEM, "%s: nftables output buffers", what);
		goto out;
	}
	if (nft.run_cmd_from_buffer(ctx, cmds) != 0) {
		nft_message(ctx, msg, sizeof(msg));
		/* libnftables reports text only; the usual causes get their errno back. */
		if (strstr(msg, "Operation not permitted"))
			ret = -EPERM;
		else if (strstr(msg, "No such file or directory"))
			ret = -ENOENT;
		else if (strstr(msg, "Protocol not supported") || strstr(msg, "not supported"))
			ret = -EPROTONOSUPPORT;
		else
			ret = -EINVAL;
		errmsg(err, ret, "%s (nftables): %s%s", what, msg,
		       ret == -EPROTONOSUPPORT ? " (the kernel lacks nf_tables, NAT or reject "
						 "support)" : "");
		goto out;
	}
	if (out) {
		*out = strdup(nft.get_output_buffer(ctx) ?: "");
		if (!*out)
			ret = errmsg(err, -ENOMEM, "%s: copying nft's output", what);
	}
out:
	nft.ctx_free(ctx);
	return ret;
}

int nft_apply(const char *cmds, const char *what, struct fvm_err *err)
{
	return nft_run(cmds, what, false, NULL, err);
}

/* "set NAME { type ipv4_addr; flags interval; elements = { ... } }" into buf at *pos. */
static int put_set(char *buf, size_t len, size_t *pos, const char *name,
		   const struct net_cidr *c, int n)
{
	char a[INET_ADDRSTRLEN];
	int w;

	w = snprintf(buf + *pos, len - *pos, "\tset %s { type ipv4_addr; flags interval; "
		     "elements = { ", name);
	if (w < 0 || (size_t)w >= len - *pos)
		return -ENOSPC;
	*pos += (size_t)w;
	for (int i = 0; i < n; i++) {
		net_format_ip(c[i].addr, a);
		w = snprintf(buf + *pos, len - *pos, "%s%s/%u", i ? ", " : "", a, c[i].prefix);
		if (w < 0 || (size_t)w >= len - *pos)
			return -ENOSPC;
		*pos += (size_t)w;
	}
	w = snprintf(buf + *pos, len - *pos, " } }\n");
	if (w < 0 || (size_t)w >= len - *pos)
		return -ENOSPC;
	*pos += (size_t)w;
	return 0;
}

/*
 * Inside the namespace (docs/NET.md, "Egress policy"). "Guest side" is every interface but the
 * veth (the TAP; lo never forwards).
 *  input: lo, replies to what the namespace itself opened (the relay's connections to the
 *         guest), and ICMP echo to the gateway (a guest may ping it); nothing else reaches the
 *         namespace, from the guest or from the host side.
 *  forward: replies always; new flows only guest side -> veth, and only in NAT mode: deny set
 *         rejected, then the allow set (or everything IPv4 without one) accepted; the rest
 *         rejected (admin-prohibited, so the guest fails fast instead of timing out).
 *  postrouting: the guest subnet leaving by the veth gets the veth's address (SNAT).
 */
int nft_ns_rules(const struct net_opts *o, uint32_t ns_addr, struct fvm_err *err)
{
	size_t len = 16384, pos = 0;
	char *buf = malloc(len), ns[INET_ADDRSTRLEN], sub[INET_ADDRSTRLEN];
	int ret = 0, w;

	if (!buf)
		return errmsg(err, -ENOMEM, "building the namespace's nft rules");
	net_format_ip(ns_addr, ns);
	net_format_ip(o->guest_addr & net_mask(o->guest_prefix), sub);
	w = snprintf(buf, len, "table inet forkvm {\n");
	pos = (size_t)w;
	if (o->mode == NET_NAT && o->nallow)
		ret = put_set(buf, len, &pos, "allow", o->allow, o->nallow);
	if (!ret && o->mode == NET_NAT && o->ndeny)
		ret = put_set(buf, len, &pos, "deny", o->deny, o->ndeny);
	if (ret)
		goto toolong;
	w = snprintf(buf + pos, len - pos,
		     "\tchain input {\n"
		     "\t\ttype filter hook input priority filter; policy drop;\n"
		     "\t\tiif \"lo\" accept\n"
		     "\t\tct state established,related accept\n"
		     "\t\tiifname != \"" NET_NS_VETH "\" icmp type echo-request accept\n"
		     "\t}\n"
		     "\tchain forward {\n"
		     "\t\ttype filter hook forward priority filter; policy drop;\n"
		     "\t\tct state established,related accept\n"
		     "\t\tct state invalid drop\n"
		     "\t\tiifname \"" NET_NS_VETH "\" drop\n"
		     "%s%s%s"
		     "\t\treject with icmpx type admin-prohibited\n"
		     "\t}\n"
		     "\tchain postrouting {\n"
		     "\t\ttype nat hook postrouting priority srcnat; policy accept;\n"
		     "\t\toifname \"" NET_NS_VETH "\" ip saddr %s/%u snat ip to %s\n"
		     "\t}\n"
		     "}\n",
		     o->mode == NET_NAT && o->ndeny ?
			     "\t\toifname \"" NET_NS_VETH "\" ip daddr @deny reject with icmpx type "
			     "admin-prohibited\n" : "",
		     o->mode == NET_NAT && o->nallow ?
			     "\t\toifname \"" NET_NS_VETH "\" ip daddr @allow accept\n" : "",
		     o->mode == NET_NAT && !o->nallow ?
			     "\t\toifname \"" NET_NS_VETH "\" meta nfproto ipv4 accept\n" : "",
		     sub, o->guest_prefix, ns);
	if (w < 0 || (size_t)w >= len - pos)
		goto toolong;
	ret = nft_apply(buf, "loading the namespace's rules (table inet forkvm)", err);
	free(buf);
	return ret;
toolong:
	free(buf);
	return errmsg(err, -ENOSPC, "the namespace's nft rules do not fit %zu bytes", len);
}

int nft_host_table(const char *table, uint32_t ns_addr, struct fvm_err *err)
{
	char cmds[1024], ns[INET_ADDRSTRLEN], what[96];

	net_format_ip(ns_addr, ns);
	/* Leaving the host (not towards another VM's veth): the host's own address. */
	snprintf(cmds, sizeof(cmds),
		 "table ip %s {\n"
		 "\tchain postrouting {\n"
		 "\t\ttype nat hook postrouting priority srcnat; policy accept;\n"
		 "\t\tip saddr %s oifname != \"" NET_HOST_VETH_PREFIX "*\" masquerade\n"
		 "\t}\n"
		 "}\n", table, ns);
	snprintf(what, sizeof(what), "creating the host table ip %s", table);
	return nft_apply(cmds, what, err);
}

int nft_host_table_del(const char *table, struct fvm_err *err)
{
	char cmd[96], what[96];

	snprintf(cmd, sizeof(cmd), "delete table ip %s", table);
	snprintf(what, sizeof(what), "removing the host table ip %s", table);
	return nft_apply(cmd, what, err);
}

int nft_tables_each(const char *prefix, int (*fn)(const char *name, void *arg), void *arg,
		    struct fvm_err *err)
{
	char *out = NULL, **names = NULL;
	json_t *root = NULL, *list, *item;
	json_error_t jerr;
	size_t i, n = 0;
	int ret = nft_run("list tables ip", "listing the host's nft tables", true, &out, err);

	if (ret)
		return ret;
	root = json_loads(out, 0, &jerr);
	list = json_object_get(root, "nftables");
	if (!json_is_array(list)) {
		ret = errmsg(err, -EPROTO, "listing the host's nft tables: unexpected JSON "
			     "(%s)", root ? "no nftables array" : jerr.text);
		goto out;
	}
	names = calloc(json_array_size(list) + 1, sizeof(*names));
	if (!names) {
		ret = -ENOMEM;
		goto out;
	}
	json_array_foreach(list, i, item) {
		const char *name = json_string_value(json_object_get(json_object_get(item, "table"),
								     "name"));
		if (name && strncmp(name, prefix, strlen(prefix)) == 0)
			names[n++] = (char *)name;
	}
	/* fn runs nft itself: after the listing's context is gone. */
	for (i = 0; i < n && !ret; i++)
		ret = fn(names[i], arg);
out:
	free(names);
	json_decref(root);
	free(out);
	return ret;
}
