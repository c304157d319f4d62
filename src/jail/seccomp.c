/* seccomp-bpf allow-lists per thread role, built with libseccomp and loaded per thread. */
#include <errno.h>
#include <linux/filter.h>
#include <linux/if_tun.h>
#include <linux/netlink.h>
#include <linux/sockios.h>
#include <linux/seccomp.h>
#include <linux/kvm.h>
#include <linux/userfaultfd.h>
#include <pthread.h>
#include <sched.h>
#include <seccomp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

#include "util/log.h"
#include "jail/seccomp.h"
#include "mem/uffd_api.h"

#define END NULL

/* Every thread: memory, futexes, signals, time, exit. */
static const char *const sys_base[] = {
	"brk", "mmap", "munmap", "mprotect", "madvise", "mremap", "futex", "set_robust_list",
	"rseq", "rt_sigreturn", "rt_sigprocmask", "rt_sigaction", "sigaltstack",
	"clock_gettime", "clock_getres", "gettimeofday", "time", "nanosleep", "clock_nanosleep",
	"sched_yield", "getpid", "gettid", "exit", "exit_group", "restart_syscall", "read",
	"write", "readv", "writev", "close", "getrandom", "sysinfo",
#if defined(__SANITIZE_ADDRESS__)
	/* ASan/LSan builds (FORKVM_SAN=1) only: the leak check at exit stops the world from a
	 * cloned tracer (inheriting the filter) that lists /proc/self/task and ptrace-attaches
	 * every thread; reports read /proc/self/maps. Never in a release build. */
	"ptrace", "getdents", "getdents64", "prctl", "openat", "fstat", "newfstatat", "readlink",
	"lseek", "wait4", "clone", "sched_getaffinity", "kill", "open", "stat", "lstat", "access",
	"pipe", "dup2", "getppid",
#endif
	END
};

/* Signals to any process of the same uid: the control thread (its children, its vCPU
 * threads' kicks) and the page server. The other roles get tgkill to their own process only
 * (OWN_PID below): a guest that takes over a vCPU or device thread cannot signal the other
 * VMMs of its family, which share its uid. */
static const char *const sys_signal_any[] = { "tgkill", "tkill", END };

/*
 * The pid in an own-process rule. Filters are compiled once, before any fork (a cow child
 * installs its source's), so the rule compares against this placeholder and
 * jail_seccomp_apply writes the installing process's pid over it. Never a real pid
 * (pid_max is at most 2^22).
 */
#define OWN_PID 0x7ffffff1u
#define OWN_MAX_INSNS 512 /* a filter with such rules: copied on the stack (4 KiB) */

/*
 * The family socket of a jailed VMM with a network (net_broker.c) is one socket shared by
 * every VM of the family: a shutdown() of it by one VM would end the broker's service to
 * all, a setsockopt() could shrink its buffers. Both are allowed on any fd but this one
 * (control and device roles), whose number jail_seccomp_guard_fd sets
 * and jail_seccomp_apply patches in over this placeholder (never a real fd: above any
 * RLIMIT_NOFILE). Without a family socket nothing is patched.
 */
#define FAMILY_FD 0x7ffffff2u
static int guarded_fd = -1;

void jail_seccomp_guard_fd(int fd)
{
	guarded_fd = fd;
}

/* A vCPU thread: KVM_RUN and the exit handlers (serial, virtio-mmio setup, eventfds). */
static const char *const sys_vcpu[] = {
	"ioctl", "eventfd2", "fcntl", "dup", "epoll_ctl", "ppoll", "poll", "pread64",
	"pwrite64", "fstat", "newfstatat", END
};

/* The vsock and virtio-blk device threads and the page-server watcher: sockets, epoll,
 * eventfds; disk I/O on files the control thread opened (preadv/pwritev, fdatasync). */
