/*
 * The network broker of a jailed VMM family (net.h, docs/NET.md "Networks of jailed VMMs").
 *
 * A jailed VMM has no capability: it can make no namespace, TAP, veth or nft rule, so neither
 * can the VMs branched from it (cow children fork from it; full, diff and live children are
 * exec'd inside its jail). A VMM started jailed with --net therefore forks this broker first,
 * while it is still root and single-threaded, before its jail. The broker keeps only the
 * capabilities networking needs and builds every network of the family with net_create, in
 * its own process; it relays their published ports, and hands each VM its TAP as an fd.
 *
 * Protocol. The family shares one SOCK_SEQPACKET socket to the broker (inherited by forks,
 * passed to exec'd children as --net-broker-fd). A request is one message, struct broker_req,
 * carrying one fd: a connected AF_UNIX seqpacket socket to answer on (so concurrent askers
 * never read each other's answers). The answer is an int32 status, then the status object
 * (JSON) or an error message; when it worked it carries two fds: the TAP and the VM's end of
 * the network's lifeline, a socketpair the broker made itself and whose other end only it
 * holds. The broker then closes the answer socket. The VM keeps its lifeline for its life;
 * one byte 's' on it asks for a fresh status object (relay counters). When the lifeline
 * closes -- the VM ended, kill -9 included -- the broker removes that network at once, host
 * side too. When no process holds the family socket any more (every VM and cow template of
 * the family ended) and no network is left, the broker exits; it blocks SIGTERM, SIGINT and
 * SIGHUP, so only SIGKILL stops it early (its VMs keep their TAPs, their published ports
 * stop, the host side waits for a reaper).
 *
 * The plan (mode, lists, addresses, published guest ports) is the one the VMM was started
 * with, fixed in the broker before the jail: a request names a VM, nothing else, so a
 * compromised VMM can ask for networks of its own plan only: at most NET_BROKER_MAX at once,
 * each holding a /30 of the host's pool and free host ports for its publishes until its VM's
 * lifeline closes. The first request (the VMM's own network) binds the host ports as given;
 * every later one binds free ports.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/capability.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <limits.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <unistd.h>

#include "net/net.h"
#include "net/net_impl.h"
#include "util/errmsg.h"
#include "util/evloop.h"
#include "util/fdpass.h"
#include "util/fileio.h"
#include "util/log.h"
#include "util/newroot.h"

#define BROKER_MAGIC 0x666e6264u /* "fnbd" */
#define BROKER_REPLY_MAX 16384
#define BROKER_TIMEOUT_MS 30000 /* a network made */
#define BROKER_STATUS_MS 500	/* a status (the control loop waits for it) */

struct broker_req {
	uint32_t magic;
	char name[64];
};

/* This process's socket to its family's broker; -1 when it has none. */
static int family_fd = -1;
/* The broker this process forked, and this process's pid then (a fork of it is not the
 * broker's parent and cannot reap it). */
static pid_t broker_pid = -1, broker_parent = -1;

pid_t net_broker_child(void)
{
	return broker_parent == getpid() ? broker_pid : -1;
}

int net_broker_fd(void)
{
	return family_fd;
}

int net_broker_adopt(int fd, struct fvm_err *err)
{
	int type = 0;
	socklen_t len = sizeof(type);

	if (fd < 3 || getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) < 0 ||
	    type != SOCK_SEQPACKET)
		return errmsg(err, -EBADF, "--net-broker-fd %d: not a network broker's socket "
			      "(an fd a jailed VMM passes to the children it starts)", fd);
	if (fcntl(fd, F_SETFD, FD_CLOEXEC) < 0)
		return errmsg(err, -errno, "--net-broker-fd %d: %s", fd, strerror(errno));
	family_fd = fd;
	return 0;
}

/* ---- the broker process ------------------------------------------------------------- */

struct bnet {
	struct broker *b;
	struct net net;
	int lifeline, id;
	char name[64];
};

struct broker {
	struct evloop loop;
	struct net_opts plan;
	struct net_broker_hooks hooks;
	int sock, sock_id;
	bool served_first;
	struct bnet *nets[NET_BROKER_MAX];
	int nnets;
};

/* Send status and text, and fds[0..nfds) (at most 2), on sock without blocking: a VM that
 * does not read its answers must not stall the family's broker. 0 or -errno. */
