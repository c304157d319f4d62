/* Snapshot directories: atomic writer, stale cleanup, sparse memory file, snap_open checks. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <linux/magic.h>
#include <sys/wait.h>
#include <unistd.h>

#include "snapshot/snap_config.h"
#include "snapshot/snap_format.h"
#include "util/errmsg.h"

#define MEM_SIZE (64ULL << 10)

static char base[1024], snapdir[PATH_MAX];

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	return remove(path);
}

static int setup(void **state)
{
	const char *tmp = getenv("TMPDIR");

	snprintf(base, sizeof(base), "%s/forkvm-snaptest-XXXXXX", tmp ? tmp : "/tmp");
	if (!mkdtemp(base))
		return -1;
	snprintf(snapdir, sizeof(snapdir), "%s/snap", base);
	return 0;
}

static int teardown(void **state)
{
	return nftw(base, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

static void write_file(const char *dir, const char *name, const void *data, size_t len)
{
	char path[PATH_MAX * 2];
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	f = fopen(path, "w");
	assert_non_null(f);
	assert_int_equal(fwrite(data, 1, len, f), len);
	assert_int_equal(fclose(f), 0);
}

/* The file's content, NUL-terminated, or NULL if it cannot be read. */
static char *read_file(const char *dir, const char *name, size_t *len)
{
	char path[PATH_MAX * 2], *buf = NULL;
	size_t cap = 0, n = 0, got;
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	f = fopen(path, "r");
	if (!f)
		return NULL;
	do {
		cap = cap ? cap * 2 : 4096;
		buf = realloc(buf, cap + 1);
		got = fread(buf + n, 1, cap - n, f);
		n += got;
	} while (n == cap);
	fclose(f);
	buf[n] = '\0';
	if (len)
		*len = n;
	return buf;
}

/* Names in base other than ".", ".." and keep. */
static int count_other_entries(const char *keep)
{
	DIR *d = opendir(base);
	struct dirent *de;
	int n = 0;

	assert_non_null(d);
	while ((de = readdir(d))) {
		if (strcmp(de->d_name, ".") && strcmp(de->d_name, "..") &&
		    (!keep || strcmp(de->d_name, keep)))
			n++;
	}
	closedir(d);
	return n;
}

static struct snap_config good_config(void)
{
	struct snap_config c = {
		.mem_size = MEM_SIZE,
		.nvcpus = 2,
		.guest_kind = SNAP_GUEST_PROBE,
		.nregions = 1,
		.regions = { { .gpa = 0, .size = MEM_SIZE, .offset = 0 } },
		.cpu_features = "-xsave",
	};
	return c;
}

#define META_V1 "{\"format_version\": 1}\n"

/* A whole snapshot at snapdir: vmstate with the given config, memory of mem_len bytes. */
static void make_snapshot(const struct snap_config *c, size_t config_len, uint64_t mem_len,
			  bool force)
{
	struct snap_writer w;
	struct snap_mem_stats ms;
	struct snap_buf b;
	uint8_t *mem = calloc(1, mem_len + 1);

	mem[0] = 0xaa;
	snap_buf_init(&b);
	if (c)
		snap_buf_add(&b, SNAP_SEC_CONFIG, 0, c, config_len);
	assert_int_equal(snap_buf_finish(&b), 0);
	assert_int_equal(snap_writer_begin(&w, snapdir, force, NULL), 0);
	assert_int_equal(snap_writer_put(&w, SNAP_FILE_VMSTATE, b.data, b.len), 0);
	assert_int_equal(snap_writer_put_memory(&w, mem, mem_len, &ms), 0);
	assert_int_equal(snap_writer_put(&w, SNAP_FILE_META, META_V1, strlen(META_V1)), 0);
	assert_int_equal(snap_writer_commit(&w), 0);
	snap_writer_abort(&w); /* no-op after commit */
	snap_buf_free(&b);
	free(mem);
}