static const char *const sys_device[] = {
	"ioctl", "epoll_wait", "epoll_pwait", "epoll_ctl", "poll", "ppoll", "accept", "accept4",
	"socket", "connect", "sendmsg", "recvmsg", "sendto", "recvfrom", /* shutdown: guarded */
	"getsockopt", /* setsockopt: guarded */ "getsockname", "getpeername", "fcntl", "eventfd2",
	"pread64",
	"pwrite64", "preadv", "pwritev", "fdatasync", "fstat", "newfstatat", "unlink", "openat",
	"lseek", "sched_getaffinity", /* glibc's malloc arenas, past 8 threads */
	END
};

/*
 * The control thread builds VMs too: a cow template and its children are forked from it and
 * run under its filter, and branch children are spawned (execve) from it, so this list is
 * everything `forkvm run` does from the dynamic loader on (docs/SECURITY.md).
 */
static const char *const sys_control[] = {
	"ioctl", "pread64", "pwrite64", "preadv", "pwritev", "lseek", "openat", "open", "stat",
	"fstat", "lstat", "newfstatat", "statx", "access", "faccessat", "faccessat2",
	"readlink", "readlinkat", "getdents64", "mkdir", "mkdirat", "rmdir", "unlink",
	"unlinkat", "rename", "renameat", "renameat2", "link", "linkat", "symlink", "symlinkat",
	"ftruncate", "truncate", "fallocate", "fsync", "fdatasync", "sync_file_range",
	"fcntl", "flock", "dup", "dup2", "dup3", "pipe", "pipe2", "mlock", "munlock", "mincore",
	"memfd_create", "userfaultfd", "eventfd2", "epoll_create1", "epoll_ctl", "epoll_wait",
	"epoll_pwait", "epoll_pwait2", "poll", "ppoll", "select", "pselect6", "signalfd4",
	"socket", "socketpair", "bind", "listen", "accept", "accept4", "connect", "sendto",
	"recvfrom", "sendmsg", "recvmsg", /* shutdown, setsockopt: guarded */ "getsockopt",
	"getsockname",
	"getpeername", "clone", "clone3", "fork", "vfork", "execve", "execveat", "wait4",
	"waitid", "kill", "rt_sigtimedwait", "rt_sigqueueinfo", "set_tid_address", "get_robust_list", "getppid",
	"getuid", "geteuid", "getgid", "getegid", "getresuid", "getresgid", "setsid",
	"setpgid", "getpgid", "getpgrp", "prctl", "arch_prctl", "prlimit64", "getrlimit",
	"sched_getaffinity", "sched_setaffinity", "uname", "sysinfo", "pidfd_open",
	"pidfd_send_signal", "close_range", "umask", "chmod", "fchmod", "fchmodat", "fchown",
	"utimensat", "getcwd", "chdir", "fchdir", "statfs", "fstatfs", "timerfd_create",
	"timerfd_settime", "timerfd_gettime", "sendfile", "copy_file_range", "splice",
	"membarrier", "process_vm_readv", "getrusage", "times", "seccomp",
	/* each jailed VM scopes its signals as it starts (jail/scope.h): restrictions only */
	"landlock_create_ruleset", "landlock_restrict_self", END
};

/* The page server: its socket, received uffds, snapshot files, access logs. */
static const char *const sys_pageserver[] = {
	"ioctl", "pread64", "pwrite64", "lseek", "openat", "fstat", "newfstatat", "statx", "access",
	"faccessat", "faccessat2",
	"readlink", "mkdir", "unlink", "unlinkat", "rename", "renameat", "renameat2",
	"ftruncate", "fallocate", "fsync", "fdatasync", "fchmod", "fcntl", "dup", "eventfd2",
	"epoll_create1", "epoll_ctl", "epoll_wait", "epoll_pwait", "poll", "ppoll", "signalfd4",
	"accept", "accept4", "socket", "connect", "sendto", "recvfrom", "sendmsg", "recvmsg",
	"shutdown", "getsockopt", "setsockopt", "getsockname", "getpeername", "kill",
	"pidfd_open", "pidfd_send_signal", "process_vm_readv", "getuid", "geteuid", "getppid",
	"prlimit64", "mincore", "sysinfo", END
};

