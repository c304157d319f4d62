/* util/: the one monotonic clock and its deadlines, whole-file reads, crash-safe writes,
 * mkdir -p. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "util/clock.h"
#include "util/errmsg.h"
#include "util/fileio.h"
#include "util/guarded_copy.h"
#include "util/unix_sock.h"

static char dir[64];

static int setup(void **state)
{
	snprintf(dir, sizeof(dir), "/tmp/forkvm-util-XXXXXX");
	return mkdtemp(dir) ? 0 : -1;
}

static int teardown(void **state)
{
	char cmd[128];

	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	return system(cmd) == 0 ? 0 : -1;
}

static int entries(const char *path)
{
	DIR *d = opendir(path);
	struct dirent *e;
	int n = 0;

	assert_non_null(d);
	while ((e = readdir(d)))
		n += e->d_name[0] != '.';
	closedir(d);
	return n;
}

static void test_deadlines(void **state)
{
	uint64_t a = monotonic_ns(), d = deadline_after_ms(200);

	assert_true(monotonic_ns() >= a);
	assert_true(d >= a + 200 * NS_PER_MS);
	assert_in_range(deadline_ms_left(d), 150, 200);
	/* Passed deadlines, negative timeouts: nothing left, never a negative poll timeout. */
	assert_int_equal(deadline_ms_left(a), 0);
	assert_int_equal(deadline_ms_left(deadline_after_ms(-5)), 0);
	/* Less than a millisecond left is one millisecond, not a 0 ms busy loop. */
	assert_int_equal(deadline_ms_left(monotonic_ns() + NS_PER_MS / 2), 1);
	/* Far deadlines fit poll(2). */
	assert_int_equal(deadline_ms_left(UINT64_MAX), INT32_MAX);
}

static void test_read_bounds_and_kinds(void **state)
{
	char path[128], link[128], fifo[128];
	struct fvm_err err = FVM_ERR_INIT;
	uint8_t *data;
	size_t len;

	snprintf(path, sizeof(path), "%s/f", dir);
	assert_int_equal(file_write_atomic(path, "hello", 5, 0600, &err), 0);
	assert_int_equal(file_read(path, 5, 0, &data, &len, &err), 0);
	assert_int_equal(len, 5);
	assert_string_equal((char *)data, "hello"); /* NUL-terminated */
	free(data);
	assert_int_equal(file_read(path, 4, 0, &data, &len, &err), -EFBIG);
	assert_non_null(strstr(err.msg, "above the limit of 4"));
	assert_null(data);
	/* Links: followed unless FILE_NOFOLLOW. */
	snprintf(link, sizeof(link), "%s/l", dir);
	assert_int_equal(symlink(path, link), 0);
	assert_int_equal(file_read(link, 100, 0, &data, &len, &err), 0);
	free(data);
	assert_int_equal(file_read(link, 100, FILE_NOFOLLOW, &data, &len, &err),
			 -ELOOP);
	assert_non_null(strstr(err.msg, "symbolic link"));
	/* A FIFO in a file's place: refused at once, not waited on. */
	snprintf(fifo, sizeof(fifo), "%s/p", dir);
	assert_int_equal(mkfifo(fifo, 0600), 0);
	assert_int_equal(file_read(fifo, 100, 0, &data, &len, &err), -EINVAL);
	assert_non_null(strstr(err.msg, "not a regular file"));
	assert_int_equal(file_read(dir, 100, 0, &data, &len, NULL), -EINVAL);
	snprintf(path, sizeof(path), "%s/missing", dir);
	assert_int_equal(file_read(path, 100, 0, &data, &len, &err), -ENOENT);
	assert_non_null(strstr(err.msg, path));
	assert_int_equal(err.errnum, ENOENT); /* the errno travels with the message */
}