static int reply(int sock, int32_t status, const char *text, const int *fds, int nfds)
{
	struct iovec iov[2] = { { &status, sizeof(status) }, { (void *)text, strlen(text) + 1 } };
	ssize_t n = fdpass_send(sock, iov, 2, fds, nfds, MSG_DONTWAIT);

	return n < 0 ? (int)n : 0;
}

/* The network's status object, with the broker's pid, as text (NULL: out of memory). */
static char *status_text(struct bnet *bn)
{
	json_t *st = net_status_json(&bn->net);
	char *text;

	json_object_set_new(st, "broker_pid", json_integer(getpid()));
	text = json_dumps(st, JSON_COMPACT);
	json_decref(st);
	return text;
}

static void status_reply(struct bnet *bn)
{
	char *text = status_text(bn);

	/* A VM that asks without reading loses answers, not the broker's time. */
	if (reply(bn->lifeline, text ? 0 : -ENOMEM, text ? text : "out of memory", NULL, 0) < 0)
		log_debug("a status answer to %s not sent: %s", bn->name, strerror(errno));
	free(text);
}

static void bnet_remove(struct bnet *bn)
{
	struct broker *b = bn->b;

	log_info("network of %s (slot %d) removed: its VM ended", bn->name, bn->net.slot);
	ev_del(&b->loop, bn->id);
	close(bn->lifeline);
	net_destroy(&bn->net);
	for (int i = 0; i < b->nnets; i++)
		if (b->nets[i] == bn) {
			b->nets[i] = b->nets[--b->nnets];
			break;
		}
	free(bn);
}

static void on_lifeline(void *arg, uint32_t events)
{
	struct bnet *bn = arg;
	char c;
	ssize_t got = recv(bn->lifeline, &c, 1, MSG_DONTWAIT);

	if (got == 1 && c == 's') {
		status_reply(bn);
		return;
	}
	if (got < 0 && (errno == EAGAIN || errno == EINTR) && !(events & (EPOLLHUP | EPOLLERR)))
		return;
	bnet_remove(bn); /* closed, or a request this protocol does not have */
}

/* A printable copy of a name a VM sent, for logs. */
static void clean_name(char *dst, const char *src, size_t len)
{
	size_t i = 0;

	for (; i + 1 < len && src[i]; i++)
		dst[i] = src[i] > ' ' && src[i] < 0x7f ? src[i] : '?';
	dst[i] = '\0';
}

/* A refusal on the answer socket, which is then closed. */
static void refuse(int answer, int ret, const char *msg)
{
	reply(answer, ret, msg, NULL, 0);
	close(answer);
}

static void serve_request(struct broker *b, const struct broker_req *req, int answer)
{
	struct fvm_err err = FVM_ERR_INIT;
	struct net_opts o = b->plan;
	struct bnet *bn;
	char msg[FVM_ERR_MSG_MAX];
	int lf[2] = { -1, -1 }, ret;

	if (b->nnets >= NET_BROKER_MAX) {
		snprintf(msg, sizeof(msg), "this VM family already has %d networks (the most one "
			 "broker makes)", NET_BROKER_MAX);
		refuse(answer, -ENOSPC, msg);
		return;
	}
	bn = calloc(1, sizeof(*bn));
	if (!bn) {
		refuse(answer, -ENOMEM, "out of memory");
		return;
	}
	bn->b = b;
	bn->id = -1;
	clean_name(bn->name, req->name, sizeof(bn->name));
	/* The VMM's own network binds its ports as asked; the family's others take free ones. */
	if (b->served_first)
		for (int i = 0; i < o.npublish; i++)
			o.publish[i].host_port = 0;
	b->served_first = true;
	ret = net_create(&o, &bn->net, &err);
	if (!ret && !bn->net.active)
		ret = errmsg(&err, -EINVAL, "this family's plan has no network");
	/* The lifeline is the broker's own pair: only the VM's end leaves this process, so only
	 * the VM's end (the VM's life) decides when the network goes. */
	if (!ret && socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, lf) < 0)
		ret = errmsg(&err, -errno, "its lifeline: %s", strerror(errno));
	if (!ret) {
		bn->lifeline = lf[0];
		if ((bn->id = ev_add(&b->loop, lf[0], EPOLLIN | EPOLLRDHUP, EV_LATER, on_lifeline,
				      bn)) < 0)
			ret = errmsg(&err, bn->id, "watching its lifeline: %s", strerror(-bn->id));
	}
	if (!ret) {
		char *text = status_text(bn);
		int fds[2] = { bn->net.tap_fd, lf[1] };
		ret = reply(answer, 0, text ? text : "{}", fds, 2);
		free(text);
		if (ret)
			errmsg(&err, ret, "answering: %s", strerror(-ret));
	}
	if (lf[1] >= 0)
		close(lf[1]);
	if (ret) {
		snprintf(msg, sizeof(msg), "%s", err_text(&err));
		log_warn("network of %s: %s", bn->name, msg);
		refuse(answer, ret, msg);
		if (bn->id >= 0)
			ev_del(&b->loop, bn->id);
		if (lf[0] >= 0)
			close(lf[0]);
		net_destroy(&bn->net);
		free(bn);
		return;
	}
	close(answer);
	b->nets[b->nnets++] = bn;
	log_info("network of %s: %s, host side %s (slot %d), ready in %.1f ms", bn->name,
		 net_mode_name(bn->net.opts.mode), bn->net.veth_host, bn->net.slot,
		 (double)bn->net.create_ns / 1e6);
}

