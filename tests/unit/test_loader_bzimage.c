/* bzImage setup-header validation, zero page contents and a full load into fake guest RAM. */
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

#include "loader/kernel.h"
#include "mem/guest_mem.h"
#include "x86/layout.h"

#define SETUP_SECTS 4
#define PM_SIZE 8192
#define IMG_SIZE ((SETUP_SECTS + 1) * 512 + PM_SIZE)

static void put16(uint8_t *b, size_t off, uint16_t v) { memcpy(b + off, &v, 2); }
static void put32(uint8_t *b, size_t off, uint32_t v) { memcpy(b + off, &v, 4); }
static void put64(uint8_t *b, size_t off, uint64_t v) { memcpy(b + off, &v, 8); }
static uint32_t get32(const uint8_t *b, size_t off) { uint32_t v; memcpy(&v, b + off, 4); return v; }

/* A minimal well-formed 2.15 bzImage with an LZ4-looking payload. */
static uint8_t *make_bzimage(void)
{
	uint8_t *b = calloc(1, IMG_SIZE);

	b[0x1f1] = SETUP_SECTS;
	put32(b, 0x1f4, PM_SIZE / 16);
	put16(b, 0x1fe, 0xaa55);
	b[0x200] = 0xeb;
	b[0x201] = 0x6a; /* header ends at 0x26c */
	memcpy(b + 0x202, "HdrS", 4);
	put16(b, 0x206, 0x020f);
	b[0x211] = SETUP_LOADED_HIGH;
	put32(b, 0x22c, 0x7fffffff);
	put32(b, 0x230, 0x200000);
	b[0x234] = 1;
	put16(b, 0x236, SETUP_XLF_KERNEL_64);
	put32(b, 0x238, 2047);
	put32(b, 0x248, 0x100);
	put32(b, 0x24c, 64);
	put64(b, 0x258, 0x1000000);
	put32(b, 0x260, 0x100000);
	put32(b, (SETUP_SECTS + 1) * 512 + 0x100, LZ4_LEGACY_MAGIC);
	return b;
}

static int parse(uint8_t *b, size_t len, struct kernel_info *info)
{
	int ret = kernel_parse("test-bzImage", b, len, info);

	free(b);
	return ret;
}

static void test_good_header(void **state)
{
	struct kernel_info info;

	assert_int_equal(parse(make_bzimage(), IMG_SIZE, &info), 0);
	assert_int_equal(info.format, KERNEL_BZIMAGE);
	assert_int_equal(info.setup_size, 5 * 512);
	assert_int_equal(info.pm_size, PM_SIZE);
	assert_int_equal(info.hdr.version, 0x020f);
	assert_int_equal(info.payload, PAYLOAD_LZ4);
	assert_int_equal(info.load_addr, 0x1000000);
	assert_int_equal(info.mem_size, 0x100000);
	assert_int_equal(info.hdr_len, 0x26c - 0x1f1);
}

static void test_setup_sects_zero_means_four(void **state)
{
	struct kernel_info info;
	uint8_t *b = make_bzimage();

	b[0x1f1] = 0;
	assert_int_equal(parse(b, IMG_SIZE, &info), 0);
	assert_int_equal(info.setup_size, 5 * 512);
}

static void test_rejects(void **state)
{
	struct kernel_info info;
	uint8_t *b;

	b = make_bzimage(); put16(b, 0x1fe, 0x1234);
	assert_int_equal(parse(b, IMG_SIZE, &info), -EINVAL);	/* boot flag */
	b = make_bzimage(); memcpy(b + 0x202, "HdrX", 4);
	assert_int_equal(parse(b, IMG_SIZE, &info), -EINVAL);	/* magic */
	b = make_bzimage(); put16(b, 0x206, 0x020a);
	assert_int_equal(parse(b, IMG_SIZE, &info), -EINVAL);	/* protocol 2.10 */
	b = make_bzimage(); put16(b, 0x236, 0);
	assert_int_equal(parse(b, IMG_SIZE, &info), -EINVAL);	/* no 64-bit entry */
	b = make_bzimage(); b[0x211] = 0;
	assert_int_equal(parse(b, IMG_SIZE, &info), -EINVAL);	/* not loaded high */
	b = make_bzimage();
	assert_int_equal(parse(b, IMG_SIZE - 100, &info), -EINVAL); /* syssize past EOF */
	b = make_bzimage();
	assert_int_equal(parse(b, 0x210, &info), -EINVAL);	/* header cut */
	b = make_bzimage(); put32(b, 0x24c, PM_SIZE);
	assert_int_equal(parse(b, IMG_SIZE, &info), -EINVAL);	/* payload outside */
	b = calloc(1, 4096);
	assert_int_equal(parse(b, 4096, &info), -EINVAL);	/* garbage */
}