static void test_commit_creates_dir(void **state)
{
	struct snap_writer w;
	char *text;

	assert_int_equal(snap_writer_begin(&w, snapdir, false, NULL), 0);
	assert_int_equal(count_other_entries(NULL), 1); /* the temp dir only */
	assert_int_equal(access(snapdir, F_OK), -1);
	assert_int_equal(snap_writer_put(&w, "meta.json", "{\"a\":1}", 7), 0);
	assert_int_equal(snap_writer_put(&w, "vmstate", "", 0), 0);
	assert_int_equal(snap_writer_commit(&w), 0);
	text = read_file(snapdir, "meta.json", NULL);
	assert_non_null(text);
	assert_string_equal(text, "{\"a\":1}");
	free(text);
	assert_int_equal(count_other_entries("snap"), 0);
	snap_writer_abort(&w);
	assert_int_equal(access(snapdir, F_OK), 0);
}

static void test_trailing_slash_and_bad_names(void **state)
{
	char dir[PATH_MAX + 8];
	struct snap_writer w;

	snprintf(dir, sizeof(dir), "%s//", snapdir);
	assert_int_equal(snap_writer_begin(&w, dir, false, NULL), 0);
	assert_int_equal(snap_writer_put(&w, "../escape", "x", 1), -EINVAL);
	assert_int_equal(snap_writer_put(&w, "..", "x", 1), -EINVAL);
	assert_int_equal(snap_writer_commit(&w), 0);
	assert_int_equal(access(snapdir, F_OK), 0);
	assert_int_equal(count_other_entries("snap"), 0);
}

static void test_existing_without_force(void **state)
{
	struct snap_writer w;
	char *text;

	make_snapshot(NULL, 0, 4096, false);
	write_file(snapdir, "meta.json", "old", 3);
	assert_int_equal(snap_writer_begin(&w, snapdir, false, NULL), -EEXIST);
	snap_writer_abort(&w);
	text = read_file(snapdir, "meta.json", NULL);
	assert_string_equal(text, "old");
	free(text);
	assert_int_equal(count_other_entries("snap"), 0);
}

static void test_force_replaces(void **state)
{
	struct snap_config c = good_config();
	char *text;

	make_snapshot(NULL, 0, 4096, false);
	write_file(snapdir, "old-only", "x", 1);
	make_snapshot(&c, sizeof(c), MEM_SIZE, true);
	assert_int_equal(access(snapdir, F_OK), 0);
	text = read_file(snapdir, "old-only", NULL);
	assert_null(text);
	text = read_file(snapdir, "meta.json", NULL);
	assert_string_equal(text, META_V1);
	free(text);
	assert_int_equal(count_other_entries("snap"), 0);
}

/* Force replaces a snapshot, never an arbitrary directory or file. */
static void test_force_refuses_non_snapshot(void **state)
{
	struct fvm_err err = FVM_ERR_INIT;
	struct snap_writer w;
	char *text;

	assert_int_equal(mkdir(snapdir, 0700), 0);
	write_file(snapdir, "precious", "data", 4);
	assert_int_equal(snap_writer_begin(&w, snapdir, true, &err), -EEXIST);
	/* The failing step and the reason, with the errno. */
	assert_non_null(strstr(err.msg, "refusing to replace"));
	assert_non_null(strstr(err.msg, "no meta.json"));
	assert_int_equal(err.errnum, EEXIST);
	/* A file named vmstate does not make a snapshot: meta.json and the magic must be ours. */
	write_file(snapdir, "vmstate", "not ours", 8);
	assert_int_equal(snap_writer_begin(&w, snapdir, true, NULL), -EEXIST);
	write_file(snapdir, "meta.json", META_V1, strlen(META_V1));
	assert_int_equal(snap_writer_begin(&w, snapdir, true, NULL), -EEXIST);
	write_file(snapdir, "vmstate", "FKVMSNAP", 8);
	write_file(snapdir, "meta.json", "{\"format_version\": 2}", 21);
	assert_int_equal(snap_writer_begin(&w, snapdir, true, NULL), -EEXIST);
	text = read_file(snapdir, "precious", NULL);
	assert_string_equal(text, "data");
	free(text);
	snprintf(snapdir, sizeof(snapdir), "%s/file", base);
	write_file(base, "file", "f", 1);
	assert_int_equal(snap_writer_begin(&w, snapdir, true, &err), -ENOTDIR);
	assert_non_null(strstr(err.msg, "not a directory"));
	snprintf(snapdir, sizeof(snapdir), "%s/snap", base);
	assert_int_equal(count_other_entries(NULL), 2);
}

