/* What maintainer scripts and debootstrap would have done, done by hand on the staged tree:
 * usr-merge links, base directories, passwd/group, hostname, resolver placeholder, /bin/sh and
 * awk, the CA bundle, the ld.so cache; then the agent, and checks that programs can start. */
#include "image/rootfs_fixup.h"

#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "util/log.h"
#include "image/cmdrun.h"
#include "image/fsutil.h"
#include "image/rootfs.h"

static bool present(const struct stage *st, const char *rel)
{
	struct stat sb;

	return stage_lstat(st, rel, &sb) == 0;
}

/* Write rel unless the tree has it already. */
static int write_absent(const struct stage *st, const char *rel, const char *text, mode_t mode,
			int64_t epoch)
{
	return present(st, rel) ? 0 : stage_write(st, rel, text, strlen(text), mode, epoch);
}

static int usrmerge_links(const struct stage *st, bool debian)
{
	static const char *const dirs[] = { "bin", "sbin", "lib", "lib64" };
	char target[32], missing[64] = "";
	int ret = 0;

	for (size_t i = 0; i < sizeof(dirs) / sizeof(dirs[0]) && !ret; i++) {
		if (present(st, dirs[i]))
			continue;
		if (!debian) {
			size_t n = strlen(missing);

			snprintf(missing + n, sizeof(missing) - n, " /%s", dirs[i]);
			continue;
		}
		snprintf(target, sizeof(target), "usr/%s", dirs[i]);
		ret = stage_mkdir(st, target, 0755);
		ret = ret ?: stage_symlink(st, dirs[i], target);
	}
	if (missing[0])
		log_info("rootfs: the tree has no%s (left as it is; the agent is static)", missing);
	return ret;
}

static int base_dirs(const struct stage *st)
{
	static const struct { const char *rel; mode_t mode; bool force; } dirs[] = {
		{ "proc", 0555, false }, { "sys", 0555, false }, { "dev", 0755, false },
		{ "run", 0755, false }, { "root", 0700, false }, { "etc", 0755, false },
		{ "usr/sbin", 0755, false }, { "tmp", 01777, true }, { "var/tmp", 01777, true },
	};
	int ret = 0;

	for (size_t i = 0; i < sizeof(dirs) / sizeof(dirs[0]) && !ret; i++)
		if (dirs[i].force || !present(st, dirs[i].rel))
			ret = stage_mkdir(st, dirs[i].rel, dirs[i].mode);
	return ret;
}

/* base-passwd's master files when the tree has them, else root and nobody. */
static int accounts(const struct stage *st, int64_t epoch)
{
	static const struct { const char *rel, *master, *fallback; } files[] = {
		{ "etc/passwd", "usr/share/base-passwd/passwd.master",
		  "root:x:0:0:root:/root:/bin/sh\n"
		  "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n" },
		{ "etc/group", "usr/share/base-passwd/group.master", "root:x:0:\nnogroup:x:65534:\n" },
	};
	int ret = 0;

	for (size_t i = 0; i < sizeof(files) / sizeof(files[0]) && !ret; i++) {
		char buf[16384];
		ssize_t n = 0;
		int fd;

		if (present(st, files[i].rel))
			continue;
		if (stage_open_file(st, files[i].master, &fd) == 0) {
			n = read(fd, buf, sizeof(buf));
			close(fd);
		}
		if (n > 0)
			ret = stage_write(st, files[i].rel, buf, (size_t)n, 0644, epoch);
		else
			ret = write_absent(st, files[i].rel, files[i].fallback, 0644, epoch);
	}
	return ret;
}

static int network_files(const struct stage *st, int64_t epoch)
{
	int ret = write_absent(st, "etc/hostname", "forkvm\n", 0644, epoch);

	ret = ret ?: write_absent(st, "etc/hosts",
				  "127.0.0.1\tlocalhost\n127.0.1.1\tforkvm\n"
				  "::1\tlocalhost ip6-localhost ip6-loopback\n", 0644, epoch);
	return ret ?: write_absent(st, "etc/resolv.conf",
				   "# forkvm: placeholder; the VM has no network configured.\n",
				   0644, epoch);
}

