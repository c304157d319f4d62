/* A base image's identity (size + sha256), cached in BASE.forkvm-id so it is hashed once. */
#include "disk/disk_impl.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "util/errmsg.h"
#include "util/log.h"

#define HASH_CHUNK (1u << 20)
#define SIDECAR_MAX 4096

static int64_t ns_of(const struct timespec *t)
{
	return (int64_t)t->tv_sec * 1000000000LL + t->tv_nsec;
}

/* The file's stat fields the cache is keyed on. */
static bool same_file_state(const struct stat *a, const struct stat *b)
{
	return a->st_size == b->st_size && a->st_ino == b->st_ino &&
	       ns_of(&a->st_mtim) == ns_of(&b->st_mtim) && ns_of(&a->st_ctim) == ns_of(&b->st_ctim);
}

static int hash_fd(int fd, uint64_t size, uint8_t out[SHA256_LEN], const char *path,
		   struct fvm_err *e)
{
	struct sha256_ctx c = { 0 };
	uint8_t *buf = malloc(HASH_CHUNK);
	int ret = buf ? sha256_init(&c) : -ENOMEM;

	for (uint64_t off = 0; !ret && off < size;) {
		size_t n = size - off < HASH_CHUNK ? (size_t)(size - off) : HASH_CHUNK;
		ret = fd_pread_full(fd, buf, n, off);
		if (!ret)
			ret = sha256_update(&c, buf, n);
		off += n;
	}
	if (!ret)
		ret = sha256_final(&c, out);
	sha256_abort(&c);
	free(buf);
	if (ret)
		return disk_fail(e, ret, "hashing base %s: %s", path, strerror(-ret));
	return 0;
}

static json_t *load_json(const char *path)
{
	char buf[SIDECAR_MAX + 1];
	struct stat st;
	ssize_t n;
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);

	if (fd < 0)
		return NULL;
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || st.st_size > SIDECAR_MAX) {
		close(fd);
		return NULL;
	}
	n = read(fd, buf, SIDECAR_MAX);
	close(fd);
	if (n <= 0)
		return NULL;
	buf[n] = '\0';
	return json_loads(buf, 0, NULL);
}

/* The cached hash, if the cache describes the file as it is now. */
static bool read_sidecar(const char *path, const struct stat *st, uint8_t out[SHA256_LEN])
{
	json_t *j = load_json(path);
	json_int_t fmt = 0, size = 0, ino = 0, mtime = 0, ctime = 0;
	const char *hex = NULL;
	bool ok = j && json_unpack(j, "{s:I,s:I,s:I,s:I,s:I,s:s}", "format", &fmt, "size", &size,
				   "inode", &ino, "mtime_ns", &mtime, "ctime_ns", &ctime, "sha256",
				   &hex) == 0 &&
		  fmt == 1 && size == (json_int_t)st->st_size && ino == (json_int_t)st->st_ino &&
		  mtime == ns_of(&st->st_mtim) && ctime == ns_of(&st->st_ctim) &&
		  sha256_from_hex(hex, out) == 0;

	json_decref(j);
	return ok;
}

/* temp + fsync + rename: readers see the old cache or the new one, never half of one. */
static void write_sidecar(const char *path, const struct stat *st, const uint8_t sha[SHA256_LEN])
{
	char tmp[PATH_MAX + 32], hex[65], *text;
	json_t *j;
	int fd, ret = 0;

	sha256_to_hex(sha, hex);
	j = json_pack("{s:i,s:I,s:I,s:I,s:I,s:s}", "format", 1, "size", (json_int_t)st->st_size,
		      "inode", (json_int_t)st->st_ino, "mtime_ns", (json_int_t)ns_of(&st->st_mtim),
		      "ctime_ns", (json_int_t)ns_of(&st->st_ctim), "sha256", hex);
	text = j ? json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
	json_decref(j);
	snprintf(tmp, sizeof(tmp), "%s.tmp-%d", path, (int)getpid());
	fd = text ? open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0644) : -1;
	if (fd < 0)
		ret = text ? -errno : -ENOMEM;
	else if ((ret = fd_pwrite_full(fd, text, strlen(text), 0)) == 0 && fsync(fd) < 0)
		ret = -errno;
	if (fd >= 0)
		close(fd);
	if (!ret && rename(tmp, path) < 0)
		ret = -errno;
	if (ret) {
		unlink(tmp);
		log_warn("cannot cache the identity of the base in %s (%s): it is hashed again at "
			 "every open", path, strerror(-ret));
	}
	free(text);
}

int disk_base_identify(const char *path, int fd, bool write_cache, struct disk_base_id *out,
		       struct fvm_err *err)
{
	struct fvm_err *e = err;
	char cache[PATH_MAX + 16];
	struct stat st, after;
	int ret;

	if (fstat(fd, &st) < 0)
		return disk_fail(e, -errno, "base %s: fstat: %s", path, strerror(errno));
	if (!S_ISREG(st.st_mode))
		return disk_fail(e, -EINVAL, "base %s is not a regular file", path);
	if (st.st_size == 0)
		return disk_fail(e, -EINVAL, "base %s is empty", path);
	out->size = (uint64_t)st.st_size;
	if (snprintf(cache, sizeof(cache), "%s%s", path, DISK_ID_SUFFIX) >= (int)sizeof(cache))
		return disk_fail(e, -ENAMETOOLONG, "base %s: path too long", path);
	if (read_sidecar(cache, &st, out->sha256))
		return 0;
	if (write_cache)
		log_info("hashing base %s (%llu bytes) once; cached in %s", path,
			 (unsigned long long)st.st_size, cache);
	ret = hash_fd(fd, out->size, out->sha256, path, e);
	if (ret)
		return ret;
	if (fstat(fd, &after) < 0 || !same_file_state(&st, &after))
		return disk_fail(e, -EBUSY, "base %s changed while it was hashed: a base must not "
				 "be written", path);
	if (write_cache)
		write_sidecar(cache, &st, out->sha256);
	return 0;
}
