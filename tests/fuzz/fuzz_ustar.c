/* libFuzzer harness: the ustar reader and writer (src/core/ustar.c) behind the agent's
 * put_tree/get_tree and `forkvm cp`, both of which read archives from the other side.
 * Input: an archive. Every member the reader returns must have a clean relative path (no
 * leading '/', no empty, "." or ".." component) and data inside the input; whatever it
 * accepts, the writer must write again and the reader give back unchanged. */
#include "fuzz_util.h"
#include "util/errmsg.h"
#include "util/ustar.h"

#include <errno.h>

/* A cleaned member path: relative, components neither empty, ".", nor "..". */
static void check_path(const char *path)
{
	const char *p = path;

	if (path[0] == '/')
		abort();
	while (*p) {
		const char *end = strchrnul(p, '/');
		size_t n = (size_t)(end - p);

		if (n == 0 || (n == 1 && p[0] == '.') || (n == 2 && p[0] == '.' && p[1] == '.'))
			abort();
		p = *end ? end + 1 : end;
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct ustar_entry e, back;
	struct ustar_reader r, again;
	struct ustar_writer w;
	struct fvm_err err = FVM_ERR_INIT;
	int ret, n = 0;

	ustar_reader_init(&r, data, size);
	ustar_writer_init(&w, 4 * size + 64 * USTAR_BLOCK);
	while ((ret = ustar_next(&r, &e, &err)) > 0 && n < 256) {
		check_path(e.path);
		if (e.type == USTAR_FILE && e.size && (e.data < data || e.data + e.size > data + size))
			abort();
		if (e.type != USTAR_FILE && e.size)
			abort();
		if (!e.path[0]) {
			if (e.type != USTAR_DIR)
				abort(); /* only the root directory may have no name */
			continue;
		}
		if (ustar_add(&w, e.type, e.path, e.link, e.mode, e.mtime, e.data, e.size) < 0)
			abort(); /* anything read must be writable again */
		n++;
	}
	if (ret < 0 && !err.msg[0])
		abort(); /* every refusal says why */
	if (ustar_finish(&w) < 0)
		abort();
	/* Read the rewrite back: the same members, in order. */
	ustar_reader_init(&r, data, size);
	ustar_reader_init(&again, w.buf, w.len);
	for (int i = 0; i < n;) {
		if (ustar_next(&r, &e, &err) <= 0)
			abort();
		if (!e.path[0])
			continue;
		if (ustar_next(&again, &back, &err) != 1)
			abort();
		if (back.type != e.type || strcmp(back.path, e.path) || back.size != e.size ||
		    back.mode != e.mode || (e.size && memcmp(back.data, e.data, e.size)) ||
		    (e.type == USTAR_SYMLINK && strcmp(back.link, e.link)) ||
		    (e.mtime >= 0 && e.mtime <= 077777777777 && back.mtime != e.mtime))
			abort();
		i++;
	}
	if (ustar_next(&again, &back, &err) != 0)
		abort();
	ustar_writer_free(&w);
	return 0;
}
