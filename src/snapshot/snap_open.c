/* Opening a snapshot directory for restore: verified vmstate, sane config, matching memory. */
#include "snapshot/snap_format.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "util/errmsg.h"
#include "snapshot/snap_config.h"
#include "snapshot/snap_disk.h"
#include "snapshot/snap_layer.h"
#include "util/page.h"

#define SNAP_MAX_VCPUS 16

/* Regions must tile the memory file in order: [0, r0.size), [r0.size, r0.size + r1.size). */
static int check_config(const struct snap_config *c, struct fvm_err *err)
{
	uint64_t off = 0, gpa_end = 0;

	if (c->mem_size == 0 || c->mem_size % PAGE_4K)
		return errmsg(err, -EINVAL, "config: RAM size %llu is not a positive multiple "
			    "of 4096", (unsigned long long)c->mem_size);
	if (c->nvcpus < 1 || c->nvcpus > SNAP_MAX_VCPUS)
		return errmsg(err, -EINVAL, "config: %u vCPUs (1 to %d supported)", c->nvcpus,
			    SNAP_MAX_VCPUS);
	if (c->guest_kind != SNAP_GUEST_PROBE && c->guest_kind != SNAP_GUEST_LINUX)
		return errmsg(err, -EINVAL, "config: unknown guest kind %u", c->guest_kind);
	if (!memchr(c->cpu_features, '\0', sizeof(c->cpu_features)))
		return errmsg(err, -EINVAL, "config: CPU feature list is not terminated");
	if (c->nregions < 1 || c->nregions > SNAP_CONFIG_MAX_REGIONS)
		return errmsg(err, -EINVAL, "config: %u memory regions (1 to %d supported)",
			    c->nregions, SNAP_CONFIG_MAX_REGIONS);
	for (uint32_t i = 0; i < c->nregions; i++) {
		const typeof(c->regions[0]) *r = &c->regions[i];

		if (r->size == 0 || r->size % PAGE_4K || r->gpa % PAGE_4K || r->offset != off ||
		    r->size > c->mem_size - off || r->gpa < gpa_end || r->gpa + r->size < r->gpa)
			return errmsg(err, -EINVAL, "config: memory region %u (gpa 0x%llx, "
				    "%llu bytes at offset %llu) does not fit %llu bytes of RAM", i,
				    (unsigned long long)r->gpa, (unsigned long long)r->size,
				    (unsigned long long)r->offset, (unsigned long long)c->mem_size);
		off += r->size;
		gpa_end = r->gpa + r->size;
	}
	if (off != c->mem_size)
		return errmsg(err, -EINVAL, "config: memory regions cover %llu of %llu bytes",
			    (unsigned long long)off, (unsigned long long)c->mem_size);
	return 0;
}

static int check_memory(struct snapshot *snap, const struct snap_config *c, struct fvm_err *err)
{
	struct stat st;

	snprintf(snap->memory_path, sizeof(snap->memory_path), "%s/%s", snap->dir,
		 SNAP_FILE_MEMORY);
	if (stat(snap->memory_path, &st) < 0)
		return errmsg(err, -errno, "memory file %s: %s", snap->memory_path,
			    strerror(errno));
	if (!S_ISREG(st.st_mode))
		return errmsg(err, -EINVAL, "memory file %s is not a regular file",
			    snap->memory_path);
	if ((uint64_t)st.st_size != c->mem_size)
		return errmsg(err, -EINVAL, "memory file is %llu bytes, the snapshot says %llu",
			    (unsigned long long)st.st_size, (unsigned long long)c->mem_size);
	snap->memory_size = (uint64_t)st.st_size;
	return 0;
}

int snap_open(const char *dir, struct snapshot *snap, struct fvm_err *err)
{
	char path[PATH_MAX + 16];
	struct fvm_err msg = FVM_ERR_INIT;
	const struct snap_section *s;
	struct snap_config c;
	struct stat st;
	uint8_t *data = NULL;
	size_t len = 0;
	int ret;

	memset(snap, 0, sizeof(*snap));
	if (strlen(dir) >= sizeof(snap->dir))
		return errmsg(err, -ENAMETOOLONG, "snapshot path too long: %s", dir);
	snprintf(snap->dir, sizeof(snap->dir), "%s", dir);
	if (stat(dir, &st) < 0)
		return errmsg(err, -errno, "snapshot %s: %s", dir, strerror(errno));
	if (!S_ISDIR(st.st_mode))
		return errmsg(err, -ENOTDIR, "snapshot %s is not a directory", dir);
	snprintf(path, sizeof(path), "%s/%s", dir, SNAP_FILE_VMSTATE);
	ret = file_read(path, SNAP_VMSTATE_MAX, FILE_NOFOLLOW, &data, &len, &msg);
	if (!ret)
		ret = snap_state_parse(data, len, &snap->state, &msg);
	if (ret)
		goto err;
	s = snap_state_find(&snap->state, SNAP_SEC_CONFIG, 0);
	if (!s || s->len != sizeof(c)) {
		ret = -EINVAL;
		if (s)
			errf(&msg, "vmstate: config section is %llu bytes, expected %zu",
				 (unsigned long long)s->len, sizeof(c));
		else
			errf(&msg, "vmstate: no config section");
		goto err;
	}
	memcpy(&c, s->data, sizeof(c));
	ret = check_config(&c, &msg);
	if (!ret)
		ret = check_memory(snap, &c, &msg);
	if (!ret)
		ret = snap_layers_check(dir, c.mem_size, &msg);
	if (!ret) /* every disk's chain opens as restore opens it: verify refuses what it would */
		ret = snap_disks_check(dir, &snap->state, &msg);
	if (ret)
		goto err;
	return 0;
err:
	/* One message: the snapshot, then what is wrong with it. */
	errmsg(err, ret, "snapshot %s: %s", dir, msg.msg);
	snap_close(snap);
	return ret;
}

void snap_close(struct snapshot *snap)
{
	snap_state_free(&snap->state);
	memset(snap, 0, sizeof(*snap));
}
