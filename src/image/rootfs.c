/* "forkvm image build --rootfs": Debian packages, a directory or a tar stream -> staged tree ->
 * ext4 image + manifest.json; a Debian build whose inputs match the manifest reuses the image. */
#include "image/rootfs.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "util/log.h"
#include "util/sha256.h"
#include "image/fsutil.h"
#include "image/image.h"
#include "image/initramfs.h"
#include "image/pkg.h"
#include "image/rootfs_fixup.h"
#include "image/stage.h"
#include "util/clock.h"

#define ROOTFS_FORMAT 1
/* Packages every Debian rootfs gets (the Essential ones the others assume are listed too). */
static const char *const base_packages[] = {
	"base-files", "base-passwd", "bash", "ca-certificates", "coreutils", "dash", "python3",
	"python3-pip",
};
#define NBASE (int)(sizeof(base_packages) / sizeof(base_packages[0]))
/* Programs whose dynamic loader must resolve inside a Debian image. */
static const char *const debian_checks[] = { "usr/bin/python3", "usr/bin/bash", "usr/bin/sh" };

struct job {
	const struct rootfs_build_opts *o;
	char cache[PATH_MAX], out[PATH_MAX], agent[PATH_MAX];
	char image[PATH_MAX + 32], manifest[PATH_MAX + 32], stage_dir[PATH_MAX + 64];
	char conf[PATH_MAX + 64], src[PATH_MAX];
	char agent_sha[65], inputs_sha[65], image_sha[65], uuid[37];
	const char *names[NBASE + ROOTFS_MAX_PACKAGES];
	int nnames;
	int64_t epoch;
	uint64_t size_mib, image_size;
	struct rootfs_pkglist pkgs;
	struct stage st;
	struct sha256_ctx inputs; /* options + packages + agent -> inputs_sha (the reuse key) */
};

static const char *source_name(enum rootfs_source s)
{
	return s == ROOTFS_DEBIAN ? "debian" : s == ROOTFS_DIR ? "dir" : "tar";
}

static int file_sha256(const char *path, char hex[65], uint64_t *size)
{
	const size_t chunk = 1 << 20;
	uint8_t digest[SHA256_LEN], *buf = malloc(chunk);
	struct sha256_ctx c;
	uint64_t total = 0;
	int fd = open(path, O_RDONLY | O_CLOEXEC), ret;

	if (fd < 0 || !buf) {
		ret = fd < 0 ? log_errno(-errno, "open %s", path) : -ENOMEM;
		goto out;
	}
	ret = sha256_init(&c);
	while (!ret) {
		ssize_t n = read(fd, buf, chunk);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			ret = n < 0 ? log_errno(-errno, "read %s", path) : 0;
			break;
		}
		total += (uint64_t)n;
		ret = sha256_update(&c, buf, (size_t)n);
	}
	if (!ret)
		ret = sha256_final(&c, digest);
	else
		sha256_abort(&c);
	if (!ret) {
		sha256_to_hex(digest, hex);
		*size = total;
	}
out:
	if (fd >= 0)
		close(fd);
	free(buf);
	return ret;
}

static int parse_epoch(int64_t *epoch)
{
	const char *env = getenv("SOURCE_DATE_EPOCH");
	char *end;
	long long v;

	*epoch = ROOTFS_DEFAULT_EPOCH;
	if (!env || !*env)
		return 0;
	errno = 0;
	v = strtoll(env, &end, 10);
	if (errno || *end || v < 0 || v > 0x7fffffffLL) {
		log_err("SOURCE_DATE_EPOCH=\"%s\": need seconds since 1970 (0 to 2147483647)", env);
		return -EINVAL;
	}
	*epoch = v;
	return 0;
}

/* Leftovers of builds that were killed: "<prefix><pid>..." whose process is gone. */
static void remove_stale(const char *dir, const char *prefix)
{
	size_t plen = strlen(prefix);
	char path[PATH_MAX + 256];
	struct dirent *de;
	DIR *d = opendir(dir);

	if (!d)
		return;
	while ((de = readdir(d))) {
		long pid;

		if (strncmp(de->d_name, prefix, plen))
			continue;
		pid = strtol(de->d_name + plen, NULL, 10);
		if (pid <= 0 || pid == getpid() || kill((pid_t)pid, 0) == 0 || errno != ESRCH)
			continue;
		snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
		log_info("removing %s, left by an interrupted build", path);
		remove_tree(path);
	}
	closedir(d);
}