/* The one error type (util/errmsg.h): message, errno, bounds and the edge's text. */
static void test_error_type(void **state)
{
	struct fvm_err err = FVM_ERR_INIT;
	char big[3 * FVM_ERR_MSG_MAX];

	(void)state;
	assert_false(errset(&err));
	assert_string_equal(err_text(&err), "(no detail recorded)"); /* never an empty reason */
	assert_string_equal(err_text(NULL), "(no detail recorded)");
	assert_int_equal(errmsg(&err, -ENOSPC, "write %s: %s", "/x", strerror(ENOSPC)), -ENOSPC);
	assert_int_equal(err.errnum, ENOSPC);
	assert_string_equal(err_text(&err), "write /x: No space left on device");
	assert_true(errset(&err));
	/* A positive or zero ret sets the message and keeps the errno as it was. */
	assert_int_equal(errmsg(&err, 1, "partial"), 1);
	assert_int_equal(err.errnum, ENOSPC);
	errf(&err, "trailing newlines go\n\n");
	assert_string_equal(err.msg, "trailing newlines go");
	errappend(&err, "; its log ends: %s", "boom");
	assert_string_equal(err.msg, "trailing newlines go; its log ends: boom");
	/* Bounded: a message longer than the buffer is cut, never overflows. */
	memset(big, 'a', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	errappend(&err, "%s", big);
	assert_int_equal(strlen(err.msg), FVM_ERR_MSG_MAX - 1);
	errappend(&err, "more");
	assert_int_equal(strlen(err.msg), FVM_ERR_MSG_MAX - 1);
	errclear(&err);
	assert_false(errset(&err));
	assert_int_equal(err.errnum, 0);
	/* NULL is allowed everywhere: callers that do not want the message pass none. */
	assert_int_equal(errmsg(NULL, -EINVAL, "ignored"), -EINVAL);
	errf(NULL, "ignored");
	errappend(NULL, "ignored");
	errclear(NULL);
}

static void test_read_pseudo_files(void **state)
{
	uint8_t *data;
	size_t len;

	/* st_size 0, yet there is text: read to EOF, cut at max. */
	assert_int_equal(file_read("/proc/self/status", 1 << 16, FILE_UPTO_MAX, &data, &len, NULL),
			 0);
	assert_true(len > 20);
	assert_non_null(strstr((char *)data, "Name:"));
	free(data);
	assert_int_equal(file_read("/proc/self/status", 5, FILE_UPTO_MAX, &data, &len, NULL), 0);
	assert_int_equal(len, 5);
	assert_string_equal((char *)data, "Name:");
	free(data);
	/* Without FILE_UPTO_MAX the same file "changed size": the size check is for real files. */
	assert_int_equal(file_read("/proc/self/status", 1 << 16, 0, &data, &len, NULL), -EIO);
}

static void test_atomic_write(void **state)
{
	char path[128], sub[128];
	struct fvm_err err = FVM_ERR_INIT;
	struct stat st;
	uint8_t *data;
	size_t len;

	snprintf(path, sizeof(path), "%s/w", dir);
	assert_int_equal(file_write_atomic(path, "one", 3, 0640, &err), 0);
	assert_int_equal(file_write_atomic(path, "two!", 4, 0640, &err), 0);
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0640); /* the mode asked for, whatever the umask */
	assert_int_equal(file_read(path, 10, 0, &data, &len, &err), 0);
	assert_string_equal((char *)data, "two!");
	free(data);
	assert_int_equal(entries(dir), 1); /* no temp file left */
	/* A directory where the file should go: the rename fails, the temp file goes. */
	snprintf(sub, sizeof(sub), "%s/d", dir);
	assert_int_equal(mkdir(sub, 0700), 0);
	assert_int_equal(file_write_atomic(sub, "x", 1, 0600, &err), -EISDIR);
	assert_non_null(strstr(err.msg, "rename"));
	assert_int_equal(entries(dir), 2);
	/* A missing directory: named in the error. */
	snprintf(path, sizeof(path), "%s/no/such", dir);
	assert_int_equal(file_write_atomic(path, "x", 1, 0600, &err), -ENOENT);
	assert_non_null(strstr(err.msg, "create"));
}

