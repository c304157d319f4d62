/* Writing diff layers and applying a chain of them onto restored RAM. */
#include "snapshot/snap_layer.h"

#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include "util/errmsg.h"
#include "util/log.h"
#include "mem/guest_mem.h"
#include "snapshot/snap_disk.h"
#include "util/page.h"

#define HDR 24ULL

int snap_layer_collect(const uint8_t *ram, uint64_t ram_size, const uint64_t *bitmap,
		       uint8_t **blob, uint64_t *blob_len, uint64_t *npages)
{
	uint64_t n = 0, pages = ram_size / PAGE_4K, len;
	uint8_t *b, *data;
	uint64_t *idx, v;
	uint32_t v32;

	for (uint64_t w = 0; w < (pages + 63) / 64; w++)
		n += (uint64_t)__builtin_popcountll(bitmap[w]);
	len = HDR + n * 8 + n * PAGE_4K + 8;
	b = malloc(len);
	if (!b)
		return -ENOMEM;
	memcpy(b, SNAP_PAGES_MAGIC, 8);
	v32 = htole32(1);
	memcpy(b + 8, &v32, 4);
	v32 = htole32(PAGE_4K);
	memcpy(b + 12, &v32, 4);
	v = htole64(n);
	memcpy(b + 16, &v, 8);
	idx = (uint64_t *)(b + HDR);
	data = b + HDR + n * 8;
	for (uint64_t p = 0, k = 0; p < pages; p++) {
		if (!(bitmap[p / 64] & (1ULL << (p % 64))))
			continue;
		idx[k] = htole64(p);
		memcpy(data + k * PAGE_4K, ram + p * PAGE_4K, PAGE_4K);
		k++;
	}
	v = htole64(XXH64(b, len - 8, 0));
	memcpy(b + len - 8, &v, 8);
	*blob = b;
	*blob_len = len;
	*npages = n;
	return 0;
}

int snap_layer_write(const char *dir, const char *parent, const uint8_t *vmstate,
		     uint64_t vmstate_len, const uint8_t *blob, uint64_t blob_len,
		     const char *meta_json, struct vm *vm, struct fvm_err *err)
{
	struct snap_writer w;
	char link[PATH_MAX + 16], target[PATH_MAX], line[PATH_MAX + 32];
	struct fvm_err why = FVM_ERR_INIT;
	uint8_t *vs = NULL;
	size_t vslen = 0;
	int ret;

	/* The parent's identity: a chain must not silently resolve to a different parent. */
	snprintf(target, sizeof(target), "%s/%s", parent, SNAP_FILE_VMSTATE);
	ret = file_read(target, SNAP_VMSTATE_MAX, FILE_NOFOLLOW, &vs, &vslen, &why);
	if (ret)
		return errmsg(err, ret, "reading the parent's vmstate: %s", err_text(&why));
	snprintf(line, sizeof(line), "%s %016llx\n", parent, (unsigned long long)XXH64(vs, vslen, 0));
	free(vs);
	if (realpath(parent, target) == NULL)
		return errmsg(err, -errno, "resolving parent %s: %s", parent, strerror(errno));
	/* The memory link points at the base's memory, wherever in the chain the parent is. */
	snprintf(link, sizeof(link), "%s/%s", target, SNAP_FILE_MEMORY);
	if (realpath(link, target) == NULL)
		return errmsg(err, -errno, "resolving base memory of %s: %s", parent,
			      strerror(errno));
	ret = snap_writer_begin(&w, dir, true, err);
	if (ret)
		return ret;
	if ((ret = snap_writer_put(&w, SNAP_FILE_VMSTATE, vmstate, vmstate_len)) ||
	    (ret = snap_writer_put(&w, SNAP_FILE_PAGES, blob, blob_len)) ||
	    (ret = snap_writer_put(&w, SNAP_FILE_PARENT, line, strlen(line))) ||
	    (ret = snap_writer_put(&w, SNAP_FILE_META, meta_json, strlen(meta_json))) ||
	    (vm && (ret = snap_disks_put(vm, &w))))
		goto err;
	if (symlinkat(target, w.tmp_fd, SNAP_FILE_MEMORY) < 0) {
		ret = snap_writer_fail(&w, -errno, "linking %s/memory to %s: %s", w.tmp, target,
				       strerror(errno));
		goto err;
	}
	ret = snap_writer_commit(&w);
	if (!ret)
		return 0;
err:
	snap_writer_abort(&w);
	return ret;
}
