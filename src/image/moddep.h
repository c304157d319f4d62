/* Kernel module dependency graph (modules.dep or .modinfo) and load-order resolution. */
#ifndef FORKVM_IMAGE_MODDEP_H
#define FORKVM_IMAGE_MODDEP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Largest kernel module we decompress (the biggest Debian modules are a few tens of MiB). */
#define MODULE_MAX_SIZE ((size_t)256 << 20)

struct moddep_module {
	char *name;  /* normalised: '-' becomes '_' */
	char *path;  /* relative to lib/modules/<version>/ */
	char **deps; /* names of direct (or, from modules.dep, all) dependencies */
	int ndeps;
};

struct moddep {
	struct moddep_module *mods;
	size_t count, cap;
	char **builtin;
	size_t nbuiltin, cap_builtin;
};

/* "kernel/net/vmw_vsock/vsock.ko.xz" -> "vsock"; returns 0 or -EINVAL. */
int moddep_name_from_path(const char *path, char *name, size_t size);
/* Add one module; dep entries may be names or paths. A second add of a name is -EEXIST. */
int moddep_add(struct moddep *g, const char *path, const char *const *deps, int ndeps);
/* modules.dep text: "path: deppath deppath ..." per line. */
int moddep_parse(struct moddep *g, const char *text);
/* modules.builtin text: one path per line. */
int moddep_parse_builtin(struct moddep *g, const char *text);
bool moddep_is_builtin(const struct moddep *g, const char *name);
const struct moddep_module *moddep_find(const struct moddep *g, const char *name);
/* Topological load order (dependencies first) of roots and everything they need; builtin
 * modules are skipped. Missing modules are -ENOENT and cycles -ELOOP, both logged.
 * *order (malloc'd array of pointers into g) must be freed by the caller. */
int moddep_resolve(const struct moddep *g, const char *const *roots, int nroots,
		   const struct moddep_module ***order, int *count);
void moddep_free(struct moddep *g);

/* Read a kernel module into a malloc'd buffer, decompressing by file name: .ko as is,
 * .ko.xz (liblzma), .ko.zst (libzstd), .ko.gz (zlib); the result must be an ELF object.
 * Errors are logged with the path. */
int module_read(const char *path, uint8_t **buf, size_t *len);
/* The file of module rel ("kernel/.../x.ko", as modules.order and modules.builtin name it,
 * whatever the package compressed it to) under moddir: rel itself or rel plus ".xz", ".zst"
 * or ".gz". Writes that relative path to found; -ENOENT (logged) when there is none. */
int module_locate(const char *moddir, const char *rel, char *found, size_t size);
/* The "depends=" list of a module's .modinfo section (compressed modules are decompressed). */
int modinfo_depends(const char *ko_path, char ***deps, int *ndeps);
/* Without modules.dep (Debian ships none; depmod makes it at install time): find modules
 * through moddir/modules.order and read their dependencies from .modinfo, from roots on. */
int moddep_scan(struct moddep *g, const char *moddir, const char *const *roots, int nroots);
void moddep_free_names(char **names, int n);

#endif
