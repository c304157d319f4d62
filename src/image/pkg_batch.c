/* Many exact packages at once: one apt-get download for all missing .debs, then dpkg -x each
 * into the per-version cache that the kernel build uses too. */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "util/log.h"
#include "image/cmdrun.h"
#include "image/fsutil.h"
#include "image/pkg.h"

int pkg_set(struct pkg *pkg, const char *cache, const char *name, const char *version,
	    const char *arch)
{
	char ver[128];
	int n1, n2;

	memset(pkg, 0, sizeof(*pkg));
	if (snprintf(pkg->name, sizeof(pkg->name), "%s", name) >= (int)sizeof(pkg->name) ||
	    snprintf(pkg->version, sizeof(pkg->version), "%s", version) >= (int)sizeof(pkg->version))
		return -ENAMETOOLONG;
	snprintf(ver, sizeof(ver), "%s", version);
	for (char *c = ver; *c; c++)
		if (*c == ':')
			*c = '_';
	n1 = snprintf(pkg->deb, sizeof(pkg->deb), "%s/debs/%s_%s_%s.deb", cache, name, ver, arch);
	n2 = snprintf(pkg->root, sizeof(pkg->root), "%s/pkgs/%s_%s", cache, name, ver);
	return n1 >= (int)sizeof(pkg->deb) || n2 >= (int)sizeof(pkg->root) ? -ENAMETOOLONG : 0;
}

int pkg_parse_deb_name(const char *file, char *name, size_t nsize, char *version, size_t vsize)
{
	const char *u1 = strchr(file, '_'), *u2 = u1 ? strchr(u1 + 1, '_') : NULL;
	size_t len = strlen(file), o = 0;

	if (!u1 || !u2 || u1 == file || u2 == u1 + 1 || strchr(u2 + 1, '_') || len < 5 ||
	    strcmp(file + len - 4, ".deb") || file + len - 4 <= u2 + 1)
		return -EINVAL;
	if ((size_t)(u1 - file) >= nsize)
		return -EINVAL;
	memcpy(name, file, (size_t)(u1 - file));
	name[u1 - file] = 0;
	for (const char *p = u1 + 1; p < u2; p++) {
		char c = *p;

		if (!strncmp(p, "%3a", 3) || !strncmp(p, "%3A", 3)) {
			c = ':';
			p += 2;
		}
		if (o + 1 >= vsize)
			return -EINVAL;
		version[o++] = c;
	}
	version[o] = 0;
	return o ? 0 : -EINVAL;
}

/* Move every .deb apt-get left in dir to the cache path of the package it is. */
static int take_debs(const char *dir, struct pkg *pkgs, int n)
{
	char name[128], version[128], src[PATH_MAX + 260];
	struct dirent *de;
	int ret = 0;
	DIR *d = opendir(dir);

	if (!d)
		return log_errno(-errno, "open %s", dir);
	while (!ret && (de = readdir(d))) {
		if (pkg_parse_deb_name(de->d_name, name, sizeof(name), version, sizeof(version)))
			continue;
		for (int i = 0; i < n; i++) {
			if (strcmp(pkgs[i].name, name) || strcmp(pkgs[i].version, version))
				continue;
			snprintf(src, sizeof(src), "%s/%s", dir, de->d_name);
			if (rename(src, pkgs[i].deb) < 0)
				ret = log_errno(-errno, "rename %s to %s", src, pkgs[i].deb);
			break;
		}
	}
	closedir(d);
	return ret;
}

static int download_missing(const char *cache, struct pkg *pkgs, int n)
{
	char dir[PATH_MAX], **argv = calloc((size_t)n + 8, sizeof(*argv)), **specs = calloc((size_t)n, sizeof(*specs));
	struct cmd_spec spec = { .argv = argv, .cwd = dir, .quiet = true };
	struct cmd_result res;
	int argc = 0, nmissing = 0, ret = 0;

	if (!argv || !specs) {
		ret = -ENOMEM;
		goto out;
	}
	argv[argc++] = "apt-get";
	argv[argc++] = "download";
	argv[argc++] = "-q";
	if (geteuid() == 0) { /* allowed (and needed to write here) only as root */
		argv[argc++] = "-o";
		argv[argc++] = "APT::Sandbox::User=root";
	}
	for (int i = 0; i < n; i++) {
		if (access(pkgs[i].deb, F_OK) == 0)
			continue;
		if (asprintf(&specs[nmissing], "%s=%s", pkgs[i].name, pkgs[i].version) < 0) {
			specs[nmissing] = NULL;
			ret = -ENOMEM;
			goto out;
		}
		argv[argc++] = specs[nmissing++];
	}
	if (!nmissing)
		goto out;
	snprintf(dir, sizeof(dir), "%s/debs/tmp.%d", cache, (int)getpid());
	remove_tree(dir);
	ret = image_mkdir(dir, 0755);
	if (ret)
		goto out;
	log_info("downloading %d package%s with apt-get", nmissing, nmissing == 1 ? "" : "s");
	ret = cmd_run(&spec, "downloading the rootfs packages", NULL, &res);
	/* Keep what did arrive: the next run downloads only the rest. */
	if (take_debs(dir, pkgs, n) && !ret)
		ret = -EIO;
	for (int i = 0; i < n && !ret; i++)
		if (access(pkgs[i].deb, F_OK) < 0) {
			log_err("apt-get download left no .deb for %s %s", pkgs[i].name, pkgs[i].version);
			ret = -ENOENT;
		}
	remove_tree(dir);
out:
	for (int i = 0; specs && i < nmissing; i++)
		free(specs[i]);
	free(specs);
	free(argv);
	return ret;
}

int pkg_fetch_all(const char *cache, struct pkg *pkgs, int n)
{
	char dir[PATH_MAX];
	struct stat st;
	int ret;

	snprintf(dir, sizeof(dir), "%s/pkgs", cache);
	ret = image_mkdir(dir, 0755);
	snprintf(dir, sizeof(dir), "%s/debs", cache);
	ret = ret ?: image_mkdir(dir, 0755);
	ret = ret ?: download_missing(cache, pkgs, n);
	for (int i = 0; i < n && !ret; i++)
		if (stat(pkgs[i].root, &st) < 0)
			ret = pkg_unpack(&pkgs[i]);
	return ret;
}
