/*
 * forkvm cp: files and directory trees into and out of a Linux guest, as ustar archives; for
 * a daemon sandbox, single files through the daemon's files route.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "agent/agent_client.h"
#include "cli/cli_daemon.h"
#include "cli/cli_vm.h"
#include "cli/commands.h"
#include "util/errmsg.h"
#include "util/fdio.h"
#include "util/fileio.h"
#include "util/tartree.h"
#include "util/ustar.h"
#include "util/clock.h"

/* Each request may take a while for an 11 MiB archive on a slow guest. */
#define CP_DEADLINE_MS 120000
/* The daemon's bound on a file it moves (docs/DAEMON.md, the files routes). */
#define CP_DAEMON_FILE_MAX (8u << 20)

static const char usage[] =
	"forkvm cp [options] SRC DST\n"
	"  One of SRC and DST is VM:PATH (VM: a name, or a control socket path), the other a\n"
	"  local path (write ./a:b for a local name with a ':' in it).\n"
	"  --vsock PATH    the VM's vsock socket (default: its control socket + .vsock)\n"
	"  --port N        the agent's vsock port (default 52)\n"
	"  cp VM:FILE LOCAL      to LOCAL, or into LOCAL when it is a directory\n"
	"  cp VM:DIR LOCAL       DIR's contents into the directory LOCAL (created if missing)\n"
	"  cp FILE VM:PATH       to PATH, or into PATH when it ends in '/' or is a directory\n"
	"  cp DIR VM:PATH        DIR's contents into the directory PATH (created if missing)\n"
	"Symlinks are copied as symlinks and never followed where they land; modes are kept\n"
	"(without set-uid/set-gid), owners are not. At most 11 MiB of archive and 16384 entries\n"
	"a copy.\n"
	"A daemon sandbox (VM is an sb-... id) copies through the daemon: single files of at\n"
	"most 8 MiB, an absolute guest PATH, no --vsock or --port; the mode is not kept.\n";

static const struct option options[] = {
	{ "vsock", required_argument, NULL, 'v' },
	{ "port", required_argument, NULL, 'p' },
	{ NULL, 0, NULL, 0 },
};

struct cp_opts {
	char vsock[600];
	unsigned long long port;
	char vm[512];		/* the VM part of the remote argument */
	const char *remote;	/* the guest path */
	const char *local;
	bool to_guest;
	const char *direct_only;	/* an option the daemon has no counterpart for */
};

static const struct tartree_limits limits = { AGENT_TREE_MAX_BYTES, AGENT_TREE_MAX_ENTRIES };

/* VM:PATH when the part before ':' names a VM (no '/', or an existing socket path). */
static bool split_remote(const char *arg, struct cp_opts *o)
{
	const char *colon = strchr(arg, ':');
	struct stat sb;
	size_t n;

	if (!colon || colon == arg || !colon[1])
		return false;
	n = (size_t)(colon - arg);
	if (n >= sizeof(o->vm))
		return false;
	memcpy(o->vm, arg, n);
	o->vm[n] = '\0';
	if (strchr(o->vm, '/') && stat(o->vm, &sb) < 0)
		return false;
	o->remote = colon + 1;
	return true;
}

static int parse(int argc, char **argv, struct cp_opts *o)
{
	struct cp_opts probe = { 0 };
	char sock[512];
	bool src_remote, dst_remote;
	int opt;

	optind = 1;
	opterr = 0;
	while ((opt = getopt_long(argc, argv, "+", options, NULL)) != -1) {
		switch (opt) {
		case 'v':
			snprintf(o->vsock, sizeof(o->vsock), "%s", optarg);
			o->direct_only = "--vsock";
			break;
		case 'p':
			if (cli_parse_u64(optarg, &o->port) || o->port > 0xffffffffULL)
				return -1;
			o->direct_only = "--port";
			break;
		default: return -1;
		}
	}
	if (optind + 2 != argc)
		return -1;
	src_remote = split_remote(argv[optind], &probe);
	dst_remote = split_remote(argv[optind + 1], &probe);
	if (src_remote == dst_remote)
		return -1;
	split_remote(argv[optind + dst_remote], o);
	o->to_guest = dst_remote;
	o->local = argv[optind + !dst_remote];
	if (cli_vm_socket(o->vm, sock, sizeof(sock)) < 0)
		return -1;
	if (!o->vsock[0])
		snprintf(o->vsock, sizeof(o->vsock), "%s.vsock", sock);
	return 0;
}