/*
 * The network broker (net/net_broker.c), every thread: its requests and lifelines, netlink
 * (rtnetlink, nftables), the relays' TCP, its slot locks and the few files networking opens
 * (/dev/net/tun, /proc/sys/net; namespaces by SIOCGSKNS). Arguments are narrowed in
 * build(): socket families, clone flags, unshare, kill, prctl, tgkill. Nothing that mounts,
 * execs, traces or signals another process: with CAP_SYS_ADMIN those would be root's.
 */
static const char *const sys_netd[] = {
	"ioctl", "accept", "accept4", "bind", "listen", "connect", "getsockname", "getpeername",
	"getsockopt", "setsockopt", "sendto", "sendmsg", "recvfrom", "recvmsg", "shutdown",
	"epoll_create1", "epoll_ctl", "epoll_wait", "epoll_pwait", "poll", "ppoll", "select",
	"pselect6", "eventfd2", "fcntl", "flock", "dup", "dup2", "dup3", "openat", "fstat",
	"newfstatat", "statx", "access", "faccessat", "faccessat2", "lseek", "mkdir", "unlink",
	"unlinkat", "getuid", "geteuid", "getgid", "getegid", "getppid", "seccomp",
	"sched_getaffinity", /* glibc sizes its malloc arenas by it past 8 threads */
	END
};

/* ioctl requests, by role: exactly those the code issues (grep ioctl( in src/). */
static const unsigned long ioc_vcpu[] = {
	KVM_RUN, KVM_GET_REGS, KVM_GET_SREGS, KVM_IRQ_LINE, KVM_IOEVENTFD, KVM_IRQFD, 0
};
static const unsigned long ioc_device[] = {
	KVM_IRQ_LINE, KVM_IRQFD, KVM_IOEVENTFD, UFFDIO_COPY, UFFDIO_WAKE, UFFDIO_ZEROPAGE,
	TUNSETOFFLOAD, /* virtio-net: the TAP's offloads follow the guest's features */
	0
};
static const unsigned long ioc_control[] = {
	KVM_GET_API_VERSION, KVM_CHECK_EXTENSION, KVM_CREATE_VM, KVM_GET_VCPU_MMAP_SIZE,
	KVM_GET_SUPPORTED_CPUID, KVM_GET_MSR_INDEX_LIST, KVM_SET_TSS_ADDR,
	KVM_SET_IDENTITY_MAP_ADDR, KVM_CREATE_IRQCHIP, KVM_GET_IRQCHIP, KVM_SET_IRQCHIP,
	KVM_CREATE_PIT2, KVM_GET_PIT2, KVM_SET_PIT2, KVM_SET_USER_MEMORY_REGION,
	KVM_ENABLE_CAP, KVM_GET_DIRTY_LOG, KVM_CLEAR_DIRTY_LOG, KVM_GET_CLOCK, KVM_SET_CLOCK,
	KVM_IRQ_LINE, KVM_IRQFD, KVM_IOEVENTFD, KVM_CREATE_VCPU, KVM_RUN, KVM_GET_REGS,
	KVM_SET_REGS, KVM_GET_SREGS, KVM_SET_SREGS, KVM_GET_FPU, KVM_SET_FPU, KVM_GET_MSRS,
	KVM_SET_MSRS, KVM_GET_CPUID2, KVM_SET_CPUID2, KVM_GET_TSC_KHZ, KVM_GET_LAPIC,
	KVM_SET_LAPIC, KVM_GET_XSAVE, KVM_SET_XSAVE, KVM_GET_XSAVE2, KVM_GET_XCRS,
	KVM_SET_XCRS, KVM_GET_VCPU_EVENTS, KVM_SET_VCPU_EVENTS, KVM_GET_DEBUGREGS,
	KVM_SET_DEBUGREGS, KVM_GET_MP_STATE, KVM_SET_MP_STATE, KVM_HAS_DEVICE_ATTR,
	KVM_SET_DEVICE_ATTR, UFFDIO_API, UFFDIO_REGISTER,
	USERFAULTFD_IOC_NEW, /* a jailed VMM's userfaultfd (mem/uffd_api.c) */
	UFFDIO_UNREGISTER, UFFDIO_COPY, UFFDIO_ZEROPAGE, UFFDIO_WAKE, UFFDIO_WRITEPROTECT,
	TCGETS, FIONBIO, FIOCLEX,
	TUNGETIFF, TUNSETVNETHDRSZ, TUNSETOFFLOAD, /* virtio-net: a TAP given to the NIC */
	TUNSETIFF, /* src/net: a cow child creates the TAP of its own network (docs/NET.md) */
	SIOCGSKNS, /* src/net: the descriptor of that network's namespace */
	0
};
static const unsigned long ioc_netd[] = {
	TUNSETIFF, TUNSETVNETHDRSZ, /* a VM's TAP, made in its namespace */
	SIOCGSKNS,		    /* the namespace's descriptor (it sees no /proc/thread-self) */
	0
};
static const unsigned long ioc_pageserver[] = {
	UFFDIO_API, UFFDIO_REGISTER, UFFDIO_UNREGISTER, UFFDIO_COPY, UFFDIO_ZEROPAGE,
	UFFDIO_WAKE, UFFDIO_WRITEPROTECT, TCGETS, FIONBIO, 0
};

