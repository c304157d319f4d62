/* Module dependencies straight from .ko files, for kernels packaged without modules.dep. */
#include <elf.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/log.h"
#include "image/fsutil.h"
#include "image/moddep.h"

/* Split "a,b,c" into a malloc'd array of names. */
static int split_commas(const char *list, size_t len, char ***out, int *n)
{
	char **names = calloc(len / 2 + 2, sizeof(char *));
	size_t start = 0;
	int count = 0;

	if (!names)
		return -ENOMEM;
	for (size_t i = 0; i <= len; i++) {
		if (i < len && list[i] != ',')
			continue;
		if (i > start && !(names[count++] = strndup(list + start, i - start))) {
			moddep_free_names(names, count);
			return -ENOMEM;
		}
		start = i + 1;
	}
	*out = names;
	*n = count;
	return 0;
}

/* Locate the .modinfo section: a NUL-separated list of "key=value" strings. */
static int find_modinfo(const char *path, const uint8_t *buf, size_t len, size_t *off, size_t *size)
{
	Elf64_Ehdr eh;
	Elf64_Shdr strtab;

	if (len < sizeof(eh) || memcmp(buf, ELFMAG, SELFMAG) || buf[EI_CLASS] != ELFCLASS64)
		goto bad;
	memcpy(&eh, buf, sizeof(eh));
	if (eh.e_shentsize != sizeof(Elf64_Shdr) || eh.e_shoff > len || eh.e_shstrndx >= eh.e_shnum ||
	    (uint64_t)eh.e_shnum * sizeof(Elf64_Shdr) > len - eh.e_shoff)
		goto bad;
	memcpy(&strtab, buf + eh.e_shoff + (size_t)eh.e_shstrndx * sizeof(strtab), sizeof(strtab));
	if (strtab.sh_offset > len || strtab.sh_size > len - strtab.sh_offset)
		goto bad;
	for (int i = 0; i < eh.e_shnum; i++) {
		Elf64_Shdr sh;

		memcpy(&sh, buf + eh.e_shoff + (size_t)i * sizeof(sh), sizeof(sh));
		if (sh.sh_name >= strtab.sh_size ||
		    strncmp((const char *)buf + strtab.sh_offset + sh.sh_name, ".modinfo",
			    strtab.sh_size - sh.sh_name))
			continue;
		if (sh.sh_offset > len || sh.sh_size > len - sh.sh_offset)
			goto bad;
		*off = sh.sh_offset;
		*size = sh.sh_size;
		return 0;
	}
	log_err("%s: kernel module has no .modinfo section", path);
	return -ENOENT;
bad:
	log_err("%s: not a 64-bit ELF kernel module", path);
	return -EINVAL;
}

int modinfo_depends(const char *ko_path, char ***deps, int *ndeps)
{
	uint8_t *buf = NULL;
	size_t len, off, size;
	int ret;

	ret = module_read(ko_path, &buf, &len);
	if (ret)
		return ret;
	ret = find_modinfo(ko_path, buf, len, &off, &size);
	if (ret)
		goto out;
	*deps = NULL;
	*ndeps = 0;
	for (size_t pos = off; pos < off + size;) {
		const char *s = (const char *)buf + pos;
		size_t slen = strnlen(s, off + size - pos);

		if (slen > 8 && !strncmp(s, "depends=", 8)) {
			ret = split_commas(s + 8, slen - 8, deps, ndeps);
			goto out;
		}
		pos += slen + 1;
	}
	ret = split_commas("", 0, deps, ndeps); /* no depends= key: none */
out:
	free(buf);
	return ret;
}

/* Path of module name in modules.order, or NULL. */
static const char *order_lookup(char **paths, int n, const char *name)
{
	char cand[64];

	for (int i = 0; i < n; i++)
		if (!moddep_name_from_path(paths[i], cand, sizeof(cand)) && !strcmp(cand, name))
			return paths[i];
	return NULL;
}

int moddep_scan(struct moddep *g, const char *moddir, const char *const *roots, int nroots)
{
	char path[PATH_MAX * 2], file[PATH_MAX], **paths = NULL, **queue = NULL;
	int npaths = 0, nqueue = 0, ret;
	uint8_t *text = NULL;
	size_t len;

	snprintf(path, sizeof(path), "%s/modules.order", moddir);
	ret = file_read_all(path, &text, &len);
	if (ret)
		goto out;
	/* One path per line; reuse the comma splitter. */
	for (size_t i = 0; i < len; i++)
		if (text[i] == '\n')
			text[i] = ',';
	ret = split_commas((char *)text, len, &paths, &npaths);
	if (ret)
		goto out;
	queue = calloc(4096, sizeof(char *));
	if (!queue) {
		ret = -ENOMEM;
		goto out;
	}
	for (int i = 0; i < nroots && nqueue < 4096; i++)
		queue[nqueue++] = strdup(roots[i]);
	/* Breadth-first over dependencies; each module is read once. */
	for (int head = 0; head < nqueue && !ret; head++) {
		char name[64], **deps = NULL;
		const char *rel;
		int ndeps = 0;

		if (!queue[head] || moddep_name_from_path(queue[head], name, sizeof(name))) {
			ret = -ENOMEM;
			break;
		}
		if (moddep_is_builtin(g, name) || moddep_find(g, name))
			continue;
		rel = order_lookup(paths, npaths, name);
		if (!rel)
			continue; /* moddep_resolve reports it with its dependant */
		/* modules.order names "x.ko"; the package may hold "x.ko.xz" (Debian 6.12). */
		ret = module_locate(moddir, rel, file, sizeof(file));
		if (ret)
			break;
		snprintf(path, sizeof(path), "%s/%s", moddir, file);
		ret = modinfo_depends(path, &deps, &ndeps);
		if (!ret)
			ret = moddep_add(g, file, (const char *const *)deps, ndeps);
		for (int i = 0; !ret && i < ndeps && nqueue < 4096; i++)
			queue[nqueue++] = strdup(deps[i]);
		moddep_free_names(deps, ndeps);
	}
out:
	moddep_free_names(paths, npaths);
	moddep_free_names(queue, nqueue);
	free(text);
	return ret;
}