/* Links that dpkg's maintainer scripts (diversions, update-alternatives) would make. */
static int alternatives(const struct stage *st)
{
	static const struct { const char *link, *target; } alts[] = {
		{ "usr/bin/sh", "dash" }, { "usr/bin/sh", "bash" }, { "usr/bin/awk", "mawk" },
		{ "usr/bin/awk", "gawk" },
	};
	char path[64];
	int ret = 0;

	for (size_t i = 0; i < sizeof(alts) / sizeof(alts[0]) && !ret; i++) {
		snprintf(path, sizeof(path), "usr/bin/%s", alts[i].target);
		if (!present(st, alts[i].link) && present(st, path))
			ret = stage_symlink(st, alts[i].link, alts[i].target);
	}
	return ret;
}

/* Append file rel (inside the stage) to *buf, newline-terminated. */
static int append_file(const struct stage *st, const char *rel, char **buf, size_t *len)
{
	struct stat sb;
	char *nb;
	int fd, ret = stage_open_file(st, rel, &fd);

	if (ret)
		return ret;
	if (fstat(fd, &sb) < 0 || sb.st_size > (1 << 20)) {
		ret = -EFBIG;
		goto out;
	}
	nb = realloc(*buf, *len + (size_t)sb.st_size + 2);
	if (!nb) {
		ret = -ENOMEM;
		goto out;
	}
	*buf = nb;
	for (ssize_t got = 0, n; got < sb.st_size; got += n) {
		n = read(fd, nb + *len + got, (size_t)(sb.st_size - got));
		if (n <= 0) {
			ret = n < 0 ? -errno : -EIO;
			goto out;
		}
	}
	*len += (size_t)sb.st_size;
	if (*len && nb[*len - 1] != '\n')
		nb[(*len)++] = '\n';
out:
	close(fd);
	return ret;
}

/* update-ca-certificates' bundle: every certificate ca-certificates ships, sorted. */
static int ca_bundle(const struct stage *st, int64_t epoch)
{
	static const char *const bundle = "etc/ssl/certs/ca-certificates.crt";
	char **subs = NULL, **certs = NULL, rel[PATH_MAX], *buf = NULL;
	size_t nsubs = 0, ncerts = 0, len = 0;
	int top = -1, ret;

	if (present(st, bundle) || stage_open_dir(st, "usr/share/ca-certificates", false, &top))
		return 0;
	ret = stage_list_dir(top, &subs, &nsubs);
	for (size_t i = 0; i < nsubs && !ret; i++) {
		int sub;

		snprintf(rel, sizeof(rel), "usr/share/ca-certificates/%s", subs[i]);
		if (stage_open_dir(st, rel, false, &sub))
			continue;
		ret = stage_list_dir(sub, &certs, &ncerts);
		close(sub);
		for (size_t j = 0; j < ncerts && !ret; j++) {
			size_t n = strlen(certs[j]);

			if (n < 4 || strcmp(certs[j] + n - 4, ".crt"))
				continue;
			snprintf(rel, sizeof(rel), "usr/share/ca-certificates/%s/%s", subs[i], certs[j]);
			ret = append_file(st, rel, &buf, &len);
		}
		stage_free_names(certs, ncerts);
		certs = NULL;
	}
	if (!ret && len)
		ret = stage_write(st, bundle, buf, len, 0644, epoch);
	if (ret)
		ret = log_errno(ret, "rootfs: building the CA bundle %s", bundle);
	stage_free_names(subs, nsubs);
	free(buf);
	close(top);
	return ret;
}

