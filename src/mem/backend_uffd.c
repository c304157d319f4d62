/* Anonymous guest RAM registered with userfaultfd (missing mode): a page server fills it lazily. */
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#include "util/log.h"
#include "mem/guest_mem_backend.h"
#include "mem/uffd_api.h"

/*
 * mem->fd holds the userfaultfd. The VMM keeps it open for the VM's whole life: if the page
 * server's copy were the last one, its death would unregister the range and every missing
 * page would then read as zeroes. guest_mem_destroy releases it before munmap.
 */
int guest_mem_create_uffd(struct guest_mem *mem, const struct guest_mem_opts *opts)
{
	struct uffdio_register reg = { .mode = UFFDIO_REGISTER_MODE_MISSING };
	const uint64_t need = (1ULL << _UFFDIO_COPY) | (1ULL << _UFFDIO_ZEROPAGE) |
			      (1ULL << _UFFDIO_WAKE);
	int fd;

	mem->map_size = opts->size;
	mem->page_size = 4096;
	mem->host = mmap(NULL, mem->map_size, PROT_READ | PROT_WRITE,
			 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (mem->host == MAP_FAILED) {
		mem->host = NULL;
		return log_errno(-errno, "mmap %llu bytes of guest RAM for userfaultfd",
				 (unsigned long long)mem->map_size);
	}
	/* The server copies 4 KiB pages; THP would only be split again. */
	if (madvise(mem->host, mem->map_size, MADV_NOHUGEPAGE) < 0)
		log_warn("madvise(MADV_NOHUGEPAGE) on uffd guest RAM: %s", strerror(errno));
	/* REMOVE and UNMAP (Linux 4.11) are all the page server needs: it only copies, zero-maps
	 * and wakes (UFFDIO_COPY/ZEROPAGE/WAKE, Linux 4.3). */
	fd = uffd_open(UFFD_NEED_BACKING, 0, NULL, "guest RAM (uffd backing)", NULL);
	if (fd < 0)
		return fd;
	mem->fd = fd;
	reg.range.start = (uint64_t)(uintptr_t)mem->host;
	reg.range.len = mem->map_size;
	if (ioctl(mem->fd, UFFDIO_REGISTER, &reg) < 0)
		return log_errno(-errno, "UFFDIO_REGISTER %llu bytes of guest RAM",
				 (unsigned long long)mem->map_size);
	if ((reg.ioctls & need) != need)
		return log_errno(-EOPNOTSUPP, "userfaultfd on guest RAM lacks COPY/ZEROPAGE/WAKE "
				 "(ioctls 0x%llx)", (unsigned long long)reg.ioctls);
	return 0;
}

/*
 * With EVENT_UNMAP armed, munmap waits until every holder of the uffd read the event; a
 * server that died, hangs, or never accepted the fd in flight would block it forever.
 * Unregistering first means the unmap sends no event at all.
 */
void guest_mem_uffd_release(struct guest_mem *mem)
{
	struct uffdio_range range = { (uint64_t)(uintptr_t)mem->host, mem->map_size };

	if (mem->host && ioctl(mem->fd, UFFDIO_UNREGISTER, &range) < 0)
		log_warn("UFFDIO_UNREGISTER guest RAM: %s", strerror(errno));
	close(mem->fd);
	mem->fd = -1;
}