static int setup(struct job *j)
{
	const struct rootfs_build_opts *o = j->o;
	char tmpdir[PATH_MAX + 8], real[PATH_MAX];
	int ret = 0;

	if (o->cache_dir)
		snprintf(j->cache, sizeof(j->cache), "%s", o->cache_dir);
	else
		ret = image_default_cache(j->cache, sizeof(j->cache));
	if (o->out_dir)
		snprintf(j->out, sizeof(j->out), "%s", o->out_dir);
	else
		snprintf(j->out, sizeof(j->out), "%.4000s/rootfs", j->cache);
	if (o->agent_path)
		snprintf(j->agent, sizeof(j->agent), "%s", o->agent_path);
	else if (!ret)
		ret = image_default_agent(j->agent, sizeof(j->agent));
	ret = ret ?: elf_check_static(j->agent, "agent");
	if (!ret && realpath(j->agent, real)) /* the manifest names it absolutely */
		snprintf(j->agent, sizeof(j->agent), "%s", real);
	if (!ret && o->src && strcmp(o->src, "-") && realpath(o->src, real))
		snprintf(j->src, sizeof(j->src), "%s", real);
	else if (!ret && o->src)
		snprintf(j->src, sizeof(j->src), "%s", o->src);
	ret = ret ?: parse_epoch(&j->epoch);
	ret = ret ?: image_mkdir(j->out, 0755);
	snprintf(tmpdir, sizeof(tmpdir), "%s/tmp", j->cache);
	ret = ret ?: image_mkdir(tmpdir, 0755);
	if (ret)
		return ret;
	remove_stale(tmpdir, "rootfs.");
	remove_stale(j->out, ROOTFS_FILE ".tmp.");
	snprintf(j->image, sizeof(j->image), "%s/" ROOTFS_FILE, j->out);
	snprintf(j->manifest, sizeof(j->manifest), "%s/manifest.json", j->out);
	snprintf(j->stage_dir, sizeof(j->stage_dir), "%s/rootfs.%d", tmpdir, (int)getpid());
	snprintf(j->conf, sizeof(j->conf), "%s/rootfs.%d.mke2fs.conf", tmpdir, (int)getpid());
	return 0;
}

static int hash_line(struct job *j, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int hash_line(struct job *j, const char *fmt, ...)
{
	char line[1024];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= sizeof(line))
		return -ENAMETOOLONG;
	return sha256_update(&j->inputs, line, (size_t)n) ? -EIO : 0;
}

static int inputs_final(struct job *j)
{
	uint8_t digest[SHA256_LEN];
	int ret = sha256_final(&j->inputs, digest);

	if (!ret)
		sha256_to_hex(digest, j->inputs_sha);
	return ret;
}

/* Everything that decides a Debian image's bytes, before any package is unpacked. */
static int hash_inputs(struct job *j)
{
	uint64_t agent_size;
	int ret = file_sha256(j->agent, j->agent_sha, &agent_size);

	ret = ret ?: sha256_init(&j->inputs);
	if (ret)
		return ret;
	ret = hash_line(j, "forkvm-rootfs %d\nsource %s\nagent %s\nsize %" PRIu64
			       "\nfree %" PRIu64 "\nepoch %lld\nroot %d\n", ROOTFS_FORMAT,
			       source_name(j->o->source), j->agent_sha, j->o->size_mib,
			       j->o->free_mib, (long long)j->epoch, j->st.as_root);
	for (int i = 0; i < j->pkgs.count && !ret; i++)
		ret = hash_line(j, "package %s %s %s\n", j->pkgs.pkgs[i].name,
				j->pkgs.pkgs[i].version, j->pkgs.pkgs[i].arch);
	if (ret) {
		sha256_abort(&j->inputs);
		return ret;
	}
	return inputs_final(j);
}

/* 1 when the manifest says the image was built from these exact inputs and it is there. */
static int try_reuse(struct job *j)
{
	json_t *m = json_load_file(j->manifest, 0, NULL);
	const char *inputs = json_string_value(json_object_get(m, "inputs_sha256"));
	json_t *img = json_object_get(m, "image");
	json_int_t size = json_integer_value(json_object_get(img, "size"));
	const char *sha = json_string_value(json_object_get(img, "sha256"));
	struct stat sb;
	int reuse = 0;

	if (inputs && sha && !strcmp(inputs, j->inputs_sha) && stat(j->image, &sb) == 0 &&
	    S_ISREG(sb.st_mode) && sb.st_size == size) {
		printf("rootfs: reusing %s: built from the same %d packages, agent and options "
		       "(sha256 %.16s..., %" PRIu64 " MiB)\n", j->image, j->pkgs.count, sha,
		       (uint64_t)size >> 20);
		reuse = 1;
	}
	json_decref(m);
	return reuse;
}