static void test_abort_leaves_nothing(void **state)
{
	struct snap_writer w;
	uint8_t mem[8192] = { 1 };
	struct snap_mem_stats ms;

	memset(&w, 0, sizeof(w));
	snap_writer_abort(&w); /* a writer never begun */
	assert_int_equal(snap_writer_begin(&w, snapdir, false, NULL), 0);
	assert_int_equal(snap_writer_put(&w, "vmstate", "abc", 3), 0);
	assert_int_equal(snap_writer_put_memory(&w, mem, sizeof(mem), &ms), 0);
	snap_writer_abort(&w);
	snap_writer_abort(&w);
	assert_int_equal(count_other_entries(NULL), 0);
	assert_int_equal(snap_writer_commit(&w), -EINVAL);
}

/* A write that fails (file size limit here, like ENOSPC) names the error; abort cleans up. */
static void test_write_error_then_abort(void **state)
{
	struct rlimit old, small = { 16384, 0 };
	struct fvm_err err = FVM_ERR_INIT;
	struct snap_writer w;
	struct snap_mem_stats ms;
	uint8_t *mem = malloc(1 << 20);

	memset(mem, 0x5a, 1 << 20);
	assert_int_equal(getrlimit(RLIMIT_FSIZE, &old), 0);
	small.rlim_max = old.rlim_max;
	signal(SIGXFSZ, SIG_IGN);
	assert_int_equal(snap_writer_begin(&w, snapdir, false, &err), 0);
	assert_int_equal(setrlimit(RLIMIT_FSIZE, &small), 0);
	assert_int_equal(snap_writer_put(&w, "vmstate", mem, 1 << 20), -EFBIG);
	assert_non_null(strstr(err.msg, "/vmstate (1048576 bytes): File too large"));
	assert_int_equal(snap_writer_put_memory(&w, mem, 1 << 20, &ms), -EFBIG);
	assert_non_null(strstr(err.msg, "/memory to 1048576 bytes: File too large"));
	assert_int_equal(setrlimit(RLIMIT_FSIZE, &old), 0);
	snap_writer_abort(&w);
	assert_int_equal(count_other_entries(NULL), 0);
	free(mem);
}

static pid_t dead_pid(void)
{
	pid_t pid = fork();
	int status;

	assert_true(pid >= 0);
	if (pid == 0)
		_exit(0);
	assert_int_equal(waitpid(pid, &status, 0), pid);
	return pid;
}

/* A child SIGKILLed in the middle of writing a snapshot leaves only its temp dir. */
static void killed_writer(void)
{
	pid_t pid = fork();
	int status;

	assert_true(pid >= 0);
	if (pid == 0) {
		struct snap_writer w;
		static uint8_t mem[65536] = { 1 };
		struct snap_mem_stats ms;

		if (snap_writer_begin(&w, snapdir, false, NULL) == 0 &&
		    snap_writer_put(&w, SNAP_FILE_VMSTATE, "x", 1) == 0 &&
		    snap_writer_put_memory(&w, mem, sizeof(mem), &ms) == 0)
			kill(getpid(), SIGKILL);
		_exit(1);
	}
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
	assert_int_equal(access(snapdir, F_OK), -1);
}