/* mkdir -p for a local directory. */
static int make_local_dirs(const char *path)
{
	char *copy = strdup(path);
	int ret = 0;

	if (!copy)
		return -ENOMEM;
	for (char *p = copy + 1;; p++) {
		char saved = *p;

		if (saved && saved != '/')
			continue;
		*p = '\0';
		if (mkdir(copy, 0755) < 0 && errno != EEXIST) {
			ret = -errno;
			break;
		}
		*p = saved;
		if (!saved)
			break;
	}
	free(copy);
	return ret;
}

/* ------------------------------------------------------------------ guest -> host */

/* The one member of a file archive, written to a local path (following the user's path). */
static int write_member(const uint8_t *tar, size_t len, const char *dst)
{
	struct ustar_entry *e = malloc(sizeof(*e));
	struct ustar_reader r;
	struct fvm_err err = FVM_ERR_INIT;
	int fd, ret;

	if (!e)
		return -ENOMEM;
	ustar_reader_init(&r, tar, len);
	ret = ustar_next(&r, e, &err);
	if (ret <= 0 || e->type != USTAR_FILE) {
		fprintf(stderr, "forkvm cp: the guest sent a bad file archive: %s\n",
			ret < 0 ? err.msg : "no regular file in it");
		free(e);
		return -EPROTO;
	}
	fd = open(dst, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	ret = fd < 0 || fchmod(fd, e->mode & 01777) < 0 ? -errno : 0;
	for (size_t off = 0; ret == 0 && off < e->size;) {
		ssize_t n = write(fd, e->data + off, e->size - off);

		if (n < 0)
			ret = -errno;
		else
			off += (size_t)n;
	}
	if (fd >= 0 && close(fd) < 0 && ret == 0)
		ret = -errno;
	if (ret < 0)
		fprintf(stderr, "forkvm cp: write %s: %s\n", dst, strerror(-ret));
	free(e);
	return ret;
}

/* Extract an archive into a local directory (created with its parents). */
static int extract_local(const uint8_t *tar, size_t len, const char *dir)
{
	struct tartree_stats st;
	struct fvm_err err = FVM_ERR_INIT;
	int fd, ret = make_local_dirs(dir);

	if (ret < 0) {
		fprintf(stderr, "forkvm cp: mkdir %s: %s\n", dir, strerror(-ret));
		return ret;
	}
	fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0) {
		fprintf(stderr, "forkvm cp: open %s: %s\n", dir, strerror(errno));
		return -errno;
	}
	ret = tartree_extract(fd, tar, len, &limits, &st, &err);
	close(fd);
	if (ret < 0)
		fprintf(stderr, "forkvm cp: extract into %s: %s\n", dir, err_text(&err));
	return ret;
}

static int copy_from_guest(int fd, const struct cp_opts *o)
{
	uint8_t *tar = NULL;
	struct stat sb;
	size_t len;
	struct fvm_err err = FVM_ERR_INIT;
	bool is_dir;
	int ret;

	ret = agent_get_tree(fd, o->remote, &tar, &len, &is_dir,
			     deadline_after_ms(CP_DEADLINE_MS), &err);
	if (ret < 0) {
		fprintf(stderr, "forkvm cp: %s\n", err_text(&err));
		return ret;
	}
	if (is_dir || (stat(o->local, &sb) == 0 && S_ISDIR(sb.st_mode)))
		ret = extract_local(tar, len, o->local);
	else
		ret = write_member(tar, len, o->local);
	free(tar);
	return ret;
}

/* ------------------------------------------------------------------ host -> guest */

/* A one-member archive of the local file, the member named name. */
static int archive_file(const char *path, const char *name, uint8_t **out, size_t *out_len)
{
	struct ustar_writer w;
	uint8_t *data = NULL;
	struct stat sb;
	size_t len = 0;
	int fd, ret = 0;

	ustar_writer_init(&w, AGENT_TREE_MAX_BYTES);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0 || fstat(fd, &sb) < 0)
		ret = -errno;
	else if ((uint64_t)sb.st_size > AGENT_TREE_MAX_BYTES)
		ret = -E2BIG;
	else if (!(data = malloc((size_t)sb.st_size + 1)))
		ret = -ENOMEM;
	while (ret == 0 && len < (size_t)sb.st_size) {
		ssize_t n = read(fd, data + len, (size_t)sb.st_size - len);

		if (n < 0)
			ret = -errno;
		else if (n == 0)
			break;
		else
			len += (size_t)n;
	}
	if (ret == 0)
		ret = ustar_add(&w, USTAR_FILE, name, NULL, sb.st_mode, sb.st_mtim.tv_sec, data, len);
	if (ret == 0)
		ret = ustar_finish(&w);
	if (ret == 0) {
		*out = w.buf;
		*out_len = w.len;
		w.buf = NULL;
	} else {
		fprintf(stderr, "forkvm cp: %s: %s\n", path,
			ret == -E2BIG ? "larger than a copy may be (11 MiB)" : strerror(-ret));
	}
	if (fd >= 0)
		close(fd);
	free(data);
	ustar_writer_free(&w);
	return ret;
}

