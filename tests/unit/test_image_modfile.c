/* Compressed kernel modules (.ko.xz as in Debian's 6.12, .ko.zst, .ko.gz): reading,
 * locating from modules.order, dependency scan and the plain .ko in the initramfs. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <elf.h>
#include <errno.h>
#include <lzma.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zstd.h>

#include "image/cpio.h"
#include "image/fsutil.h"
#include "image/initramfs.h"
#include "image/moddep.h"
#include "loader/payload.h"

struct blob {
	uint8_t *buf;
	size_t len;
};

/* A relocatable ELF whose .modinfo says "depends=<depends>", padded with module-like bulk. */
static struct blob make_ko(const char *depends)
{
	static const char shstr[] = "\0.modinfo\0.shstrtab";
	char modinfo[256];
	size_t mlen = (size_t)snprintf(modinfo, sizeof(modinfo), "license=GPL%cdepends=%s%cname=x",
				       0, depends, 0) + 1;
	struct blob b = { calloc(1, 64 << 10), 64 << 10 };
	Elf64_Ehdr eh = { .e_type = ET_REL, .e_machine = EM_X86_64, .e_shoff = 1024,
			  .e_ehsize = sizeof(eh), .e_shentsize = sizeof(Elf64_Shdr), .e_shnum = 3,
			  .e_shstrndx = 2 };
	Elf64_Shdr sh[3] = { { 0 },
		{ .sh_name = 1, .sh_type = SHT_PROGBITS, .sh_offset = 128, .sh_size = mlen },
		{ .sh_name = 10, .sh_type = SHT_STRTAB, .sh_offset = 512, .sh_size = sizeof(shstr) } };

	assert_non_null(b.buf);
	memcpy(eh.e_ident, ELFMAG, SELFMAG);
	eh.e_ident[EI_CLASS] = ELFCLASS64;
	eh.e_ident[EI_DATA] = ELFDATA2LSB;
	memcpy(b.buf, &eh, sizeof(eh));
	memcpy(b.buf + 128, modinfo, mlen);
	memcpy(b.buf + 512, shstr, sizeof(shstr));
	memcpy(b.buf + 1024, sh, sizeof(sh));
	for (size_t i = 4096; i < b.len; i++)
		b.buf[i] = (uint8_t)(i * 7 / 13);
	return b;
}

static struct blob compress_xz(struct blob in)
{
	struct blob out = { malloc(lzma_stream_buffer_bound(in.len)), 0 };

	assert_non_null(out.buf);
	assert_int_equal(lzma_easy_buffer_encode(6, LZMA_CHECK_CRC32, NULL, in.buf, in.len, out.buf,
						 &out.len, lzma_stream_buffer_bound(in.len)), LZMA_OK);
	return out;
}

static struct blob compress_zstd(struct blob in)
{
	struct blob out = { malloc(ZSTD_compressBound(in.len)), 0 };

	assert_non_null(out.buf);
	out.len = ZSTD_compress(out.buf, ZSTD_compressBound(in.len), in.buf, in.len, 19);
	assert_false(ZSTD_isError(out.len));
	return out;
}

static struct blob compress_gz(struct blob in)
{
	struct blob out = { 0 };

	assert_int_equal(gzip_compress(in.buf, in.len, &out.buf, &out.len), 0);
	return out;
}

static void put_file(const char *dir, const char *rel, struct blob b)
{
	char path[4096], *slash;
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", dir, rel);
	slash = strrchr(path, '/');
	*slash = 0;
	assert_int_equal(image_mkdir(path, 0755), 0);
	*slash = '/';
	f = fopen(path, "wb");
	assert_non_null(f);
	assert_int_equal(fwrite(b.buf, 1, b.len, f), b.len);
	assert_int_equal(fclose(f), 0);
}

static char *tmpdir(void)
{
	char *dir = strdup("/tmp/forkvm-modfile-XXXXXX");

	assert_non_null(dir);
	assert_non_null(mkdtemp(dir));
	return dir;
}

static void read_back(const char *dir, const char *rel, struct blob want)
{
	char path[4096];
	uint8_t *buf = NULL;
	size_t len = 0;

	snprintf(path, sizeof(path), "%s/%s", dir, rel);
	assert_int_equal(module_read(path, &buf, &len), 0);
	assert_int_equal(len, want.len);
	assert_memory_equal(buf, want.buf, len);
	free(buf);
}

