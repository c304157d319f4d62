/* apt-get download + dpkg -x with a per-version cache; every cache entry appears by rename. */
#include "image/pkg.h"

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

/* Copy the first token of a "Key: value" field, stopping at space, comma or '|'. */
static void field(const char *text, const char *key, char *out, size_t size, int first_word)
{
	size_t klen = strlen(key), n = 0;

	out[0] = 0;
	for (const char *line = text; line && *line; line = strchr(line, '\n'), line = line ? line + 1 : NULL) {
		const char *v;

		if (strncmp(line, key, klen) || line[klen] != ':')
			continue;
		for (v = line + klen + 1; *v == ' '; v++)
			;
		while (v[n] && v[n] != '\n' && n + 1 < size &&
		       !(first_word && (v[n] == ' ' || v[n] == ',' || v[n] == '|')))
			n++;
		memcpy(out, v, n);
		out[n] = 0;
		return;
	}
}

int pkg_parse_show(const char *text, struct pkg *pkg)
{
	field(text, "Version", pkg->version, sizeof(pkg->version), 1);
	field(text, "Depends", pkg->depends, sizeof(pkg->depends), 1);
	return pkg->version[0] ? 0 : -ENOENT;
}

int pkg_resolve(const char *name, struct pkg *pkg)
{
	char *show_argv[] = { "apt-cache", "show", "--no-all-versions", (char *)name, NULL };
	char *update_argv[] = { "apt-get", "update", "-qq", NULL };
	char *out = NULL;
	int ret;

	memset(pkg, 0, sizeof(*pkg));
	snprintf(pkg->name, sizeof(pkg->name), "%s", name);
	ret = run_cmd(show_argv, NULL, &out);
	if (ret || pkg_parse_show(out, pkg)) {
		/* A fresh machine has no package lists yet. */
		log_info("%s: not in the apt package lists, running apt-get update", name);
		free(out);
		out = NULL;
		ret = run_cmd(update_argv, NULL, NULL);
		if (!ret)
			ret = run_cmd(show_argv, NULL, &out);
		if (!ret && pkg_parse_show(out, pkg))
			ret = -ENOENT;
	}
	if (ret)
		log_err("%s: cannot resolve the package with apt-cache", name);
	free(out);
	return ret;
}

/* Move the one .deb apt-get left in dir to dest. */
static int take_deb(const char *dir, const char *dest)
{
	char src[PATH_MAX + 256];
	struct dirent *de;
	int ret = -ENOENT;
	DIR *d = opendir(dir);

	if (!d)
		return log_errno(-errno, "open %s", dir);
	while ((de = readdir(d)))
		if (strstr(de->d_name, ".deb")) {
			snprintf(src, sizeof(src), "%s/%s", dir, de->d_name);
			ret = rename(src, dest) < 0 ? log_errno(-errno, "rename %s", src) : 0;
			break;
		}
	closedir(d);
	if (ret == -ENOENT)
		log_err("apt-get download left no .deb in %s", dir);
	return ret;
}

static int download(const char *cache, struct pkg *pkg)
{
	char dir[PATH_MAX], spec[300];
	char *argv[] = { "apt-get", "download", "-q", "-o", "APT::Sandbox::User=root", spec, NULL };
	int ret;

	if (geteuid() != 0) { /* the sandbox user option only matters (and is allowed) for root */
		argv[3] = spec;
		argv[4] = NULL;
	}
	snprintf(spec, sizeof(spec), "%s=%s", pkg->name, pkg->version);
	snprintf(dir, sizeof(dir), "%s/debs/tmp.%d", cache, (int)getpid());
	remove_tree(dir);
	ret = image_mkdir(dir, 0755);
	if (ret)
		return ret;
	log_info("downloading %s", spec);
	ret = run_cmd(argv, dir, NULL);
	if (!ret)
		ret = take_deb(dir, pkg->deb);
	remove_tree(dir);
	return ret;
}

int pkg_unpack(struct pkg *pkg)
{
	char tmp[PATH_MAX + 16], what[300];
	char *argv[] = { "dpkg", "-x", pkg->deb, tmp, NULL };
	struct cmd_spec spec = { .argv = argv, .quiet = true };
	struct cmd_result res;
	int ret;

	snprintf(tmp, sizeof(tmp), "%s.tmp.%d", pkg->root, (int)getpid());
	snprintf(what, sizeof(what), "unpacking %s %s", pkg->name, pkg->version);
	remove_tree(tmp);
	ret = cmd_run(&spec, what, NULL, &res);
	if (!ret && rename(tmp, pkg->root) < 0)
		ret = log_errno(-errno, "rename %s to %s", tmp, pkg->root);
	if (ret)
		remove_tree(tmp);
	return ret;
}

int pkg_fetch(const char *cache, const char *name, struct pkg *pkg)
{
	char version[128], dir[PATH_MAX];
	struct stat st;
	int ret;

	ret = pkg_resolve(name, pkg);
	if (ret)
		return ret;
	/* Epochs ("1:1.35") are not file-name friendly; apt writes them as %3a too. */
	snprintf(version, sizeof(version), "%s", pkg->version);
	for (char *c = version; *c; c++)
		if (*c == ':')
			*c = '_';
	snprintf(pkg->deb, sizeof(pkg->deb), "%s/debs/%s_%s_amd64.deb", cache, name, version);
	snprintf(pkg->root, sizeof(pkg->root), "%s/pkgs/%s_%s", cache, name, version);
	snprintf(dir, sizeof(dir), "%s/pkgs", cache);
	ret = image_mkdir(dir, 0755);
	if (ret)
		return ret;
	if (stat(pkg->deb, &st) < 0) {
		ret = download(cache, pkg);
		if (ret)
			return ret;
	}
	if (stat(pkg->root, &st) == 0)
		return 0; /* unpacked by an earlier run: the rename made it complete */
	log_info("unpacking %s", pkg->deb);
	return pkg_unpack(pkg);
}
