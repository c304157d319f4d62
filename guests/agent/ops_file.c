/* write_file (atomic by default: temp file, fsync, rename, fsync dir) and read_file. */
#include "ops.h"
#include "io.h"
#include "reply.h"
#include "util/fdio.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* fsync the directory holding path so the rename itself survives a crash. */
static int fsync_parent(const char *path, struct fvm_err *e)
{
	const char *slash = strrchr(path, '/');
	char *dir;
	int fd = -1, ret = 0;

	if (!slash)
		dir = strdup(".");
	else
		dir = strndup(path, slash == path ? 1 : (size_t)(slash - path));
	if (!dir)
		return errmsg(e, -ENOMEM, "allocate directory name: %s", strerror(ENOMEM));
	fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0) {
		ret = errmsg(e, -errno, "open directory %s: %s", dir, strerror(errno));
		goto out;
	}
	if (fsync(fd) < 0)
		ret = errmsg(e, -errno, "fsync directory %s: %s", dir, strerror(errno));
out:
	if (fd >= 0)
		close(fd);
	free(dir);
	return ret;
}

/* Write, set the exact mode (umask must not change it) and fsync; always closes fd. */
static int fill_and_close(int fd, const char *name, const struct write_file_request *w,
			  struct fvm_err *e)
{
	int ret;

	ret = fd_write_all(fd, w->data, w->len);
	if (ret < 0)
		errmsg(e, ret, "write %s: %s", name, strerror(-ret));
	else if (fchmod(fd, w->mode) < 0)
		ret = errmsg(e, -errno, "fchmod %s to %04o: %s", name, (unsigned)w->mode,
				 strerror(errno));
	else if (fsync(fd) < 0)
		ret = errmsg(e, -errno, "fsync %s: %s", name, strerror(errno));
	if (close(fd) < 0 && ret == 0)
		ret = errmsg(e, -errno, "close %s: %s", name, strerror(errno));
	return ret;
}

static int write_atomic(const struct write_file_request *w, struct fvm_err *e)
{
	char *tmp = NULL;
	bool created = false;
	int fd, ret;

	/* Same directory as the target, so rename(2) is atomic (one filesystem). */
	if (asprintf(&tmp, "%s.forkvm-XXXXXX", w->path) < 0) {
		tmp = NULL;
		ret = errmsg(e, -ENOMEM, "allocate temp name: %s", strerror(ENOMEM));
		goto out;
	}
	fd = mkostemp(tmp, O_CLOEXEC);
	if (fd < 0) {
		ret = errmsg(e, -errno, "create temp file %s: %s", tmp, strerror(errno));
		goto out;
	}
	created = true;
	ret = fill_and_close(fd, tmp, w, e);
	if (ret < 0)
		goto out;
	if (rename(tmp, w->path) < 0) {
		ret = errmsg(e, -errno, "rename %s to %s: %s", tmp, w->path, strerror(errno));
		goto out;
	}
	created = false;
	ret = fsync_parent(w->path, e);
out:
	if (created)
		unlink(tmp);
	free(tmp);
	return ret;
}

int op_write_file(const struct write_file_request *w, json_t *reply, struct fvm_err *e)
{
	int fd, ret;

	if (w->atomic) {
		ret = write_atomic(w, e);
	} else {
		fd = open(w->path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOCTTY, w->mode);
		if (fd < 0)
			return errmsg(e, -errno, "open %s: %s", w->path, strerror(errno));
		ret = fill_and_close(fd, w->path, w, e);
	}
	if (ret < 0)
		return ret;
	ret = reply_set(reply, "bytes", json_integer((json_int_t)w->len));
	if (ret < 0)
		return errmsg(e, ret, "build write_file reply: %s", strerror(-ret));
	return 0;
}

/* Read up to limit bytes (limit = max + 1 to detect truncation without trusting st_size,
 * which is 0 for /proc files). */
static int read_upto(int fd, const char *path, size_t limit, uint8_t **out, size_t *out_len,
		     struct fvm_err *e)
{
	size_t cap = limit < 65536 ? limit : 65536, len = 0;
	uint8_t *buf = malloc(cap), *nbuf;

	if (!buf)
		return errmsg(e, -ENOMEM, "allocate read buffer: %s", strerror(ENOMEM));
	while (len < limit) {
		ssize_t n;

		if (len == cap) {
			cap = cap * 2 < limit ? cap * 2 : limit;
			nbuf = realloc(buf, cap);
			if (!nbuf) {
				free(buf);
				return errmsg(e, -ENOMEM, "grow read buffer: %s", strerror(ENOMEM));
			}
			buf = nbuf;
		}
		n = read(fd, buf + len, cap - len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			int err = -errno;

			free(buf);
			return errmsg(e, err, "read %s: %s", path, strerror(-err));
		}
		if (n == 0)
			break;
		len += (size_t)n;
	}
	*out = buf;
	*out_len = len;
	return 0;
}

int op_read_file(const struct read_file_request *r, json_t *reply, struct fvm_err *e)
{
	uint8_t *data = NULL;
	size_t len = 0;
	bool truncated;
	int fd, ret;

	/* O_NONBLOCK: opening a FIFO must not hang the connection waiting for a writer. */
	fd = open(r->path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
	if (fd < 0)
		return errmsg(e, -errno, "open %s: %s", r->path, strerror(errno));
	ret = read_upto(fd, r->path, r->max_bytes + 1, &data, &len, e);
	if (ret < 0)
		goto out;
	truncated = len > r->max_bytes;
	if (truncated)
		len = r->max_bytes;
	ret = reply_set_base64(reply, "content", data, len);
	if (ret == 0)
		ret = reply_set(reply, "bytes", json_integer((json_int_t)len));
	if (ret == 0)
		ret = reply_set(reply, "truncated", json_boolean(truncated));
	if (ret < 0)
		errmsg(e, ret, "build read_file reply: %s", strerror(-ret));
out:
	close(fd);
	free(data);
	return ret;
}
