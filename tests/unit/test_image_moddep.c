/* Module load order from modules.dep / .modinfo, apt-cache parsing, /init script, SHA-256. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <elf.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "image/image.h"
#include "image/moddep.h"
#include "image/pkg.h"
#include "image/sha256.h"

static const char deps_text[] =
	"kernel/net/vmw_vsock/vmw_vsock_virtio_transport.ko: "
	"kernel/net/vmw_vsock/vmw_vsock_virtio_transport_common.ko kernel/drivers/virtio/virtio.ko "
	"kernel/drivers/virtio/virtio_ring.ko kernel/net/vmw_vsock/vsock.ko\n"
	"kernel/net/vmw_vsock/vmw_vsock_virtio_transport_common.ko: kernel/net/vmw_vsock/vsock.ko\n"
	"kernel/net/vmw_vsock/vsock.ko:\n"
	"kernel/drivers/virtio/virtio.ko: kernel/drivers/virtio/virtio_ring.ko\n"
	"kernel/drivers/virtio/virtio_ring.ko:\n"
	"kernel/drivers/virtio/virtio_mmio.ko: kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko\n"
	"kernel/drivers/char/virtio-rng.ko: kernel/drivers/virtio/virtio.ko\n";

static int index_of(const struct moddep_module **order, int n, const char *name)
{
	for (int i = 0; i < n; i++)
		if (!strcmp(order[i]->name, name))
			return i;
	return -1;
}

static void test_resolve_order(void **state)
{
	const char *roots[] = { "vmw_vsock_virtio_transport", "virtio_mmio", "virtio-rng" };
	const struct moddep_module **order;
	struct moddep g = { 0 };
	int n;

	assert_int_equal(moddep_parse(&g, deps_text), 0);
	assert_int_equal(moddep_resolve(&g, roots, 3, &order, &n), 0);
	assert_int_equal(n, 7);
	for (int i = 0; i < n; i++) /* every dependency loads before its dependant */
		for (int d = 0; d < order[i]->ndeps; d++)
			assert_true(index_of(order, n, order[i]->deps[d]) < i);
	assert_string_equal(order[0]->name, "vsock");
	assert_string_equal(order[n - 1]->name, "virtio_rng");
	assert_string_equal(moddep_find(&g, "virtio-rng")->path, "kernel/drivers/char/virtio-rng.ko");
	free(order);
	moddep_free(&g);
}

static void test_builtin_skipped(void **state)
{
	const char *roots[] = { "virtio_mmio" };
	const struct moddep_module **order;
	struct moddep g = { 0 };
	int n;

	assert_int_equal(moddep_parse(&g, deps_text), 0);
	assert_int_equal(moddep_parse_builtin(&g, "kernel/drivers/virtio/virtio_ring.ko\n"
						  "kernel/drivers/virtio/virtio.ko\n"), 0);
	assert_true(moddep_is_builtin(&g, "virtio"));
	assert_int_equal(moddep_resolve(&g, roots, 1, &order, &n), 0);
	assert_int_equal(n, 1);
	assert_string_equal(order[0]->name, "virtio_mmio");
	free(order);
	moddep_free(&g);
}

static void test_missing_and_cycle(void **state)
{
	const char *a[] = { "a" }, *c[] = { "c" }, *x[] = { "nope" };
	const struct moddep_module **order = NULL;
	struct moddep g = { 0 };
	int n;

	assert_int_equal(moddep_parse(&g, "a.ko: b.ko\nb.ko: a.ko\nc.ko: d.ko\n"), 0);
	assert_int_equal(moddep_resolve(&g, a, 1, &order, &n), -ELOOP);
	assert_int_equal(moddep_resolve(&g, c, 1, &order, &n), -ENOENT);
	assert_int_equal(moddep_resolve(&g, x, 1, &order, &n), -ENOENT);
	assert_null(order);
	moddep_free(&g);
	assert_int_equal(moddep_parse(&g, "no colon here\n"), -EINVAL);
	moddep_free(&g);
}

static void test_names(void **state)
{
	char name[64];

	assert_int_equal(moddep_name_from_path("kernel/a/virtio-rng.ko.xz", name, sizeof(name)), 0);
	assert_string_equal(name, "virtio_rng");
	assert_int_equal(moddep_name_from_path("vsock", name, sizeof(name)), 0);
	assert_string_equal(name, "vsock");
	assert_int_equal(moddep_name_from_path("x/.ko", name, sizeof(name)), -EINVAL);
}