struct role_def {
	const char *name;
	const char *const *sys;
	const unsigned long *ioc;
};

static const struct role_def roles[] = {
	[JAIL_ROLE_VCPU] = { "vcpu", sys_vcpu, ioc_vcpu },
	[JAIL_ROLE_DEVICE] = { "device", sys_device, ioc_device },
	[JAIL_ROLE_CONTROL] = { "control", sys_control, ioc_control },
	[JAIL_ROLE_PAGESERVER] = { "pageserver", sys_pageserver, ioc_pageserver },
	[JAIL_ROLE_NETD] = { "netd", sys_netd, ioc_netd },
};

static enum jail_seccomp_mode mode = JAIL_SECCOMP_KILL;
static bool probe_enabled;
/* Roles loaded on the control thread; inherited by fork(), so a cow child skips reloading. */
static __thread unsigned loaded_roles;

/*
 * Each role's filter compiled to BPF once per process (jail_seccomp_init, single-threaded,
 * before any thread or fork): threads and forked cow children only install it. Compiling with
 * libseccomp costs ~0.2 ms a filter, and a cow child installs one per thread
 * (docs/PERFORMANCE.md). Read-only once built; a role missing here (a unit test that never
 * called init) is compiled on first use under compile_lock.
 */
struct compiled_filter {
	struct sock_filter *insns;
	unsigned short len;
	/* Where the own-process rules compare against OWN_PID: jail_seccomp_apply patches a
	 * copy on the installing thread's stack, never the shared filter (a cow child would
	 * copy its page: private memory per child, docs/PERFORMANCE.md). */
	unsigned short own_at[4];
	int nown;
	unsigned short fam_at[4]; /* the same for FAMILY_FD */
	int nfam;
};
static struct compiled_filter compiled[JAIL_ROLE_COUNT];
static pthread_mutex_t compile_lock = PTHREAD_MUTEX_INITIALIZER;

const char *jail_role_name(enum jail_role role)
{
	return roles[role].name;
}

enum jail_seccomp_mode jail_seccomp_mode(void)
{
	return mode;
}

bool jail_seccomp_probe_enabled(void)
{
	return probe_enabled;
}

int jail_seccomp_probe(void)
{
	log_warn("seccomp probe: calling mount(2), which no role allows (test hook)");
	return (int)syscall(SYS_mount, NULL, NULL, NULL, 0UL, NULL);
}

struct probe_arg {
	enum jail_role role;
	int family; /* 0: signals; 1: shutdown, 2: setsockopt of the family socket */
	pid_t self, parent; /* read here: not every role may call getppid */
	int ret;
};

