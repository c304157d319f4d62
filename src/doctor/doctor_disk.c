/* `forkvm doctor`, disk space: the run directory, the snapshot roots (src/core/unix_sock.c's
 * list) and the image cache; below DOCTOR_DISK_LOW free is a warning. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/statvfs.h>

#include "util/unix_sock.h"
#include "doctor/doctor_impl.h"

/*
 * Free bytes for an unprivileged writer on the filesystem that holds path, or would hold it
 * once created: the nearest existing ancestor, copied to where. 0 or -errno.
 */
static int free_bytes(const char *path, uint64_t *bytes, char *where, size_t len)
{
	struct statvfs sv;
	char *slash;

	if (snprintf(where, len, "%s", path) >= (int)len)
		return -ENAMETOOLONG;
	while (statvfs(where, &sv) < 0) {
		if ((errno != ENOENT && errno != ENOTDIR) || !strcmp(where, "/") ||
		    !strcmp(where, "."))
			return -errno;
		slash = strrchr(where, '/');
		if (!slash)
			snprintf(where, len, ".");
		else if (slash == where)
			where[1] = '\0';
		else
			*slash = '\0';
	}
	*bytes = (uint64_t)sv.f_bavail * sv.f_frsize;
	return 0;
}

/* "12.3 GiB" / "512 MiB". */
static void human(uint64_t bytes, char *buf, size_t len)
{
	if (bytes >= (1ULL << 30))
		snprintf(buf, len, "%.1f GiB", (double)bytes / (1ULL << 30));
	else
		snprintf(buf, len, "%llu MiB", (unsigned long long)(bytes >> 20));
}

/* One directory: its free space as a fact, a warning (with how to fix it) when low. */
static void check_dir(struct doctor_result *res, const char *what, const char *path,
		      const char *env)
{
	char where[4096], size[32];
	uint64_t bytes = 0;
	int err = free_bytes(path, &bytes, where, sizeof(where));

	if (err) {
		doctor_probe_error(res, path, err);
		return;
	}
	human(bytes, size, sizeof(size));
	if (strcmp(where, path))
		doctor_found(res, "%s %s (not created yet; on %s): %s free", what, path, where, size);
	else
		doctor_found(res, "%s %s: %s free", what, path, size);
	if (bytes < DOCTOR_DISK_LOW) {
		doctor_raise(res, DOCTOR_WARN);
		doctor_found(res, "below %llu GiB", DOCTOR_DISK_LOW >> 30);
		doctor_fix(res, "free space on the filesystem of %s, or set %s to a directory on a "
			   "larger one", where, env);
	}
}

DOCTOR_CHECK(doctor_check_disk_run)
{
	if (!ctx->run_dir) {
		doctor_raise(res, DOCTOR_FAIL);
		doctor_found(res, "FORKVM_RUN_DIR is too long: no VM can be addressed by name");
		doctor_fix(res, "a shorter FORKVM_RUN_DIR (or unset it)");
		return 0;
	}
	check_dir(res, "run dir", ctx->run_dir, "FORKVM_RUN_DIR");
	return 0;
}

DOCTOR_CHECK(doctor_check_disk_snapshots)
{
	const char *env = getenv("FORKVM_SNAPSHOT_ROOTS");
	char roots[4096];

	if (snprintf(roots, sizeof(roots), "%s", path_snapshot_roots()) >= (int)sizeof(roots))
		return -ENAMETOOLONG;
	doctor_found(res, "snapshot roots from %s", env && *env ? "FORKVM_SNAPSHOT_ROOTS" :
		     "the default");
	for (char *save = NULL, *r = strtok_r(roots, ":", &save); r; r = strtok_r(NULL, ":", &save))
		check_dir(res, "root", r, "FORKVM_SNAPSHOT_ROOTS");
	return 0;
}

DOCTOR_CHECK(doctor_check_disk_cache)
{
	if (!ctx->cache_dir) {
		doctor_raise(res, DOCTOR_WARN);
		doctor_found(res, "FORKVM_CACHE (or HOME) is too long for the image cache's path");
		doctor_fix(res, "a shorter FORKVM_CACHE");
		return 0;
	}
	check_dir(res, "image cache", ctx->cache_dir, "FORKVM_CACHE");
	return 0;
}