static void test_read_each_format(void **state)
{
	struct blob ko = make_ko("a,b"), xz = compress_xz(ko), zst = compress_zstd(ko),
		    gz = compress_gz(ko);
	char *dir = tmpdir();

	put_file(dir, "m.ko", ko);
	put_file(dir, "m.ko.xz", xz);
	put_file(dir, "m.ko.zst", zst);
	put_file(dir, "m.ko.gz", gz);
	read_back(dir, "m.ko", ko);
	read_back(dir, "m.ko.xz", ko);
	read_back(dir, "m.ko.zst", ko);
	read_back(dir, "m.ko.gz", ko);
	assert_int_equal(remove_tree(dir), 0);
	free(dir);
	free(ko.buf);
	free(xz.buf);
	free(zst.buf);
	free(gz.buf);
}

static void test_read_errors(void **state)
{
	struct blob ko = make_ko(""), xz = compress_xz(ko), text = { (uint8_t *)"not elf", 7 };
	struct blob not_elf = compress_xz(text), half = { xz.buf, xz.len / 2 };
	char *dir = tmpdir(), path[4096];
	uint8_t *buf = NULL;
	size_t len;

	put_file(dir, "half.ko.xz", half);
	put_file(dir, "text.ko.xz", not_elf);
	put_file(dir, "text.ko", text);
	put_file(dir, "wrong.ko.zst", xz); /* xz bytes under a zstd name */
	put_file(dir, "m.bin", ko);
	xz.buf[xz.len / 2] ^= 0x55;
	put_file(dir, "corrupt.ko.xz", xz);
	xz.buf[xz.len / 2] ^= 0x55;
	xz.buf = realloc(xz.buf, xz.len + 4);
	memcpy(xz.buf + xz.len, "JUNK", 4);
	xz.len += 4;
	put_file(dir, "trailing.ko.xz", xz);

	static const struct { const char *name; int err; } cases[] = {
		{ "half.ko.xz", -EINVAL },    { "text.ko.xz", -EINVAL },
		{ "text.ko", -EINVAL },	      { "wrong.ko.zst", -EINVAL },
		{ "m.bin", -EINVAL },	      { "corrupt.ko.xz", -EINVAL },
		{ "trailing.ko.xz", -EINVAL }, { "missing.ko.xz", -ENOENT },
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		snprintf(path, sizeof(path), "%s/%s", dir, cases[i].name);
		assert_int_equal(module_read(path, &buf, &len), cases[i].err);
		assert_null(buf);
	}
	assert_int_equal(remove_tree(dir), 0);
	free(dir);
	free(ko.buf);
	free(xz.buf);
	free(not_elf.buf);
}

static void test_locate(void **state)
{
	struct blob ko = make_ko("");
	char *dir = tmpdir(), found[256];

	put_file(dir, "kernel/a/x.ko.xz", ko);
	put_file(dir, "kernel/a/y.ko", ko);
	put_file(dir, "kernel/a/z.ko.zst", ko);
	assert_int_equal(module_locate(dir, "kernel/a/x.ko", found, sizeof(found)), 0);
	assert_string_equal(found, "kernel/a/x.ko.xz");
	assert_int_equal(module_locate(dir, "kernel/a/y.ko", found, sizeof(found)), 0);
	assert_string_equal(found, "kernel/a/y.ko");
	assert_int_equal(module_locate(dir, "kernel/a/z.ko", found, sizeof(found)), 0);
	assert_string_equal(found, "kernel/a/z.ko.zst");
	assert_int_equal(module_locate(dir, "kernel/a/x.ko.xz", found, sizeof(found)), 0);
	assert_string_equal(found, "kernel/a/x.ko.xz");
	assert_int_equal(module_locate(dir, "kernel/a/w.ko", found, sizeof(found)), -ENOENT);
	assert_int_equal(module_locate(dir, "kernel/a/x.ko", found, 8), -ENAMETOOLONG);
	assert_int_equal(remove_tree(dir), 0);
	free(dir);
	free(ko.buf);
}

