/* jail/jail_adopt: a directory a (possibly hostile) jailed uid wrote is taken over only when
 * it holds nothing but that uid's regular files and directories; anything else is refused,
 * named, and nothing of it stays behind. Needs root (it gives files away and takes them). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "jail/jail_adopt.h"
#include "util/fileio.h"

#define JAIL_UID 200999001u

struct fixture {
	char base[64];
	int from, to; /* base/jail (the VMM's directory), base/store (root's) */
};

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));
	char path[128];

	if (!f)
		return -1;
	snprintf(f->base, sizeof(f->base), "/tmp/adopt-XXXXXX");
	if (!mkdtemp(f->base))
		return -1;
	snprintf(path, sizeof(path), "%s/jail", f->base);
	if (mkdir(path, 0700) < 0 || chown(path, JAIL_UID, JAIL_UID) < 0)
		return -1;
	f->from = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	snprintf(path, sizeof(path), "%s/store", f->base);
	if (mkdir(path, 0700) < 0)
		return -1;
	f->to = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	*state = f;
	return f->from < 0 || f->to < 0 ? -1 : 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;

	close(f->from);
	close(f->to);
	remove_tree_at(AT_FDCWD, f->base);
	free(f);
	return 0;
}

/* A file in dirfd as the jail's uid would have written it. */
static void put_file(int dirfd, const char *name, uid_t owner)
{
	int fd = openat(dirfd, name, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);

	assert_true(fd >= 0);
	assert_int_equal(write(fd, "data", 4), 4);
	assert_int_equal(fchown(fd, owner, owner), 0);
	close(fd);
}

