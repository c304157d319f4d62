/* Debian packages for the guest image: resolve with apt-cache, fetch with apt-get, unpack. */
#ifndef FORKVM_IMAGE_PKG_H
#define FORKVM_IMAGE_PKG_H

#include <limits.h>

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

#endif