static void test_bootparams(void **state)
{
	struct e820_entry e820[2] = { { 0, 0x9fc00, E820_RAM }, { 0x100000, 0x3f00000, E820_RAM } };
	uint8_t zp[BP_SIZE];
	struct kernel_info info;

	assert_int_equal(parse(make_bzimage(), IMG_SIZE, &info), 0);
	assert_int_equal(bootparams_build(zp, &info, e820, 2, LAYOUT_CMDLINE, 10, 0x3000000, 0x1000), 0);
	assert_memory_equal(zp + 0x202, "HdrS", 4);
	assert_int_equal(zp[0x210], 0xff);			/* type_of_loader */
	assert_int_equal(get32(zp, 0x228), LAYOUT_CMDLINE);	/* cmd_line_ptr */
	assert_int_equal(get32(zp, 0x218), 0x3000000);		/* ramdisk_image */
	assert_int_equal(get32(zp, 0x21c), 0x1000);		/* ramdisk_size */
	assert_int_equal(zp[BP_E820_ENTRIES], 2);
	assert_memory_equal(zp + BP_E820_TABLE, e820, sizeof(e820));
	assert_int_equal(bootparams_build(zp, &info, e820, 2, LAYOUT_CMDLINE, 2048, 0, 0), -E2BIG);
}

static void test_cmdline_too_long(void **state)
{
	struct kernel_load_opts opts = { 0 };
	struct kernel_info info;
	char *cl = malloc(3000);

	assert_int_equal(parse(make_bzimage(), IMG_SIZE, &info), 0);
	memset(cl, 'a', 2999);
	cl[2999] = 0;
	opts.cmdline = cl;
	assert_int_equal(kernel_check(&info, &opts, 256 << 20), -E2BIG);
	cl[2047] = 0;
	assert_int_equal(kernel_check(&info, &opts, 256 << 20), 0);
	assert_int_equal(kernel_check(&info, &opts, 16 << 20), 0); /* relocated to 2 MiB */
	assert_int_equal(kernel_check(&info, &opts, 0x280000), -ENOSPC); /* RAM too small */
	opts.protocol = BOOT_PROTO_PVH;
	assert_int_equal(kernel_check(&info, &opts, 256 << 20), -EINVAL); /* no PVH note */
	free(cl);
}

static void test_initrd_place(void **state)
{
	uint64_t at;

	assert_int_equal(initrd_place(0x1800, 0x2000000, 0x8000000, &at), 0);
	assert_int_equal(at, 0x8000000 - 0x2000);
	assert_int_equal(at & 0xfff, 0);
	assert_int_equal(initrd_place(0x1000, 0x2000000, 0x80000000, &at), 0);
	assert_int_equal(at, 0x7ffff000);		/* capped by initrd_addr_max + 1 */
	assert_int_equal(initrd_place(0x7000000, 0x2000000, 0x8000000, &at), -ENOSPC);
	assert_int_equal(initrd_place(0x6000000, 0x2000001, 0x8000000, &at), -ENOSPC);
}

static char *write_tmp(const void *data, size_t len)
{
	char *path = strdup("/tmp/forkvm-test-XXXXXX");
	int fd = mkstemp(path);

	assert_true(fd >= 0);
	assert_int_equal(write(fd, data, len), (ssize_t)len);
	close(fd);
	return path;
}

static void test_load_into_memory(void **state)
{
	uint8_t *img = make_bzimage(), initrd[5000];
	struct guest_mem mem = { .backing = GUEST_MEM_ANON, .size = 64 << 20, .map_size = 64 << 20,
				 .fd = -1, .page_size = 4096, .nregions = 1,
				 .regions = { { 0, 64 << 20, 0 } } };
	char *kpath = write_tmp(img, IMG_SIZE), *ipath;
	struct kernel_load_opts opts = { .cmdline = "console=ttyS0" };
	struct kernel_info info;
	struct boot_info boot;

	memset(initrd, 0x5a, sizeof(initrd));
	ipath = write_tmp(initrd, sizeof(initrd));
	opts.initrd_path = ipath;
	mem.host = calloc(1, mem.size);
	assert_int_equal(kernel_probe(kpath, &info), 0);
	assert_int_equal(kernel_load(&mem, &info, &opts, &boot), 0);
	assert_int_equal(boot.mode, BOOT_MODE_LONG64);
	assert_int_equal(boot.entry, 0x1000200);
	assert_int_equal(boot.boot_params, LAYOUT_ZERO_PAGE);
	assert_int_equal(boot.initrd_addr, (64 << 20) - 0x2000);
	assert_int_equal(boot.initrd_size, sizeof(initrd));
	assert_memory_equal(mem.host + boot.initrd_addr, initrd, sizeof(initrd));
	assert_memory_equal(mem.host + 0x1000000, img + 5 * 512, PM_SIZE);
	assert_string_equal((char *)mem.host + LAYOUT_CMDLINE, "console=ttyS0");
	assert_int_equal(get32(mem.host + LAYOUT_ZERO_PAGE, 0x218), boot.initrd_addr);
	assert_int_equal(mem.host[LAYOUT_ZERO_PAGE + BP_E820_ENTRIES], 3);
	unlink(kpath);
	unlink(ipath);
	free(kpath);
	free(ipath);
	free(img);
	free(mem.host);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_good_header),
		cmocka_unit_test(test_setup_sects_zero_means_four),
		cmocka_unit_test(test_rejects),
		cmocka_unit_test(test_bootparams),
		cmocka_unit_test(test_cmdline_too_long),
		cmocka_unit_test(test_initrd_place),
		cmocka_unit_test(test_load_into_memory),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