/* A child that stays alive (same program as us, so a writer) until killed. */
static pid_t live_pid(void)
{
	pid_t pid = fork();

	assert_true(pid >= 0);
	if (pid == 0) {
		pause();
		_exit(0);
	}
	return pid;
}

/* A child that exited and is not reaped: a zombie, dead for the stale check. */
static pid_t zombie_pid(void)
{
	char path[64], stat[256] = "";
	pid_t pid = fork();

	assert_true(pid >= 0);
	if (pid == 0)
		_exit(0);
	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	for (int i = 0; i < 2000; i++) {
		FILE *f = fopen(path, "r");
		char *rp;
		assert_non_null(f);
		assert_non_null(fgets(stat, sizeof(stat), f));
		fclose(f);
		rp = strrchr(stat, ')');
		if (rp && rp[2] == 'Z')
			return pid;
		usleep(1000);
	}
	fail_msg("child %d never became a zombie: %s", (int)pid, stat);
	return -1;
}

static void test_stale_tmp_removed(void **state)
{
	char stale[PATH_MAX + 32], live[PATH_MAX + 32], other[PATH_MAX + 32];
	char zombie[PATH_MAX + 32], foreign[PATH_MAX + 32];
	struct snap_writer w;
	pid_t pid = dead_pid(), lpid = live_pid(), zpid = zombie_pid();
	int status;

	killed_writer();
	snprintf(stale, sizeof(stale), "%s.tmp-%d", snapdir, (int)pid);
	snprintf(live, sizeof(live), "%s.tmp-%d", snapdir, (int)lpid);
	snprintf(other, sizeof(other), "%s/othersnap.tmp-%d", base, (int)pid);
	snprintf(zombie, sizeof(zombie), "%s.tmp-%d", snapdir, (int)zpid);
	/* A live process that is not a forkvm (a PID reused by another program): stale. */
	snprintf(foreign, sizeof(foreign), "%s.tmp-%d", snapdir, (int)getppid());
	assert_int_equal(mkdir(stale, 0700), 0);
	write_file(stale, "memory", "half-written", 12);
	assert_int_equal(mkdir(live, 0700), 0);
	assert_int_equal(mkdir(other, 0700), 0);
	assert_int_equal(mkdir(zombie, 0700), 0);
	assert_int_equal(mkdir(foreign, 0700), 0);
	assert_int_equal(count_other_entries(NULL), 6);
	assert_int_equal(snap_writer_begin(&w, snapdir, false, NULL), 0);
	assert_int_equal(access(stale, F_OK), -1);
	assert_int_equal(access(zombie, F_OK), -1);  /* exited, only not reaped */
	assert_int_equal(access(foreign, F_OK), -1); /* not a snapshot writer */
	assert_int_equal(access(live, F_OK), 0);     /* its process is still running */
	assert_int_equal(access(other, F_OK), 0);    /* another snapshot's business */
	snap_writer_abort(&w);
	assert_int_equal(count_other_entries(NULL), 2);
	kill(lpid, SIGKILL);
	assert_int_equal(waitpid(lpid, &status, 0), lpid);
	assert_int_equal(waitpid(zpid, &status, 0), zpid);
}

/* Killed between the two renames of a replace: the old snapshot is put back. */
static void test_stale_old_restored(void **state)
{
	char old[PATH_MAX + 32];
	struct snap_writer w;
	char *text;

	snprintf(old, sizeof(old), "%s.old-%d", snapdir, (int)dead_pid());
	assert_int_equal(mkdir(old, 0700), 0);
	write_file(old, "vmstate", "v", 1);
	assert_int_equal(snap_writer_begin(&w, snapdir, false, NULL), -EEXIST);
	text = read_file(snapdir, "vmstate", NULL);
	assert_string_equal(text, "v");
	free(text);
	assert_int_equal(count_other_entries("snap"), 0);
}

