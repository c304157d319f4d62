/* A tar stream (docker export, tar -c) into the stage with libarchive, refusing any member
 * that could land outside it. */
#include <archive.h>
#include <archive_entry.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "util/log.h"
#include "image/stage.h"

#define SKIP_LOG_MAX 5

int stage_tar_path(const char *in, char *out, size_t size)
{
	size_t o = 0;

	if (!*in || *in == '/')
		return -EINVAL;
	for (const char *p = in; *p;) {
		size_t n = strcspn(p, "/");

		if (n == 2 && p[0] == '.' && p[1] == '.')
			return -EINVAL;
		if (n && !(n == 1 && p[0] == '.')) {
			if (o + n + 2 > size)
				return -ENAMETOOLONG;
			if (o)
				out[o++] = '/';
			memcpy(out + o, p, n);
			o += n;
		}
		p += n;
		while (*p == '/')
			p++;
	}
	out[o] = 0;
	return o ? 0 : 1;
}

struct tar_ctx {
	struct stage *st;
	const char *name;	/* for messages: the file, or "stdin" */
	struct archive *in, *disk;
	unsigned long long members;
};

static int disk_error(struct tar_ctx *t, const char *path)
{
	int err = archive_errno(t->disk);

	if (err == ENOSPC) {
		log_err("%s: extracting %s: no space left on the filesystem holding %s", t->name,
			path, t->st->path);
		return -ENOSPC;
	}
	log_err("%s: extracting %s: %s", t->name, path, archive_error_string(t->disk));
	return err > 0 ? -err : -EIO;
}

static int corrupt(struct tar_ctx *t, const char *where)
{
	log_err("%s: corrupt or not a tar archive (%s, member %llu): %s", t->name, where,
		t->members, archive_error_string(t->in));
	return -EINVAL;
}

static int copy_body(struct tar_ctx *t, const char *path)
{
	const void *buf;
	size_t len;
	la_int64_t off;
	int r;

	while ((r = archive_read_data_block(t->in, &buf, &len, &off)) == ARCHIVE_OK)
		if (archive_write_data_block(t->disk, buf, len, off) < ARCHIVE_OK)
			return disk_error(t, path);
	return r == ARCHIVE_EOF ? 0 : corrupt(t, path);
}

/* Check and rewrite one member's paths; 1: leave it out. */
static int vet_member(struct tar_ctx *t, struct archive_entry *e, char *path, size_t size)
{
	const char *raw = archive_entry_pathname(e), *link = archive_entry_hardlink(e);
	char link_path[PATH_MAX];
	mode_t type = archive_entry_filetype(e);
	int ret;

	if (!raw)
		return corrupt(t, "member without a name");
	ret = stage_tar_path(raw, path, size);
	if (ret < 0) {
		log_err("%s: member \"%s\" %s; refusing the archive", t->name, raw,
			ret == -EINVAL ? "is absolute or goes up with \"..\" (it could leave the root)"
				       : "has a path that is too long");
		return -EINVAL;
	}
	if (ret == 1)
		return 1; /* the root directory itself */
	if (type == AE_IFCHR || type == AE_IFBLK || type == AE_IFIFO || type == AE_IFSOCK) {
		if (t->st->skipped++ < SKIP_LOG_MAX)
			log_info("%s: skipping %s (device node, FIFO or socket; the guest's /dev is "
				 "devtmpfs)", t->name, path);
		return 1;
	}
	if (link) {
		if (stage_tar_path(link, link_path, sizeof(link_path))) {
			log_err("%s: hard link \"%s\" -> \"%s\" points outside the root; refusing the "
				"archive", t->name, raw, link);
			return -EINVAL;
		}
		archive_entry_set_hardlink(e, link_path);
	}
	archive_entry_set_pathname(e, path);
	return 0;
}