/* Allowed first (a signal to itself, a shutdown of a socket of its own), then forbidden. */
static void *probe_thread(void *p)
{
	struct probe_arg *a = p;

	if (jail_seccomp_apply(a->role) < 0) {
		a->ret = -EPERM;
		return NULL;
	}
	if (a->family) {
		int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0), one = 4096;
		if (s < 0 || (shutdown(s, SHUT_RDWR) < 0 && errno != ENOTCONN) ||
		    setsockopt(s, SOL_SOCKET, SO_SNDBUF, &one, sizeof(one)) < 0) {
			a->ret = -EPERM;
			return NULL;
		}
		close(s);
		log_warn("seccomp probe: a %s thread %s the family socket (test hook)",
			 roles[a->role].name, a->family == 1 ? "shuts down" : "sets options of");
		a->ret = a->family == 1 ? shutdown(guarded_fd, SHUT_RDWR) :
			 setsockopt(guarded_fd, SOL_SOCKET, SO_SNDBUF, &one, sizeof(one));
		return NULL;
	}
	if (syscall(SYS_tgkill, a->self, gettid(), 0) < 0) {
		a->ret = -EPERM;
		return NULL;
	}
	log_warn("seccomp probe: a %s thread signals its parent process (test hook)",
		 roles[a->role].name);
	a->ret = (int)syscall(SYS_tgkill, a->parent, a->parent, 0);
	return NULL;
}

int jail_seccomp_probe_role(enum jail_role role, int family)
{
	struct probe_arg a = { role, family, getpid(), getppid(), 0 };

	if (family && guarded_fd < 0)
		return -EBADF;
	pthread_t t;
	int err = pthread_create(&t, NULL, probe_thread, &a);

	if (err)
		return -err;
	pthread_join(t, NULL);
	return a.ret;
}

int jail_seccomp_init(bool disable)
{
	const char *v = getenv("FORKVM_SECCOMP");
	const char *probe = getenv("FORKVM_TEST_SECCOMP_PROBE");

	probe_enabled = probe && strcmp(probe, "1") == 0;
	if (!v || !*v || !strcmp(v, "1") || !strcmp(v, "kill"))
		mode = JAIL_SECCOMP_KILL;
	else if (!strcmp(v, "log"))
		mode = JAIL_SECCOMP_LOG;
	else if (!strcmp(v, "0") || !strcmp(v, "off"))
		mode = JAIL_SECCOMP_OFF;
	else {
		log_err("FORKVM_SECCOMP=%s: expected 1 (kill), log or 0 (off)", v);
		return -EINVAL;
	}
	if (disable)
		mode = JAIL_SECCOMP_OFF;
	if (mode == JAIL_SECCOMP_OFF)
		log_warn("*** seccomp DISABLED (%s): no syscall filter confines this VMM; "
			 "development only ***", disable ? "--no-seccomp" : "FORKVM_SECCOMP=0");
	else if (mode == JAIL_SECCOMP_LOG)
		log_warn("seccomp in LOG mode (FORKVM_SECCOMP=log): violations are logged by the "
			 "kernel, not enforced; debugging only");
	return jail_seccomp_precompile();
}

static int add_list(scmp_filter_ctx ctx, const char *const *list, const char **bad)
{
	for (; *list; list++) {
		int nr = seccomp_syscall_resolve_name(*list);
		int err;
		if (nr == __NR_SCMP_ERROR)
			continue; /* not on this architecture (open, fork... exist on x86-64) */
		if (!strcmp(*list, "ioctl"))
			continue; /* argument-filtered below */
		err = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, nr, 0);
		if (err) {
			*bad = *list;
			return err;
		}
	}
	return 0;
}

#define NS_FLAGS (CLONE_NEWNS | CLONE_NEWUSER | CLONE_NEWPID | CLONE_NEWNET | CLONE_NEWIPC | \
		  CLONE_NEWUTS | CLONE_NEWCGROUP)

/* A call allowed when its arguments match: one or two comparisons (a syscall with several
 * rules is allowed when any matches). */
struct arg_rule {
	int nr;
	unsigned nargs;
	struct scmp_arg_cmp a, b;
};