static int resolve(struct job *j)
{
	int ret;

	for (int i = 0; i < NBASE; i++)
		j->names[j->nnames++] = base_packages[i];
	for (int i = 0; i < j->o->npackages && j->nnames < (int)(sizeof(j->names) / sizeof(j->names[0])); i++)
		j->names[j->nnames++] = j->o->packages[i];
	log_info("resolving the dependencies of %d packages with apt", j->nnames);
	ret = rootfs_resolve(j->names, j->nnames, &j->pkgs);
	for (int i = 0; i < j->nnames && !ret; i++)
		if (!rootfs_pkglist_find(&j->pkgs, j->names[i]))
			log_info("rootfs: %s is a virtual package; apt chose its provider", j->names[i]);
	return ret;
}

static int stage_packages(struct job *j)
{
	struct pkg *p = calloc((size_t)j->pkgs.count, sizeof(*p));
	int ret = p ? 0 : -ENOMEM;

	for (int i = 0; i < j->pkgs.count && !ret; i++)
		ret = pkg_set(&p[i], j->cache, j->pkgs.pkgs[i].name, j->pkgs.pkgs[i].version,
			      j->pkgs.pkgs[i].arch);
	ret = ret ?: pkg_fetch_all(j->cache, p, j->pkgs.count);
	log_info("staging %d packages in %s", j->pkgs.count, j->stage_dir);
	for (int i = 0; i < j->pkgs.count && !ret; i++) {
		ret = stage_add_tree(&j->st, p[i].root, true);
		if (ret)
			log_err("rootfs: staging the files of %s %s failed", p[i].name, p[i].version);
	}
	free(p);
	return ret;
}

static int stage_source(struct job *j)
{
	const struct rootfs_fixup_opts fix = {
		.debian = j->o->source == ROOTFS_DEBIAN, .agent = j->agent, .epoch = j->epoch,
		.check = j->o->source == ROOTFS_DEBIAN ? debian_checks : NULL,
		.ncheck = j->o->source == ROOTFS_DEBIAN ? 3 : 0,
	};
	int ret = stage_create(&j->st, j->stage_dir);

	if (!ret && j->o->source == ROOTFS_DEBIAN)
		ret = stage_packages(j);
	else if (!ret && j->o->source == ROOTFS_DIR)
		ret = stage_add_tree(&j->st, j->o->src, false);
	else if (!ret)
		ret = stage_add_tar(&j->st, j->o->src);
	ret = ret ?: rootfs_fixup(&j->st, &fix);
	ret = ret ?: stage_finish(&j->st, j->epoch);
	return ret;
}

/* UUID (and directory hash seed) from the inputs and the staged tree: same tree, same image. */
static int make_uuid(struct job *j)
{
	struct sha256_ctx c;
	uint8_t d[SHA256_LEN];
	int ret = sha256_init(&c);

	if (ret)
		return ret;
	if (sha256_update(&c, j->inputs_sha, 64) ||
	    sha256_update(&c, j->st.fingerprint, sizeof(j->st.fingerprint))) {
		sha256_abort(&c);
		return -EIO;
	}
	ret = sha256_final(&c, d);
	if (ret)
		return ret;
	d[6] = (uint8_t)((d[6] & 0x0f) | 0x80); /* RFC 9562 version 8: custom */
	d[8] = (uint8_t)((d[8] & 0x3f) | 0x80);
	snprintf(j->uuid, sizeof(j->uuid),
		 "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", d[0], d[1],
		 d[2], d[3], d[4], d[5], d[6], d[7], d[8], d[9], d[10], d[11], d[12], d[13], d[14],
		 d[15]);
	return 0;
}

