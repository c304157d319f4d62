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

#include "util/errmsg.h"
#include "util/log.h"
#include "mem/guest_mem.h"
#include "snapshot/snap_layer.h"
#include "snapshot/snapshot.h"
#include "util/page.h"

/* lstat, not access(2): the page server's seccomp filter allows the stat family only. */
static bool is_layer(const char *dir)
{
	char path[PATH_MAX + 16];
	struct stat st;

	snprintf(path, sizeof(path), "%s/%s", dir, SNAP_FILE_PAGES);
	return lstat(path, &st) == 0;
}

/* Follow parent links from `dir` to the base; chain[0] = dir ... chain[n-1] = oldest layer. */
static int chain_resolve(const char *dir, char chain[][PATH_MAX], int *n, struct fvm_err *err)
{
	char cur[PATH_MAX];

	snprintf(cur, sizeof(cur), "%s", dir);
	for (*n = 0; is_layer(cur); (*n)++) {
		char path[PATH_MAX + 16], parent[PATH_MAX], want[32], got[32];
		struct fvm_err why = FVM_ERR_INIT;
		uint8_t *data = NULL;
		size_t len;
		int ret;

		if (*n == SNAP_MAX_CHAIN) {
			return errmsg(err, -ELOOP, "layer chain longer than %d (compact it)",
				      SNAP_MAX_CHAIN);
		}
		snprintf(chain[*n], PATH_MAX, "%s", cur);
		snprintf(path, sizeof(path), "%s/%s", cur, SNAP_FILE_PARENT);
		ret = file_read(path, PATH_MAX + 64, FILE_NOFOLLOW, &data, &len, &why);
		if (ret) {
			return errmsg(err, ret, "layer %s: unreadable parent link: %s", cur, why.msg);
		}
		if (sscanf((char *)data, "%4095s %31s", parent, want) != 2) {
			free(data);
			return errmsg(err, -EINVAL, "layer %s: malformed parent link", cur);
		}
		free(data);
		snprintf(path, sizeof(path), "%s/%s", parent, SNAP_FILE_VMSTATE);
		ret = file_read(path, SNAP_VMSTATE_MAX, FILE_NOFOLLOW, &data, &len, &why);
		if (ret) {
			return errmsg(err, ret, "layer %s: parent %s: %s", cur, parent, why.msg);
		}
		snprintf(got, sizeof(got), "%016llx", (unsigned long long)XXH64(data, len, 0));
		free(data);
		if (strcmp(got, want)) {
			return errmsg(err, -EINVAL,
				      "layer %s: parent %s changed since the layer was written",
				 cur, parent);
		}
		snprintf(cur, sizeof(cur), "%s", parent);
	}
	return 0;
}

static int layer_apply(struct guest_mem *mem, const char *dir, struct fvm_err *err)
{
	char path[PATH_MAX + 16];
	struct fvm_err why = FVM_ERR_INIT;
	uint8_t *b = NULL;
	size_t len;
	uint64_t n = 0, stored, last = 0;
	int ret = 0;

	snprintf(path, sizeof(path), "%s/%s", dir, SNAP_FILE_PAGES);
	ret = file_read(path, mem->map_size + (mem->map_size / PAGE_4K) * 8 + 64, FILE_NOFOLLOW, &b,
			&len, &why);
	if (ret) {
		return errmsg(err, ret, "layer %s: cannot read its pages: %s", dir, why.msg);
	}
	if (len >= 32) {
		memcpy(&n, b + 16, 8);
		n = le64toh(n);
	}
	if (len < 32 || memcmp(b, SNAP_PAGES_MAGIC, 8) || le32toh(*(uint32_t *)(b + 12)) != PAGE_4K ||
	    n > mem->map_size / PAGE_4K || len != 24 + n * 8 + n * PAGE_4K + 8) {
		errf(err, "layer %s: pages file is malformed or truncated", dir);
		ret = -EINVAL;
		goto out;
	}
	memcpy(&stored, b + len - 8, 8);
	if (le64toh(stored) != XXH64(b, len - 8, 0)) {
		errf(err, "layer %s: pages checksum mismatch", dir);
		ret = -EINVAL;
		goto out;
	}
	for (uint64_t k = 0; k < n; k++) {
		uint64_t idx = le64toh(((uint64_t *)(b + 24))[k]);
		if (idx >= mem->size / PAGE_4K || (k && idx <= last)) {
			errf(err, "layer %s: page index %llu out of order or range", dir,
				 (unsigned long long)idx);
			ret = -EINVAL;
			goto out;
		}
		last = idx;
		memcpy(mem->host + idx * PAGE_4K, b + 24 + n * 8 + k * PAGE_4K, PAGE_4K);
	}
out:
	free(b);
	return ret;
}