static void test_mkdir(void **state)
{
	char path[160], file[160];
	struct stat st;

	snprintf(path, sizeof(path), "%s/a/b/c", dir);
	assert_int_equal(mkdir_parents(path, 0700), 0);
	assert_int_equal(stat(path, &st), -1);
	snprintf(file, sizeof(file), "%s/a/b", dir);
	assert_int_equal(stat(file, &st), 0);
	assert_true(S_ISDIR(st.st_mode));
	assert_int_equal(mkdir_p(path, 0700), 0);
	assert_int_equal(mkdir_p(path, 0700), 0); /* existing: fine */
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0700);
	/* A file in the way. */
	snprintf(file, sizeof(file), "%s/f", dir);
	assert_int_equal(file_write_atomic(file, "x", 1, 0600, NULL), 0);
	snprintf(path, sizeof(path), "%s/f/g", dir);
	assert_int_equal(mkdir_p(path, 0700), -ENOTDIR);
	assert_int_equal(mkdir_p("", 0700), -EINVAL);
}

/* A tree of directories and sparse files copied whole, holes kept; anything else refused. */
static void test_tree_copy(void **state)
{
	char src[160], dst[160], path[200], buf[8];
	struct fvm_err err = FVM_ERR_INIT;
	struct stat st;
	int s, d, fd;

	(void)state;
	snprintf(src, sizeof(src), "%s/src", dir);
	snprintf(dst, sizeof(dst), "%s/dst", dir);
	assert_int_equal(mkdir(src, 0755), 0);
	assert_int_equal(mkdir(dst, 0700), 0);
	snprintf(path, sizeof(path), "%s/sub", src);
	assert_int_equal(mkdir(path, 0755), 0);
	/* 64 MiB with 4 bytes at 32 MiB: a copy of it stays sparse. */
	snprintf(path, sizeof(path), "%s/sub/memory", src);
	fd = open(path, O_WRONLY | O_CREAT, 0644);
	assert_true(fd >= 0);
	assert_int_equal(pwrite(fd, "data", 4, 32 << 20), 4);
	assert_int_equal(ftruncate(fd, 64 << 20), 0);
	close(fd);
	snprintf(path, sizeof(path), "%s/meta.json", src);
	assert_int_equal(file_write_atomic(path, "{}", 2, 0644, NULL), 0);
	s = open(src, O_RDONLY | O_DIRECTORY);
	d = open(dst, O_RDONLY | O_DIRECTORY);
	assert_true(s >= 0 && d >= 0);
	assert_int_equal(tree_copy_at(s, d, &err), 0);
	snprintf(path, sizeof(path), "%s/sub/memory", dst);
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_size, 64 << 20);
	assert_int_equal(st.st_mode & 0777, 0600);
	assert_true(st.st_blocks * 512 < (1 << 20)); /* the holes are holes */
	fd = open(path, O_RDONLY);
	assert_int_equal(pread(fd, buf, 4, 32 << 20), 4);
	assert_memory_equal(buf, "data", 4);
	close(fd);
	snprintf(path, sizeof(path), "%s/sub", dst);
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0700);
	/* A symlink in the tree: refused, named. */
	close(d);
	assert_int_equal(remove_tree_at(AT_FDCWD, dst), 0);
	assert_int_equal(mkdir(dst, 0700), 0);
	d = open(dst, O_RDONLY | O_DIRECTORY);
	snprintf(path, sizeof(path), "%s/sub/link", src);
	assert_int_equal(symlink("/etc/passwd", path), 0);
	assert_int_not_equal(tree_copy_at(s, d, &err), 0);
	assert_non_null(strstr(err.msg, "link is a symbolic link"));
	close(s);
	close(d);
}

static void exit_42(int sig)
{
	(void)sig;
	_exit(42);
}

enum stray { STRAY_BEGUN, STRAY_ENDED };

/* In a child (cmocka catches SIGBUS in this process): the earlier action, the guard begun
 * (and ended), then a store to bad outside any guarded copy. The child's wait status. */
static int stray_sigbus(enum stray how, void (*earlier)(int), uint8_t *bad)
{
	int status = -1;
	pid_t pid = fork();

	assert_true(pid >= 0);
	if (pid == 0) {
		signal(SIGBUS, earlier);
		if (guarded_copy_begin() == 0) {
			if (how == STRAY_ENDED)
				guarded_copy_end();
			memset(bad, 1, 16);
		}
		_exit(0);
	}
	assert_int_equal(waitpid(pid, &status, 0), pid);
	return status;
}