/* tgkill to the process that installs the filter only (OWN_PID, patched at apply). */
static const struct arg_rule own_signals[] = {
	{ SCMP_SYS(tgkill), 1, SCMP_A0(SCMP_CMP_EQ, OWN_PID) },
	{ .nargs = 0 } /* the end (nr 0 is read) */
};

/* shutdown and setsockopt of any fd but the family socket (FAMILY_FD): one member shutting
 * it down, or shrinking its buffers, would deny the others their networks. */
static const struct arg_rule guarded_family[] = {
	{ SCMP_SYS(shutdown), 1, SCMP_A0(SCMP_CMP_NE, FAMILY_FD) },
	{ SCMP_SYS(setsockopt), 1, SCMP_A0(SCMP_CMP_NE, FAMILY_FD) },
	{ .nargs = 0 }
};

/* The broker's narrowed calls (sys_netd). */
static const struct arg_rule netd_rules[] = {
	/* Sockets for requests and relays; netlink for routes, links and nftables only. */
	{ SCMP_SYS(socket), 1, SCMP_A0(SCMP_CMP_EQ, AF_UNIX) },
	{ SCMP_SYS(socket), 1, SCMP_A0(SCMP_CMP_EQ, AF_INET) },
	{ SCMP_SYS(socket), 1, SCMP_A0(SCMP_CMP_EQ, AF_INET6) },
	{ SCMP_SYS(socket), 2, SCMP_A0(SCMP_CMP_EQ, AF_NETLINK), SCMP_A2(SCMP_CMP_EQ, NETLINK_ROUTE) },
	{ SCMP_SYS(socket), 2, SCMP_A0(SCMP_CMP_EQ, AF_NETLINK),
	  SCMP_A2(SCMP_CMP_EQ, NETLINK_NETFILTER) },
	{ SCMP_SYS(socketpair), 1, SCMP_A0(SCMP_CMP_EQ, AF_UNIX) },
	/* Threads (the relays), never a process or a namespace (clone3: build_netd). */
	{ SCMP_SYS(clone), 1, SCMP_A0(SCMP_CMP_MASKED_EQ, CLONE_THREAD | NS_FLAGS, CLONE_THREAD) },
	/* A relay thread makes its VM's namespace: unshare of exactly CLONE_NEWNET. */
	{ SCMP_SYS(unshare), 1, SCMP_A0(SCMP_CMP_EQ, CLONE_NEWNET) },
	/* kill(pid, 0) is the reaper's "is its VMM alive". */
	{ SCMP_SYS(kill), 1, SCMP_A1(SCMP_CMP_EQ, 0) },
	/* Thread names and the relay's own filter. */
	{ SCMP_SYS(prctl), 1, SCMP_A0(SCMP_CMP_EQ, PR_SET_NAME) },
	{ SCMP_SYS(prctl), 1, SCMP_A0(SCMP_CMP_EQ, PR_SET_NO_NEW_PRIVS) },
	{ .nargs = 0 }
};

static int add_rules(scmp_filter_ctx ctx, const struct arg_rule *r, const char **bad)
{
	for (; r->nargs; r++) {
		int err = r->nargs == 2 ? seccomp_rule_add(ctx, SCMP_ACT_ALLOW, r->nr, 2, r->a, r->b) :
					  seccomp_rule_add(ctx, SCMP_ACT_ALLOW, r->nr, 1, r->a);
		if (err) {
			*bad = "a rule with arguments";
			return err;
		}
	}
	return 0;
}

/* The broker: its rules, and clone3 answering ENOSYS: glibc then uses clone, whose flags
 * seccomp can see (clone3's are in memory). */
static int build_netd(scmp_filter_ctx ctx, const char **bad)
{
	int err = add_rules(ctx, netd_rules, bad);

	if (!err && (err = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(ENOSYS), SCMP_SYS(clone3), 0)))
		*bad = "clone3";
	return err;
}

/* Roles that may signal any process (the others: their own only, OWN_PID). */
static bool signals_any(const struct role_def *r)
{
	return r->sys == sys_control || r->sys == sys_pageserver;
}