/* An answer socket a request may carry: a connected AF_UNIX seqpacket socket. */
static bool answer_socket(int fd)
{
	int type = 0, domain = 0;
	socklen_t tl = sizeof(type), dl = sizeof(domain);
	struct sockaddr_un peer;
	socklen_t pl = sizeof(peer);

	return getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &tl) == 0 && type == SOCK_SEQPACKET &&
	       getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &dl) == 0 && domain == AF_UNIX &&
	       getpeername(fd, (struct sockaddr *)&peer, &pl) == 0;
}

static void on_request(void *arg, uint32_t events)
{
	struct broker *b = arg;
	struct broker_req req;
	struct iovec iov = { &req, sizeof(req) };
	int answer = -1, nfds = 0, truncated = 0;
	ssize_t got = fdpass_recv(b->sock, &iov, 1, &answer, 1, &nfds, &truncated, MSG_DONTWAIT);

	if ((got == -EAGAIN || got == -EINTR) && !(events & (EPOLLHUP | EPOLLERR)))
		return;
	/* An empty message reads as 0 too: only a hang-up ends the family's requests. */
	if (got < 0 || (got == 0 && (events & (EPOLLHUP | EPOLLRDHUP | EPOLLERR)))) {
		fdpass_close(&answer, 1);
		ev_del(&b->loop, b->sock_id);
		close(b->sock);
		b->sock = b->sock_id = -1;
		return;
	}
	if (got != (ssize_t)sizeof(req) || truncated || nfds != 1 || req.magic != BROKER_MAGIC ||
	    !answer_socket(answer))
		fdpass_close(&answer, 1);
	if (answer < 0) {
		log_warn("a malformed request (%zd bytes), ignored", got);
		return;
	}
	req.name[sizeof(req.name) - 1] = '\0';
	if (b->hooks.probe && !strcmp(req.name, NET_BROKER_PROBE)) {
		close(answer);
		b->hooks.probe(); /* with the filter loaded, it does not return */
		return;
	}
	serve_request(b, &req, answer);
}

/* Only what networking needs: namespaces (CAP_SYS_ADMIN), interfaces and rules
 * (CAP_NET_ADMIN), published ports below 1024 (CAP_NET_BIND_SERVICE). */
static int narrow_privileges(int last)
{
	struct __user_cap_header_struct h = { .version = _LINUX_CAPABILITY_VERSION_3 };
	struct __user_cap_data_struct d[2] = { { 0 } };
	const int keep[] = { CAP_SYS_ADMIN, CAP_NET_ADMIN, CAP_NET_BIND_SERVICE };

	for (int cap = 0; cap <= last; cap++) {
		bool kept = false;
		for (size_t i = 0; i < sizeof(keep) / sizeof(keep[0]); i++)
			kept |= keep[i] == cap;
		if (!kept && prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) < 0 && errno != EINVAL)
			return -errno;
	}
	for (size_t i = 0; i < sizeof(keep) / sizeof(keep[0]); i++) {
		d[keep[i] / 32].effective |= 1u << (keep[i] % 32);
		d[keep[i] / 32].permitted |= 1u << (keep[i] % 32);
	}
	if (syscall(SYS_capset, &h, d) < 0)
		return -errno;
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
		return -errno;
	return 0;
}

