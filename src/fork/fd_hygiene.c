/* fd and mapping hygiene for processes forked from a VMM (cow templates and children). */
#include "fork/fd_hygiene.h"

#include <dirent.h>
#include <errno.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#include "util/log.h"
#include "core/vm.h"

int fds_close_except(const int *keep, int n)
{
	DIR *d = opendir("/proc/self/fd");
	int fds[4096], nfds = 0;
	struct dirent *e;

	if (!d)
		return log_errno(-errno, "opendir /proc/self/fd");
	/* Collect first: closing while iterating would also close the directory's own fd. */
	while ((e = readdir(d)) && nfds < 4096) {
		int fd = atoi(e->d_name);
		bool kept = fd <= 2 || fd == dirfd(d) || e->d_name[0] == '.';
		for (int i = 0; i < n && !kept; i++)
			kept = fd == keep[i];
		if (!kept)
			fds[nfds++] = fd;
	}
	closedir(d);
	for (int i = 0; i < nfds; i++)
		close(fds[i]);
	return 0;
}

void vm_forget_kvm(struct vm *vm)
{
	for (int i = 0; i < vm->nvcpus; i++) {
		if (vm->vcpus[i].run)
			munmap(vm->vcpus[i].run, (size_t)vm->vcpus[i].run_size);
		vm->vcpus[i].run = NULL;
		vm->vcpus[i].fd = -1;
		vm->vcpus[i].thread_started = false;
	}
	vm->fd = -1;
	vm->end_eventfd = -1;
	vm->console_fd = -1;
}
