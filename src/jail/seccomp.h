/*
 * seccomp-bpf confinement: one allow-list per thread role, loaded per thread (no TSYNC).
 * docs/SECURITY.md lists the roles; docs/ARCHITECTURE.md says which thread loads which.
 */
#ifndef FORKVM_JAIL_SECCOMP_H
#define FORKVM_JAIL_SECCOMP_H

#include <stdbool.h>
#include <stddef.h>

enum jail_role {
	JAIL_ROLE_VCPU,		/* a vCPU thread: KVM_RUN and its exit handlers */
	JAIL_ROLE_DEVICE,	/* a device thread (vsock) or the page-server watcher */
	JAIL_ROLE_CONTROL,	/* the control thread: builds VMs, forks, spawns, serves */
	JAIL_ROLE_PAGESERVER,	/* the page server's one thread */
	JAIL_ROLE_NETD,		/* the network broker, every thread (net/net_broker.c) */
	JAIL_ROLE_COUNT
};

enum jail_seccomp_mode {
	JAIL_SECCOMP_KILL,	/* default: a violation kills the process (SIGSYS) */
	JAIL_SECCOMP_LOG,	/* FORKVM_SECCOMP=log: violations allowed and logged by the kernel */
	JAIL_SECCOMP_OFF,	/* FORKVM_SECCOMP=0 or --no-seccomp: development only */
};

/*
 * The process-wide mode, read once from FORKVM_SECCOMP (1|kill, log, 0|off); disable forces
 * off (--no-seccomp). Off warns loudly. Returns -EINVAL for a value it does not know.
 */
int jail_seccomp_init(bool disable);
/*
 * Compile every role's filter to BPF now (jail_seccomp_init does, single-threaded), so that
 * jail_seccomp_apply only installs it: threads and forked cow children never run libseccomp.
 */
int jail_seccomp_precompile(void);
enum jail_seccomp_mode jail_seccomp_mode(void);

/*
 * Load ROLE's filter on the calling thread (and threads it creates later). A thread that
 * already holds ROLE's filter (a cow child's control thread inherits its template's) loads
 * nothing. Returns 0 or a negative errno, logged with the role.
 */
int jail_seccomp_apply(enum jail_role role);
/*
 * The roles whose filters the calling thread holds. A new thread holds its creator's filters
 * (the kernel copies them) but not this record, which is per thread: a thread that starts
 * another that may fork or load filters passes it on (jail_seccomp_inherit, first thing in
 * the new thread). Else a cow child, forked from the branch worker, loads the control filter
 * a second time over the one it holds: ~0.1 ms per child, one more filter for every syscall,
 * and one more per generation of a cow chain, until the kernel's bound on a thread's filters.
 */
unsigned jail_seccomp_roles(void);
void jail_seccomp_inherit(unsigned held);
/* The fd no filter loaded after this lets the control and device threads shutdown(): the
 * family socket to a network broker, shared by every VM of the family. -1: none. */
void jail_seccomp_guard_fd(int fd);
const char *jail_role_name(enum jail_role role);

/* "killed by SIGSYS (seccomp violation)" / "killed by signal N (name)" / "exit status N". */
void jail_describe_wait(int status, char *buf, size_t len);

/* Test hook: true when FORKVM_TEST_SECCOMP_PROBE=1 was set at VMM start. */
bool jail_seccomp_probe_enabled(void);
/* Makes a syscall outside every allow-list (mount with no arguments). Returns its result. */
int jail_seccomp_probe(void);
/* A new thread loads role's filter, signals its own process (signal 0: allowed), then its
 * parent process (outside the list: under the filter, the process dies here); with family
 * 1 (2), shuts down (sets SO_SNDBUF of) a socket of its own (allowed), then the family
 * socket's (-EBADF: there is none). -EPERM if an allowed call failed, else the forbidden
 * one's result. */
int jail_seccomp_probe_role(enum jail_role role, int family);

#endif
