/* Kernel module files as distributions ship them: plain .ko or compressed .ko.xz/.zst/.gz. */
#include <elf.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "util/log.h"
#include "image/fsutil.h"
#include "image/moddep.h"
#include "loader/payload.h"

static const char *const suffixes[] = { "", ".xz", ".zst", ".gz" };

static bool ends_with(const char *s, const char *suffix)
{
	size_t n = strlen(s), m = strlen(suffix);

	return n >= m && !strcmp(s + n - m, suffix);
}

int module_locate(const char *moddir, const char *rel, char *found, size_t size)
{
	char path[PATH_MAX];

	for (size_t i = 0; i < sizeof(suffixes) / sizeof(suffixes[0]); i++) {
		int n = snprintf(path, sizeof(path), "%s/%s%s", moddir, rel, suffixes[i]);

		if (n < 0 || (size_t)n >= sizeof(path))
			return log_errno(-ENAMETOOLONG, "module %s/%s", moddir, rel);
		if (access(path, F_OK) < 0)
			continue;
		n = snprintf(found, size, "%s%s", rel, suffixes[i]);
		return n < 0 || (size_t)n >= size ? log_errno(-ENAMETOOLONG, "module %s", rel) : 0;
	}
	log_err("module %s: no such file under %s, plain or compressed (.xz, .zst, .gz)", rel,
		moddir);
	return -ENOENT;
}

int module_read(const char *path, uint8_t **buf, size_t *len)
{
	enum payload_format format;
	uint8_t *file = NULL, *ko = NULL;
	size_t flen = 0, klen = 0, consumed = 0;
	int ret;

	if (ends_with(path, ".ko"))
		format = PAYLOAD_ELF;
	else if (ends_with(path, ".ko.xz"))
		format = PAYLOAD_XZ;
	else if (ends_with(path, ".ko.zst"))
		format = PAYLOAD_ZSTD;
	else if (ends_with(path, ".ko.gz"))
		format = PAYLOAD_GZIP;
	else {
		log_err("%s: not a kernel module file name (.ko, .ko.xz, .ko.zst or .ko.gz)", path);
		return -EINVAL;
	}
	ret = file_read_all(path, &file, &flen);
	if (ret)
		goto out;
	switch (format) {
	case PAYLOAD_ELF:
		ko = file;
		klen = flen;
		file = NULL;
		break;
	case PAYLOAD_XZ:
		ret = xz_decode(file, flen, MODULE_MAX_SIZE, &ko, &klen, &consumed);
		break;
	case PAYLOAD_ZSTD:
		ret = zstd_decode(file, flen, MODULE_MAX_SIZE, &ko, &klen, &consumed);
		break;
	default:
		ret = gzip_decode(file, flen, &ko, &klen);
		consumed = flen;
		break;
	}
	if (ret) {
		log_err("%s: cannot decompress the kernel module", path);
		goto out;
	}
	ret = -EINVAL;
	if (format != PAYLOAD_ELF && consumed != flen) {
		log_err("%s: %zu stray bytes after the compressed module", path, flen - consumed);
		goto out;
	}
	if (klen < SELFMAG || memcmp(ko, ELFMAG, SELFMAG)) {
		log_err("%s: %s is not an ELF kernel module", path,
			format == PAYLOAD_ELF ? "file" : "decompressed data");
		goto out;
	}
	*buf = ko;
	*len = klen;
	ko = NULL;
	ret = 0;
out:
	free(file);
	free(ko);
	return ret;
}
