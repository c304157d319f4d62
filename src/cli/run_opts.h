/* Options of `forkvm run`, parsed into a vm_config plus process settings. */
#ifndef FORKVM_CLI_RUN_OPTS_H
#define FORKVM_CLI_RUN_OPTS_H

#include <stdbool.h>

#include "cli/cli.h"
#include "builder/boot_linux.h"
#include "core/vm.h"
#include "jail/jail.h"
#include "jail/cgroup.h"
#include "net/net.h"
#include "cli/run_tap.h"
#include "uffd/uffd_restore.h"

/* --restore of a Linux snapshot: how long the agent fix-up may take, retries included. */
#define RUN_AGENT_TIMEOUT_MS 30000

struct run_opts {
	struct vm_config vm;
	char name[64];
	char socket[512];
	bool detach;
	const char *restore;	/* snapshot directory to restore instead of booting */
	bool backing_set, size_set;
	const char *log_path;	/* VMM messages when detached (default RUN_DIR/NAME.log) */
	char default_console[600];
	char default_log[600];
	int ready_fd;
	/* --restore of a Linux snapshot: the agent fix-up (agent/agent_sync.h) before ready. */
	bool no_agent_sync;
	int agent_timeout_ms;
	bool agent_sync;	/* decided from the snapshot by run_restore */
	struct cgroup_opts cg;	/* cgroup limits, --no-seccomp (jail/cgroup.h) */
	struct uffd_restore_opts uffd;	/* --backing uffd: page server, prefetch, breakers */
	/* Linux guests (run_linux.c): kernel, initrd, command line, vsock. */
	const char *kernel, *initrd, *cmdline;
	bool linux_image, cpu_features_set, no_vsock;
	int protocol; /* enum boot_protocol */
	char image_kernel[600], image_initrd[600], default_vsock[600];
	/* --rootfs IMAGE (or the cached rootfs with --linux): disk 0, root=/dev/vda */
	const char *rootfs;
	bool no_rootfs;
	char image_rootfs[600], rootfs_cmdline[LINUX_CMDLINE_MAX];
	/* The jail (cli/run_jail.c): options, paths moved into its directory. */
	struct jail_opts jail;
	bool jail_late;	/* uffd: entered after the page-server attach */
	char jail_vsock[512], jail_console[512];
	char disk_base[VM_MAX_DISKS][4096]; /* --disk PATH[,ro] */
	/* Networking (run_net.c, docs/NET.md): the options and the network made from them. */
	struct net_opts net;
	struct net netw;
	int net_broker_fd;	/* --net-broker-fd, -1 none */
	char net_cmdline[LINUX_CMDLINE_MAX];
	struct run_tap_opts tap;	/* --tap IFNAME, --mac (run_tap.c) */
};

/* Linux options (ids from RUN_LINUX_OPT_BASE): 0 or a CLI exit code. */
#define RUN_LINUX_OPT_BASE 2000
enum { RUN_OPT_KERNEL = RUN_LINUX_OPT_BASE, RUN_OPT_INITRD, RUN_OPT_CMDLINE, RUN_OPT_LINUX,
       RUN_OPT_PROTOCOL, RUN_OPT_VSOCK, RUN_OPT_VSOCK_CID, RUN_OPT_NO_VSOCK, RUN_OPT_ROOTFS,
       RUN_OPT_NO_ROOTFS };
#define RUN_LINUX_OPTIONS                                                          \
	{ "kernel", required_argument, NULL, RUN_OPT_KERNEL },                     \
	{ "initrd", required_argument, NULL, RUN_OPT_INITRD },                     \
	{ "cmdline", required_argument, NULL, RUN_OPT_CMDLINE },                   \
	{ "linux", no_argument, NULL, RUN_OPT_LINUX },                             \
	{ "protocol", required_argument, NULL, RUN_OPT_PROTOCOL },                 \
	{ "vsock", required_argument, NULL, RUN_OPT_VSOCK },                       \
	{ "vsock-cid", required_argument, NULL, RUN_OPT_VSOCK_CID },               \
	{ "no-vsock", no_argument, NULL, RUN_OPT_NO_VSOCK },                       \
	{ "rootfs", required_argument, NULL, RUN_OPT_ROOTFS },                     \
	{ "no-rootfs", no_argument, NULL, RUN_OPT_NO_ROOTFS }
