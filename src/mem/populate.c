/* Copy a (sparse) memory file into guest RAM, skipping holes: they are zero already. */
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "util/log.h"
#include "mem/guest_mem.h"

#define COPY_CHUNK (16ULL << 20)

int guest_mem_populate(struct guest_mem *mem, const char *path, uint64_t file_offset)
{
	struct stat st;
	off_t data, hole, end;
	int fd, err = 0;

	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return log_errno(-errno, "open memory file %s", path);
	if (fstat(fd, &st) < 0) {
		err = log_errno(-errno, "stat memory file %s", path);
		goto out;
	}
	end = st.st_size;
	/* The size guard comes before any byte of the mapping is touched. */
	if ((uint64_t)end < file_offset || (uint64_t)end - file_offset > mem->map_size) {
		err = log_errno(-EFBIG, "memory file %s (%lld bytes) is larger than the %llu-byte "
				"allocation", path, (long long)end, (unsigned long long)mem->map_size);
		goto out;
	}
	for (data = (off_t)file_offset; data < end; data = hole) {
		data = lseek(fd, data, SEEK_DATA);
		if (data < 0) {
			if (errno == ENXIO)
				break; /* only holes remain */
			err = log_errno(-errno, "SEEK_DATA in %s", path);
			goto out;
		}
		hole = lseek(fd, data, SEEK_HOLE);
		if (hole < 0) {
			err = log_errno(-errno, "SEEK_HOLE in %s", path);
			goto out;
		}
		for (off_t off = data; off < hole;) {
			size_t want = (size_t)(hole - off) < COPY_CHUNK ? (size_t)(hole - off) : COPY_CHUNK;
			ssize_t n = pread(fd, mem->host + (off - (off_t)file_offset), want, off);
			if (n <= 0) {
				err = log_errno(n < 0 ? -errno : -EIO, "reading %s at %lld", path,
						(long long)off);
				goto out;
			}
			off += n;
		}
	}
out:
	close(fd);
	return err;
}
