/* Resolving a layer chain (verified parent by parent), applying it, and compacting it. */
#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <xxhash.h>

#include "core/errmsg.h"
#include "core/log.h"
#include "mem/guest_mem.h"
#include "snapshot/snap_layer.h"
#include "snapshot/snapshot.h"

#define PAGE 4096ULL

int snap_open_regular(const char *path, int flags, struct stat *st, char *err, size_t errlen)
{
	int fd, fl, ret;

	/* O_NONBLOCK: a FIFO (or device) in a file's place must not block the open itself. */
	fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC | flags);
	if (fd < 0)
		return errmsg(err, errlen, -errno, "open %s: %s", path,
			      errno == ELOOP ? "a symbolic link where a file was expected" :
			      strerror(errno));
	if (fstat(fd, st) < 0) {
		ret = errmsg(err, errlen, -errno, "stat %s: %s", path, strerror(errno));
		goto err;
	}
	if (!S_ISREG(st->st_mode)) {
		ret = errmsg(err, errlen, -EINVAL, "%s is not a regular file", path);
		goto err;
	}
	fl = fcntl(fd, F_GETFL);
	if (fl < 0 || fcntl(fd, F_SETFL, fl & ~O_NONBLOCK) < 0) {
		ret = errmsg(err, errlen, -errno, "clearing O_NONBLOCK on %s: %s", path,
			     strerror(errno));
		goto err;
	}
	return fd;
err:
	close(fd);
	return ret;
}

int snap_read_file(const char *path, uint8_t **data, size_t *len, uint64_t max, char *err,
		   size_t errlen)
{
	struct stat st;
	uint8_t *buf = NULL;
	size_t got = 0, size;
	ssize_t n;
	int fd, ret = 0;

	*data = NULL;
	*len = 0;
	fd = snap_open_regular(path, O_NOFOLLOW, &st, err, errlen);
	if (fd < 0)
		return fd;
	/* Refused before reading: a sparse file can claim any size and cost nothing to make. */
	if ((uint64_t)st.st_size > max || (uint64_t)st.st_size >= SIZE_MAX) {
		ret = errmsg(err, errlen, -EFBIG, "%s is %llu bytes, above the limit of %llu", path,
			     (unsigned long long)st.st_size, (unsigned long long)max);
		goto out;
	}
	size = (size_t)st.st_size;
	/* One spare byte: room for a NUL, and it tells a file that grew from one that did not. */
	buf = malloc(size + 1);
	if (!buf) {
		ret = errmsg(err, errlen, -ENOMEM, "%s: out of memory for %zu bytes", path, size);
		goto out;
	}
	while (got <= size) {
		n = read(fd, buf + got, size + 1 - got);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			ret = errmsg(err, errlen, -errno, "read %s: %s", path, strerror(errno));
			goto out;
		}
		if (n == 0)
			break;
		got += (size_t)n;
	}
	if (got != size) {
		ret = errmsg(err, errlen, -EIO, "%s changed size while being read (%zu bytes, then "
			     "%s%zu)", path, size, got > size ? "more than " : "", got);
		goto out;
	}
	buf[got] = '\0';
out:
	close(fd);
	if (ret) {
		free(buf);
		return ret;
	}
	*data = buf;
	*len = got;
	return 0;
}

/* lstat, not access(2): the page server's seccomp filter allows the stat family only. */
static bool is_layer(const char *dir)
{
	char path[PATH_MAX + 16];
	struct stat st;

	snprintf(path, sizeof(path), "%s/%s", dir, SNAP_FILE_PAGES);
	return lstat(path, &st) == 0;
}

