/* Whole-file I/O, crash-safe writes and child processes for the image builder. */
#include "image/fsutil.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "util/errmsg.h"
#include "util/log.h"
#include "util/fileio.h"

extern char **environ;

int file_read_all(const char *path, uint8_t **buf, size_t *len)
{
	struct fvm_err err = FVM_ERR_INIT;
	int ret = file_read(path, UINT64_MAX, 0, buf, len, &err);

	if (ret)
		log_err("%s", err.msg);
	return ret;
}

int image_write_file(const char *path, const void *buf, size_t len, mode_t mode)
{
	struct fvm_err err = FVM_ERR_INIT;
	int ret = file_write_atomic(path, buf, len, mode, &err);

	if (ret)
		log_err("%s", err.msg);
	return ret;
}

int file_copy_atomic(const char *src, const char *dst, mode_t mode)
{
	uint8_t *buf = NULL;
	size_t len;
	int ret;

	ret = file_read_all(src, &buf, &len);
	if (!ret)
		ret = image_write_file(dst, buf, len, mode);
	free(buf);
	return ret;
}

int image_mkdir(const char *path, mode_t mode)
{
	int ret = mkdir_p(path, mode);

	return ret ? log_errno(ret, "mkdir -p %s", path) : 0;
}

int fd_read_string(int fd, char **out)
{
	size_t cap = 4096, len = 0;
	char *buf = malloc(cap), *p;

	if (!buf)
		return -ENOMEM;
	for (;;) {
		ssize_t n = read(fd, buf + len, cap - len - 1);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		len += (size_t)n;
		if (cap - len < 2048) {
			p = realloc(buf, cap * 2);
			if (!p) {
				free(buf);
				return -ENOMEM;
			}
			buf = p;
			cap *= 2;
		}
	}
	buf[len] = 0;
	*out = buf;
	return 0;
}

int run_cmd(char *const argv[], const char *cwd, char **out)
{
	posix_spawn_file_actions_t fa;
	int pipefd[2] = { -1, -1 }, status, ret;
	pid_t pid;

	if (out && pipe2(pipefd, O_CLOEXEC) < 0)
		return log_errno(-errno, "pipe for %s", argv[0]);
	posix_spawn_file_actions_init(&fa);
	if (out)
		posix_spawn_file_actions_adddup2(&fa, pipefd[1], STDOUT_FILENO);
	if (cwd)
		posix_spawn_file_actions_addchdir_np(&fa, cwd);
	ret = -posix_spawnp(&pid, argv[0], &fa, NULL, argv, environ);
	posix_spawn_file_actions_destroy(&fa);
	if (out)
		close(pipefd[1]);
	if (ret) {
		ret = log_errno(ret, "run %s", argv[0]);
		goto out;
	}
	if (out)
		ret = fd_read_string(pipefd[0], out);
	while (waitpid(pid, &status, 0) < 0) {
		if (errno != EINTR) {
			ret = log_errno(-errno, "wait for %s", argv[0]);
			goto out;
		}
	}
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
		log_err("%s failed (%s %d)", argv[0], WIFEXITED(status) ? "exit status" : "signal",
			WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status));
		if (out && !ret) {
			free(*out);
			*out = NULL;
		}
		ret = -ECHILD;
	}
out:
	if (out)
		close(pipefd[0]);
	return ret;
}

static int remove_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	if (remove(path) < 0 && errno != ENOENT)
		return log_errno(-errno, "remove %s", path);
	return 0;
}

int remove_tree(const char *path)
{
	int ret = nftw(path, remove_one, 16, FTW_DEPTH | FTW_PHYS);

	return ret < 0 && errno == ENOENT ? 0 : ret;
}