/* The running kernel's last capability (a newer kernel's too), read before the private
 * root, which holds no /proc/sys/kernel. */
static int last_cap(void)
{
	int last = CAP_LAST_CAP;
	FILE *f = fopen("/proc/sys/kernel/cap_last_cap", "re");

	if (f) {
		if (fscanf(f, "%d", &last) != 1 || last < CAP_LAST_CAP)
			last = CAP_LAST_CAP;
		fclose(f);
	}
	return last;
}

/* mount(2) with the step named in the error: 0 or -errno (logged). */
static int mnt(const char *src, const char *dst, const char *type, unsigned long flags,
	       const char *data, const char *what)
{
	if (mount(src, dst, type, flags, data) < 0)
		return log_errno(-errno, "private root: %s (%s)", what, dst);
	return 0;
}

/* Bind the O_PATH fd's file onto dst (created: a directory, or an empty file for a device),
 * with flags (MS_RDONLY and the like) applied to the new mount. */
static int bind_fd(int fd, const char *dst, bool dir, unsigned long flags, const char *what)
{
	char src[32];
	int ret;

	snprintf(src, sizeof(src), "/proc/self/fd/%d", fd);
	if (dir)
		ret = mkdir_p(dst, 0755);
	else if ((ret = mkdir_parents(dst, 0755)) == 0) {
		int f = open(dst, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
		ret = f < 0 ? -errno : close(f);
	}
	if (ret < 0)
		return log_errno(ret, "private root: making %s", dst);
	if ((ret = mnt(src, dst, NULL, MS_BIND, NULL, what)) == 0)
		ret = mnt(NULL, dst, NULL, MS_REMOUNT | MS_BIND | MS_NOSUID | MS_NOEXEC |
			  (dir ? MS_NODEV : 0) | flags, NULL, what); /* a device stays usable */
	return ret;
}

/*
 * The broker's view of the file system: its own mount namespace whose root is a read-only
 * tmpfs holding only what networking opens: /dev/net/tun, /proc/sys/net (forwarding,
 * each lookup in the calling thread's namespace: the host's, a VM's; core/ read-only) and
 * the slot directory. No /proc beyond that: through /proc/PID a uid-0 broker could reach another
 * process's root, descriptors and memory (namespaces come from SIOCGSKNS instead). The
 * broker is uid 0 with CAP_SYS_ADMIN; with this and its seccomp filter (no mount, no exec)
 * it can write no host file but its slot locks. libnftables is loaded before (dlopen reads
 * the host's /usr). Built over /tmp: in this namespace only, nobody else sees it.
 */
static int private_root(const char *state_dir)
{
	const char *top = "/tmp";
	char dst[PATH_MAX];
	int tun = -1, sysnet = -1, core = -1, state = -1, ret;

	if ((ret = mkdir_p(state_dir, 0700)) < 0) {
		(void)log_errno(ret, "private root: creating the network state directory %s",
				state_dir);
		goto out;
	}
	if (unshare(CLONE_NEWNS) < 0) {
		ret = log_errno(-errno, "private root: its own mount namespace (unshare)");
		goto out;
	}
	if ((ret = mnt(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL, "no propagation to the host")))
		goto out;
	tun = open("/dev/net/tun", O_PATH | O_CLOEXEC); /* none: net_create says so later */
	sysnet = open("/proc/sys/net", O_PATH | O_DIRECTORY | O_CLOEXEC);
	core = open("/proc/sys/net/core", O_PATH | O_DIRECTORY | O_CLOEXEC);
	state = open(state_dir, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (sysnet < 0 || core < 0 || state < 0) {
		ret = log_errno(-errno, "private root: opening %s", sysnet < 0 ? "/proc/sys/net" :
				core < 0 ? "/proc/sys/net/core" : state_dir);
		goto out;
	}
	if ((ret = mnt("tmpfs", top, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC,
		       "mode=0755,size=64k", "an empty tmpfs")))
		goto out;
	/* /proc/sys/net itself: below it, each lookup follows the calling thread's namespace (a
	 * bind of a directory below would stay in the host's). Its core/ read-only over it:
	 * the host-wide BPF JIT switches are there, and the broker writes none of it. */
	snprintf(dst, sizeof(dst), "%s/proc/sys/net", top);
	if ((ret = bind_fd(sysnet, dst, true, 0, "/proc/sys/net, writable")))
		goto out;
	snprintf(dst, sizeof(dst), "%s/proc/sys/net/core", top);
	if ((ret = bind_fd(core, dst, true, MS_RDONLY, "/proc/sys/net/core, read-only")))
		goto out;
	snprintf(dst, sizeof(dst), "%s%s", top, state_dir);
	if ((ret = bind_fd(state, dst, true, 0, "the network state directory")))
		goto out;
	snprintf(dst, sizeof(dst), "%s/dev/net/tun", top);
	if (tun >= 0 && (ret = bind_fd(tun, dst, false, 0, "/dev/net/tun")))
		goto out;
	/* On an initramfs host the old root stays underneath, covered: the broker has no
	 * CAP_SYS_CHROOT, and its filter allows no chroot, mount or pivot_root. */
	const char *step;
	if ((ret = newroot_enter(top, &step)) < 0) {
		(void)log_errno(ret, "private root: %s (%s)", step, top);
		goto out;
	}
	ret = mnt(NULL, "/", NULL, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV |
		  MS_NOEXEC, NULL, "the root, read-only");
out:
	if (tun >= 0)
		close(tun);
	if (sysnet >= 0)
		close(sysnet);
	if (core >= 0)
		close(core);
	if (state >= 0)
		close(state);
	return ret;
}

static int broker_main(const struct net_opts *plan, const struct net_broker_hooks *hooks,
		       int sock)
{
	static struct broker b; /* one per process */
	sigset_t sigs;
	int ret;

	setsid(); /* a signal to the VMM's group is not for it: it goes when its VMs have */
	prctl(PR_SET_NAME, "forkvm-netd");
	/* Another family's broker (uid 0, the same capabilities) must not reach its
	 * descriptors or memory through /proc: not dumpable. */
	prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
	log_set_prefix("netd");
	signal(SIGPIPE, SIG_IGN);
	sigemptyset(&sigs);
	sigaddset(&sigs, SIGTERM);
	sigaddset(&sigs, SIGINT);
	sigaddset(&sigs, SIGHUP);
	pthread_sigmask(SIG_BLOCK, &sigs, NULL);
	/* Nothing of the VMM's but the family socket (at 3) and the log (stderr); stdin and
	 * stdout become /dev/null. The socket first: its number may be one of 0-2. */
	int moved = fcntl(sock, F_DUPFD_CLOEXEC, 3);
	if (moved < 0 || (moved != 3 && dup3(moved, 3, O_CLOEXEC) < 0))
		return log_errno(-errno, "moving the family socket");
	int null = open("/dev/null", O_RDWR | O_CLOEXEC);
	if (null >= 0) {
		dup2(null, STDIN_FILENO);
		dup2(null, STDOUT_FILENO);
		if (sock == STDERR_FILENO)
			dup2(null, STDERR_FILENO);
	}
	if (close_range(4, ~0u, 0) < 0)
		return log_errno(-errno, "closing the VMM's descriptors");
	sock = 3;
	/* Every network's relay shares this process's descriptor table. */
	struct rlimit nofile;
	if (getrlimit(RLIMIT_NOFILE, &nofile) == 0 && nofile.rlim_cur < nofile.rlim_max) {
		nofile.rlim_cur = nofile.rlim_max;
		setrlimit(RLIMIT_NOFILE, &nofile);
	}
	/* libnftables from the host's /usr first; the private root while root (the initramfs
	 * way needs CAP_SYS_CHROOT); then only the three capabilities. */
	struct fvm_err err = FVM_ERR_INIT;
	int last = last_cap();
	if (nft_load(&err) < 0) /* its later uses give the same error: go on */
		log_warn("%s", err_text(&err));
	if ((ret = private_root(net_state_dir(plan->state_dir))) < 0)
		return ret;
	if ((ret = narrow_privileges(last)) < 0)
		return log_errno(ret, "dropping the capabilities networking does not need");
	if (hooks && hooks->confine && (ret = hooks->confine()) != 0)
		return log_errno(ret < 0 ? ret : -EPERM, "confining the broker");
	b.plan = *plan;
	if (hooks)
		b.hooks = *hooks;
	b.sock = sock;
	if ((ret = ev_init(&b.loop, "netd")) < 0)
		return ret;
	if ((b.sock_id = ev_add(&b.loop, sock, EPOLLIN | EPOLLRDHUP, EV_FIRST, on_request, &b)) < 0)
		return b.sock_id;
	while (b.sock >= 0 || b.nnets > 0) {
		ret = ev_run_once(&b.loop, -1);
		if (ret < 0 && ret != -EINTR)
			return log_errno(ret, "waiting");
	}
	log_info("no VM of this family is left: exiting");
	ev_fini(&b.loop);
	return 0;
}

int net_broker_start(const struct net_opts *plan, const struct net_broker_hooks *hooks,
		     struct fvm_err *err)
{
	int sv[2];
	pid_t pid;

	if (family_fd >= 0)
		return 0;
	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0)
		return errmsg(err, -errno, "the network broker's socket: %s", strerror(errno));
	pid = hooks && hooks->fork ? hooks->fork() : fork();
	if (pid < 0) {
		int e = errno;
		close(sv[0]);
		close(sv[1]);
		return errmsg(err, -e, "forking the network broker: %s", strerror(e));
	}
	if (pid == 0) {
		close(sv[0]);
		_exit(broker_main(plan, hooks, sv[1]) < 0 ? 1 : 0);
	}
	close(sv[1]);
	family_fd = sv[0];
	broker_pid = pid;
	broker_parent = getpid();
	log_info("network broker forkvm-netd started (pid %d): it makes this VM's network and "
		 "its children's (docs/NET.md)", (int)pid);
	return 0;
}

/* ---- a VM's side -------------------------------------------------------------------- */

/* Receive one answer on sock within timeout_ms: status, text in buf, fds[0..2) (or -1; any
 * more are closed). 0 or -errno (-EPIPE: the broker closed it). */
static int recv_answer(int sock, int timeout_ms, int32_t *status, char *buf, size_t len,
		       int fds[2])
{
	struct iovec iov[2] = { { status, sizeof(*status) }, { buf, len - 1 } };
	struct pollfd p = { .fd = sock, .events = POLLIN };
	int r;

	fds[0] = fds[1] = -1;
	do
		r = poll(&p, 1, timeout_ms);
	while (r < 0 && errno == EINTR);
	if (r <= 0)
		return r < 0 ? -errno : -ETIMEDOUT;
	ssize_t got = fdpass_recv(sock, iov, 2, fds, 2, NULL, NULL, MSG_DONTWAIT);
	if (got < 0)
		return (int)got;
	if (got < (ssize_t)sizeof(*status)) {
		fdpass_close(fds, 2);
		return -EPIPE;
	}
	buf[got - (ssize_t)sizeof(*status)] = '\0';
	return 0;
}

static int fill_from_status(struct net *n, json_t *st)
{
	const char *host = json_string_value(json_object_get(st, "host_interface"));
	json_t *ports = json_object_get(st, "published");
	size_t i;
	json_t *p;

	n->remote = st;
	n->slot = (int)json_integer_value(json_object_get(st, "slot"));
	n->create_ns = (uint64_t)(json_number_value(json_object_get(st, "create_ms")) * 1e6);
	snprintf(n->veth_host, sizeof(n->veth_host), "%s", host ? host : "");
	n->nports = 0;
	json_array_foreach(ports, i, p) {
		if (n->nports >= NET_MAX_PUBLISH)
			break;
		struct net_port *np = &n->ports[n->nports++];
		np->fd = -1;
		np->host_port = (uint16_t)json_integer_value(json_object_get(p, "host_port"));
		np->spec.guest_port = (uint16_t)json_integer_value(json_object_get(p, "guest_port"));
		net_parse_ip(json_string_value(json_object_get(p, "host_ip")) ?: "0.0.0.0",
			     &np->spec.host_ip);
	}
	return 0;
}

int net_broker_open(const struct net_opts *o, const char *name, struct net *n,
		    struct fvm_err *err)
{
	struct broker_req req = { .magic = BROKER_MAGIC };
	struct iovec iov = { &req, sizeof(req) };
	char *buf = NULL;
	int ans[2] = { -1, -1 }, got[2] = { -1, -1 }, ret;
	int32_t status = 0;
	json_error_t jerr;
	json_t *st;

	net_init_empty(n, o);
	if (family_fd < 0)
		return errmsg(err, -ENOTCONN, "this VMM has no network broker (a jailed VMM's "
			      "network comes from the one its source started)");
	snprintf(req.name, sizeof(req.name), "%s", name);
	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, ans) < 0)
		return errmsg(err, -errno, "a socket for the broker's answer: %s",
			      strerror(errno));
	/* Bounded: a member of the family flooding the socket must not hang this VM's start. */
	ssize_t sent;
	while ((sent = fdpass_send(family_fd, &iov, 1, &ans[1], 1, MSG_DONTWAIT)) < 0) {
		struct pollfd p = { .fd = family_fd, .events = POLLOUT };
		int r = sent == -EAGAIN ? poll(&p, 1, BROKER_TIMEOUT_MS) : 0;
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0) {
			ret = errmsg(err, sent != -EAGAIN ? (int)sent : r == 0 ? -ETIMEDOUT : -errno,
				     "asking the network broker: %s%s",
				     sent != -EAGAIN ? strerror((int)-sent) :
				     r == 0 ? "its socket stayed full" : strerror(errno),
				     sent == -EPIPE || sent == -ECONNREFUSED ?
				     " (the family's broker is gone: killed, or stopped by its seccomp "
				     "filter; the source's log names its pid)" : "");
			goto out;
		}
	}
	close(ans[1]);
	ans[1] = -1;
	buf = malloc(BROKER_REPLY_MAX);
	if (!buf) {
		ret = errmsg(err, -ENOMEM, "out of memory");
		goto out;
	}
	ret = recv_answer(ans[0], BROKER_TIMEOUT_MS, &status, buf, BROKER_REPLY_MAX, got);
	if (ret) {
		errmsg(err, ret, "the network broker's answer: %s",
		       ret == -EPIPE ? "it closed the connection" : strerror(-ret));
		goto out;
	}
	if (status) {
		ret = errmsg(err, status < 0 ? status : -EIO, "the network broker: %s",
			     buf);
		goto out;
	}
	st = json_loads(buf, 0, &jerr);
	if (!st || got[1] < 0) {
		json_decref(st);
		ret = errmsg(err, -EPROTO, "the network broker's answer %s",
			     got[1] < 0 ? "carried no TAP and lifeline" : "is not JSON");
		goto out;
	}
	fill_from_status(n, st);
	n->tap_fd = got[0];
	n->lifeline_fd = got[1];
	got[0] = got[1] = -1;
	n->active = true;
	net_set_current(n);
