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
	/* A number kept by the parent is forgotten, never closed: a forked child (a cow
	 * template, a cow child) closes what it inherited, and the number may name one of its
	 * own descriptors by now. */
	fd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	map_fd = fd;
	map_pid = self;
	return 0;
}

int pagemap_fd(void)
{
	int ret = pagemap_preopen();

	return ret < 0 ? ret : map_fd;
}
