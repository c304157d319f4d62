/* libFuzzer harness: diff layers (src/snapshot/snap_chain.c): a layer's `parent` link, the
 * parent's vmstate it pins by hash, and its `pages` file, applied onto a small fake guest RAM
 * through snap_layers_apply(), as a restore from a layer does.
 *
 * The files are written into a scratch directory (mkdtemp, removed at exit):
 *   ROOT/base/vmstate, ROOT/layer/{vmstate,parent,pages}
 * Input: u8 flags, u16 parent-link length, the parent link, u16 vmstate length, the vmstate,
 * then the rest is the pages file. Flags (so the fuzzer gets past the hashes):
 *   1  replace the parent link with "ROOT/base <correct hash>"
 *   2  replace the last 8 bytes of pages with their correct XXH64
 *   4  no parent file at all
 *   8  the parent link names the layer itself, correct hash (a loop: must end, ELOOP)
 *
 * FORKVM_FUZZ_WRITE_SEEDS=DIR writes the seed corpus (see tests/fuzz/make_corpus.sh). */
#include "fuzz_util.h"
#include "mem/guest_mem.h"
#include "snapshot/snap_layer.h"

#include <dirent.h>
#include <ftw.h>
#include <unistd.h>
#include <xxhash.h>

#define RAM_PAGES 16
#define PAGE 4096

static char root[256], base_dir[300], layer_dir[300];
static uint8_t *ram;

static int rm_one(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
	return remove(path);
}

static void cleanup(void)
{
	if (root[0])
		nftw(root, rm_one, 8, FTW_DEPTH | FTW_PHYS);
}

static void setup(void)
{
	if (root[0])
		return;
	snprintf(root, sizeof(root), "%s/forkvm-fuzz-layer-XXXXXX", fz_tmpdir());
	if (!mkdtemp(root))
		abort();
	snprintf(base_dir, sizeof(base_dir), "%s/base", root);
	snprintf(layer_dir, sizeof(layer_dir), "%s/layer", root);
	if (mkdir(base_dir, 0700) || mkdir(layer_dir, 0700))
		abort();
	ram = malloc(RAM_PAGES * PAGE);
	if (!ram)
		abort();
	atexit(cleanup);
}

static void write_in(const char *dir, const char *name, const void *buf, size_t len)
{
	char path[400];

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	fz_write_file(path, buf, len);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fz f = { data, size, 0 };
	struct guest_mem mem;
	unsigned flags;
	const uint8_t *link, *vmstate, *pages_in;
	size_t link_len, vm_len, pages_len;
	uint8_t *pages;
	char buf[512], path[400];
	struct fvm_err err = FVM_ERR_INIT;

	setup();
	flags = (unsigned)fz_uint(&f, 1);
	link = fz_bytes(&f, fz_uint(&f, 2), &link_len);
	vmstate = fz_bytes(&f, fz_uint(&f, 2), &vm_len);
	pages_in = fz_bytes(&f, fz_left(&f), &pages_len);

	write_in(base_dir, "vmstate", vmstate, vm_len);
	write_in(layer_dir, "vmstate", vmstate, vm_len);
	snprintf(path, sizeof(path), "%s/parent", layer_dir);
	unlink(path);
	if (flags & 8) {
		snprintf(buf, sizeof(buf), "%s %016llx\n", layer_dir,
			 (unsigned long long)XXH64(vmstate, vm_len, 0));
		write_in(layer_dir, "parent", buf, strlen(buf));
	} else if (flags & 1) {
		snprintf(buf, sizeof(buf), "%s %016llx\n", base_dir,
			 (unsigned long long)XXH64(vmstate, vm_len, 0));
		write_in(layer_dir, "parent", buf, strlen(buf));
	} else if (!(flags & 4)) {
		write_in(layer_dir, "parent", link, link_len);
	}
	pages = fz_dup(pages_in, pages_len);
	if ((flags & 2) && pages_len >= 8) {
		uint64_t sum = XXH64(pages, pages_len - 8, 0);

		for (int i = 0; i < 8; i++)
			pages[pages_len - 8 + i] = (uint8_t)(sum >> (8 * i));
	}
	write_in(layer_dir, "pages", pages, pages_len);
	free(pages);

	memset(&mem, 0, sizeof(mem));
	mem.backing = GUEST_MEM_ANON;
	mem.size = mem.map_size = RAM_PAGES * PAGE;
	mem.host = ram;
	mem.fd = -1;
	mem.page_size = PAGE;
	mem.nregions = 1;
	mem.regions[0].size = mem.size;
	errclear(&err);
	if (snap_layers_apply(&mem, layer_dir, &err)) {
		if (!errset(&err))
			abort(); /* every failure must say why */
		if (getenv("FORKVM_FUZZ_VERBOSE"))
			fprintf(stderr, "apply: %s\n", err.msg);
	}
	return 0;
}

