/* `forkvm doctor`, Linux guest images: the outputs of `forkvm image build` (with virtio_blk for
 * root disks and virtio_net for the NIC) and `forkvm image build --rootfs` in the cache, and the host tools they run. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "doctor/doctor_impl.h"
#include "image/cmdrun.h"
#include "image/rootfs.h"

/* The modules root disks and the NIC need in the initramfs (src/image/build.c's list). */
#define ROOT_DISK_MODULE "virtio_blk"
#define NIC_MODULE "virtio_net"

DOCTOR_CHECK(doctor_check_image)
{
	char path[4096], kver[128], *text = NULL;
	int err, has;

	if (!ctx->cache_dir)
		return -ENAMETOOLONG;
	if (snprintf(path, sizeof(path), "%s/image/manifest.json", ctx->cache_dir) >=
	    (int)sizeof(path))
		return -ENAMETOOLONG;
	err = doctor_read_file(path, 1 << 20, &text);
	if (err == -ENOENT) {
		doctor_raise(res, DOCTOR_WARN);
		doctor_found(res, "no guest image: %s missing (run --linux needs it)", path);
		doctor_fix(res, "forkvm image build");
		goto out;
	}
	if (err) {
		doctor_probe_error(res, path, err);
		goto out;
	}
	has = doctor_manifest_has_module(text, ROOT_DISK_MODULE, kver, sizeof(kver));
	if (has > 0 && doctor_manifest_has_module(text, NIC_MODULE, NULL, 0) == 0) {
		doctor_raise(res, DOCTOR_WARN);
		doctor_found(res, "%s (kernel %s) predates networking: no %s module, so --net "
			     "guests have no network interface", path, kver[0] ? kver : "?",
			     NIC_MODULE);
		doctor_fix(res, "forkvm image build");
	} else if (has < 0) {
		doctor_raise(res, DOCTOR_WARN);
		doctor_found(res, "%s is not an image manifest", path);
		doctor_fix(res, "forkvm image build");
	} else if (!has) {
		doctor_raise(res, DOCTOR_WARN);
		doctor_found(res, "%s (kernel %s) predates root disks: no %s module, so --rootfs "
			     "guests stay in the initramfs", path, kver[0] ? kver : "?",
			     ROOT_DISK_MODULE);
		doctor_fix(res, "forkvm image build");
	} else {
		doctor_found(res, "%s: kernel %s, initramfs loads %s and %s", path,
			     kver[0] ? kver : "?", ROOT_DISK_MODULE, NIC_MODULE);
	}
out:
	free(text);
	return 0;
}

DOCTOR_CHECK(doctor_check_rootfs)
{
	char dir[4096], path[4200];
	struct stat st;

	if (!ctx->cache_dir)
		return -ENAMETOOLONG;
	if (snprintf(dir, sizeof(dir), "%s/rootfs", ctx->cache_dir) >= (int)sizeof(dir))
		return -ENAMETOOLONG;
	/* The manifest, then the image: errno and path name the first one missing. */
	snprintf(path, sizeof(path), "%s/manifest.json", dir);
	if (stat(path, &st) == 0) {
		snprintf(path, sizeof(path), "%s/" ROOTFS_FILE, dir);
		if (stat(path, &st) == 0) {
			doctor_found(res, "%s: %llu MiB", path,
				     (unsigned long long)(st.st_size >> 20));
			return 0;
		}
	}
	if (errno != ENOENT) {
		doctor_probe_error(res, path, -errno);
		return 0;
	}
	doctor_raise(res, DOCTOR_WARN);
	doctor_found(res, "no root filesystem: %s missing (run --linux boots the initramfs "
		     "alone)", path);
	doctor_fix(res, "forkvm image build --rootfs");
	return 0;
}

DOCTOR_CHECK(doctor_check_tools)
{
	/* What src/image runs (pkg.c, pkg_batch.c, rootfs_*.c); dpkg -x runs dpkg-deb. */
	static const struct { const char *tool, *package; } tools[] = {
		{ "apt-get", "apt" }, { "apt-cache", "apt" }, { "dpkg", "dpkg" },
		{ "dpkg-deb", "dpkg" }, { "mke2fs", "e2fsprogs" }, { "debugfs", "e2fsprogs" },
		{ "dumpe2fs", "e2fsprogs" }, { "ldconfig", "libc-bin" },
	};
	char path[4096], found[256] = "", missing[256] = "", packages[128] = "";
	int err;

	for (size_t i = 0; i < sizeof(tools) / sizeof(tools[0]); i++) {
		err = cmd_find(tools[i].tool, path, sizeof(path));
		if (!err) {
			snprintf(found + strlen(found), sizeof(found) - strlen(found), "%s%s",
				 found[0] ? " " : "", tools[i].tool);
			continue;
		}
		if (err != -ENOENT)
			return err;
		snprintf(missing + strlen(missing), sizeof(missing) - strlen(missing), "%s%s (%s)",
			 missing[0] ? ", " : "", tools[i].tool, tools[i].package);
		if (!strstr(packages, tools[i].package))
			snprintf(packages + strlen(packages), sizeof(packages) - strlen(packages),
				 " %s", tools[i].package);
	}
	if (missing[0]) {
		doctor_raise(res, DOCTOR_WARN);
		doctor_found(res, "missing %s: forkvm image build cannot run", missing);
		doctor_fix(res, "apt-get install%s", packages);
	} else {
		doctor_found(res, "found %s", found);
	}
	return 0;
}