static void check_sparse(uint64_t size, const uint64_t *pages, int npages)
{
	struct snap_writer w;
	struct snap_mem_stats ms;
	uint8_t *mem = calloc(1, size), *back;
	char path[PATH_MAX + 16];
	struct stat st;
	size_t len;

	for (int i = 0; i < npages; i++)
		memset(mem + pages[i], 0x11 + i, size - pages[i] < 4096 ? size - pages[i] : 4096);
	mem[size - 1] = 0x77; /* a non-zero last byte */
	assert_int_equal(snap_writer_begin(&w, snapdir, false, NULL), 0);
	assert_int_equal(snap_writer_put_memory(&w, mem, size, &ms), 0);
	assert_int_equal(snap_writer_commit(&w), 0);
	assert_int_equal(ms.bytes_total, size);
	assert_true(ms.bytes_written <= (uint64_t)npages * 4096 + 4096);
	assert_true(ms.bytes_written >= (uint64_t)npages * 4096 - 4096);
	back = (uint8_t *)read_file(snapdir, "memory", &len);
	assert_non_null(back);
	assert_int_equal(len, size);
	assert_memory_equal(back, mem, size);
	snprintf(path, sizeof(path), "%s/memory", snapdir);
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_size, size);
	/* Mostly holes: allocated blocks are a small fraction of the size. */
	assert_true((uint64_t)st.st_blocks * 512 < size / 8);
	free(back);
	free(mem);
}

static void test_memory_sparse(void **state)
{
	const uint64_t pages[] = { 0, 4096, 1 << 20, (1 << 20) + 4096, (8 << 20) - 4096 };

	check_sparse(8 << 20, pages, 5);
	assert_int_equal(nftw(snapdir, rm_one, 16, FTW_DEPTH | FTW_PHYS), 0);
	/* Not a page multiple: the partial last page is written too. */
	check_sparse((8 << 20) + 100, pages, 4);
}

/* A private mount namespace (a user namespace too when not root) with a small tmpfs on base:
 * 0, or -1 where the kernel allows neither. */
static int small_tmpfs_on_base(const char *size)
{
	char opts[64], map[64];
	uid_t uid = geteuid();
	gid_t gid = getegid();
	int fd;

	if (uid != 0) {
		if (unshare(CLONE_NEWUSER | CLONE_NEWNS) < 0)
			return -1;
		fd = open("/proc/self/setgroups", O_WRONLY);
		if (fd < 0 || write(fd, "deny", 4) != 4)
			return -1;
		close(fd);
		snprintf(map, sizeof(map), "%u %u 1", (unsigned)uid, (unsigned)uid);
		fd = open("/proc/self/uid_map", O_WRONLY);
		if (fd < 0 || write(fd, map, strlen(map)) < 0)
			return -1;
		close(fd);
		snprintf(map, sizeof(map), "%u %u 1", (unsigned)gid, (unsigned)gid);
		fd = open("/proc/self/gid_map", O_WRONLY);
		if (fd < 0 || write(fd, map, strlen(map)) < 0)
			return -1;
		close(fd);
	} else if (unshare(CLONE_NEWNS) < 0) {
		return -1;
	}
	snprintf(opts, sizeof(opts), "size=%s", size);
	if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0 ||
	    mount("forkvm-test", base, "tmpfs", 0, opts) < 0)
		return -1;
	return 0;
}

#define CHECK(cond)                                                                       \
	do {                                                                              \
		if (!(cond)) {                                                            \
			fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
			ret = 1;                                                          \
			goto out;                                                         \
		}                                                                         \
	} while (0)

/* Large enough for the second writer thread: non-zero runs across its 8 MiB chunks, whole
 * chunks, a zero chunk and a partial last page, all read back, the holes still holes. The
 * helper copies a share when base is tmpfs (the last chunk at least), and nothing elsewhere;
 * with helper_fails every chunk it takes is given back and written by the first thread. 0, or
 * 1 (the failed check printed): it also runs in a child, where cmocka cannot assert. */