/* A tiny relocatable ELF with .modinfo = "license=GPL\0depends=virtio,virtio_ring\0". */
static char *write_ko(void)
{
	static const char modinfo[] = "license=GPL\0depends=virtio,virtio_ring\0name=x";
	static const char shstr[] = "\0.modinfo\0.shstrtab";
	uint8_t buf[1024] = { 0 };
	Elf64_Ehdr eh = { .e_type = ET_REL, .e_machine = EM_X86_64, .e_shoff = 512,
			  .e_ehsize = sizeof(eh), .e_shentsize = sizeof(Elf64_Shdr), .e_shnum = 3,
			  .e_shstrndx = 2 };
	Elf64_Shdr sh[3] = { { 0 },
		{ .sh_name = 1, .sh_type = SHT_PROGBITS, .sh_offset = 128, .sh_size = sizeof(modinfo) },
		{ .sh_name = 10, .sh_type = SHT_STRTAB, .sh_offset = 256, .sh_size = sizeof(shstr) } };
	char *path = strdup("/tmp/forkvm-test-XXXXXX.ko");
	int fd = mkstemps(path, 3);

	memcpy(eh.e_ident, ELFMAG, SELFMAG);
	eh.e_ident[EI_CLASS] = ELFCLASS64;
	eh.e_ident[EI_DATA] = ELFDATA2LSB;
	memcpy(buf, &eh, sizeof(eh));
	memcpy(buf + 128, modinfo, sizeof(modinfo));
	memcpy(buf + 256, shstr, sizeof(shstr));
	memcpy(buf + 512, sh, sizeof(sh));
	assert_true(fd >= 0);
	assert_int_equal(write(fd, buf, sizeof(buf)), sizeof(buf));
	close(fd);
	return path;
}

static void test_modinfo(void **state)
{
	char *path = write_ko(), **deps;
	int n;

	assert_int_equal(modinfo_depends(path, &deps, &n), 0);
	assert_int_equal(n, 2);
	assert_string_equal(deps[0], "virtio");
	assert_string_equal(deps[1], "virtio_ring");
	moddep_free_names(deps, n);
	/* Compressed modules are read through module_read (test_image_modfile.c). */
	assert_int_equal(modinfo_depends("/nonexistent/x.ko.xz", &deps, &n), -ENOENT);
	assert_int_equal(modinfo_depends("/tmp/x.bin", &deps, &n), -EINVAL);
	unlink(path);
	free(path);
}

static void test_apt_show(void **state)
{
	struct pkg p = { 0 };

	assert_int_equal(pkg_parse_show("Package: linux-image-cloud-amd64\nVersion: 6.1.192-2\n"
					"Depends: linux-image-6.1.0-56-cloud-amd64 (= 6.1.192-2)\n", &p), 0);
	assert_string_equal(p.version, "6.1.192-2");
	assert_string_equal(p.depends, "linux-image-6.1.0-56-cloud-amd64");
	memset(&p, 0, sizeof(p));
	/* The 6.12 metapackage (the default) and the kernel package it names. */
	assert_int_equal(pkg_parse_show("Package: linux-image-6.12-cloud-amd64\n"
					"Version: 6.12.117-1~deb12u1\n"
					"Depends: linux-image-6.12.117+deb12-cloud-amd64 (= 6.12.117-1~deb12u1)\n",
					&p), 0);
	assert_string_equal(p.depends, "linux-image-6.12.117+deb12-cloud-amd64");
	memset(&p, 0, sizeof(p));
	assert_int_equal(pkg_parse_show("Package: linux-image-6.12.117+deb12-cloud-amd64\n"
					"Version: 6.12.117-1~deb12u1\n"
					"Depends: kmod, initramfs-tools (>= 0.120+deb8u2) | linux-initramfs-tool\n",
					&p), 0);
	assert_string_equal(p.depends, "kmod");
	memset(&p, 0, sizeof(p));
	assert_int_equal(pkg_parse_show("Package: x\nPre-Depends: a\n", &p), -ENOENT);
}

static void test_kernel_package_names(void **state)
{
	assert_true(image_kernel_package_valid(IMAGE_KERNEL_PACKAGE));
	assert_true(image_kernel_package_valid(IMAGE_KERNEL_PACKAGE_61));
	assert_true(image_kernel_package_valid("linux-image-6.12.117+deb12-cloud-amd64"));
	assert_false(image_kernel_package_valid("linux-image-"));
	assert_false(image_kernel_package_valid("busybox-static"));
	assert_false(image_kernel_package_valid("linux-image-Cloud"));
	assert_false(image_kernel_package_valid("linux-image-x y"));
	assert_false(image_kernel_package_valid("linux-image-x/../y"));
}

static void test_init_script(void **state)
{
	const char *mods[] = { "virtio_ring", "virtio" };
	char *s;

	assert_int_equal(image_init_script(mods, 2, &s), 0);
	assert_true(strstr(s, "#!/bin/sh\n") == s);
	assert_true(strstr(s, "mount -t devtmpfs devtmpfs /dev"));
	assert_true(strstr(s, "insmod /lib/modules/virtio_ring.ko") <
		    strstr(s, "insmod /lib/modules/virtio.ko"));
	assert_true(strstr(s, "exec /sbin/forkvm-agent --vsock-port 52\n"));
	free(s);
}

static void test_sha256(void **state)
{
	char hex[65];

	sha256_hex("abc", 3, hex);
	assert_string_equal(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
	sha256_hex("", 0, hex);
	assert_string_equal(hex, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_resolve_order), cmocka_unit_test(test_builtin_skipped),
		cmocka_unit_test(test_missing_and_cycle), cmocka_unit_test(test_names),
		cmocka_unit_test(test_modinfo), cmocka_unit_test(test_apt_show),
		cmocka_unit_test(test_kernel_package_names),
		cmocka_unit_test(test_init_script), cmocka_unit_test(test_sha256),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
