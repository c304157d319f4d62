/* /proc/self/pagemap, opened once per process. */
#include <errno.h>
#include <fcntl.h>
#include <unistd.h>

#include "util/pagemap.h"

static int map_fd = -1;
static pid_t map_pid;

int pagemap_preopen(void)
{
	pid_t self = getpid();
	int fd;

	if (map_fd >= 0 && map_pid == self)
		return 0;
	fd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	if (map_fd >= 0)
		close(map_fd); /* the parent's, inherited */
	map_fd = fd;
	map_pid = self;
	return 0;
}

int pagemap_fd(void)
{
	int ret = pagemap_preopen();

	return ret < 0 ? ret : map_fd;
}