static int extract_all(struct tar_ctx *t)
{
	char path[PATH_MAX];
	struct archive_entry *e;
	int r, ret = 0;

	while (!ret && (r = archive_read_next_header(t->in, &e)) != ARCHIVE_EOF) {
		if (r == ARCHIVE_WARN)
			log_warn("%s: %s", t->name, archive_error_string(t->in));
		else if (r != ARCHIVE_OK)
			return corrupt(t, "reading a member header");
		t->members++;
		ret = vet_member(t, e, path, sizeof(path));
		if (ret) { /* a skipped member's data is skipped by the next header read */
			ret = ret > 0 ? 0 : ret;
			continue;
		}
		r = archive_write_header(t->disk, e);
		if (r == ARCHIVE_WARN)
			log_warn("%s: %s: %s", t->name, path, archive_error_string(t->disk));
		else if (r != ARCHIVE_OK)
			ret = disk_error(t, path);
		if (!ret && archive_entry_size(e) > 0)
			ret = copy_body(t, path);
		if (!ret && archive_write_finish_entry(t->disk) < ARCHIVE_WARN)
			ret = disk_error(t, path);
	}
	if (!ret && t->members == 0) {
		log_err("%s: the archive has no members (empty input?)", t->name);
		ret = -EINVAL;
	}
	return ret;
}

static int open_input(struct tar_ctx *t, const char *tar)
{
	int r;

	archive_read_support_filter_all(t->in);
	archive_read_support_format_tar(t->in);
	archive_read_support_format_gnutar(t->in);
	if (!strcmp(tar, "-"))
		r = archive_read_open_fd(t->in, STDIN_FILENO, 1 << 16);
	else
		r = archive_read_open_filename(t->in, tar, 1 << 16);
	if (r != ARCHIVE_OK) {
		int err = archive_errno(t->in);

		if (err == ENOENT || err == EACCES || err == EISDIR || err == ENOTDIR) {
			log_err("%s: %s", t->name, strerror(err));
			return -err;
		}
		log_err("%s: corrupt, empty or not a tar archive: %s", t->name,
			archive_error_string(t->in));
		return -EINVAL;
	}
	return 0;
}

int stage_add_tar(struct stage *st, const char *tar)
{
	struct tar_ctx t = { st, strcmp(tar, "-") ? tar : "stdin", archive_read_new(),
			     archive_write_disk_new(), 0 };
	int flags = ARCHIVE_EXTRACT_PERM | ARCHIVE_EXTRACT_TIME | ARCHIVE_EXTRACT_XATTR |
		    ARCHIVE_EXTRACT_SECURE_SYMLINKS |
		    ARCHIVE_EXTRACT_SECURE_NODOTDOT | ARCHIVE_EXTRACT_SECURE_NOABSOLUTEPATHS;
	int cwd = open(".", O_PATH | O_DIRECTORY | O_CLOEXEC), ret;

	if (!t.in || !t.disk || cwd < 0) {
		ret = cwd < 0 ? log_errno(-errno, "open the current directory") : -ENOMEM;
		goto out;
	}
	if (st->as_root)
		flags |= ARCHIVE_EXTRACT_OWNER; /* numeric ids: no lookup in the host's passwd */
	archive_write_disk_set_options(t.disk, flags);
	ret = open_input(&t, tar);
	/* archive_write_disk works relative to the working directory. */
	if (!ret && fchdir(st->root_fd) < 0)
		ret = log_errno(-errno, "chdir %s", st->path);
	ret = ret ?: extract_all(&t);
	/* Directory times and permissions are fixed up on close. */
	if (archive_write_close(t.disk) != ARCHIVE_OK && !ret)
		ret = disk_error(&t, "directory permissions");
	if (fchdir(cwd) < 0 && !ret)
		ret = log_errno(-errno, "chdir back");
	if (st->skipped > SKIP_LOG_MAX)
		log_info("%s: skipped %llu device nodes, FIFOs or sockets in all", t.name,
			 (unsigned long long)st->skipped);
out:
	if (cwd >= 0)
		close(cwd);
	if (t.in)
		archive_read_free(t.in);
	if (t.disk)
		archive_write_free(t.disk);
	return ret;
}
