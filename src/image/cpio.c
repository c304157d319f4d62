/* newc cpio writer: "070701" headers with 8-hex-digit fields, 4-byte alignment, TRAILER!!!. */
#include "image/cpio.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <zlib.h>

#include "util/log.h"

static int add(struct cpio_archive *ar, const char *path, uint32_t mode, const void *data,
	       size_t size)
{
	struct cpio_entry *e;

	while (*path == '/')
		path++;
	if (!*path)
		return -EINVAL;
	/* The newc end marker: an unpacker stops there and loses every entry after it. */
	if (!strcmp(path, "TRAILER!!!")) {
		log_err("cpio: the name TRAILER!!! is reserved for the archive's end marker");
		return -EINVAL;
	}
	for (size_t i = 0; i < ar->count; i++)
		if (!strcmp(ar->entries[i].path, path)) {
			log_err("cpio: %s added twice", path);
			return -EEXIST;
		}
	if (ar->count == ar->cap) {
		size_t cap = ar->cap ? ar->cap * 2 : 32;
		struct cpio_entry *p = realloc(ar->entries, cap * sizeof(*p));

		if (!p)
			return -ENOMEM;
		ar->entries = p;
		ar->cap = cap;
	}
	e = &ar->entries[ar->count];
	memset(e, 0, sizeof(*e));
	e->path = strdup(path);
	e->data = size ? malloc(size) : NULL;
	if (!e->path || (size && !e->data)) {
		free(e->path);
		free(e->data);
		return -ENOMEM;
	}
	if (size)
		memcpy(e->data, data, size);
	e->size = size;
	e->mode = mode;
	ar->count++;
	return 0;
}

int cpio_add_dir(struct cpio_archive *ar, const char *path, mode_t perm)
{
	return add(ar, path, S_IFDIR | (perm & 07777), NULL, 0);
}

int cpio_add_file(struct cpio_archive *ar, const char *path, mode_t perm, const void *data,
		  size_t size)
{
	return add(ar, path, S_IFREG | (perm & 07777), data, size);
}

int cpio_add_symlink(struct cpio_archive *ar, const char *path, const char *target)
{
	return add(ar, path, S_IFLNK | 0777, target, strlen(target));
}

int cpio_add_chardev(struct cpio_archive *ar, const char *path, mode_t perm, unsigned major,
		     unsigned minor)
{
	int ret = add(ar, path, S_IFCHR | (perm & 07777), NULL, 0);

	if (!ret) {
		ar->entries[ar->count - 1].rdev_major = major;
		ar->entries[ar->count - 1].rdev_minor = minor;
	}
	return ret;
}

static int by_path(const void *a, const void *b)
{
	return strcmp(((const struct cpio_entry *)a)->path, ((const struct cpio_entry *)b)->path);
}

static size_t pad4(size_t n)
{
	return (4 - (n & 3)) & 3;
}

/* Append one header + name + data; buf is big enough by construction. */
static size_t put_entry(uint8_t *buf, uint32_t ino, uint32_t mode, uint32_t nlink,
			const struct cpio_entry *e, const char *name)
{
	size_t namesz = strlen(name) + 1, n;
	size_t size = e ? e->size : 0;

	n = (size_t)sprintf((char *)buf,
			    "070701%08X%08X%08X%08X%08X%08X%08zX%08X%08X%08X%08X%08zX%08X", ino,
			    mode, 0u, 0u, nlink, (unsigned)CPIO_MTIME, size, 0u, 0u,
			    e ? e->rdev_major : 0u, e ? e->rdev_minor : 0u, namesz, 0u);
	memcpy(buf + n, name, namesz);
	n += namesz;
	memset(buf + n, 0, pad4(n));
	n += pad4(n);
	if (size)
		memcpy(buf + n, e->data, size);
	n += size;
	memset(buf + n, 0, pad4(n));
	return n + pad4(n);
}

/* The kernel's unpacker creates no missing parents, so every parent must be a dir entry. */
static int check_parents(const struct cpio_archive *ar)
{
	for (size_t i = 0; i < ar->count; i++) {
		const char *slash = strrchr(ar->entries[i].path, '/');
		struct cpio_entry key = { 0 }, *parent;

		if (!slash)
			continue;
		key.path = strndup(ar->entries[i].path, (size_t)(slash - ar->entries[i].path));
		if (!key.path)
			return -ENOMEM;
		parent = bsearch(&key, ar->entries, ar->count, sizeof(key), by_path);
		free(key.path);
		if (!parent || !S_ISDIR(parent->mode)) {
			log_err("cpio: %s has no parent directory entry", ar->entries[i].path);
			return -ENOENT;
		}
	}
	return 0;
}

int cpio_write(struct cpio_archive *ar, uint8_t **out, size_t *out_len)
{
	size_t cap = 512, len = 0;
	uint8_t *buf;
	int ret;

	if (ar->count)
		qsort(ar->entries, ar->count, sizeof(ar->entries[0]), by_path);
	ret = check_parents(ar);
	if (ret)
		return ret;
	for (size_t i = 0; i < ar->count; i++)
		cap += 110 + strlen(ar->entries[i].path) + 1 + ar->entries[i].size + 8;
	buf = malloc(cap);
	if (!buf)
		return -ENOMEM;
	for (size_t i = 0; i < ar->count; i++) {
		const struct cpio_entry *e = &ar->entries[i];

		len += put_entry(buf + len, (uint32_t)i + 1, e->mode, S_ISDIR(e->mode) ? 2 : 1, e,
				 e->path);
	}
	len += put_entry(buf + len, 0, 0, 1, NULL, "TRAILER!!!");
	*out = buf;
	*out_len = len;
	return 0;
}

void cpio_free(struct cpio_archive *ar)
{
	for (size_t i = 0; i < ar->count; i++) {
		free(ar->entries[i].path);
		free(ar->entries[i].data);
	}
	free(ar->entries);
	memset(ar, 0, sizeof(*ar));
}

int gzip_compress(const uint8_t *buf, size_t len, uint8_t **out, size_t *out_len)
{
	z_stream zs = { 0 };
	uint8_t *dst = NULL;
	size_t cap;
	int ret = -EINVAL;

	/* windowBits 16+15 selects the gzip wrapper; zlib writes mtime 0 and no file name. */
	if (deflateInit2(&zs, 9, Z_DEFLATED, 16 + MAX_WBITS, 9, Z_DEFAULT_STRATEGY) != Z_OK)
		return -ENOMEM;
	cap = deflateBound(&zs, (uLong)len) + 64;
	dst = malloc(cap);
	if (!dst) {
		ret = -ENOMEM;
		goto out;
	}
	zs.next_in = (uint8_t *)buf;
	zs.avail_in = (uInt)len;
	zs.next_out = dst;
	zs.avail_out = (uInt)cap;
	if (deflate(&zs, Z_FINISH) != Z_STREAM_END) {
		log_err("gzip: deflate did not finish");
		goto out;
	}
	*out = dst;
	*out_len = zs.total_out;
	dst = NULL;
	ret = 0;
out:
	deflateEnd(&zs);
	free(dst);
	return ret;
}