/* The guest directory holding PATH, and PATH's leaf name. */
static void split_guest_path(const char *path, char *dir, size_t cap, char *leaf, size_t leaf_cap)
{
	size_t end = strlen(path);

	while (end > 1 && path[end - 1] == '/')
		end--;
	tartree_base_name(path, leaf, leaf_cap);
	while (end > 0 && path[end - 1] != '/')
		end--;
	while (end > 1 && path[end - 1] == '/')
		end--;
	if (end == 0)
		snprintf(dir, cap, ".");
	else
		snprintf(dir, cap, "%.*s", (int)end, path);
}

static int put_file(int fd, const struct cp_opts *o)
{
	char dir[4096], leaf[1024];
	struct fvm_err err = FVM_ERR_INIT;
	size_t rlen = strlen(o->remote), len = 0;
	uint8_t *tar = NULL;
	int ret;

	/* PATH/ names a directory: the file keeps its own name there. */
	if (o->remote[rlen - 1] == '/') {
		snprintf(dir, sizeof(dir), "%s", o->remote);
		tartree_base_name(o->local, leaf, sizeof(leaf));
	} else {
		split_guest_path(o->remote, dir, sizeof(dir), leaf, sizeof(leaf));
	}
	ret = archive_file(o->local, leaf, &tar, &len);
	if (ret < 0)
		return ret;
	ret = agent_put_tree(fd, dir, tar, len, deadline_after_ms(CP_DEADLINE_MS), &err);
	/* PATH is an existing directory: put the file into it, as cp does. */
	if (ret == -EREMOTEIO && strstr(err_text(&err), "a directory is in the way")) {
		free(tar);
		tar = NULL;
		tartree_base_name(o->local, leaf, sizeof(leaf));
		ret = archive_file(o->local, leaf, &tar, &len);
		if (ret < 0)
			return ret;
		ret = agent_put_tree(fd, o->remote, tar, len, deadline_after_ms(CP_DEADLINE_MS),
				     &err);
	}
	if (ret < 0)
		fprintf(stderr, "forkvm cp: %s\n", err_text(&err));
	free(tar);
	return ret;
}

static int copy_to_guest(int fd, const struct cp_opts *o)
{
	struct tartree_stats st;
	enum tartree_kind kind;
	uint8_t *tar = NULL;
	struct stat sb;
	struct fvm_err err = FVM_ERR_INIT;
	size_t len;
	int ret;

	if (stat(o->local, &sb) < 0) {
		fprintf(stderr, "forkvm cp: %s: %s\n", o->local, strerror(errno));
		return -errno;
	}
	if (!S_ISDIR(sb.st_mode))
		return put_file(fd, o);
	ret = tartree_archive(o->local, &limits, &tar, &len, &kind, &st, &err);
	if (ret == 0)
		ret = agent_put_tree(fd, o->remote, tar, len, deadline_after_ms(CP_DEADLINE_MS),
				     &err);
	if (ret < 0)
		fprintf(stderr, "forkvm cp: %s\n", err_text(&err));
	else if (st.skipped)
		fprintf(stderr, "forkvm cp: skipped %zu special files (sockets, FIFOs, devices)\n",
			st.skipped);
	free(tar);
	return ret;
}

/* ------------------------------------------------------------------ through the daemon */

/* "/v1/sandboxes/ID/files?path=GUEST" with the guest path escaped; -errno with a message. */
static int files_route(const char *id, const char *guest, char *out, size_t len)
{
	char prefix[128];
	struct fvm_err err = FVM_ERR_INIT;
	char *esc = cli_daemon_escape(guest, &err);
	int ret = 0;

	if (!esc) {
		fprintf(stderr, "forkvm cp: %s\n", err_text(&err));
		return -ENOMEM;
	}
	if (cli_daemon_sandbox_path(id, "/files?path=", prefix, sizeof(prefix)) < 0 ||
	    snprintf(out, len, "%s%s", prefix, esc) >= (int)len) {
		fprintf(stderr, "forkvm cp: the guest path %s is too long\n", guest);
		ret = -ENAMETOOLONG;
	}
	free(esc);
	return ret;
}

/* PATH, or PATH/NAME when PATH is a directory (ends in '/', or is one locally); -ENAMETOOLONG. */
static int into_dir(const char *path, bool is_dir, const char *from, char *out, size_t len)
{
	char leaf[1024];
	size_t n = strlen(path);

	if (!is_dir)
		return snprintf(out, len, "%s", path) >= (int)len ? -ENAMETOOLONG : 0;
	tartree_base_name(from, leaf, sizeof(leaf));
	return snprintf(out, len, "%s%s%s", path, n && path[n - 1] == '/' ? "" : "/", leaf) >=
			       (int)len ? -ENAMETOOLONG : 0;
}

