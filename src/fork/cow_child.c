/* A cow child: a new KVM VM on RAM inherited copy-on-write from the template. */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <unistd.h>

#include "util/errmsg.h"
#include "util/log.h"
#include "builder/builder.h"
#include "fork/cow.h"
#include "fork/fd_hygiene.h"
#include "jail/cgroup.h"
#include "jail/scope.h"
#include "net/net.h"

static int redirect(int fd, const char *path, int flags)
{
	int f = open(path, flags | O_CLOEXEC, 0644);

	if (f < 0)
		return -errno;
	if (dup2(f, fd) < 0) {
		close(f);
		return -errno;
	}
	close(f);
	return 0;
}

/*
 * The source's NIC comes along at its slot with its MAC, on a TAP of the child's own
 * (branch_opts.child_tap) or on none: detached, link down to the guest. Never on the source's
 * TAP: the template closed it (fds_close_except), and two VMs on one TAP would share a wire.
 */
static int child_net(struct cow_template *t, const char *name, struct vm_config *cfg)
{
	int fd = -ENODEV;

	if (!t->machine.has_net)
		return 0;
	if (t->child_tap)
		fd = t->child_tap(name, t->net_arg);
	/* The source has a network of forkvm's: a child without its own would be unreachable
	 * (no published port, no egress), so it fails, and the branch says why. */
	if (fd < 0 && fd != -ENODEV)
		return log_errno(fd, "cow child %s: its network", name);
	if (fd < 0)
		log_warn("cow child %s: no TAP of its own (%s); its NIC starts detached, the link down "
			 "to the guest, rather than share the source's", name,
			 t->child_tap ? strerror(-fd) : "no network was given for branch children");
	cfg->net.present = true;
	cfg->net.tap_fd = fd < 0 ? -1 : fd;
	return snap_net_config(&t->machine, cfg, name);
}

void cow_child_main(struct cow_template *t, const char *name, const char *socket, bool paused,
		    int ready_fd, struct cgroup_slot *cg)
{
	struct vm_config cfg = { 0 };
	char path[700];
	struct vm vm;
	int keep[4] = { t->kvm.fd, ready_fd, cg->fd, net_broker_fd() };
	int code = 1;

	setsid();
	/* ps/pgrep tell children from their source by name (argv is the source's). */
	prctl(PR_SET_NAME, "forkvm-child");
	fds_close_except(keep, 4);
	snprintf(path, sizeof(path), "%s.log", socket);
	redirect(STDERR_FILENO, path, O_WRONLY | O_CREAT | O_TRUNC);
	snprintf(path, sizeof(path), "%s.console", socket);
	redirect(STDOUT_FILENO, path, O_WRONLY | O_CREAT | O_TRUNC);
	redirect(STDIN_FILENO, "/dev/null", O_RDONLY);
	log_set_prefix(name);
	cfg.mem_size = t->machine.config.mem_size;
	cfg.nvcpus = t->machine.nvcpus;
	cfg.mem.backing = GUEST_MEM_ANON;
	cfg.start_paused = paused;
	cfg.inherit_mem = &t->mem;
	cfg.inherit_kvm = &t->kvm;
	/* A Linux source's vsock device comes along, at SOCKET.vsock: the agent is reached there. */
	char vsock_path[620];
	if (t->machine.has_vsock) {
		snprintf(vsock_path, sizeof(vsock_path), "%s.vsock", socket);
		cfg.vsock_path = vsock_path;
		cfg.vsock_cid = (uint32_t)t->machine.vsock.cid;
	}
	cfg.cpuid_policy = t->cpuid_policy;
	cfg.cpuid_from_state = true;
	/* Disks: the chain sealed at the branch instant (linked by the template), a new top. */
	struct snap_disk_paths *disks = NULL;
	cfg.disk_top_prefix = socket;
	if (snap_disks_config(&t->machine, t->disk_dir, &cfg, &disks) < 0 ||
	    child_net(t, name, &cfg) < 0)
		_exit(1);
	/* Its own cgroup, and signals scoped below its source's (jail/scope.h), before the VM */
	if (jail_cgroup_adopt(cg, name, cfg.mem_size, t->have_cg ? &t->cg : NULL) < 0 ||
	    jail_scope_signals_again(name) < 0 || vm_create(&vm, &cfg) < 0)
		_exit(1);
	snap_disk_paths_free(disks);
	if (vm_restore_machine(&vm, &t->machine, name) < 0 || vm_start(&vm) < 0) {
		vm_destroy(&vm);
		_exit(1);
	}
	t->serve(&vm, socket, ready_fd);
	switch (vm.end_reason) {
	case VM_END_STOPPED:
	case VM_END_GUEST_POWEROFF:
		code = 0;
		break;
	case VM_END_GUEST_RESET:
		code = 3;
		break;
	default:
		break;
	}
	vm_destroy(&vm);
	jail_cgroup_leave();
	_exit(code);
}