out:
	for (int i = 0; i < 2; i++) {
		if (got[i] >= 0)
			close(got[i]);
		if (ans[i] >= 0)
			close(ans[i]);
	}
	free(buf);
	return ret;
}

json_t *net_broker_status(const struct net *n)
{
	char *buf = malloc(BROKER_REPLY_MAX);
	int32_t status = 0;
	int fds[2] = { -1, -1 }, ret;
	json_t *st = NULL;

	/* A forked copy's numbers may name other files by now: what the broker last said. */
	if (!buf || n->owner != getpid())
		goto out;
	/* Answers that came after an earlier wait gave up are stale: drop them first. */
	while (recv_answer(n->lifeline_fd, 0, &status, buf, BROKER_REPLY_MAX, fds) == 0)
		fdpass_close(fds, 2);
	if (send(n->lifeline_fd, "s", 1, MSG_NOSIGNAL | MSG_DONTWAIT) != 1)
		goto out;
	ret = recv_answer(n->lifeline_fd, BROKER_STATUS_MS, &status, buf, BROKER_REPLY_MAX, fds);
	fdpass_close(fds, 2);
	if (!ret && !status)
		st = json_loads(buf, 0, NULL);
out:
	free(buf);
	return st ? st : json_deep_copy(n->remote); /* the broker is gone: what it last said */
}
