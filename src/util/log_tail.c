/* Quoting the end of a log file in an error message. */
#include "util/log_tail.h"

#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define TAIL_BYTES (16 * 1024)
#define TAIL_MAX_LINES 64
#define TAIL_LINE_CHARS 240

/* The last TAIL_BYTES of the file into chunk (NUL-terminated); *partial: it starts mid-line. */
static ssize_t read_end(const char *path, char *chunk, bool *partial)
{
	struct stat st;
	ssize_t n = 0;
	off_t from;
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);

	if (fd < 0)
		return -errno;
	if (fstat(fd, &st) < 0) {
		n = -errno;
		goto out;
	}
	from = st.st_size > TAIL_BYTES ? st.st_size - TAIL_BYTES : 0;
	*partial = from > 0;
	while (n < TAIL_BYTES) {
		ssize_t r = pread(fd, chunk + n, (size_t)(TAIL_BYTES - n), from + n);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			n = -errno;
			goto out;
		}
		if (r == 0)
			break;
		n += r;
	}
	chunk[n] = '\0';
out:
	close(fd);
	return n;
}

int log_tail_append(const char *path, int nlines, char *buf, size_t len)
{
	char chunk[TAIL_BYTES + 1];
	size_t starts[TAIL_MAX_LINES], ends[TAIL_MAX_LINES], used = strlen(buf);
	bool partial = false;
	ssize_t n = read_end(path, chunk, &partial);
	int count = 0, first;

	if (n < 0)
		return (int)n;
	if (nlines > TAIL_MAX_LINES)
		nlines = TAIL_MAX_LINES;
	/* Lines end at \n or \r (consoles write \r\n); a cut first line is dropped. */
	for (size_t i = 0, start = 0; i <= (size_t)n; i++) {
		if (i < (size_t)n && chunk[i] != '\n' && chunk[i] != '\r')
			continue;
		if (i > start && !(partial && start == 0) && nlines > 0) {
			starts[count % nlines] = start;
			ends[count % nlines] = i;
			count++;
		}
		start = i + 1;
	}
	first = count > nlines ? count - nlines : 0;
	for (int k = first; k < count && used + 8 < len; k++) {
		size_t s = starts[k % nlines], e = ends[k % nlines];
		size_t cut = e - s > TAIL_LINE_CHARS ? TAIL_LINE_CHARS : e - s;
		int w = snprintf(buf + used, len - used, "\n    | ");
		if (w < 0 || (size_t)w >= len - used)
			break;
		used += (size_t)w;
		for (size_t c = 0; c < cut && used + 1 < len; c++) {
			unsigned char ch = (unsigned char)chunk[s + c];
			/* ASCII only: the message may end up in JSON, which needs valid UTF-8. */
			buf[used++] = ch == '\t' || (ch >= 0x20 && ch < 0x7f) ? (char)ch : '?';
		}
		if (cut < e - s && used + 4 < len) {
			memcpy(buf + used, " ...", 4);
			used += 4;
		}
		buf[used] = '\0';
	}
	return count - first;
}
