/* util/pagemap: the bits the huge-page repair trusts (present; mapped by this process alone,
 * and not once a fork shares the page), and a forked child's descriptor: its own page tables,
 * the parent's number left alone. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <unistd.h>

#include "util/pagemap.h"

static uint64_t entry(const void *addr)
{
	uint64_t e = 0;
	int fd = pagemap_fd();

	if (fd < 0 || pread(fd, &e, sizeof(e), (off_t)((uintptr_t)addr / 4096 * sizeof(e))) !=
			      (ssize_t)sizeof(e))
		return UINT64_MAX;
	return e;
}

static void test_present_and_exclusive(void **state)
{
	(void)state;
	char *p = mmap(NULL, 2 * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	assert_ptr_not_equal(p, MAP_FAILED);
	p[0] = 1;
	uint64_t touched = entry(p), untouched = entry(p + 4096);
	assert_int_not_equal(touched, UINT64_MAX);
	assert_true(touched & PAGEMAP_PRESENT);
	assert_true(touched & PAGEMAP_EXCLUSIVE);
	assert_false(untouched & PAGEMAP_PRESENT);
	munmap(p, 2 * 4096);
}

/* Exit status of the child: 0 when every check held, else the number of the first that did not. */
static int child_checks(char *shared_page, int parent_fd)
{
	int other, fd;
	struct stat st;

	/* What a cow child does: close what it inherited; the number then names its own file. */
	close(parent_fd);
	other = open("/dev/null", O_RDONLY | O_CLOEXEC);
	if (other < 0 || (other != parent_fd && dup2(other, parent_fd) < 0))
		return 1;
	/* Still shared with the parent: not this process's alone. */
	if (!(entry(shared_page) & PAGEMAP_PRESENT) || (entry(shared_page) & PAGEMAP_EXCLUSIVE))
		return 2;
	fd = pagemap_fd();
	if (fd < 0 || fd == parent_fd)
		return 3;
	/* The parent's number was left alone: it is still /dev/null. */
	if (fstat(parent_fd, &st) < 0 || !S_ISCHR(st.st_mode) || st.st_rdev != makedev(1, 3))
		return 4;
	shared_page[0] = 2; /* copied on write: now its own */
	if (!(entry(shared_page) & PAGEMAP_EXCLUSIVE))
		return 5;
	return 0;
}

static void test_forked_child_reads_its_own_and_closes_nothing(void **state)
{
	(void)state;
	char *p = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	int fd, status;
	pid_t pid;

	assert_ptr_not_equal(p, MAP_FAILED);
	p[0] = 1;
	assert_int_equal(pagemap_preopen(), 0);
	fd = pagemap_fd();
	assert_true(fd >= 0);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0)
		_exit(child_checks(p, fd));
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
	/* The parent's descriptor is untouched and its page its own again. */
	assert_int_equal(pagemap_fd(), fd);
	assert_true(entry(p) & PAGEMAP_EXCLUSIVE);
	munmap(p, 4096);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_present_and_exclusive),
		cmocka_unit_test(test_forked_child_reads_its_own_and_closes_nothing),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