/* base/jail/NAME with vmstate, memory and layer-1/vmstate, all the jail's. */
static int make_snapshot(struct fixture *f, const char *name)
{
	int dir, layer;

	assert_int_equal(mkdirat(f->from, name, 0755), 0);
	assert_int_equal(fchownat(f->from, name, JAIL_UID, JAIL_UID, 0), 0);
	dir = openat(f->from, name, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	assert_true(dir >= 0);
	put_file(dir, "vmstate", JAIL_UID);
	put_file(dir, "memory", JAIL_UID);
	assert_int_equal(mkdirat(dir, "layer-1", 0755), 0);
	assert_int_equal(fchownat(dir, "layer-1", JAIL_UID, JAIL_UID, 0), 0);
	layer = openat(dir, "layer-1", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	assert_true(layer >= 0);
	put_file(layer, "vmstate", JAIL_UID);
	close(layer);
	return dir;
}

static void assert_root_owned(int dirfd, const char *name, mode_t mode)
{
	struct stat st;

	assert_int_equal(fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW), 0);
	assert_int_equal(st.st_uid, 0);
	assert_int_equal(st.st_gid, 0);
	assert_int_equal(st.st_mode & 07777, mode);
}

static void test_a_clean_tree_becomes_roots(void **state)
{
	struct fixture *f = *state;
	struct fvm_err err = FVM_ERR_INIT;

	close(make_snapshot(f, "sn-1"));
	assert_int_equal(jail_adopt_dir(f->from, "sn-1", f->to, "sn-1", JAIL_UID, &err), 0);
	assert_int_equal(faccessat(f->from, "sn-1", F_OK, AT_SYMLINK_NOFOLLOW), -1);
	assert_root_owned(f->to, "sn-1", 0700);
	assert_root_owned(f->to, "sn-1/vmstate", 0600);
	assert_root_owned(f->to, "sn-1/memory", 0600);
	assert_root_owned(f->to, "sn-1/layer-1", 0700);
	assert_root_owned(f->to, "sn-1/layer-1/vmstate", 0600);
}

/* Each way a hostile VMM could make root read or own something that is not its snapshot. */
static void refused(struct fixture *f, void (*plant)(int dir), const char *needle)
{
	struct fvm_err err = FVM_ERR_INIT;
	int dir = make_snapshot(f, "sn-bad");

	plant(dir);
	close(dir);
	assert_true(jail_adopt_dir(f->from, "sn-bad", f->to, "sn-bad", JAIL_UID, &err) < 0);
	assert_non_null(strstr(err.msg, needle));
	/* nothing of it stays: not in the store, not in the jail */
	assert_int_equal(faccessat(f->to, "sn-bad", F_OK, AT_SYMLINK_NOFOLLOW), -1);
	assert_int_equal(faccessat(f->from, "sn-bad", F_OK, AT_SYMLINK_NOFOLLOW), -1);
	/* and what a symlink or link pointed at is untouched */
	struct stat st;
	assert_int_equal(stat("/etc/passwd", &st), 0);
	assert_int_equal(st.st_uid, 0);
}

static void plant_symlink(int dir)
{
	assert_int_equal(symlinkat("/etc/passwd", dir, "memory2"), 0);
}

static void plant_root_file(int dir)
{
	/* what a hard link to a file of root's would look like: root's inode in the jail */
	int layer = openat(dir, "layer-1", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	put_file(layer, "disk0-0.ovl", 0);
	close(layer);
}

static void plant_fifo(int dir)
{
	assert_int_equal(mkfifoat(dir, "hotpages", 0600), 0);
	assert_int_equal(fchownat(dir, "hotpages", JAIL_UID, JAIL_UID, AT_SYMLINK_NOFOLLOW), 0);
}

static void test_a_symlink_is_refused(void **state)
{
	refused(*state, plant_symlink, "sn-bad/memory2: a symbolic link");
}

static void test_a_file_of_another_uid_is_refused(void **state)
{
	refused(*state, plant_root_file, "sn-bad/layer-1/disk0-0.ovl: owned by uid 0");
}

static void test_a_fifo_is_refused(void **state)
{
	refused(*state, plant_fifo, "sn-bad/hotpages: a FIFO");
}

static void test_the_directory_itself_must_be_one_of_the_jails(void **state)
{
	struct fixture *f = *state;
	struct fvm_err err = FVM_ERR_INIT;

	/* a symlink in the directory's place: nothing moves */
	assert_int_equal(symlinkat("/etc", f->from, "sn-link"), 0);
	assert_int_equal(jail_adopt_dir(f->from, "sn-link", f->to, "sn-link", JAIL_UID, &err),
			 -ENOTDIR);
	assert_non_null(strstr(err.msg, "a symbolic link"));
	assert_int_equal(faccessat(f->to, "sn-link", F_OK, AT_SYMLINK_NOFOLLOW), -1);
	assert_int_equal(faccessat(f->from, "sn-link", F_OK, AT_SYMLINK_NOFOLLOW), 0);
	/* a directory of another uid: refused once moved, and removed */
	close(make_snapshot(f, "sn-other"));
	assert_int_equal(fchownat(f->from, "sn-other", JAIL_UID + 1, JAIL_UID + 1, 0), 0);
	errclear(&err);
	assert_int_equal(jail_adopt_dir(f->from, "sn-other", f->to, "sn-other", JAIL_UID, &err),
			 -EPERM);
	assert_non_null(strstr(err.msg, "not the jail's"));
	assert_int_equal(faccessat(f->to, "sn-other", F_OK, AT_SYMLINK_NOFOLLOW), -1);
}

/* A file of the jail's with a second name (a disk layer linked into the snapshot, or a link
 * the VMM kept): a root copy replaces it in the snapshot; the other name stays the VMM's. */
static void test_a_hard_linked_file_is_copied_not_taken(void **state)
{
	struct fixture *f = *state;
	struct fvm_err err = FVM_ERR_INIT;
	struct stat kept, got;
	char buf[8] = "";
	int dir = make_snapshot(f, "sn-3"), fd;

	assert_int_equal(linkat(dir, "memory", f->from, "kept", 0), 0);
	close(dir);
	assert_int_equal(jail_adopt_dir(f->from, "sn-3", f->to, "sn-3", JAIL_UID, &err), 0);
	assert_root_owned(f->to, "sn-3/memory", 0600);
	assert_int_equal(fstatat(f->from, "kept", &kept, 0), 0);
	assert_int_equal(fstatat(f->to, "sn-3/memory", &got, 0), 0);
	assert_int_equal(kept.st_uid, JAIL_UID); /* not made root's */
	assert_int_equal(kept.st_nlink, 1);
	assert_true(kept.st_ino != got.st_ino);
	fd = openat(f->to, "sn-3/memory", O_RDONLY);
	assert_int_equal(read(fd, buf, 4), 4);
	close(fd);
	assert_memory_equal(buf, "data", 4);
	assert_int_equal(faccessat(f->to, "sn-3/.memory.adopt-copy", F_OK, 0), -1);
}

/* A file the VMM still has open for writing (it could rewrite it after the adoption): a
 * root copy replaces it; the descriptor writes to the old inode only. */
static void test_a_file_open_for_writing_is_copied(void **state)
{
	struct fixture *f = *state;
	struct fvm_err err = FVM_ERR_INIT;
	struct stat kept, got;
	int dir = make_snapshot(f, "sn-4");
	int w = openat(dir, "memory", O_WRONLY | O_CLOEXEC);

	assert_true(w >= 0);
	close(dir);
	assert_int_equal(jail_adopt_dir(f->from, "sn-4", f->to, "sn-4", JAIL_UID, &err), 0);
	assert_root_owned(f->to, "sn-4/memory", 0600);
	assert_int_equal(fstat(w, &kept), 0);
	assert_int_equal(fstatat(f->to, "sn-4/memory", &got, 0), 0);
	assert_true(kept.st_ino != got.st_ino);
	assert_int_equal(write(w, "evil", 4), 4); /* lands in the old inode, not the snapshot */
	close(w);
	assert_int_equal(fstatat(f->to, "sn-4/vmstate", &got, 0), 0); /* the others taken */
}

static void test_an_existing_target_is_never_replaced(void **state)
{
	struct fixture *f = *state;
	struct fvm_err err = FVM_ERR_INIT;

	close(make_snapshot(f, "sn-2"));
	assert_int_equal(mkdirat(f->to, "sn-2", 0700), 0);
	put_file(f->to, "keep", 0);
	assert_int_equal(jail_adopt_dir(f->from, "sn-2", f->to, "sn-2", JAIL_UID, &err), -EEXIST);
	assert_int_equal(faccessat(f->from, "sn-2/vmstate", F_OK, 0), 0);
	assert_int_equal(faccessat(f->to, "keep", F_OK, 0), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_a_clean_tree_becomes_roots, setup, teardown),
		cmocka_unit_test_setup_teardown(test_a_symlink_is_refused, setup, teardown),
		cmocka_unit_test_setup_teardown(test_a_file_of_another_uid_is_refused, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_a_fifo_is_refused, setup, teardown),
		cmocka_unit_test_setup_teardown(test_a_hard_linked_file_is_copied_not_taken, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_a_file_open_for_writing_is_copied, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_the_directory_itself_must_be_one_of_the_jails,
						setup, teardown),
		cmocka_unit_test_setup_teardown(test_an_existing_target_is_never_replaced, setup,
						teardown),
	};

	if (geteuid() != 0) {
		fprintf(stderr, "test_jail_adopt: needs root (it changes owners)\n");
		return 1;
	}
	return cmocka_run_group_tests(tests, NULL, NULL);
}
