/* Unix socket helpers for the control server and its clients. */
#include "ctl/ctl_socket.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "util/errmsg.h"
#include "util/log.h"
#include "util/unix_sock.h"

/* Directories this process (or the VMM it was forked from) listened in: request roots. */
static pthread_mutex_t roots_lock = PTHREAD_MUTEX_INITIALIZER;
static char *listen_dirs[CTL_MAX_ROOTS];

static int remember_dir(const char *path)
{
	char *copy = strdup(path), *slash;

	if (!copy)
		return log_errno(-ENOMEM, "control socket %s: recording its directory", path);
	slash = strrchr(copy, '/');
	if (!slash || slash == copy || copy[0] != '/') {
		free(copy); /* relative or in "/": not a root worth granting */
		return 0;
	}
	*slash = '\0';
	pthread_mutex_lock(&roots_lock);
	for (int i = 0; i < CTL_MAX_ROOTS; i++) {
		if (listen_dirs[i] && strcmp(listen_dirs[i], copy) == 0)
			break;
		if (!listen_dirs[i]) {
			listen_dirs[i] = copy;
			copy = NULL;
			break;
		}
	}
	pthread_mutex_unlock(&roots_lock);
	free(copy);
	return 0;
}

int ctl_listen(const char *path)
{
	int fd = unix_listen(path, 64, SOCK_NONBLOCK, "control socket");
	int err;

	if (fd < 0)
		return fd;
	err = remember_dir(path);
	if (err) {
		close(fd);
		unlink(path);
		return err;
	}
	return fd;
}

int ctl_accept(int listen_fd)
{
	return unix_accept(listen_fd, SOCK_NONBLOCK | SOCK_CLOEXEC, "control socket");
}

int ctl_path_check(const char *field, const char *path, bool allow_root, struct fvm_err *err)
{
	const char *roots[CTL_MAX_ROOTS + 2] = { 0 };
	const char *run = getenv("FORKVM_RUN_DIR");
	int n = 0;

	pthread_mutex_lock(&roots_lock);
	for (int i = 0; i < CTL_MAX_ROOTS && listen_dirs[i]; i++)
		roots[n++] = listen_dirs[i];
	pthread_mutex_unlock(&roots_lock);
	/* The CLI's run directory (cli_run_dir): where `forkvm branch` puts children. */
	if (run && *run)
		roots[n++] = run;
	else if (geteuid() == 0)
		roots[n++] = "/run/forkvm";
	return path_confine(field, path, roots, allow_root, err);
}