/* One local file (not a directory: run refuses those) to the guest: PUT .../files?path=. */
static int daemon_put(const struct cp_opts *o)
{
	char guest[4096], route[16384];
	struct fvm_err err = FVM_ERR_INIT;
	uint8_t *data = NULL, *answer = NULL;
	size_t len = 0, answer_len = 0;
	int ret;

	if (into_dir(o->remote, o->remote[strlen(o->remote) - 1] == '/', o->local, guest,
		     sizeof(guest)) < 0) {
		fprintf(stderr, "forkvm cp: the guest path %s is too long\n", o->remote);
		return -ENAMETOOLONG;
	}
	ret = files_route(o->vm, guest, route, sizeof(route));
	if (ret < 0)
		return ret;
	ret = file_read(o->local, CP_DAEMON_FILE_MAX, 0, &data, &len, &err);
	if (ret == -EFBIG)
		fprintf(stderr, "forkvm cp: %s is larger than the daemon takes (8 MiB)\n", o->local);
	else if (ret < 0)
		fprintf(stderr, "forkvm cp: %s\n", err_text(&err));
	else if ((ret = cli_daemon_call_raw("PUT", route, data, len, &answer, &answer_len,
		 &err)) < 0)
		fprintf(stderr, "forkvm cp: %s\n", err_text(&err));
	free(answer);
	free(data);
	return ret;
}

/* One guest file to a local path: GET .../files?path=. */
static int daemon_get(const struct cp_opts *o)
{
	char local[PATH_MAX], route[16384];
	struct fvm_err err = FVM_ERR_INIT;
	uint8_t *data = NULL;
	struct stat sb;
	size_t len = 0;
	int fd = -1, ret;

	bool is_dir = stat(o->local, &sb) == 0 && S_ISDIR(sb.st_mode);

	if (into_dir(o->local, is_dir, o->remote, local, sizeof(local)) < 0) {
		fprintf(stderr, "forkvm cp: the local path %s is too long\n", o->local);
		return -ENAMETOOLONG;
	}
	ret = files_route(o->vm, o->remote, route, sizeof(route));
	if (ret < 0)
		return ret;
	ret = cli_daemon_call_raw("GET", route, NULL, 0, &data, &len, &err);
	if (ret < 0) {
		fprintf(stderr, "forkvm cp: %s\n", err_text(&err));
		goto out;
	}
	fd = open(local, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666);
	ret = fd < 0 ? -errno : fd_write_all(fd, data, len);
	if (fd >= 0 && close(fd) < 0 && ret == 0)
		ret = -errno;
	if (ret < 0)
		fprintf(stderr, "forkvm cp: write %s: %s\n", local, strerror(-ret));
out:
	free(data);
	return ret;
}

static int run(int argc, char **argv)
{
	struct cp_opts o = { .port = AGENT_VSOCK_PORT };
	struct fvm_err err = FVM_ERR_INIT;
	bool via_daemon;
	struct stat sb;
	int fd, ret;

	if (parse(argc, argv, &o) < 0)
		return cli_usage_error(&cli_cmd_cp, "need SRC and DST, exactly one of them VM:PATH");
	if (cli_daemon_sandbox(o.vm, &via_daemon, &err) < 0) {
		fprintf(stderr, "forkvm cp: %s\n", err_text(&err));
		return CLI_EXIT_FAIL;
	}
	if (via_daemon && o.direct_only)
		return cli_daemon_refuse("cp", o.direct_only, "the daemon reaches the agent itself");
	if (via_daemon && o.to_guest && stat(o.local, &sb) == 0 && S_ISDIR(sb.st_mode))
		return cli_daemon_refuse("cp", "copying a directory", "the daemon moves single files");
	if (via_daemon) {
		ret = o.to_guest ? daemon_put(&o) : daemon_get(&o);
		return ret < 0 ? CLI_EXIT_FAIL : CLI_EXIT_OK;
	}
	fd = agent_connect(o.vsock, (int)o.port, deadline_after_ms(10000), -1, &err);
	if (fd < 0) {
		fprintf(stderr, "forkvm cp: %s\n", err_text(&err));
		return CLI_EXIT_FAIL;
	}
	ret = o.to_guest ? copy_to_guest(fd, &o) : copy_from_guest(fd, &o);
	close(fd);
	return ret < 0 ? CLI_EXIT_FAIL : CLI_EXIT_OK;
}

const struct cli_command cli_cmd_cp = { "cp", "copy files and directories to or from a guest (agent)",
					usage, run };
