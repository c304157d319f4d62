/* A snapshot memory file mapped private: children share its page cache, writes are copy-on-write. */
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "util/log.h"
#include "mem/guest_mem_backend.h"

int guest_mem_create_file(struct guest_mem *mem, const struct guest_mem_opts *opts)
{
	struct stat st;

	if (!opts->path)
		return log_errno(-EINVAL, "file backing needs a memory file");
	mem->fd = open(opts->path, O_RDONLY | O_CLOEXEC);
	if (mem->fd < 0)
		return log_errno(-errno, "open memory file %s", opts->path);
	if (fstat(mem->fd, &st) < 0)
		return log_errno(-errno, "stat memory file %s", opts->path);
	if ((uint64_t)st.st_size < opts->file_offset + opts->size)
		return log_errno(-EINVAL, "memory file %s has %lld bytes, guest RAM needs %llu",
				 opts->path, (long long)st.st_size,
				 (unsigned long long)(opts->file_offset + opts->size));
	mem->map_size = opts->size;
	mem->page_size = 4096;
	/* PROT_WRITE on a read-only fd is fine with MAP_PRIVATE: writes never reach the file. */
	mem->host = mmap(NULL, mem->map_size, PROT_READ | PROT_WRITE, MAP_PRIVATE, mem->fd,
			 (off_t)opts->file_offset);
	if (mem->host == MAP_FAILED) {
		mem->host = NULL;
		return log_errno(-errno, "mmap memory file %s private", opts->path);
	}
	return 0;
}
