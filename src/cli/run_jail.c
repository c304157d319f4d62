/* `forkvm run` and the jail (jail/jail.h, docs/SECURITY.md): what the VMM needs inside. */
#include "cli/run_jail.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "util/log.h"
#include "disk/disk.h"
#include "mem/uffd_api.h"

/* A disk's base, read-only, and its cached identity (read inside, never rewritten there). */
static int jail_add_disk(struct jail_opts *j, const char *base)
{
	char real[PATH_MAX], id[PATH_MAX + 16];

	if (jail_add(j, base, false) < 0)
		return -ENOSPC;
	if (!realpath(base, real) ||
	    snprintf(id, sizeof(id), "%s%s", real, DISK_ID_SUFFIX) >= (int)sizeof(id) ||
	    access(id, R_OK) < 0)
		return 0;
	return jail_add(j, id, false);
}

int run_jail_prepare(struct run_opts *o)
{
	char run_dir[PATH_MAX], inner[512], *slash;
	struct jail_opts *j = &o->jail;
	int ret;

	snprintf(run_dir, sizeof(run_dir), "%s", o->socket);
	slash = strrchr(run_dir, '/');
	if (!slash)
		snprintf(run_dir, sizeof(run_dir), ".");
	else if (slash == run_dir)
		slash[1] = '\0';
	else
		*slash = '\0';
	if ((ret = jail_prepare(j, o->name, run_dir)))
		return ret;
	if (j->state != JAIL_NEW) {
		/* Unjailed, the default console is written as root: a link there is a jailed
		 * predecessor's into its jail, where that VMM could point it anywhere. */
		struct stat st;
		if (o->vm.console_path == o->default_console &&
		    lstat(o->default_console, &st) == 0 && S_ISLNK(st.st_mode) &&
		    unlink(o->default_console) < 0)
			return log_errno(-errno, "removing the stale link %s", o->default_console);
		return 0;
	}
	/* Created inside, used outside: the control socket, vsock socket, default console. */
	if ((ret = jail_redirect(j, o->socket, inner, sizeof(inner))))
		return ret;
	snprintf(o->socket, sizeof(o->socket), "%s", inner);
	if (o->vm.vsock_path) {
		if ((ret = jail_redirect(j, o->vm.vsock_path, o->jail_vsock, sizeof(o->jail_vsock))))
			return ret;
		o->vm.vsock_path = o->jail_vsock;
	} else if (o->restore && !o->no_vsock) {
		/* run_restore names SOCKET.vsock if the snapshot has a vsock device. */
		char pub[600];
		if (snprintf(pub, sizeof(pub), "%s/%s.vsock", run_dir, strrchr(o->socket, '/') + 1) >=
		    (int)sizeof(pub))
			return log_errno(-ENAMETOOLONG, "jail: vsock socket path in %s", run_dir);
		if ((ret = jail_redirect(j, pub, inner, sizeof(inner))))
			return ret;
	}
	if (o->vm.console_path && o->vm.console_path == o->default_console) {
		if ((ret = jail_redirect(j, o->default_console, o->jail_console, sizeof(o->jail_console))))
			return ret;
		o->vm.console_path = o->jail_console;
	} else if (o->vm.console_path && strcmp(o->vm.console_path, "-") != 0 &&
		   (ret = jail_add_owned_file(j, o->vm.console_path))) {
		return ret;
	}
	/* Read inside: disk bases (their tops go next to the socket, inside), the snapshot, the
	 * kernel and initrd; /dev/kvm. */
	for (int i = 0; i < o->vm.ndisks; i++)
		if (jail_add_disk(j, o->vm.disks[i].base) < 0)
			return log_errno(-ENOSPC, "jail: too many paths for %s", o->name);
	/*
	 * Live branches write-protect memfd guest RAM with a userfaultfd, which a jailed uid may
	 * create only through this node (Linux 6.1; mem/uffd_api.c): a node of its own, for a
	 * VM with memfd RAM alone. It grants kernel-mode userfaultfd, a tool for widening
	 * kernel race windows, whatever vm.unprivileged_userfaultfd says.
	 */
	if (o->vm.mem.backing == GUEST_MEM_MEMFD && access(UFFD_DEV_PATH, F_OK) == 0 &&
	    jail_add(j, UFFD_DEV_PATH, true) < 0)
		return log_errno(-ENOSPC, "jail: too many paths for %s", o->name);
	if (jail_add(j, o->restore, false) < 0 || jail_add(j, o->kernel, false) < 0 ||
	    jail_add(j, o->initrd, false) < 0 ||
	    jail_add(j, o->vm.kvm_path ? o->vm.kvm_path : "/dev/kvm", true) < 0)
		return log_errno(-ENOSPC, "jail: too many paths for %s", o->name);
	/*
	 * A restore enters the jail once its snapshot files are open and its page server reached
	 * (as root: the files may be 0600, the server trusts only root), before any vCPU runs.
	 */
	o->jail_late = o->restore != NULL;
	return 0;
}
