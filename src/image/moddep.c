/* modules.dep / modules.builtin parsing and a depth-first topological load order. */
#include "image/moddep.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "util/log.h"

#define MODNAME_MAX 64

int moddep_name_from_path(const char *path, char *name, size_t size)
{
	const char *base = strrchr(path, '/');
	const char *dot;
	size_t len;

	base = base ? base + 1 : path;
	dot = strstr(base, ".ko");
	len = dot ? (size_t)(dot - base) : strlen(base);
	if (len == 0 || len >= size)
		return -EINVAL;
	for (size_t i = 0; i < len; i++)
		name[i] = base[i] == '-' ? '_' : base[i];
	name[len] = 0;
	return 0;
}

const struct moddep_module *moddep_find(const struct moddep *g, const char *name)
{
	char norm[MODNAME_MAX];

	if (moddep_name_from_path(name, norm, sizeof(norm)))
		return NULL;
	for (size_t i = 0; i < g->count; i++)
		if (!strcmp(g->mods[i].name, norm))
			return &g->mods[i];
	return NULL;
}

bool moddep_is_builtin(const struct moddep *g, const char *name)
{
	char norm[MODNAME_MAX];

	if (moddep_name_from_path(name, norm, sizeof(norm)))
		return false;
	for (size_t i = 0; i < g->nbuiltin; i++)
		if (!strcmp(g->builtin[i], norm))
			return true;
	return false;
}

int moddep_add(struct moddep *g, const char *path, const char *const *deps, int ndeps)
{
	struct moddep_module m = { 0 };
	char name[MODNAME_MAX];

	if (moddep_name_from_path(path, name, sizeof(name))) {
		log_err("modules: bad module path \"%s\"", path);
		return -EINVAL;
	}
	if (moddep_find(g, name))
		return -EEXIST;
	if (g->count == g->cap) {
		size_t cap = g->cap ? g->cap * 2 : 64;
		struct moddep_module *p = realloc(g->mods, cap * sizeof(*p));

		if (!p)
			return -ENOMEM;
		g->mods = p;
		g->cap = cap;
	}
	m.name = strdup(name);
	m.path = strdup(path);
	m.deps = calloc((size_t)ndeps + 1, sizeof(char *));
	if (!m.name || !m.path || !m.deps)
		goto nomem;
	for (int i = 0; i < ndeps; i++) {
		char dep[MODNAME_MAX];

		if (moddep_name_from_path(deps[i], dep, sizeof(dep)) || !(m.deps[i] = strdup(dep)))
			goto nomem;
		m.ndeps++;
	}
	g->mods[g->count++] = m;
	return 0;
nomem:
	moddep_free_names(m.deps, m.ndeps);
	free(m.name);
	free(m.path);
	return -ENOMEM;
}

int moddep_parse(struct moddep *g, const char *text)
{
	char *copy = strdup(text), *save = NULL, *line;
	int ret = copy ? 0 : -ENOMEM;

	for (line = copy ? strtok_r(copy, "\n", &save) : NULL; line && !ret;
	     line = strtok_r(NULL, "\n", &save)) {
		char *colon = strchr(line, ':'), *tsave = NULL, *tok;
		const char *deps[256];
		int ndeps = 0;

		if (!colon) {
			log_err("modules.dep: line without ':': %s", line);
			ret = -EINVAL;
			break;
		}
		*colon = 0;
		for (tok = strtok_r(colon + 1, " \t", &tsave); tok && ndeps < 256;
		     tok = strtok_r(NULL, " \t", &tsave))
			deps[ndeps++] = tok;
		if (tok) {
			log_err("modules.dep: %s has more than 256 dependencies", line);
			ret = -E2BIG;
			break;
		}
		ret = moddep_add(g, line, deps, ndeps);
		if (ret == -EEXIST)
			ret = 0; /* later duplicates lose, as with modprobe */
	}
	free(copy);
	return ret;
}

int moddep_parse_builtin(struct moddep *g, const char *text)
{
	const char *p = text;

	while (*p) {
		const char *end = strchrnul(p, '\n');
		char path[512], name[MODNAME_MAX];
		size_t len = (size_t)(end - p);

		if (len && len < sizeof(path)) {
			memcpy(path, p, len);
			path[len] = 0;
			if (!moddep_name_from_path(path, name, sizeof(name))) {
				if (g->nbuiltin == g->cap_builtin) {
					size_t cap = g->cap_builtin ? g->cap_builtin * 2 : 256;
					char **b = realloc(g->builtin, cap * sizeof(*b));

					if (!b)
						return -ENOMEM;
					g->builtin = b;
					g->cap_builtin = cap;
				}
				if (!(g->builtin[g->nbuiltin] = strdup(name)))
					return -ENOMEM;
				g->nbuiltin++;
			}
		}
		p = *end ? end + 1 : end;
	}
	return 0;
}

enum { UNSEEN, VISITING, DONE };

struct walk {
	const struct moddep *g;
	unsigned char *state;
	const struct moddep_module **order;
	int count;
};

static int visit(struct walk *w, const char *name, const char *needed_by)
{
	const struct moddep_module *m;
	size_t idx;
	int ret;

	if (moddep_is_builtin(w->g, name))
		return 0;
	m = moddep_find(w->g, name);
	if (!m) {
		log_err("module %s%s%s not found in the kernel package", name,
			needed_by ? ", needed by " : "", needed_by ? needed_by : "");
		return -ENOENT;
	}
	idx = (size_t)(m - w->g->mods);
	if (w->state[idx] == DONE)
		return 0;
	if (w->state[idx] == VISITING) {
		log_err("module dependency cycle through %s", m->name);
		return -ELOOP;
	}
	w->state[idx] = VISITING;
	for (int i = 0; i < m->ndeps; i++) {
		ret = visit(w, m->deps[i], m->name);
		if (ret)
			return ret;
	}
	w->state[idx] = DONE;
	w->order[w->count++] = m;
	return 0;
}

int moddep_resolve(const struct moddep *g, const char *const *roots, int nroots,
		   const struct moddep_module ***order, int *count)
{
	struct walk w = { .g = g };
	int ret = -ENOMEM;

	w.state = calloc(g->count + 1, 1);
	w.order = calloc(g->count + 1, sizeof(*w.order));
	if (!w.state || !w.order)
		goto out;
	ret = 0;
	for (int i = 0; i < nroots && !ret; i++)
		ret = visit(&w, roots[i], NULL);
	if (!ret) {
		*order = w.order;
		*count = w.count;
		w.order = NULL;
	}
out:
	free(w.state);
	free(w.order);
	return ret;
}

void moddep_free_names(char **names, int n)
{
	for (int i = 0; names && i < n; i++)
		free(names[i]);
	free(names);
}

void moddep_free(struct moddep *g)
{
	for (size_t i = 0; i < g->count; i++) {
		free(g->mods[i].name);
		free(g->mods[i].path);
		moddep_free_names(g->mods[i].deps, g->mods[i].ndeps);
	}
	free(g->mods);
	moddep_free_names(g->builtin, (int)g->nbuiltin);
	memset(g, 0, sizeof(*g));
}