/* Follow parent links from `dir` to the base; chain[0] = dir ... chain[n-1] = oldest layer. */
static int chain_resolve(const char *dir, char chain[][PATH_MAX], int *n, char *err, size_t errlen)
{
	char cur[PATH_MAX];

	snprintf(cur, sizeof(cur), "%s", dir);
	for (*n = 0; is_layer(cur); (*n)++) {
		char path[PATH_MAX + 16], parent[PATH_MAX], want[32], got[32], why[PATH_MAX + 96];
		uint8_t *data = NULL;
		size_t len;
		int ret;

		if (*n == SNAP_MAX_CHAIN) {
			snprintf(err, errlen, "layer chain longer than %d (compact it)", SNAP_MAX_CHAIN);
			return -ELOOP;
		}
		snprintf(chain[*n], PATH_MAX, "%s", cur);
		snprintf(path, sizeof(path), "%s/%s", cur, SNAP_FILE_PARENT);
		ret = snap_read_file(path, &data, &len, PATH_MAX + 64, why, sizeof(why));
		if (ret) {
			snprintf(err, errlen, "layer %s: unreadable parent link: %s", cur, why);
			return ret;
		}
		if (sscanf((char *)data, "%4095s %31s", parent, want) != 2) {
			free(data);
			snprintf(err, errlen, "layer %s: malformed parent link", cur);
			return -EINVAL;
		}
		free(data);
		snprintf(path, sizeof(path), "%s/%s", parent, SNAP_FILE_VMSTATE);
		ret = snap_read_file(path, &data, &len, SNAP_VMSTATE_MAX, why, sizeof(why));
		if (ret) {
			snprintf(err, errlen, "layer %s: parent %s: %s", cur, parent, why);
			return ret;
		}
		snprintf(got, sizeof(got), "%016llx", (unsigned long long)XXH64(data, len, 0));
		free(data);
		if (strcmp(got, want)) {
			snprintf(err, errlen, "layer %s: parent %s changed since the layer was written",
				 cur, parent);
			return -EINVAL;
		}
		snprintf(cur, sizeof(cur), "%s", parent);
	}
	return 0;
}

static int layer_apply(struct guest_mem *mem, const char *dir, char *err, size_t errlen)
{
	char path[PATH_MAX + 16], why[PATH_MAX + 96];
	uint8_t *b = NULL;
	size_t len;
	uint64_t n = 0, stored, last = 0;
	int ret = 0;

	snprintf(path, sizeof(path), "%s/%s", dir, SNAP_FILE_PAGES);
	ret = snap_read_file(path, &b, &len, mem->map_size + (mem->map_size / PAGE) * 8 + 64, why,
			     sizeof(why));
	if (ret) {
		snprintf(err, errlen, "layer %s: cannot read its pages: %s", dir, why);
		return ret;
	}
	if (len >= 32) {
		memcpy(&n, b + 16, 8);
		n = le64toh(n);
	}
	if (len < 32 || memcmp(b, SNAP_PAGES_MAGIC, 8) || le32toh(*(uint32_t *)(b + 12)) != PAGE ||
	    n > mem->map_size / PAGE || len != 24 + n * 8 + n * PAGE + 8) {
		snprintf(err, errlen, "layer %s: pages file is malformed or truncated", dir);
		ret = -EINVAL;
		goto out;
	}
	memcpy(&stored, b + len - 8, 8);
	if (le64toh(stored) != XXH64(b, len - 8, 0)) {
		snprintf(err, errlen, "layer %s: pages checksum mismatch", dir);
		ret = -EINVAL;
		goto out;
	}
	for (uint64_t k = 0; k < n; k++) {
		uint64_t idx = le64toh(((uint64_t *)(b + 24))[k]);
		if (idx >= mem->size / PAGE || (k && idx <= last)) {
			snprintf(err, errlen, "layer %s: page index %llu out of order or range", dir,
				 (unsigned long long)idx);
			ret = -EINVAL;
			goto out;
		}
		last = idx;
		memcpy(mem->host + idx * PAGE, b + 24 + n * 8 + k * PAGE, PAGE);
	}
out:
	free(b);
	return ret;
}