#define RUN_LINUX_USAGE                                                                     \
	"  --kernel FILE        boot a Linux vmlinux or bzImage instead of the probe guest\n"  \
	"  --initrd FILE        initramfs for --kernel\n"                                       \
	"  --cmdline STR        kernel command line (default \"" LINUX_DEFAULT_CMDLINE "\");\n" \
	"                       virtio_mmio.device= entries are appended\n"                    \
	"  --linux              boot the image of `forkvm image build` (CACHE/image/vmlinux +\n" \
	"                       initramfs.cpio.gz; CACHE = $FORKVM_CACHE or ~/.cache/forkvm)\n" \
	"  --protocol P         auto (PVH if the kernel has the note) | pvh | linux64\n"       \
	"  --vsock PATH         virtio-vsock host socket (Linux default SOCKET.vsock;\n"       \
	"                       the probe guest gets a vsock device only with --vsock)\n"     \
	"  --vsock-cid N        guest CID (default 3)\n"                                        \
	"  --no-vsock           no vsock device\n"                                             \
	"  --rootfs IMAGE       root filesystem image (forkvm image build --rootfs) as the\n"  \
	"                       first virtio-blk disk, writes to a private overlay; adds\n"    \
	"                       forkvm.root=/dev/vda to the command line; implies --linux\n"   \
	"                       without --kernel. --linux alone uses CACHE/rootfs/rootfs.ext4\n" \
	"                       when it exists\n"                                               \
	"  --no-rootfs          --linux without the cached rootfs (initramfs only)\n"
int run_linux_opt(const struct cli_command *self, int opt, const char *arg, struct run_opts *o);
/* After parsing: fill the image defaults and the vsock path, check combinations. */
int run_linux_finish(const struct cli_command *self, struct run_opts *o);
/* Before the VM exists: CPUID default for this host, kernel/initrd/cmdline checks. */
int run_linux_prepare(struct run_opts *o, struct linux_boot *lb);

/* Networking options (ids from RUN_NET_OPT_BASE, below the jail's): 0 or a CLI exit code. */
#define RUN_NET_OPT_BASE 2500
enum { RUN_OPT_NET = RUN_NET_OPT_BASE, RUN_OPT_PUBLISH, RUN_OPT_ALLOW, RUN_OPT_DENY,
       RUN_OPT_NET_ADDR, RUN_OPT_NET_MTU, RUN_OPT_NET_BROKER_FD };
#define RUN_NET_OPTIONS                                                            \
	{ "net", required_argument, NULL, RUN_OPT_NET },                           \
	{ "publish", required_argument, NULL, RUN_OPT_PUBLISH },                   \
	{ "allow", required_argument, NULL, RUN_OPT_ALLOW },                       \
	{ "deny", required_argument, NULL, RUN_OPT_DENY },                         \
	{ "net-addr", required_argument, NULL, RUN_OPT_NET_ADDR },                 \
	{ "net-mtu", required_argument, NULL, RUN_OPT_NET_MTU },                   \
	{ "net-broker-fd", required_argument, NULL, RUN_OPT_NET_BROKER_FD }
#define RUN_NET_USAGE                                                                        \
	"  --net MODE           none (default) | isolated: a network namespace of its own with\n" \
	"                       a virtio-net NIC, no egress | nat: egress through NAT (docs/NET.md)\n" \
	"  --publish SPEC       [IP:]HOSTPORT:GUESTPORT: TCP from the host (IP default 127.0.0.1;\n" \
	"                       HOSTPORT 0: a free one, shown by status) to the guest; repeatable;\n" \
	"                       alone it means --net isolated\n"                                \
	"  --allow CIDR         nat: egress only to these prefixes (repeatable)\n"             \
	"  --deny CIDR          nat: never to these prefixes (repeatable; wins over --allow)\n"  \
	"  --net-addr A/P[,GW]  the guest's address and gateway (default " NET_GUEST_ADDR ","    \
	NET_GUEST_GATEWAY ")\n"                                                                  \
	"  --net-mtu N          the NIC's MTU (default 1500)\n"                              \
	"  --net-broker-fd N    (internal) the network broker a jailed source passes to the\n" \
	"                       children it starts: their networks come from it\n"
int run_net_opt(const struct cli_command *self, int opt, const char *arg, struct run_opts *o);
/* After parsing: checks across options, forkvm.net= on a Linux guest's command line. */
int run_net_finish(const struct cli_command *self, struct run_opts *o);
/* Before the jail and the VM: the VM's network, and o->vm.net from it. 0 or -errno (logged). */
int run_net_create(struct run_opts *o);
void run_net_destroy(struct run_opts *o);

/* Returns 0, or a CLI exit code after printing the usage error. */
int run_opts_parse(const struct cli_command *self, int argc, char **argv, struct run_opts *o);

#endif
