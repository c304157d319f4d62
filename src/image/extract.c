/* bzImage -> vmlinux: decode the compressed payload and check it is a loadable kernel. */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/log.h"
#include "image/fsutil.h"
#include "image/image.h"
#include "loader/kernel.h"

int image_bzimage_payload(const char *bzimage, uint8_t **out, size_t *len)
{
	struct kernel_info *info = calloc(1, sizeof(*info));
	uint8_t *file = NULL;
	size_t flen = 0;
	int ret = -ENOMEM;

	if (!info)
		goto out;
	ret = file_read_all(bzimage, &file, &flen);
	if (ret)
		goto out;
	ret = kernel_parse(bzimage, file, flen, info);
	if (ret)
		goto out;
	if (info->format != KERNEL_BZIMAGE) {
		log_err("%s: already a %s, not a bzImage", bzimage, kernel_format_name(info->format));
		ret = -EINVAL;
		goto out;
	}
	ret = payload_decode(file + info->setup_size + info->hdr.payload_offset,
			     info->hdr.payload_length, out, len);
	if (ret)
		log_err("%s: cannot decode its %s payload", bzimage, payload_format_name(info->payload));
out:
	free(file);
	free(info);
	return ret;
}

int image_extract_vmlinux(const char *bzimage, const char *out_path)
{
	struct kernel_info *info = calloc(1, sizeof(*info));
	char what[PATH_MAX + 32];
	uint8_t *elf = NULL;
	size_t len = 0;
	int ret = -ENOMEM;

	if (!info)
		goto out;
	ret = image_bzimage_payload(bzimage, &elf, &len);
	if (ret)
		goto out;
	snprintf(what, sizeof(what), "payload of %s", bzimage);
	ret = kernel_parse(what, elf, len, info);
	if (ret)
		goto out;
	if (info->format != KERNEL_VMLINUX) {
		log_err("%s: payload is not an ELF vmlinux", bzimage);
		ret = -EINVAL;
		goto out;
	}
	ret = image_write_file(out_path, elf, len, 0644);
out:
	free(elf);
	free(info);
	return ret;
}

int image_default_cache(char *buf, size_t size)
{
	const char *env = getenv("FORKVM_CACHE"), *home = getenv("HOME");
	int n;

	if (env && *env)
		n = snprintf(buf, size, "%s", env);
	else if (home && *home)
		n = snprintf(buf, size, "%s/.cache/forkvm", home);
	else
		n = snprintf(buf, size, "/var/cache/forkvm");
	return n < 0 || (size_t)n >= size ? -ENAMETOOLONG : 0;
}
