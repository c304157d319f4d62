/* Snapshot memory files shared by the page server's VMs: one read-only mapping, a hole map. */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "util/errmsg.h"
#include "util/log.h"
#include "snapshot/snap_format.h"
#include "snapshot/snap_layer.h"
#include "uffd/ps_server.h"

/* Mark every page that lies in a data extent of the sparse file (SEEK_DATA / SEEK_HOLE). */
static int map_extents(int fd, uint64_t size, uint8_t *data, const char *path)
{
	off_t pos = 0;

	while ((uint64_t)pos < size) {
		off_t start = lseek(fd, pos, SEEK_DATA), end;
		if (start < 0 && errno == ENXIO)
			return 0;
		if (start < 0)
			return log_errno(-errno, "SEEK_DATA in %s at %lld", path, (long long)pos);
		end = lseek(fd, start, SEEK_HOLE);
		if (end < 0)
			return log_errno(-errno, "SEEK_HOLE in %s at %lld", path, (long long)start);
		for (uint64_t p = (uint64_t)start / 4096; p < ((uint64_t)end + 4095) / 4096 &&
		     p < size / 4096; p++)
			ps_set_bit(data, p);
		pos = end;
	}
	return 0;
}

static int snap_load(struct ps_snap *sn, const char *dir, struct fvm_err *err)
{
	struct snapshot snap;
	struct snap_config cfg;
	const struct snap_section *sec;
	struct stat st;
	int ret, fd = -1;

	ret = snap_open(dir, &snap, err);
	if (ret)
		return ret;
	sec = snap_state_find(&snap.state, SNAP_SEC_CONFIG, 0);
	memcpy(&cfg, sec->data, sizeof(cfg));
	sn->cfg = cfg;
	snprintf(sn->dir, sizeof(sn->dir), "%s", dir);
	sn->layout.nregions = (int)cfg.nregions;
	for (uint32_t i = 0; i < cfg.nregions && i < HOTLIST_MAX_REGIONS; i++) {
		sn->layout.size[i] = cfg.regions[i].size;
		sn->layout.offset[i] = cfg.regions[i].offset;
	}
	/* `memory` may be a symbolic link (diff layers point at their base's) but not a FIFO. */
	fd = file_open_regular(snap.memory_path, 0, &st, err);
	if (fd < 0) {
		ret = fd;
		goto err;
	}
	sn->dev = st.st_dev;
	sn->ino = st.st_ino;
	sn->size = (uint64_t)st.st_size;
	ret = -EINVAL;
	if (sn->size != cfg.mem_size) {
		errf(err, "memory file %s is %llu bytes, the snapshot says %llu",
			 snap.memory_path, (unsigned long long)sn->size,
			 (unsigned long long)cfg.mem_size);
		goto err;
	}
	sn->data = calloc(1, sn->size / 4096 / 8 + 1);
	if (!sn->data) {
		ret = -ENOMEM;
		goto err;
	}
	ret = map_extents(fd, sn->size, sn->data, snap.memory_path);
	if (ret) {
		errf(err, "mapping the holes of %s failed", snap.memory_path);
		goto err;
	}
	/* Read-only and shared: every VM restored from this file copies out of one page cache. */
	sn->map = mmap(NULL, sn->size, PROT_READ, MAP_SHARED, fd, 0);
	if (sn->map == MAP_FAILED) {
		ret = -errno;
		sn->map = NULL;
		errf(err, "mmap %s: %s", snap.memory_path, strerror(errno));
		goto err;
	}
	close(fd);
	snap_close(&snap);
	return 0;
err:
	if (fd >= 0)
		close(fd);
	free(sn->data);
	sn->data = NULL;
	snap_close(&snap);
	return ret;
}

int ps_snap_get(struct ps_server *s, const char *dir, struct ps_snap **out, struct fvm_err *err)
{
	char path[PATH_MAX + 16];
	struct ps_snap *sn;
	struct stat st;
	int ret;

	snprintf(path, sizeof(path), "%s/memory", dir);
	/* Same inode as a cached one → share it; a snapshot replaced in place gets a new inode. */
	if (stat(path, &st) == 0) {
		for (sn = s->snaps; sn; sn = sn->next) {
			if (sn->dev == st.st_dev && sn->ino == st.st_ino && !strcmp(sn->dir, dir)) {
				sn->refs++;
				*out = sn;
				return 0;
			}
		}
	}
	sn = calloc(1, sizeof(*sn));
	if (!sn)
		return -ENOMEM;
	ret = snap_load(sn, dir, err);
	if (ret) {
		free(sn);
		return ret;
	}
	sn->refs = 1;
	sn->next = s->snaps;
	s->snaps = sn;
	*out = sn;
	return 0;
}

void ps_snap_put(struct ps_server *s, struct ps_snap *snap)
{
	struct ps_snap **pp;

	if (!snap || --snap->refs > 0)
		return;
	for (pp = &s->snaps; *pp && *pp != snap; pp = &(*pp)->next)
		;
	if (*pp)
		*pp = snap->next;
	munmap((void *)snap->map, snap->size);
	free(snap->data);
	free(snap);
}