/* A layer's pages file as far as its header and size tell: magic, page size, count, length. */
static int layer_check(const char *dir, uint64_t mem_size, char *err, size_t errlen)
{
	char path[PATH_MAX + 16], why[PATH_MAX + 96];
	uint8_t hdr[24];
	struct stat st;
	uint64_t n;
	ssize_t got;
	int fd, ret = 0;

	snprintf(path, sizeof(path), "%s/%s", dir, SNAP_FILE_PAGES);
	fd = snap_open_regular(path, O_NOFOLLOW, &st, why, sizeof(why));
	if (fd < 0) {
		snprintf(err, errlen, "layer %s: cannot read its pages: %s", dir, why);
		return fd;
	}
	got = pread(fd, hdr, sizeof(hdr), 0);
	if (got < 0) {
		ret = -errno;
		snprintf(err, errlen, "layer %s: reading the header of %s: %s", dir, path,
			 strerror(errno));
		goto out;
	}
	memcpy(&n, hdr + 16, 8);
	n = le64toh(n);
	if (got < (ssize_t)sizeof(hdr) || memcmp(hdr, SNAP_PAGES_MAGIC, 8) ||
	    le32toh(*(uint32_t *)(hdr + 12)) != PAGE || n > mem_size / PAGE ||
	    (uint64_t)st.st_size != 24 + n * 8 + n * PAGE + 8) {
		snprintf(err, errlen, "layer %s: pages file is malformed or truncated", dir);
		ret = -EINVAL;
	}
out:
	close(fd);
	return ret;
}

int snap_layers_check(const char *dir, uint64_t mem_size, char *err, size_t errlen)
{
	char (*chain)[PATH_MAX] = malloc(SNAP_MAX_CHAIN * sizeof(*chain));
	int n = 0, ret;

	if (!chain) {
		snprintf(err, errlen, "out of memory resolving the layer chain of %s", dir);
		return -ENOMEM;
	}
	ret = chain_resolve(dir, chain, &n, err, errlen);
	for (int i = 0; !ret && i < n; i++)
		ret = layer_check(chain[i], mem_size, err, errlen);
	free(chain);
	return ret;
}

int snap_layers_apply(struct guest_mem *mem, const char *dir, char *err, size_t errlen)
{
	static char chain[SNAP_MAX_CHAIN][PATH_MAX];
	int n, ret = chain_resolve(dir, chain, &n, err, errlen);

	for (int i = n - 1; !ret && i >= 0; i--)
		ret = layer_apply(mem, chain[i], err, errlen);
	return ret;
}

int snap_compact(const char *tip, const char *out, char *err, size_t errlen)
{
	struct snapshot snap;
	struct snap_machine m;
	struct guest_mem mem;
	struct guest_mem_opts mo = { .backing = GUEST_MEM_FILE_PRIVATE };
	struct snap_writer w;
	struct snap_mem_stats ms;
	char *meta = NULL;
	int ret = snap_open(tip, &snap, err, errlen);

	if (ret)
		return ret;
	ret = snap_decode(&snap, &m, err, errlen);
	if (ret)
		goto close;
	mo.size = m.config.mem_size;
	mo.path = snap.memory_path;
	snap_machine_free(&m);
	ret = guest_mem_create(&mem, &mo);
	if (ret) {
		snprintf(err, errlen, "mapping %s: %s", snap.memory_path, strerror(-ret));
		goto close;
	}
	ret = snap_layers_apply(&mem, tip, err, errlen);
	if (!ret && (ret = snap_writer_begin(&w, out, false)))
		snprintf(err, errlen, "creating %s: %s", out, strerror(-ret));
	else if (!ret) {
		json_t *j = json_pack("{s:i,s:n,s:s,s:I,s:s}", "format_version", SNAP_VERSION, "parent",
				      "compacted_from", tip, "mem_bytes", (json_int_t)mem.size,
				      "strategy", "compact");
		meta = j ? json_dumps(j, JSON_INDENT(2) | JSON_SORT_KEYS) : NULL;
		json_decref(j);
		if (!meta)
			ret = -ENOMEM;
		if (ret || (ret = snap_writer_put(&w, SNAP_FILE_VMSTATE, snap.state.data, snap.state.len)) ||
		    (ret = snap_disks_copy(tip, &snap.state, &w, err, errlen)) ||
		    (ret = snap_writer_put_memory(&w, mem.host, mem.size, &ms)) ||
		    (ret = snap_writer_put(&w, SNAP_FILE_META, meta, strlen(meta))) ||
		    (ret = snap_writer_commit(&w))) {
			snprintf(err, errlen, "writing %s: %s", out, strerror(-ret));
			snap_writer_abort(&w);
		}
	}
	free(meta);
	guest_mem_destroy(&mem);
close:
	snap_close(&snap);
	return ret;
}