/* ldconfig -r chroots, so it needs root; the loader finds Debian's libraries without a cache. */
static int ld_cache(const struct stage *st, int64_t epoch)
{
	char *argv[] = { "ldconfig", "-X", "-r", (char *)st->path, NULL };
	struct timespec ts[2] = { { epoch, 0 }, { epoch, 0 } };
	struct cmd_spec spec = { .argv = argv, .quiet = true };
	struct cmd_result res;
	int dfd, ret = write_absent(st, "etc/ld.so.conf", "include /etc/ld.so.conf.d/*.conf\n", 0644, epoch);

	if (ret || !st->as_root) {
		if (!ret)
			log_info("rootfs: not root, so no ld.so.cache (ldconfig -r needs chroot); the "
				 "loader searches the standard directories without it");
		return ret;
	}
	if (cmd_run(&spec, "building ld.so.cache", NULL, &res)) {
		log_warn("rootfs: continuing without ld.so.cache");
		return 0;
	}
	/* Its aux cache records inode numbers and times: not reproducible, not needed. */
	if (stage_open_dir(st, "var/cache/ldconfig", false, &dfd) == 0) {
		unlinkat(dfd, "aux-cache", 0);
		close(dfd);
	}
	/* A new file of ldconfig's (never a link into the package cache): the build's epoch. */
	if (stage_open_dir(st, "etc", false, &dfd) == 0) {
		if (utimensat(dfd, "ld.so.cache", ts, AT_SYMLINK_NOFOLLOW) < 0 && errno != ENOENT)
			ret = log_errno(-errno, "rootfs: set the time of /etc/ld.so.cache");
		close(dfd);
	}
	return ret;
}

int rootfs_check_elf(const struct stage *st, const char *rel)
{
	char interp[PATH_MAX];
	Elf64_Ehdr eh;
	Elf64_Phdr ph;
	struct stat sb;
	int fd, ret = stage_open_file(st, rel, &fd);

	if (ret) {
		log_err("rootfs: /%s: %s", rel, strerror(-ret));
		return ret;
	}
	ret = -ENOEXEC;
	if (pread(fd, &eh, sizeof(eh), 0) != sizeof(eh) || memcmp(eh.e_ident, ELFMAG, SELFMAG) ||
	    eh.e_ident[EI_CLASS] != ELFCLASS64 || eh.e_phentsize != sizeof(ph)) {
		log_err("rootfs: /%s: not a 64-bit ELF executable", rel);
		goto out;
	}
	ret = 0;
	for (int i = 0; i < eh.e_phnum; i++) {
		if (pread(fd, &ph, sizeof(ph), (off_t)(eh.e_phoff + (uint64_t)i * sizeof(ph))) !=
		    sizeof(ph)) {
			ret = -ENOEXEC;
			break;
		}
		if (ph.p_type != PT_INTERP)
			continue;
		if (ph.p_filesz < 2 || ph.p_filesz >= sizeof(interp) ||
		    pread(fd, interp, ph.p_filesz, (off_t)ph.p_offset) != (ssize_t)ph.p_filesz) {
			ret = -ENOEXEC;
			break;
		}
		interp[ph.p_filesz - 1] = 0;
		ret = stage_stat(st, interp[0] == '/' ? interp + 1 : interp, &sb);
		if (ret)
			log_err("rootfs: /%s needs the ELF interpreter %s, which does not resolve in "
				"the image (%s)", rel, interp, strerror(-ret));
		break;
	}
out:
	close(fd);
	return ret;
}

int rootfs_fixup(struct stage *st, const struct rootfs_fixup_opts *o)
{
	int ret = usrmerge_links(st, o->debian);

	ret = ret ?: base_dirs(st);
	ret = ret ?: accounts(st, o->epoch);
	ret = ret ?: network_files(st, o->epoch);
	if (o->debian) {
		ret = ret ?: alternatives(st);
		ret = ret ?: ca_bundle(st, o->epoch);
		ret = ret ?: ld_cache(st, o->epoch);
	}
	ret = ret ?: stage_put_file(st, ROOTFS_AGENT_PATH, o->agent, 0755, o->epoch);
	for (int i = 0; i < o->ncheck && !ret; i++)
		ret = rootfs_check_elf(st, o->check[i]);
	return ret;
}
