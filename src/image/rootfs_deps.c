/* Package closure of a rootfs: --packages parsing, and apt's solver run against an empty
 * dpkg status ("apt-get -s install"), whose Inst lines name every package and version. */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/log.h"
#include "image/cmdrun.h"
#include "image/rootfs.h"

bool rootfs_pkg_name_valid(const char *name)
{
	size_t n = strlen(name);

	if (n < 2 || n >= sizeof(((struct rootfs_pkg *)0)->name) ||
	    !(islower((unsigned char)name[0]) || isdigit((unsigned char)name[0])))
		return false;
	for (size_t i = 0; i < n; i++)
		if (!islower((unsigned char)name[i]) && !isdigit((unsigned char)name[i]) &&
		    !strchr("+-.", name[i]))
			return false;
	return true;
}

int rootfs_parse_package_list(char *list, const char **names, int *n, int max)
{
	char *save = NULL;

	for (char *tok = strtok_r(list, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
		while (*tok == ' ')
			tok++;
		for (char *end = tok + strlen(tok); end > tok && end[-1] == ' '; end--)
			end[-1] = 0;
		if (!*tok)
			continue;
		if (!rootfs_pkg_name_valid(tok)) {
			log_err("--packages: \"%s\" is not a Debian package name", tok);
			return -EINVAL;
		}
		if (*n >= max)
			return -E2BIG;
		names[(*n)++] = tok;
	}
	return 0;
}

static int list_add(struct rootfs_pkglist *l, const struct rootfs_pkg *p)
{
	if (l->count == l->cap) {
		int cap = l->cap ? l->cap * 2 : 64;
		struct rootfs_pkg *np = realloc(l->pkgs, (size_t)cap * sizeof(*np));

		if (!np)
			return -ENOMEM;
		l->pkgs = np;
		l->cap = cap;
	}
	if (l->count >= ROOTFS_MAX_PACKAGES)
		return -E2BIG;
	l->pkgs[l->count++] = *p;
	return 0;
}

/* Copy [s, e) into out (size) if it fits and is non-empty. */
static int take(const char *s, const char *e, char *out, size_t size)
{
	if (e <= s || (size_t)(e - s) >= size)
		return -EINVAL;
	memcpy(out, s, (size_t)(e - s));
	out[e - s] = 0;
	return 0;
}

/* "Inst NAME [OLD] (VERSION ARCHIVES [ARCH]) ..." without its trailing newline. */
static int parse_inst(const char *line, const char *eol, struct rootfs_pkg *p)
{
	const char *s = line + 5, *sp, *open, *close, *lb = NULL, *rb;

	sp = memchr(s, ' ', (size_t)(eol - s));
	open = sp ? memchr(sp, '(', (size_t)(eol - sp)) : NULL;
	close = open ? memchr(open, ')', (size_t)(eol - open)) : NULL;
	if (!close || take(s, sp, p->name, sizeof(p->name)))
		return -EINVAL;
	for (const char *c = open; c < close; c++)
		if (*c == '[')
			lb = c;
	rb = lb ? memchr(lb, ']', (size_t)(close - lb)) : NULL;
	sp = memchr(open + 1, ' ', (size_t)(close - open - 1));
	if (!rb || !sp || take(open + 1, sp, p->version, sizeof(p->version)) ||
	    take(lb + 1, rb, p->arch, sizeof(p->arch)))
		return -EINVAL;
	return rootfs_pkg_name_valid(p->name) ? 0 : -EINVAL;
}

static int cmp_pkg(const void *a, const void *b)
{
	return strcmp(((const struct rootfs_pkg *)a)->name, ((const struct rootfs_pkg *)b)->name);
}

int rootfs_parse_sim(const char *text, struct rootfs_pkglist *out)
{
	int ret = 0;

	for (const char *line = text; *line && !ret;) {
		const char *eol = strchr(line, '\n');
		struct rootfs_pkg p;

		eol = eol ? eol : line + strlen(line);
		if (!strncmp(line, "Inst ", 5)) {
			ret = parse_inst(line, eol, &p);
			if (ret)
				log_err("apt-get -s: cannot parse \"%.*s\"", (int)(eol - line), line);
			else
				ret = list_add(out, &p);
		}
		line = *eol ? eol + 1 : eol;
	}
	if (!ret && out->count == 0)
		ret = -ENOENT;
	if (!ret)
		qsort(out->pkgs, (size_t)out->count, sizeof(*out->pkgs), cmp_pkg);
	return ret;
}

const struct rootfs_pkg *rootfs_pkglist_find(const struct rootfs_pkglist *l, const char *name)
{
	struct rootfs_pkg key;

	if (snprintf(key.name, sizeof(key.name), "%s", name) >= (int)sizeof(key.name) || !l->count)
		return NULL;
	return bsearch(&key, l->pkgs, (size_t)l->count, sizeof(*l->pkgs), cmp_pkg);
}

void rootfs_pkglist_free(struct rootfs_pkglist *l)
{
	free(l->pkgs);
	memset(l, 0, sizeof(*l));
}

static int simulate(const char *const *names, int n, char **out)
{
	static const char *const head[] = {
		"apt-get", "-s", "-q", "-o", "Dir::State::status=/dev/null", "-o", "Debug::NoLocking=1",
		"-o", "APT::Architectures=amd64",
		"install", "--no-install-recommends",
	};
	const int nhead = (int)(sizeof(head) / sizeof(head[0]));
	char **argv = calloc((size_t)(nhead + n + 1), sizeof(*argv));
	struct cmd_spec spec = { .argv = argv };
	struct cmd_result res;
	int ret;

	if (!argv)
		return -ENOMEM;
	for (int i = 0; i < nhead; i++)
		argv[i] = (char *)head[i];
	for (int i = 0; i < n; i++)
		argv[nhead + i] = (char *)names[i];
	ret = cmd_run(&spec, "resolving the rootfs packages", out, &res);
	free(argv);
	return ret;
}

int rootfs_resolve(const char *const *names, int n, struct rootfs_pkglist *out)
{
	char *update_argv[] = { "apt-get", "update", "-qq", NULL };
	struct cmd_spec update = { .argv = update_argv, .quiet = true };
	struct cmd_result res;
	char *text = NULL;
	int ret;

	ret = simulate(names, n, &text);
	if (ret == -ECHILD) {
		/* A fresh machine has no package lists yet, or they are out of date. */
		log_info("running apt-get update, then resolving again");
		ret = cmd_run(&update, "updating the apt package lists", NULL, &res);
		ret = ret ?: simulate(names, n, &text);
	}
	if (!ret) {
		ret = rootfs_parse_sim(text, out);
		if (ret == -ENOENT)
			log_err("apt-get -s install listed no packages to install");
	}
	free(text);
	return ret;
}