/* ---- seed corpus ---- */

static void put_le(uint8_t *p, uint64_t v, int bytes)
{
	for (int i = 0; i < bytes; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

/* flags, no link, a small vmstate, then a pages file with the given page indices. */
static void seed(const char *dir, const char *name, unsigned flags, const char *link,
		 const uint64_t *idx, size_t n, int fix_sum)
{
	size_t link_len = link ? strlen(link) : 0, vm_len = 24;
	size_t pages_len = 24 + n * 8 + n * PAGE + 8, len = 5 + link_len + vm_len + pages_len;
	uint8_t *s = calloc(1, len), *p;
	char path[4096];

	if (!s)
		abort();
	s[0] = (uint8_t)flags;
	put_le(s + 1, link_len, 2);
	if (link_len)
		memcpy(s + 3, link, link_len);
	put_le(s + 3 + link_len, vm_len, 2);
	memcpy(s + 5 + link_len, "FKVMSNAP\1\0\0\0\20\0\0\0not-real", vm_len);
	p = s + 5 + link_len + vm_len;
	memcpy(p, SNAP_PAGES_MAGIC, 8);
	put_le(p + 8, 1, 4);
	put_le(p + 12, PAGE, 4);
	put_le(p + 16, n, 8);
	for (size_t k = 0; k < n; k++) {
		put_le(p + 24 + 8 * k, idx[k], 8);
		memset(p + 24 + 8 * n + k * PAGE, 0x41 + (int)k, PAGE);
	}
	if (fix_sum)
		put_le(p + pages_len - 8, XXH64(p, pages_len - 8, 0), 8);
	snprintf(path, sizeof(path), "%s/%s", dir, name);
	fz_write_file(path, s, len);
	free(s);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	const char *dir = getenv("FORKVM_FUZZ_WRITE_SEEDS");
	static const uint64_t two[] = { 1, 7 }, last[] = { RAM_PAGES - 1 }, bad_order[] = { 5, 3 },
			      out[] = { RAM_PAGES };

	if (!dir)
		return 0;
	seed(dir, "two-pages", 1, NULL, two, 2, 1);
	seed(dir, "empty-layer", 1, NULL, NULL, 0, 1);
	seed(dir, "last-page-fixsum", 3, NULL, last, 1, 0);
	seed(dir, "unsorted", 1, NULL, bad_order, 2, 1);
	seed(dir, "out-of-range", 1, NULL, out, 1, 1);
	seed(dir, "bad-checksum", 1, NULL, two, 2, 0);
	seed(dir, "link-garbage", 0, "/nonexistent 0123456789abcdef\n", two, 2, 1);
	seed(dir, "link-one-word", 0, "/tmp", two, 2, 1);
	seed(dir, "no-parent-file", 4, NULL, two, 2, 1);
	seed(dir, "self-loop", 8, NULL, two, 2, 1);
	exit(0);
}