/* The shape of Debian's 6.12 package: modules.order and modules.builtin name ".ko", the files
 * are ".ko.xz", virtio and virtio_ring are built in, no modules.dep. */
static void test_scan_xz_tree_and_initramfs(void **state)
{
	static const char order[] = "kernel/drivers/virtio/virtio_mmio.ko\n"
				    "kernel/net/vmw_vsock/vsock.ko\n"
				    "kernel/net/vmw_vsock/vmw_vsock_virtio_transport_common.ko\n"
				    "kernel/net/vmw_vsock/vmw_vsock_virtio_transport.ko\n";
	static const char builtin[] = "kernel/drivers/virtio/virtio.ko\n"
				      "kernel/drivers/virtio/virtio_ring.ko\n";
	const char *roots[] = { "virtio_ring", "virtio", "virtio_mmio", "vmw_vsock_virtio_transport" };
	struct blob mmio = make_ko("virtio,virtio_ring"), vsock = make_ko(""),
		    common = make_ko("vsock,virtio,virtio_ring"),
		    transport = make_ko("vmw_vsock_virtio_transport_common,vsock,virtio,virtio_ring");
	struct blob files[] = { compress_xz(mmio), compress_xz(vsock), compress_xz(common),
				compress_xz(transport) };
	struct blob bin = { (uint8_t *)"#!busybox\n", 10 };
	char *dir = tmpdir(), busybox[4200], *cpio = NULL;
	const struct moddep_module **load = NULL;
	struct moddep g = { 0 };
	uint8_t *gz = NULL;
	size_t gz_len, cpio_len;
	int n = 0;

	put_file(dir, "kernel/drivers/virtio/virtio_mmio.ko.xz", files[0]);
	put_file(dir, "kernel/net/vmw_vsock/vsock.ko.xz", files[1]);
	put_file(dir, "kernel/net/vmw_vsock/vmw_vsock_virtio_transport_common.ko.xz", files[2]);
	put_file(dir, "kernel/net/vmw_vsock/vmw_vsock_virtio_transport.ko.xz", files[3]);
	put_file(dir, "modules.order", (struct blob){ (uint8_t *)order, sizeof(order) - 1 });
	put_file(dir, "busybox", bin);
	assert_int_equal(moddep_parse_builtin(&g, builtin), 0);
	assert_int_equal(moddep_scan(&g, dir, roots, 4), 0);
	assert_int_equal(moddep_resolve(&g, roots, 4, &load, &n), 0);
	assert_int_equal(n, 4);
	assert_string_equal(load[0]->name, "virtio_mmio");
	assert_string_equal(load[0]->path, "kernel/drivers/virtio/virtio_mmio.ko.xz");
	assert_string_equal(load[1]->name, "vsock");
	assert_string_equal(load[2]->name, "vmw_vsock_virtio_transport_common");
	assert_string_equal(load[3]->name, "vmw_vsock_virtio_transport");

	/* The initramfs holds each as a plain .ko (busybox insmod cannot decompress). */
	snprintf(busybox, sizeof(busybox), "%s/busybox", dir);
	struct initramfs_spec spec = { busybox, busybox, dir, load, n };
	assert_int_equal(initramfs_build(&spec, &gz, &gz_len), 0);
	assert_int_equal(gzip_decode(gz, gz_len, (uint8_t **)&cpio, &cpio_len), 0);
	assert_non_null(memmem(cpio, cpio_len, "lib/modules/vsock.ko", 21));
	assert_null(memmem(cpio, cpio_len, ".ko.xz", 6));
	assert_non_null(memmem(cpio, cpio_len, transport.buf, transport.len));
	assert_non_null(memmem(cpio, cpio_len, mmio.buf, mmio.len));

	free(cpio);
	free(gz);
	free(load);
	moddep_free(&g);
	assert_int_equal(remove_tree(dir), 0);
	free(dir);
	for (int i = 0; i < 4; i++)
		free(files[i].buf);
	free(mmio.buf);
	free(vsock.buf);
	free(common.buf);
	free(transport.buf);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_read_each_format),
		cmocka_unit_test(test_read_errors),
		cmocka_unit_test(test_locate),
		cmocka_unit_test(test_scan_xz_tree_and_initramfs),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
