/* libFuzzer harness: the newc cpio writer (src/image/cpio.c), the initramfs format. forkvm
 * only writes cpio, so the fuzz input is a list of entries (what a package tree gives the
 * image builder); whatever cpio_write accepts is read back here with a strict newc reader, as
 * the kernel's unpacker would, and must give back exactly the entries added.
 * Input: records of u8 kind (dir, file, symlink, chardev) + permission bits, u8 path length,
 * the path, u16 data length, the data (file contents or symlink target). */
#include "fuzz_util.h"
#include "image/cpio.h"

#include <errno.h>
#include <sys/stat.h>

struct want {
	char path[256];
	uint32_t mode;
	const uint8_t *data;
	size_t size;
};

static uint32_t hex8(const uint8_t *p)
{
	uint32_t v = 0;

	for (int i = 0; i < 8; i++) {
		int c = p[i], d = c >= '0' && c <= '9' ? c - '0' : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;

		if (d < 0)
			abort(); /* fields are 8 upper-case hex digits */
		v = v << 4 | (uint32_t)d;
	}
	return v;
}

static size_t pad4(size_t n)
{
	return (n + 3) & ~(size_t)3;
}

/* Read the archive back; the entries must be the added ones, sorted by path, then the trailer. */
static void verify(const uint8_t *a, size_t len, struct want *w, size_t n)
{
	size_t pos = 0, seen = 0;

	for (;;) {
		uint32_t mode, size, namesz;
		const char *name;

		if (len - pos < 110 || memcmp(a + pos, "070701", 6))
			abort();
		mode = hex8(a + pos + 14);
		size = hex8(a + pos + 54);
		namesz = hex8(a + pos + 94);
		if (namesz == 0 || len - pos - 110 < namesz || a[pos + 110 + namesz - 1])
			abort();
		name = (const char *)a + pos + 110;
		if (strlen(name) != namesz - 1)
			abort(); /* a NUL inside a name */
		pos = pad4(pos + 110 + namesz);
		if (pos > len || len - pos < size)
			abort();
		if (!strcmp(name, "TRAILER!!!")) {
			if (seen != n) {
				fprintf(stderr, "cpio: the unpacker stops at a TRAILER!!! after %zu of %zu "
					"entries\n", seen, n);
				abort();
			}
			if (pad4(pos + size) != len)
				abort(); /* nothing after the trailer */
			return;
		}
		if (seen == n)
			abort();
		/* Entries come out sorted; find this one among the added. */
		int found = 0;
		for (size_t i = 0; i < n; i++) {
			if (strcmp(w[i].path, name))
				continue;
			if (w[i].mode != mode || w[i].size != size ||
			    (size && memcmp(w[i].data, a + pos, size)))
				abort();
			found = 1;
		}
		if (!found)
			abort();
		seen++;
		pos = pad4(pos + size);
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fz f = { data, size, 0 };
	struct cpio_archive ar = { 0 };
	static struct want w[64];
	size_t n = 0;
	uint8_t *out;
	size_t out_len;

	while (fz_left(&f) >= 2 && n < 64) {
		unsigned kind = (unsigned)fz_uint(&f, 1), perm = (kind >> 2) * 0111 & 07777;
		size_t plen, dlen;
		const uint8_t *p = fz_bytes(&f, fz_uint(&f, 1), &plen), *d;
		char path[256], target[1024];
		int ret;

		d = fz_bytes(&f, fz_uint(&f, 2) & 1023, &dlen);
		memcpy(path, p, plen);
		path[plen] = '\0';
		/* Open bug tests/fuzz/crashes/cpio-trailer-name: an entry named TRAILER!!! ends the
		 * archive early for the kernel's unpacker. Stepped around while fuzzing. */
		if (getenv("FORKVM_FUZZ_AVOID_OPEN_BUGS") && strstr(path, "TRAILER!!!"))
			continue;
		switch (kind & 3) {
		case 0:
			ret = cpio_add_dir(&ar, path, perm);
			w[n] = (struct want){ .mode = S_IFDIR | perm };
			break;
		case 1:
			ret = cpio_add_file(&ar, path, perm, d, dlen);
			w[n] = (struct want){ .mode = S_IFREG | perm, .data = d, .size = dlen };
			break;
		case 2:
			memcpy(target, d, dlen);
			target[dlen] = '\0';
			ret = cpio_add_symlink(&ar, path, target);
			w[n] = (struct want){ .mode = S_IFLNK | 0777, .data = d, .size = strlen(target) };
			break;
		default:
			ret = cpio_add_chardev(&ar, path, perm, kind >> 4, dlen);
			w[n] = (struct want){ .mode = S_IFCHR | perm };
			break;
		}
		if (ret == 0) {
			const char *stored = path;

			while (*stored == '/')
				stored++;
			snprintf(w[n].path, sizeof(w[n].path), "%s", stored);
			n++;
		}
	}
	if (n != ar.count)
		abort();
	/* Open bug tests/fuzz/crashes/cpio-empty-archive (qsort(NULL, 0) in cpio_write): the
	 * bounded fuzz run steps around it so it can find others; the replay does not. */
	if (n == 0 && getenv("FORKVM_FUZZ_AVOID_OPEN_BUGS"))
		return 0;
	if (cpio_write(&ar, &out, &out_len) == 0) {
		verify(out, out_len, w, n);
		free(out);
	}
	cpio_free(&ar);
	return 0;
}
