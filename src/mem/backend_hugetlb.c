/* Guest RAM in a hugetlb memfd (2 MiB pages): allocation rounded up, reported size unchanged. */
#include <stdio.h>
#include <sys/mman.h>
#include <unistd.h>

#include "util/log.h"
#include "mem/guest_mem_backend.h"

#define HUGE_2M (2ULL << 20)
#ifndef MFD_HUGE_2MB
#define MFD_HUGE_2MB (21U << 26)
#endif

static long hugepages_free(void)
{
	FILE *f = fopen("/sys/kernel/mm/hugepages/hugepages-2048kB/free_hugepages", "r");
	long n = -1;

	if (f) {
		if (fscanf(f, "%ld", &n) != 1)
			n = -1;
		fclose(f);
	}
	return n;
}

static int hugetlb_shortage(uint64_t bytes, long avail)
{
	long need = (long)(bytes / HUGE_2M);

	log_err("no free 2 MiB hugepages for %llu MiB of guest RAM (need %ld, free %ld): reserve them "
		"with 'echo N > /proc/sys/vm/nr_hugepages' (as root)",
		(unsigned long long)(bytes >> 20), need, avail);
	return -ENOMEM;
}

int guest_mem_create_hugetlb(struct guest_mem *mem, const struct guest_mem_opts *opts)
{
	const char *name = opts->name ? opts->name : "forkvm-guest-ram-huge";
	long avail = hugepages_free();

	mem->map_size = (opts->size + HUGE_2M - 1) & ~(HUGE_2M - 1);
	mem->page_size = HUGE_2M;
	if (avail >= 0 && (uint64_t)avail < mem->map_size / HUGE_2M)
		return hugetlb_shortage(mem->map_size, avail);
	mem->fd = memfd_create(name, MFD_CLOEXEC | MFD_HUGETLB | MFD_HUGE_2MB);
	if (mem->fd < 0)
		return log_errno(-errno, "memfd_create %s with MFD_HUGETLB", name);
	if (ftruncate(mem->fd, (off_t)mem->map_size) < 0)
		return log_errno(-errno, "ftruncate hugetlb memfd %s to %llu bytes", name,
				 (unsigned long long)mem->map_size);
	/* Shared hugetlb mappings reserve their pages here, so a shortage fails now, not later. */
	mem->host = mmap(NULL, mem->map_size, PROT_READ | PROT_WRITE, MAP_SHARED, mem->fd, 0);
	if (mem->host == MAP_FAILED) {
		mem->host = NULL;
		if (errno == ENOMEM) /* another process took them since the check above */
			return hugetlb_shortage(mem->map_size, hugepages_free());
		return log_errno(-errno, "mmap hugetlb memfd %s", name);
	}
	return 0;
}