static int two_writers_case(bool helper_fails)
{
	const uint64_t size = (128ULL << 20) + 100, chunk = 8ULL << 20;
	struct snap_writer w;
	struct snap_mem_stats ms;
	uint8_t *mem = calloc(1, size), *back = NULL;
	uint64_t nonzero = 0;
	char path[PATH_MAX + 16];
	struct statfs fs;
	struct stat st;
	size_t len;
	int fd = -1, ret = 0;

	CHECK(mem);
	for (uint64_t off = 0; off < size; off += 4096) {
		uint64_t c = off / chunk;

		/* chunks 3-5 whole; elsewhere one page in 7, and the pages either side of each
		 * chunk boundary; chunk 9 all zero */
		if (c == 9 || (!(c >= 3 && c <= 5) && (off / 4096) % 7 && off % chunk != 0 &&
		    (off + 4096) % chunk != 0))
			continue;
		for (uint64_t i = off; i < off + 4096 && i < size; i += 8)
			mem[i] = (uint8_t)(i * 2654435761ULL >> 24) | 1;
		nonzero += size - off < 4096 ? size - off : 4096;
	}
	CHECK(statfs(base, &fs) == 0);
	snap_memory_test_helper_fails(helper_fails);
	CHECK(snap_writer_begin(&w, snapdir, false, NULL) == 0);
	ret = snap_writer_put_memory(&w, mem, size, &ms);
	snap_memory_test_helper_fails(false);
	CHECK(ret == 0);
	CHECK(snap_writer_commit(&w) == 0);
	CHECK(ms.bytes_written == nonzero);
	if (fs.f_type == TMPFS_MAGIC && !helper_fails)
		CHECK(ms.bytes_by_helper > 0 && ms.bytes_by_helper <= ms.bytes_written);
	else
		CHECK(ms.bytes_by_helper == 0);
	back = (uint8_t *)read_file(snapdir, "memory", &len);
	CHECK(back && len == size);
	CHECK(memcmp(back, mem, size) == 0);
	/* The zero chunk is a hole (a file system may fill small gaps between runs). */
	snprintf(path, sizeof(path), "%s/memory", snapdir);
	fd = open(path, O_RDONLY);
	CHECK(fd >= 0);
	CHECK(lseek(fd, (off_t)(9 * chunk), SEEK_HOLE) == (off_t)(9 * chunk));
	CHECK(lseek(fd, (off_t)(9 * chunk), SEEK_DATA) >= (off_t)(10 * chunk) - 32768);
	CHECK(fstat(fd, &st) == 0);
	CHECK((uint64_t)st.st_blocks * 512 < size / 2);
out:
	if (fd >= 0)
		close(fd);
	free(back);
	free(mem);
	return ret;
}

#define NO_NAMESPACE 77 /* a child's exit: the kernel let it make no tmpfs of its own */

/* Where the tests' directory is (ext4 here: one writer), then on a tmpfs (two), then on a
 * tmpfs with every copy of the second writer failing (each chunk it took written again). */
static void test_memory_two_writers(void **state)
{
	int status;
	pid_t pid;

	assert_int_equal(two_writers_case(false), 0);
	assert_int_equal(nftw(snapdir, rm_one, 16, FTW_DEPTH | FTW_PHYS), 0);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		if (small_tmpfs_on_base("512m") < 0)
			_exit(NO_NAMESPACE);
		if (two_writers_case(false))
			_exit(1);
		if (nftw(snapdir, rm_one, 16, FTW_DEPTH | FTW_PHYS))
			_exit(2);
		_exit(two_writers_case(true) ? 3 : 0);
	}
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	if (WEXITSTATUS(status) == NO_NAMESPACE)
		skip(); /* not root, and no user namespaces here */
	assert_int_equal(WEXITSTATUS(status), 0);
}

