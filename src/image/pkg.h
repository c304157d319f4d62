/* Debian packages for the guest image: resolve with apt-cache, fetch with apt-get, unpack. */
#ifndef FORKVM_IMAGE_PKG_H
#define FORKVM_IMAGE_PKG_H

#include <limits.h>
#include <stddef.h>

struct pkg {
	char name[128];
	char version[128];
	char depends[128];	/* first dependency's package name, "" if none */
	char deb[PATH_MAX];	/* <cache>/debs/<name>_<version>_amd64.deb */
	char root[PATH_MAX];	/* <cache>/pkgs/<name>_<version>: dpkg -x tree */
};

/* Parse "apt-cache show --no-all-versions" output for Version and the first Depends name. */
int pkg_parse_show(const char *text, struct pkg *pkg);
/* Candidate version and first dependency of name (runs apt-get update once if needed). */
int pkg_resolve(const char *name, struct pkg *pkg);
/* Resolve, download unless cached, unpack unless cached; fills deb and root. */
int pkg_fetch(const char *cache, const char *name, struct pkg *pkg);
/* dpkg -x pkg->deb into pkg->root (through a temp directory renamed into place). */
int pkg_unpack(struct pkg *pkg);

/* An exact package as apt's solver chose it: name, version and arch fill deb
 * (<cache>/debs/NAME_VERSION_ARCH.deb, ':' of an epoch as '_') and root. -ENAMETOOLONG. */
int pkg_set(struct pkg *pkg, const char *cache, const char *name, const char *version,
	    const char *arch);
/* "NAME_VERSION_ARCH.deb" as apt-get download names it (epoch ':' as "%3a") -> name and
 * version; -EINVAL for anything else. */
int pkg_parse_deb_name(const char *file, char *name, size_t nsize, char *version, size_t vsize);
/* Download every package of pkgs whose .deb is not cached with one apt-get call, then unpack
 * those not yet unpacked; a failure names the package and apt's or dpkg's message. */
int pkg_fetch_all(const char *cache, struct pkg *pkgs, int n);

#endif