/* Roles whose shutdown and setsockopt spare the family socket (FAMILY_FD). */
static bool guards_family(const struct role_def *r)
{
	return r->sys == sys_control || r->sys == sys_device;
}

static int build(scmp_filter_ctx ctx, const struct role_def *r, const char **what)
{
	int err = add_list(ctx, sys_base, what);

	if (!err)
		err = signals_any(r) ?
		      add_list(ctx, sys_signal_any, what) : add_rules(ctx, own_signals, what);
	if (!err && r->sys == sys_netd)
		err = build_netd(ctx, what);
	if (!err && guards_family(r))
		err = add_rules(ctx, guarded_family, what);
	if (!err)
		err = add_list(ctx, r->sys, what);
	for (const unsigned long *ioc = r->ioc; !err && *ioc; ioc++) {
		err = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(ioctl), 1,
				       SCMP_A1_32(SCMP_CMP_EQ, (uint32_t)*ioc));
		if (err)
			*what = "ioctl";
	}
	/* A cow child makes its VM's network namespace from a thread that unshares itself
	 * (src/net/net_relay.c): unshare with exactly CLONE_NEWNET, nothing else. */
	if (!err && r->sys == sys_control) {
		err = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(unshare), 1,
				       SCMP_A0(SCMP_CMP_EQ, CLONE_NEWNET));
		if (err)
			*what = "unshare(CLONE_NEWNET)";
	}
	return err;
}

/* ROLE's filter as BPF, built by libseccomp and read back through a memfd. */
static int compile_role(enum jail_role role, struct compiled_filter *out)
{
	const struct role_def *r = &roles[role];
	uint32_t def = mode == JAIL_SECCOMP_LOG ? SCMP_ACT_LOG : SCMP_ACT_KILL_PROCESS;
	const char *what = "the rule set";
	scmp_filter_ctx ctx = seccomp_init(def);
	struct sock_filter *insns = NULL;
	int err, fd = -1;
	off_t size;

	if (!ctx)
		return log_errno(-ENOMEM, "seccomp_init for the %s filter", r->name);
	err = build(ctx, r, &what);
	if (err) {
		(void)log_errno(err, "seccomp filter %s: adding %s", r->name, what);
		goto out;
	}
	fd = memfd_create("forkvm-seccomp", MFD_CLOEXEC);
	if (fd < 0) {
		err = log_errno(-errno, "seccomp filter %s: memfd_create", r->name);
		goto out;
	}
	err = seccomp_export_bpf(ctx, fd);
	if (err) {
		(void)log_errno(err, "seccomp filter %s: exporting its BPF", r->name);
		goto out;
	}
	size = lseek(fd, 0, SEEK_END);
	if (size <= 0 || size % (off_t)sizeof(*insns) || size / (off_t)sizeof(*insns) > BPF_MAXINSNS) {
		err = log_errno(-EINVAL, "seccomp filter %s: %lld bytes of BPF", r->name,
				(long long)size);
		goto out;
	}
	insns = malloc((size_t)size);
	if (!insns) {
		err = log_errno(-ENOMEM, "seccomp filter %s: %lld bytes", r->name, (long long)size);
		goto out;
	}
	if (pread(fd, insns, (size_t)size, 0) != size) {
		err = log_errno(errno ? -errno : -EIO, "seccomp filter %s: reading its BPF back",
				r->name);
		goto out;
	}
	out->len = (unsigned short)(size / (off_t)sizeof(*insns));
	out->nown = out->nfam = 0;
	for (unsigned i = 0; i < out->len; i++) {
		bool own = insns[i].k == OWN_PID, fam = insns[i].k == FAMILY_FD;
		int *n = own ? &out->nown : &out->nfam;
		if (insns[i].code != (BPF_JMP | BPF_JEQ | BPF_K) || (!own && !fam))
			continue;
		if (*n == (int)(sizeof(out->own_at) / sizeof(out->own_at[0]))) {
			err = log_errno(-EPROTO, "seccomp filter %s: more placeholder comparisons "
					"than expected", r->name);
			goto out;
		}
		(own ? out->own_at : out->fam_at)[(*n)++] = (unsigned short)i;
	}
	if (out->nfam == 0 && guards_family(r)) {
		err = log_errno(-EPROTO, "seccomp filter %s: its family-socket guard is missing "
				"from the BPF libseccomp made", r->name);
		goto out;
	}
	/* Fail closed: a role meant to signal only its own process must have the rule. */
	if (out->nown == 0 && !signals_any(r)) {
		err = log_errno(-EPROTO, "seccomp filter %s: its own-process rule is missing from "
				"the BPF libseccomp made", r->name);
		goto out;
	}
	if ((out->nown || out->nfam) && out->len > OWN_MAX_INSNS) {
		err = log_errno(-E2BIG, "seccomp filter %s: %u instructions, more than the %d its "
				"copy on a thread's stack may have", r->name, out->len, OWN_MAX_INSNS);
		goto out;
	}
	out->insns = insns;
	insns = NULL;
out:
	free(insns);
	if (fd >= 0)
		close(fd);
	seccomp_release(ctx);
	return err;
}

