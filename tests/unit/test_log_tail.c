/* log_tail_append: the end of a failed child's log, quoted safely into an error message. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "util/log_tail.h"

static char path[256];

static int setup(void **state)
{
	int fd;

	snprintf(path, sizeof(path), "%s/forkvm-tail-XXXXXX", getenv("TMPDIR") ?: "/tmp");
	fd = mkstemp(path);
	if (fd < 0)
		return -1;
	close(fd);
	return 0;
}

static int teardown(void **state)
{
	unlink(path);
	return 0;
}

static void put(const void *data, size_t len)
{
	FILE *f = fopen(path, "wb");

	assert_non_null(f);
	assert_int_equal(fwrite(data, 1, len, f), len);
	assert_int_equal(fclose(f), 0);
}

static void test_last_lines_only(void **state)
{
	char buf[1024] = "head";
	const char text[] = "one\ntwo\n\nthree\r\nfour\rfive\n";

	put(text, sizeof(text) - 1);
	/* Blank lines do not count; \r\n and \r end lines too (consoles). */
	assert_int_equal(log_tail_append(path, 3, buf, sizeof(buf)), 3);
	assert_string_equal(buf, "head\n    | three\n    | four\n    | five");
	buf[0] = '\0';
	assert_int_equal(log_tail_append(path, 10, buf, sizeof(buf)), 5);
	assert_string_equal(buf, "\n    | one\n    | two\n    | three\n    | four\n    | five");
}

static void test_no_newline_at_the_end(void **state)
{
	char buf[256] = "";

	put("a\nlast words", 12);
	assert_int_equal(log_tail_append(path, 1, buf, sizeof(buf)), 1);
	assert_string_equal(buf, "\n    | last words");
}

static void test_unsafe_bytes_become_question_marks(void **state)
{
	char buf[256] = "";
	static const char text[] = "esc\x1b[0m caf\xc3\xa9\x7f\ttab\n";

	put(text, sizeof(text) - 1);
	assert_int_equal(log_tail_append(path, 1, buf, sizeof(buf)), 1);
	assert_string_equal(buf, "\n    | esc?[0m caf???\ttab");
}

static void test_long_lines_are_cut_and_buffer_bounded(void **state)
{
	char line[1000], buf[4096] = "", tiny[40] = "x";

	memset(line, 'z', sizeof(line) - 1);
	line[sizeof(line) - 1] = '\n';
	put(line, sizeof(line));
	assert_int_equal(log_tail_append(path, 1, buf, sizeof(buf)), 1);
	assert_int_equal(strlen(buf), strlen("\n    | ") + 240 + strlen(" ..."));
	assert_string_equal(buf + strlen(buf) - 4, " ...");
	/* A small buffer is filled, never overrun, and stays NUL-terminated. */
	log_tail_append(path, 1, tiny, sizeof(tiny));
	assert_true(strlen(tiny) < sizeof(tiny));
	assert_memory_equal(tiny, "x\n    | zzz", 11);
}

static void test_only_the_last_16k_are_read(void **state)
{
	size_t n = 64 * 1024;
	char *big = malloc(n), buf[512] = "";

	assert_non_null(big);
	/* Lines of 99 'a' + newline; the very last one says where it is. */
	for (size_t i = 0; i < n; i++)
		big[i] = i % 100 == 99 ? '\n' : 'a';
	memcpy(big + n - 100, "the end", 7);
	put(big, n);
	free(big);
	assert_int_equal(log_tail_append(path, 2, buf, sizeof(buf)), 2);
	assert_non_null(strstr(buf, "the end"));
}

static void test_empty_and_missing(void **state)
{
	char buf[64] = "kept";

	put("", 0);
	assert_int_equal(log_tail_append(path, 10, buf, sizeof(buf)), 0);
	assert_string_equal(buf, "kept");
	put("\n\n\r\n", 4);
	assert_int_equal(log_tail_append(path, 10, buf, sizeof(buf)), 0);
	unlink(path);
	assert_int_equal(log_tail_append(path, 10, buf, sizeof(buf)), -ENOENT);
	assert_string_equal(buf, "kept");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_last_lines_only, setup, teardown),
		cmocka_unit_test_setup_teardown(test_no_newline_at_the_end, setup, teardown),
		cmocka_unit_test_setup_teardown(test_unsafe_bytes_become_question_marks, setup, teardown),
		cmocka_unit_test_setup_teardown(test_long_lines_are_cut_and_buffer_bounded, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_only_the_last_16k_are_read, setup, teardown),
		cmocka_unit_test_setup_teardown(test_empty_and_missing, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