/* The file system fills in the middle of guest RAM: whichever writer meets it first (pwrite's
 * ENOSPC, or the helper's SIGBUS, written again by pwrite), the snapshot fails naming the
 * error and the file, the process lives, and abort leaves nothing. */
static void test_memory_file_system_full(void **state)
{
	const uint64_t size = 96ULL << 20;
	int status;
	pid_t pid = fork();

	assert_true(pid >= 0);
	if (pid == 0) {
		struct fvm_err err = FVM_ERR_INIT;
		struct snap_writer w;
		struct snap_mem_stats ms;
		uint8_t *mem = malloc(size);
		int ret;

		if (!mem)
			_exit(10);
		if (small_tmpfs_on_base("40m") < 0)
			_exit(NO_NAMESPACE);
		memset(mem, 0x5a, size);
		if (snap_writer_begin(&w, snapdir, false, &err) != 0)
			_exit(11);
		ret = snap_writer_put_memory(&w, mem, size, &ms);
		if (ret != -ENOSPC) {
			fprintf(stderr, "put_memory: %d (%s)\n", ret, err.msg);
			_exit(12);
		}
		if (!strstr(err.msg, "/memory at offset ") ||
		    !strstr(err.msg, "No space left on device")) {
			fprintf(stderr, "message: %s\n", err.msg);
			_exit(13);
		}
		snap_writer_abort(&w);
		_exit(count_other_entries(NULL) == 0 ? 0 : 14);
	}
	assert_int_equal(waitpid(pid, &status, 0), pid);
	if (WIFSIGNALED(status))
		fail_msg("the writer died of signal %d", WTERMSIG(status));
	assert_true(WIFEXITED(status));
	if (WEXITSTATUS(status) == NO_NAMESPACE)
		skip(); /* not root, and no user namespaces here */
	assert_int_equal(WEXITSTATUS(status), 0);
}

static void test_open_good(void **state)
{
	struct snap_config c = good_config();
	struct snapshot snap;
	struct fvm_err err = FVM_ERR_INIT;

	make_snapshot(&c, sizeof(c), MEM_SIZE, false);
	assert_int_equal(snap_open(snapdir, &snap, &err), 0);
	assert_int_equal(snap.memory_size, MEM_SIZE);
	assert_non_null(strstr(snap.memory_path, "/snap/memory"));
	assert_non_null(snap_state_find(&snap.state, SNAP_SEC_CONFIG, 0));
	snap_close(&snap);
}

static void expect_open_error(int want_ret, const char *want)
{
	struct snapshot snap;
	struct fvm_err err = FVM_ERR_INIT;

	assert_int_equal(snap_open(snapdir, &snap, &err), want_ret);
	if (!strstr(err.msg, want))
		fail_msg("error '%s' does not contain '%s'", err.msg, want);
	assert_non_null(strstr(err.msg, snapdir));
	assert_null(snap.state.data);
}

static void test_open_errors(void **state)
{
	struct snap_config c = good_config();
	char path[PATH_MAX + 16];

	expect_open_error(-ENOENT, "No such file or directory");
	assert_int_equal(mkdir(snapdir, 0700), 0);
	expect_open_error(-ENOENT, "/snap/vmstate");
	assert_int_equal(rmdir(snapdir), 0);

	make_snapshot(&c, sizeof(c), 4096, false);
	expect_open_error(-EINVAL, "memory file is 4096 bytes, the snapshot says 65536");
	snprintf(path, sizeof(path), "%s/memory", snapdir);
	assert_int_equal(unlink(path), 0);
	expect_open_error(-ENOENT, "/snap/memory");

	snprintf(path, sizeof(path), "%s/vmstate", snapdir);
	write_file(snapdir, "vmstate", "FKVMSNAP\1\0\0\0\20\0\0\0", 16);
	expect_open_error(-EINVAL, "vmstate: missing end section");
}