/* A store past the end of a mapped file (SIGBUS, as on a full tmpfs) ends a guarded copy with
 * -EIO and the process goes on; outside a guarded copy the SIGBUS still ends the process. */
static void test_guarded_copy(void **state)
{
	char path[sizeof(dir) + 16], src[8192];
	long page = sysconf(_SC_PAGESIZE);
	uint8_t *map;
	int fd;

	memset(src, 0x5a, sizeof(src));
	snprintf(path, sizeof(path), "%s/mapped", dir);
	fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
	assert_true(fd >= 0);
	assert_int_equal(ftruncate(fd, 2 * page), 0);
	map = mmap(NULL, 2 * page, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	assert_true(map != MAP_FAILED);
	assert_int_equal(ftruncate(fd, page), 0); /* the second page is now past the end */
	assert_int_equal(guarded_copy_begin(), 0);
	assert_int_equal(guarded_copy_begin(), 0); /* nested: one handler, counted */
	assert_int_equal(guarded_copy(map, src, (size_t)page), 0);
	assert_int_equal(guarded_copy(map + page - 16, src, 32), -EIO);
	assert_int_equal(guarded_copy(map + page, src, 16), -EIO);
	assert_int_equal(guarded_copy(map, src + 1, 64), 0); /* and again after a SIGBUS */
	assert_memory_equal(map, src + 1, 64);
	guarded_copy_end();
	guarded_copy_end();
	/* Outside a guarded copy (begun, or ended) a SIGBUS goes to the earlier action: the
	 * default kills, an earlier handler is called. */
	assert_int_equal(stray_sigbus(STRAY_BEGUN, SIG_DFL, map + page), W_EXITCODE(0, SIGBUS));
	assert_int_equal(stray_sigbus(STRAY_ENDED, SIG_DFL, map + page), W_EXITCODE(0, SIGBUS));
	assert_int_equal(stray_sigbus(STRAY_BEGUN, exit_42, map + page), W_EXITCODE(42, 0));
	assert_int_equal(munmap(map, 2 * page), 0);
	close(fd);
}

static void test_unix_connect(void **state)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	char path[300];
	int l, fd;

	/* Too long for sun_path: refused, not cut short to some other socket's name. */
	memset(path, 'a', sizeof(path) - 1);
	path[sizeof(path) - 1] = '\0';
	assert_int_equal(unix_connect(path, 0), -ENAMETOOLONG);
	assert_int_equal(unix_connect("", 0), -EINVAL);
	snprintf(path, sizeof(path), "%s/s", dir);
	assert_int_equal(unix_connect(path, 0), -ENOENT);
	assert_true(strlen(path) < sizeof(sa.sun_path));
	/* A socket file nobody listens on any more. */
	memcpy(sa.sun_path, path, strlen(path) + 1);
	l = socket(AF_UNIX, SOCK_STREAM, 0);
	assert_int_equal(bind(l, (struct sockaddr *)&sa, sizeof(sa)), 0);
	close(l);
	assert_int_equal(unix_connect(path, 0), -ECONNREFUSED);
	unlink(path);
	l = socket(AF_UNIX, SOCK_STREAM, 0);
	assert_int_equal(bind(l, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_int_equal(listen(l, 4), 0);
	fd = unix_connect(path, SOCK_NONBLOCK);
	assert_true(fd >= 0);
	assert_true(fcntl(fd, F_GETFL) & O_NONBLOCK);
	assert_true(fcntl(fd, F_GETFD) & FD_CLOEXEC);
	close(fd);
	close(l);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_deadlines),
		cmocka_unit_test_setup_teardown(test_read_bounds_and_kinds, setup, teardown),
		cmocka_unit_test(test_read_pseudo_files),
		cmocka_unit_test(test_error_type),
		cmocka_unit_test_setup_teardown(test_atomic_write, setup, teardown),
		cmocka_unit_test_setup_teardown(test_mkdir, setup, teardown),
		cmocka_unit_test_setup_teardown(test_tree_copy, setup, teardown),
		cmocka_unit_test_setup_teardown(test_guarded_copy, setup, teardown),
		cmocka_unit_test_setup_teardown(test_unix_connect, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