static int write_manifest(struct job *j)
{
	json_t *pkgs = json_object(), *req = json_array(), *root;
	char fp[65], *text = NULL;
	int ret = pkgs && req ? 0 : -ENOMEM;

	sha256_to_hex(j->st.fingerprint, fp);
	for (int i = 0; i < j->pkgs.count && pkgs; i++)
		json_object_set_new(pkgs, j->pkgs.pkgs[i].name, json_string(j->pkgs.pkgs[i].version));
	for (int i = 0; i < j->nnames && req; i++)
		json_array_append_new(req, json_string(j->names[i]));
	root = json_pack("{s:i, s:s, s:s?, s:o, s:o, s:s, s:s, s:s, s:s, s:s, s:I, s:I, s:I, s:I,"
			 " s:s, s:s, s:s, s:{s:s, s:s, s:I}}",
			 "format", ROOTFS_FORMAT, "source", source_name(j->o->source),
			 "source_path", j->src[0] ? j->src : NULL, "requested", req, "packages", pkgs,
			 "inputs_sha256", j->inputs_sha, "tree_sha256", fp, "uuid", j->uuid,
			 "label", ROOTFS_LABEL, "agent", j->agent, "epoch", (json_int_t)j->epoch,
			 "entries", (json_int_t)j->st.entries, "tree_bytes", (json_int_t)j->st.bytes,
			 "size_mib", (json_int_t)j->size_mib, "agent_sha256", j->agent_sha,
			 "agent_in_image", "/" ROOTFS_AGENT_PATH, "kernel_cmdline", ROOTFS_CMDLINE_ARG,
			 "image", "file", ROOTFS_FILE, "sha256", j->image_sha, "size",
			 (json_int_t)j->image_size);
	text = root ? json_dumps(root, JSON_INDENT(2) | JSON_SORT_KEYS) : NULL;
	if (!ret && !text)
		ret = -ENOMEM;
	/* Also the directory fsync for the image's rename (same directory). */
	ret = ret ?: image_write_file(j->manifest, text, strlen(text), 0644);
	free(text);
	json_decref(root);
	return ret;
}

static int build_image(struct job *j)
{
	struct rootfs_mkfs_spec spec = {
		.stage = j->stage_dir, .image = j->image, .conf = j->conf,
		.entries = j->st.entries, .used_bytes = j->st.bytes, .epoch = j->epoch,
		.chown_root = !j->st.as_root,
	};
	int ret;

	j->size_mib = j->o->size_mib ? j->o->size_mib
				     : rootfs_auto_size_mib(j->st.bytes, j->st.entries, j->o->free_mib);
	spec.size_mib = j->size_mib;
	memcpy(spec.uuid, j->uuid, sizeof(spec.uuid));
	log_info("making a %" PRIu64 " MiB ext4 image of %" PRIu64 " entries (%" PRIu64 " MiB)",
		 j->size_mib, j->st.entries, j->st.bytes >> 20);
	/* The old manifest goes first: an interrupted build never leaves one that vouches for a
	 * different image. */
	if (unlink(j->manifest) < 0 && errno != ENOENT)
		return log_errno(-errno, "remove %s", j->manifest);
	ret = rootfs_mkfs(&spec);
	ret = ret ?: file_sha256(j->image, j->image_sha, &j->image_size);
	return ret;
}

int rootfs_build(const struct rootfs_build_opts *o)
{
	struct job *j = calloc(1, sizeof(*j));
	uint64_t t0 = monotonic_ns();
	int ret = j ? 0 : -ENOMEM;

	if (!j)
		return ret;
	j->o = o;
	j->st.root_fd = -1;
	j->st.as_root = geteuid() == 0;
	ret = setup(j);
	if (!ret && o->source == ROOTFS_DEBIAN)
		ret = resolve(j);
	ret = ret ?: hash_inputs(j);
	if (!ret && o->source == ROOTFS_DEBIAN && try_reuse(j))
		goto out;
	ret = ret ?: stage_source(j);
	ret = ret ?: make_uuid(j);
	ret = ret ?: build_image(j);
	ret = ret ?: write_manifest(j);
	if (!ret)
		printf("rootfs: built from %s%s%s: %" PRIu64 " entries, %" PRIu64 " MiB of files, "
		       "%" PRIu64 " MiB image, sha256 %.16s..., %.1f s\n"
		       "wrote %s and manifest.json\n",
		       source_name(o->source), o->src ? " " : "",
		       !o->src ? "" : strcmp(o->src, "-") ? o->src : "stdin",
		       j->st.entries, j->st.bytes >> 20, j->size_mib, j->image_sha,
		       (double)(monotonic_ns() - t0) / 1e9, j->image);
out:
	if (ret)
		log_err("rootfs: build failed; %s is unchanged", j->image);
	stage_destroy(&j->st, false);
	rootfs_pkglist_free(&j->pkgs);
	free(j);
	return ret;
}
