/* Whole-file I/O, crash-safe writes and child processes for the image builder. */
#include "image/fsutil.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <libgen.h>
#include <limits.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/log.h"

extern char **environ;

int file_read_all(const char *path, uint8_t **buf, size_t *len)
{
	struct stat st;
	uint8_t *p = NULL;
	size_t done = 0;
	int fd, ret = 0;

	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return log_errno(-errno, "open %s", path);
	if (fstat(fd, &st) < 0) {
		ret = log_errno(-errno, "stat %s", path);
		goto out;
	}
	p = malloc((size_t)st.st_size + 1);
	if (!p) {
		ret = log_errno(-ENOMEM, "read %s", path);
		goto out;
	}
	while (done < (size_t)st.st_size) {
		ssize_t n = read(fd, p + done, (size_t)st.st_size - done);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			ret = n < 0 ? log_errno(-errno, "read %s", path) : -EIO;
			goto out;
		}
		done += (size_t)n;
	}
	p[done] = 0;
	*buf = p;
	*len = done;
	p = NULL;
out:
	free(p);
	close(fd);
	return ret;
}

static int fsync_dir_of(const char *path)
{
	char copy[PATH_MAX];
	int fd, ret = 0;

	snprintf(copy, sizeof(copy), "%s", path);
	fd = open(dirname(copy), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return log_errno(-errno, "open directory of %s", path);
	if (fsync(fd) < 0)
		ret = log_errno(-errno, "fsync directory of %s", path);
	close(fd);
	return ret;
}

int file_write_atomic(const char *path, const void *buf, size_t len, mode_t mode)
{
	char tmp[PATH_MAX];
	size_t done = 0;
	int fd, ret = 0;

	if (snprintf(tmp, sizeof(tmp), "%s.tmp.%d", path, (int)getpid()) >= (int)sizeof(tmp))
		return log_errno(-ENAMETOOLONG, "write %s", path);
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
	if (fd < 0)
		return log_errno(-errno, "create %s", tmp);
	while (done < len) {
		ssize_t n = write(fd, (const uint8_t *)buf + done, len - done);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			ret = log_errno(-errno, "write %s", tmp);
			goto out;
		}
		done += (size_t)n;
	}
	if (fchmod(fd, mode) < 0 || fsync(fd) < 0) {
		ret = log_errno(-errno, "fsync %s", tmp);
		goto out;
	}
	if (close(fd) < 0) {
		fd = -1;
		ret = log_errno(-errno, "close %s", tmp);
		goto out;
	}
	fd = -1;
	if (rename(tmp, path) < 0) {
		ret = log_errno(-errno, "rename %s to %s", tmp, path);
		goto out;
	}
	ret = fsync_dir_of(path);
out:
	if (fd >= 0)
		close(fd);
	if (ret)
		unlink(tmp);
	return ret;
}

int file_copy_atomic(const char *src, const char *dst, mode_t mode)
{
	uint8_t *buf = NULL;
	size_t len;
	int ret;

	ret = file_read_all(src, &buf, &len);
	if (!ret)
		ret = file_write_atomic(dst, buf, len, mode);
	free(buf);
	return ret;
}

int mkdir_p(const char *path, mode_t mode)
{
	char buf[PATH_MAX];
	size_t len = strlen(path);

	if (len == 0 || len >= sizeof(buf))
		return log_errno(-ENAMETOOLONG, "mkdir %s", path);
	memcpy(buf, path, len + 1);
	for (char *p = buf + 1; ; p++) {
		if (*p != '/' && *p != 0)
			continue;
		char saved = *p;

		*p = 0;
		if (mkdir(buf, mode) < 0 && errno != EEXIST)
			return log_errno(-errno, "mkdir %s", buf);
		*p = saved;
		if (!saved)
			break;
	}
	return 0;
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