static void expect_bad_config(const struct snap_config *c, size_t len, const char *want)
{
	assert_int_equal(nftw(base, rm_one, 16, FTW_DEPTH | FTW_PHYS), 0);
	assert_int_equal(mkdir(base, 0700), 0);
	make_snapshot(c, len, MEM_SIZE, false);
	expect_open_error(-EINVAL, want);
}

static void test_open_bad_config(void **state)
{
	struct snapshot snap;
	struct snap_config c;
	struct fvm_err err = FVM_ERR_INIT;

	expect_bad_config(NULL, 0, "no config section");
	c = good_config();
	expect_bad_config(&c, sizeof(c) - 8, "config section is");
	c.nvcpus = 0;
	expect_bad_config(&c, sizeof(c), "config: 0 vCPUs");
	c = good_config();
	c.nvcpus = 17;
	expect_bad_config(&c, sizeof(c), "config: 17 vCPUs");
	c = good_config();
	c.mem_size = MEM_SIZE + 1;
	expect_bad_config(&c, sizeof(c), "not a positive multiple of 4096");
	c = good_config();
	c.regions[0].size = MEM_SIZE / 2;
	expect_bad_config(&c, sizeof(c), "memory regions cover 32768 of 65536 bytes");
	c.nregions = 2;
	c.regions[1] = (typeof(c.regions[1])){ .gpa = 0, .size = MEM_SIZE / 2, .offset = MEM_SIZE / 2 };
	expect_bad_config(&c, sizeof(c), "memory region 1"); /* overlaps region 0 */
	c.regions[1].gpa = 1ULL << 32;
	c.regions[1].offset = 0;
	expect_bad_config(&c, sizeof(c), "memory region 1");
	c.nregions = 3;
	expect_bad_config(&c, sizeof(c), "3 memory regions");
	c = good_config();
	c.guest_kind = 9;
	expect_bad_config(&c, sizeof(c), "unknown guest kind 9");
	c = good_config();
	memset(c.cpu_features, 'a', sizeof(c.cpu_features));
	expect_bad_config(&c, sizeof(c), "not terminated");
	/* The good two-region layout around the hole opens. */
	c = good_config();
	c.nregions = 2;
	c.regions[0].size = MEM_SIZE / 2;
	c.regions[1] = (typeof(c.regions[1])){ 1ULL << 32, MEM_SIZE / 2, MEM_SIZE / 2 };
	assert_int_equal(nftw(base, rm_one, 16, FTW_DEPTH | FTW_PHYS), 0);
	assert_int_equal(mkdir(base, 0700), 0);
	make_snapshot(&c, sizeof(c), MEM_SIZE, false);
	assert_int_equal(snap_open(snapdir, &snap, &err), 0);
	snap_close(&snap);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_commit_creates_dir, setup, teardown),
		cmocka_unit_test_setup_teardown(test_trailing_slash_and_bad_names, setup, teardown),
		cmocka_unit_test_setup_teardown(test_existing_without_force, setup, teardown),
		cmocka_unit_test_setup_teardown(test_force_replaces, setup, teardown),
		cmocka_unit_test_setup_teardown(test_force_refuses_non_snapshot, setup, teardown),
		cmocka_unit_test_setup_teardown(test_abort_leaves_nothing, setup, teardown),
		cmocka_unit_test_setup_teardown(test_write_error_then_abort, setup, teardown),
		cmocka_unit_test_setup_teardown(test_stale_tmp_removed, setup, teardown),
		cmocka_unit_test_setup_teardown(test_stale_old_restored, setup, teardown),
		cmocka_unit_test_setup_teardown(test_memory_sparse, setup, teardown),
		cmocka_unit_test_setup_teardown(test_memory_two_writers, setup, teardown),
		cmocka_unit_test_setup_teardown(test_memory_file_system_full, setup, teardown),
		cmocka_unit_test_setup_teardown(test_open_good, setup, teardown),
		cmocka_unit_test_setup_teardown(test_open_errors, setup, teardown),
		cmocka_unit_test_setup_teardown(test_open_bad_config, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