/* A layer's pages file as far as its header and size tell: magic, page size, count, length. */
static int layer_check(const char *dir, uint64_t mem_size, struct fvm_err *err)
{
	char path[PATH_MAX + 16];
	struct fvm_err why = FVM_ERR_INIT;
	uint8_t hdr[24];
	struct stat st;
	uint64_t n;
	ssize_t got;
	int fd, ret = 0;

	snprintf(path, sizeof(path), "%s/%s", dir, SNAP_FILE_PAGES);
	fd = file_open_regular(path, O_NOFOLLOW, &st, &why);
	if (fd < 0) {
		return errmsg(err, fd, "layer %s: cannot read its pages: %s", dir, why.msg);
	}
	got = pread(fd, hdr, sizeof(hdr), 0);
	if (got < 0) {
		ret = -errno;
		errf(err, "layer %s: reading the header of %s: %s", dir, path,
			 strerror(errno));
		goto out;
	}
	memcpy(&n, hdr + 16, 8);
	n = le64toh(n);
	if (got < (ssize_t)sizeof(hdr) || memcmp(hdr, SNAP_PAGES_MAGIC, 8) ||
	    le32toh(*(uint32_t *)(hdr + 12)) != PAGE_4K || n > mem_size / PAGE_4K ||
	    (uint64_t)st.st_size != 24 + n * 8 + n * PAGE_4K + 8) {
		errf(err, "layer %s: pages file is malformed or truncated", dir);
		ret = -EINVAL;
	}
out:
	close(fd);
	return ret;
}

int snap_layers_check(const char *dir, uint64_t mem_size, struct fvm_err *err)
{
	char (*chain)[PATH_MAX] = malloc(SNAP_MAX_CHAIN * sizeof(*chain));
	int n = 0, ret;

	if (!chain) {
		return errmsg(err, -ENOMEM, "out of memory resolving the layer chain of %s", dir);
	}
	ret = chain_resolve(dir, chain, &n, err);
	for (int i = 0; !ret && i < n; i++)
		ret = layer_check(chain[i], mem_size, err);
	free(chain);
	return ret;
}

int snap_layers_apply(struct guest_mem *mem, const char *dir, struct fvm_err *err)
{
	static char chain[SNAP_MAX_CHAIN][PATH_MAX];
	int n, ret = chain_resolve(dir, chain, &n, err);

	for (int i = n - 1; !ret && i >= 0; i--)
		ret = layer_apply(mem, chain[i], err);
	return ret;
}

int snap_compact(const char *tip, const char *out, struct fvm_err *err)
{
	struct snapshot snap;
	struct snap_machine m;
	struct guest_mem mem;
	struct guest_mem_opts mo = { .backing = GUEST_MEM_FILE_PRIVATE };
	struct snap_writer w;
	struct snap_mem_stats ms;
	struct fvm_err inner = FVM_ERR_INIT; /* the writer's failing step */
	char *meta = NULL;
	int ret = snap_open(tip, &snap, err);

	if (ret)
		return ret;
	ret = snap_decode(&snap, &m, err);
	if (ret)
		goto close;
	mo.size = m.config.mem_size;
	mo.path = snap.memory_path;
	snap_machine_free(&m);
	ret = guest_mem_create(&mem, &mo);
	if (ret) {
		errf(err, "mapping %s: %s", snap.memory_path, strerror(-ret));
		goto close;
	}
	ret = snap_layers_apply(&mem, tip, err);
	if (!ret && (ret = snap_writer_begin(&w, out, false, &inner)))
		errmsg(err, ret, "creating %s: %s", out, err_text(&inner));
	else if (!ret) {
		json_t *j = json_pack("{s:i,s:n,s:s,s:I,s:s}", "format_version", SNAP_VERSION, "parent",
				      "compacted_from", tip, "mem_bytes", (json_int_t)mem.size,
				      "strategy", "compact");
		meta = j ? json_dumps(j, JSON_INDENT(2) | JSON_SORT_KEYS) : NULL;
		json_decref(j);
		if (!meta)
			ret = -ENOMEM;
		if (ret || (ret = snap_writer_put(&w, SNAP_FILE_VMSTATE, snap.state.data, snap.state.len)) ||
		    (ret = snap_disks_copy(tip, &snap.state, &w, err)) ||
		    (ret = snap_writer_put_memory(&w, mem.host, mem.size, &ms)) ||
		    (ret = snap_writer_put(&w, SNAP_FILE_META, meta, strlen(meta))) ||
		    (ret = snap_writer_commit(&w))) {
			/* snap_disks_copy describes its own failure in err */
			if (errset(&inner))
				errmsg(err, ret, "writing %s: %s", out, inner.msg);
			else if (!errset(err))
				errmsg(err, ret, "writing %s: %s", out, strerror(-ret));
			snap_writer_abort(&w);
		}
	}
	free(meta);
	guest_mem_destroy(&mem);
close:
	snap_close(&snap);
	return ret;
}
