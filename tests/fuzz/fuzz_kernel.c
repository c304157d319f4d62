/* libFuzzer harness: the kernel loaders (src/loader/kernel.c, bzimage.c, elf.c): a bzImage
 * setup header or an ELF vmlinux, probed from a file (kernel_probe: open, mmap, parse), then
 * checked against a 32 MiB guest and, when accepted, loaded into a fake guest RAM with its
 * boot structures (zero page or PVH start info, e820, command line), as `forkvm run` does.
 * Input: byte 0 picks the boot protocol (auto, PVH, linux64) and the RAM size; the rest is
 * the kernel file. The file goes through a scratch file (kernel_probe and kernel_load take
 * a path). */
#include "fuzz_util.h"
#include "loader/kernel.h"
#include "mem/guest_mem.h"

#include <sys/mman.h>
#include <unistd.h>

#define RAM_MAX (32ULL << 20)

static char path[256];
static uint8_t *ram;

static void cleanup(void)
{
	if (path[0])
		unlink(path);
}

static void setup(void)
{
	int fd;

	if (ram)
		return;
	snprintf(path, sizeof(path), "%s/forkvm-fuzz-kernel-XXXXXX", fz_tmpdir());
	fd = mkstemp(path);
	if (fd < 0)
		abort();
	close(fd);
	atexit(cleanup);
	ram = mmap(NULL, RAM_MAX, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
		   -1, 0);
	if (ram == MAP_FAILED)
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const enum boot_protocol protos[] = { BOOT_PROTO_AUTO, BOOT_PROTO_PVH,
						     BOOT_PROTO_LINUX64 };
	struct kernel_info *info;
	struct kernel_load_opts opts = { .cmdline = "console=ttyS0 quiet" };
	struct guest_mem mem = { 0 };
	struct boot_info boot;
	unsigned sel;

	if (size < 1)
		return 0;
	setup();
	sel = data[0];
	opts.protocol = protos[sel % 3];
	fz_write_file(path, data + 1, size - 1);

	info = calloc(1, sizeof(*info));
	if (!info)
		abort();
	/* The pure parser on the bytes, then the file path the CLI takes. */
	(void)kernel_parse(path, data + 1, size - 1, info);
	if (kernel_probe(path, info) == 0) {
		uint64_t addr;

		mem.backing = GUEST_MEM_ANON;
		mem.size = mem.map_size = (sel & 0x80) ? RAM_MAX : RAM_MAX / 2;
		mem.host = ram;
		mem.fd = -1;
		mem.page_size = 4096;
		mem.nregions = 1;
		mem.regions[0].size = mem.size;
		if (info->format == KERNEL_BZIMAGE)
			(void)bzimage_place(info, mem.size, &addr);
		if (kernel_check(info, &opts, mem.size) == 0)
			(void)kernel_load(&mem, info, &opts, &boot);
	}
	free(info);
	return 0;
}