int jail_seccomp_precompile(void)
{
	int err = 0;

	if (mode == JAIL_SECCOMP_OFF)
		return 0;
	pthread_mutex_lock(&compile_lock);
	for (int role = 0; !err && role < JAIL_ROLE_COUNT; role++)
		if (!compiled[role].insns)
			err = compile_role((enum jail_role)role, &compiled[role]);
	pthread_mutex_unlock(&compile_lock);
	return err;
}

unsigned jail_seccomp_roles(void)
{
	return loaded_roles;
}

void jail_seccomp_inherit(unsigned held)
{
	loaded_roles |= held;
}

int jail_seccomp_apply(enum jail_role role)
{
	const struct role_def *r = &roles[role];
	struct sock_fprog prog;
	int err = 0;

	if (mode == JAIL_SECCOMP_OFF || (loaded_roles & (1u << role)))
		return 0;
	if (!compiled[role].insns) {
		pthread_mutex_lock(&compile_lock);
		if (!compiled[role].insns)
			err = compile_role(role, &compiled[role]);
		pthread_mutex_unlock(&compile_lock);
		if (err)
			return err;
	}
	/* What seccomp_load does, without rebuilding: no_new_privs, then the filter on this
	 * thread only (no TSYNC), with this process's pid in its own-process rules, patched
	 * into a copy on this stack (the kernel copies the program). */
	const struct compiled_filter *c = &compiled[role];
	bool patch = c->nown || (c->nfam && guarded_fd >= 0);
	struct sock_filter local[patch ? c->len : 1]; /* <= OWN_MAX_INSNS: a few KiB */
	prog = (struct sock_fprog){ .len = c->len, .filter = c->insns };
	if (patch) {
		memcpy(local, c->insns, c->len * sizeof(*local));
		for (int i = 0; i < c->nown; i++)
			local[c->own_at[i]].k = (uint32_t)getpid();
		for (int i = 0; guarded_fd >= 0 && i < c->nfam; i++)
			local[c->fam_at[i]].k = (uint32_t)guarded_fd;
		prog.filter = local;
	}
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0 ||
	    syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog) < 0)
		err = -errno;
	if (err)
		return log_errno(err, "loading the seccomp filter %s on thread %d", r->name,
				 gettid());
	loaded_roles |= 1u << role;
	log_debug("seccomp filter %s loaded on thread %d", r->name, gettid());
	return 0;
}

void jail_describe_wait(int status, char *buf, size_t len)
{
	if (WIFSIGNALED(status) && WTERMSIG(status) == SIGSYS)
		snprintf(buf, len, "killed by SIGSYS (seccomp violation)");
	else if (WIFSIGNALED(status))
		snprintf(buf, len, "killed by signal %d (%s)", WTERMSIG(status),
			 strsignal(WTERMSIG(status)));
	else
		snprintf(buf, len, "exit status %d", WEXITSTATUS(status));
}
