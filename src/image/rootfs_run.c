/* What `forkvm run` needs to boot a Linux guest from a rootfs image: the kernel command line
 * argument the initramfs looks for, and where `forkvm image build --rootfs` put the image. */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "image/image.h"
#include "image/rootfs.h"

/* Whether the command line has a word starting with prefix. */
static int has_word(const char *line, const char *prefix)
{
	size_t n = strlen(prefix);

	for (const char *p = line; (p = strstr(p, prefix)); p += n)
		if (p == line || p[-1] == ' ' || p[-1] == '\t')
			return 1;
	return 0;
}

int rootfs_cmdline(const char *base, char *out, size_t size)
{
	int n;

	if (has_word(base, "forkvm.root=") || has_word(base, "root="))
		n = snprintf(out, size, "%s", base);
	else
		n = snprintf(out, size, "%s%s" ROOTFS_CMDLINE_ARG, base, *base ? " " : "");
	return n < 0 || (size_t)n >= size ? -ENAMETOOLONG : 0;
}

int rootfs_default_image(char *buf, size_t size)
{
	char cache[4096];
	int ret = image_default_cache(cache, sizeof(cache)), n;

	if (ret)
		return ret;
	n = snprintf(buf, size, "%s/rootfs/" ROOTFS_FILE, cache);
	return n < 0 || (size_t)n >= size ? -ENAMETOOLONG : 0;
}
