/* memfd-backed guest RAM mapped shared, so other processes (children, page servers) can map it. */
#include <sys/mman.h>
#include <unistd.h>

#include "util/log.h"
#include "mem/guest_mem_backend.h"

int guest_mem_create_memfd(struct guest_mem *mem, const struct guest_mem_opts *opts)
{
	const char *name = opts->name ? opts->name : "forkvm-guest-ram";

	mem->map_size = opts->size;
	mem->page_size = 4096;
	mem->fd = memfd_create(name, MFD_CLOEXEC);
	if (mem->fd < 0)
		return log_errno(-errno, "memfd_create %s", name);
	if (ftruncate(mem->fd, (off_t)mem->map_size) < 0)
		return log_errno(-errno, "ftruncate memfd %s to %llu bytes", name,
				 (unsigned long long)mem->map_size);
	mem->host = mmap(NULL, mem->map_size, PROT_READ | PROT_WRITE, MAP_SHARED, mem->fd, 0);
	if (mem->host == MAP_FAILED) {
		mem->host = NULL;
		return log_errno(-errno, "mmap memfd %s shared (%llu bytes)", name,
				 (unsigned long long)mem->map_size);
	}
	return 0;
}
