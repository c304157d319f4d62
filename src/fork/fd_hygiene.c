/* fd and mapping hygiene for processes forked from a VMM (cow templates and children). */
#include "fork/fd_hygiene.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "util/log.h"
#include "core/vm.h"

int fds_close_except(const int *keep, int n)
{
	int sorted[16], lo = 3;

	if (n < 0 || n > (int)(sizeof(sorted) / sizeof(sorted[0])))
		return log_errno(-EINVAL, "closing inherited fds: %d to keep (at most 16)", n);
	/* close_range() over the gaps between the kept fds: no /proc walk, one call per gap. */
	memcpy(sorted, keep, (size_t)n * sizeof(*sorted));
	for (int i = 1; i < n; i++)
		for (int j = i; j > 0 && sorted[j - 1] > sorted[j]; j--) {
			int t = sorted[j];
			sorted[j] = sorted[j - 1];
			sorted[j - 1] = t;
		}
	for (int i = 0; i <= n; i++) {
		unsigned hi = i < n ? (unsigned)sorted[i] : ~0u;
		if (i < n && sorted[i] < lo)
			continue; /* stdio, negative or a duplicate */
		if (hi > (unsigned)lo && close_range((unsigned)lo, hi - 1, 0) < 0)
			return log_errno(-errno, "close_range(%d, %u)", lo, hi - 1);
		if (i < n)
			lo = sorted[i] + 1;
	}
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
