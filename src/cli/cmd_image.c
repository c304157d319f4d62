/* "forkvm image": build the guest kernel + initramfs, extract a vmlinux, inspect kernels. */
#include <getopt.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"
#include "image/image.h"
#include "image/rootfs.h"
#include "loader/kernel.h"

struct image_sub {
	const char *name;
	const char *usage;
	int (*run)(const struct image_sub *sub, int argc, char **argv);
};

static int sub_usage(const struct image_sub *sub, const char *msg)
{
	fprintf(stderr, "forkvm image %s: %s\nusage: %s", sub->name, msg, sub->usage);
	return CLI_EXIT_USAGE;
}

static int sub_help(const struct image_sub *sub, int argc, char **argv)
{
	for (int i = 1; i < argc; i++)
		if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
			printf("usage: %s", sub->usage);
			return 1;
		}
	return 0;
}

/* --size/--free: a number of MiB, or a size with a unit that is a whole number of MiB. */
static int parse_mib(const char *text, uint64_t *mib)
{
	unsigned long long v;

	if (!cli_parse_u64(text, &v)) {
		*mib = v;
		return 0;
	}
	if (cli_parse_size(text, &v) || v % (1ULL << 20))
		return -1;
	*mib = v >> 20;
	return 0;
}

struct build_args {
	struct image_build_opts kernel;
	struct rootfs_build_opts rootfs;
	const char *extra[64];
	const char *packages[ROOTFS_MAX_PACKAGES];
	bool size_set, free_set;
	int nsources;
};

static int build_opt(const struct image_sub *sub, int c, struct build_args *a)
{
	switch (c) {
	case 'c': a->kernel.cache_dir = a->rootfs.cache_dir = optarg; return 0;
	case 'a': a->kernel.agent_path = a->rootfs.agent_path = optarg; return 0;
	case 'o': a->kernel.out_dir = a->rootfs.out_dir = optarg; return 0;
	case 'k':
		if (!image_kernel_package_valid(optarg))
			return sub_usage(sub, "--kernel-package needs a linux-image-* package name");
		a->kernel.kernel_package = optarg;
		return 0;
	case 'm':
		if (a->kernel.nextra == 64)
			return sub_usage(sub, "too many --module options");
		a->extra[a->kernel.nextra++] = optarg;
		return 0;
	case 'r': a->rootfs.source = ROOTFS_DEBIAN; a->nsources++; return 0;
	case 'd': a->rootfs.source = ROOTFS_DIR; a->rootfs.src = optarg; a->nsources++; return 0;
	case 't': a->rootfs.source = ROOTFS_TAR; a->rootfs.src = optarg; a->nsources++; return 0;
	case 'p':
		if (rootfs_parse_package_list(optarg, a->packages, &a->rootfs.npackages,
					      ROOTFS_MAX_PACKAGES))
			return sub_usage(sub, "--packages needs Debian package names, comma-separated");
		return 0;
	case 's':
		if (parse_mib(optarg, &a->rootfs.size_mib) || a->rootfs.size_mib < 8 ||
		    a->rootfs.size_mib > (16ULL << 20))
			return sub_usage(sub, "--size needs MiB (8 to 16777216), e.g. 1024 or 1G");
		a->size_set = true;
		return 0;
	case 'f':
		if (parse_mib(optarg, &a->rootfs.free_mib) || a->rootfs.free_mib > (16ULL << 20))
			return sub_usage(sub, "--free needs MiB (0 to 16777216), e.g. 256 or 1G");
		a->free_set = true;
		return 0;
	default:
		return sub_usage(sub, "unknown option or missing argument");
	}
}

/* Which options go with which build: the kernel's or a root filesystem's. */
static int build_check(const struct image_sub *sub, struct build_args *a)
{
	bool rootfs = a->nsources > 0;

	if (a->nsources > 1)
		return sub_usage(sub, "--rootfs, --rootfs-dir and --rootfs-tar exclude each other");
	if (!rootfs && (a->rootfs.npackages || a->size_set || a->free_set))
		return sub_usage(sub, "--packages, --size and --free need --rootfs, --rootfs-dir or "
				      "--rootfs-tar");
	if (rootfs && (a->kernel.nextra || a->kernel.kernel_package))
		return sub_usage(sub, "--module and --kernel-package are for the kernel build, not "
				      "a rootfs");
	if (a->rootfs.npackages && a->rootfs.source != ROOTFS_DEBIAN)
		return sub_usage(sub, "--packages needs --rootfs (Debian packages)");
	if (a->size_set && a->free_set)
		return sub_usage(sub, "--size and --free exclude each other");
	if (!a->free_set)
		a->rootfs.free_mib = ROOTFS_FREE_MIB_DEFAULT;
	a->rootfs.packages = a->packages;
	a->kernel.extra_modules = a->extra;
	return 0;
}

static int run_build(const struct image_sub *sub, int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "cache", required_argument, NULL, 'c' },
		{ "agent", required_argument, NULL, 'a' },
		{ "out", required_argument, NULL, 'o' },
		{ "module", required_argument, NULL, 'm' },
		{ "kernel-package", required_argument, NULL, 'k' },
		{ "rootfs", no_argument, NULL, 'r' },
		{ "rootfs-dir", required_argument, NULL, 'd' },
		{ "rootfs-tar", required_argument, NULL, 't' },
		{ "packages", required_argument, NULL, 'p' },
		{ "size", required_argument, NULL, 's' },
		{ "free", required_argument, NULL, 'f' },
		{ 0 },
	};
	static struct build_args a; /* large: the --packages list */
	int c, ret;

	memset(&a, 0, sizeof(a));
	optind = 0;
	opterr = 0;
	while ((c = getopt_long(argc, argv, "+", longopts, NULL)) != -1) {
		ret = build_opt(sub, c, &a);
		if (ret)
			return ret;
	}
	if (optind != argc)
		return sub_usage(sub, "unexpected argument");
	ret = build_check(sub, &a);
	if (ret)
		return ret;
	if (a.nsources)
		return rootfs_build(&a.rootfs) ? CLI_EXIT_FAIL : CLI_EXIT_OK;
	return image_build(&a.kernel) ? CLI_EXIT_FAIL : CLI_EXIT_OK;
}

static int run_extract(const struct image_sub *sub, int argc, char **argv)
{
	if (argc != 3 || argv[1][0] == '-' || argv[2][0] == '-')
		return sub_usage(sub, "expects BZIMAGE and OUT");
	if (image_extract_vmlinux(argv[1], argv[2]))
		return CLI_EXIT_FAIL;
	printf("wrote %s\n", argv[2]);
	return CLI_EXIT_OK;
}

static void print_bzimage(const struct kernel_info *k)
{
	const struct setup_header *h = &k->hdr;

	printf("boot_protocol: %u.%02u\n", h->version >> 8, h->version & 0xff);
	printf("setup_sects: %u\n", h->setup_sects);
	printf("kernel_64: %s\n", h->xloadflags & SETUP_XLF_KERNEL_64 ? "yes" : "no");
	printf("relocatable: %s\n", h->relocatable_kernel ? "yes" : "no");
	printf("kernel_alignment: 0x%x\n", h->kernel_alignment);
	printf("pref_address: 0x%llx\n", (unsigned long long)h->pref_address);
	printf("init_size: 0x%x\n", h->init_size);
	printf("cmdline_size: %u\n", h->cmdline_size);
	printf("initrd_addr_max: 0x%x\n", h->initrd_addr_max);
	printf("payload: %s\n", payload_format_name(k->payload));
	printf("payload_offset: 0x%x\npayload_length: %u\n", h->payload_offset, h->payload_length);
	printf("entry64: 0x%llx\n", (unsigned long long)(k->load_addr + SETUP_ENTRY64_OFFSET));
}

static void print_vmlinux(const struct kernel_info *k)
{
	printf("entry: 0x%llx\n", (unsigned long long)k->elf_entry);
	if (k->has_pvh)
		printf("pvh_entry: 0x%x\n", k->pvh_entry);
	else
		printf("pvh_entry: none\n");
	printf("segments: %d\n", k->nsegments);
	for (int i = 0; i < k->nsegments; i++)
		printf("segment: paddr=0x%llx filesz=0x%llx memsz=0x%llx\n",
		       (unsigned long long)k->segments[i].paddr,
		       (unsigned long long)k->segments[i].filesz,
		       (unsigned long long)k->segments[i].memsz);
}

static int run_inspect(const struct image_sub *sub, int argc, char **argv)
{
	static struct kernel_info info;

	if (argc != 2 || argv[1][0] == '-')
		return sub_usage(sub, "expects one FILE");
	if (kernel_probe(argv[1], &info))
		return CLI_EXIT_FAIL;
	printf("file: %s\nformat: %s\nsize: %llu\n", argv[1], kernel_format_name(info.format),
	       (unsigned long long)info.file_size);
	if (info.format == KERNEL_BZIMAGE)
		print_bzimage(&info);
	else
		print_vmlinux(&info);
	printf("load_addr: 0x%llx\nmem_size: 0x%llx\n", (unsigned long long)info.load_addr,
	       (unsigned long long)info.mem_size);
	return CLI_EXIT_OK;
}

static const struct image_sub subs[] = {
	{ "build",
	  "forkvm image build [--cache DIR] [--agent PATH] [--out DIR] [--module NAME]...\n"
	  "                   [--kernel-package NAME]\n"
	  "  Download Debian's cloud kernel and busybox-static (cached in DIR, default\n"
	  "  $FORKVM_CACHE or ~/.cache/forkvm) and write vmlinux, bzImage, initramfs.cpio.gz\n"
	  "  and manifest.json to --out (default DIR/image). --agent defaults to forkvm-agent\n"
	  "  beside this binary; --module adds kernel modules to load at boot.\n"
	  "  --kernel-package picks the kernel: a metapackage or a linux-image-<version>\n"
	  "  package. Default " IMAGE_KERNEL_PACKAGE " (6.12, has the VM generation\n"
	  "  ID driver clones reseed their random numbers with); " IMAGE_KERNEL_PACKAGE_61 "\n"
	  "  gives 6.1. Each build rewrites the outputs for the kernel it was given.\n"
	  "forkvm image build --rootfs [--packages A,B,...] [--size MIB | --free MIB]\n"
	  "                   [--cache DIR] [--agent PATH] [--out DIR]\n"
	  "forkvm image build --rootfs-dir DIR | --rootfs-tar FILE|- [--size MIB | --free MIB] ...\n"
	  "  Build an ext4 root filesystem image for Linux guests: rootfs.ext4 and\n"
	  "  manifest.json in --out (default DIR/rootfs). --rootfs: Debian 12's python3,\n"
	  "  python3-pip, bash, coreutils, ca-certificates and what they depend on, plus\n"
	  "  --packages; rebuilt only when a package version, the agent or an option\n"
	  "  changed. --rootfs-dir / --rootfs-tar: a tree of your own (e.g.\n"
	  "  \"docker export C | forkvm image build --rootfs-tar -\"). The agent goes to\n"
	  "  /" ROOTFS_AGENT_PATH ". --size: image size in MiB; otherwise the files\n"
	  "  * 1.3 plus --free MiB (default 256). Boot it with forkvm run --rootfs IMAGE.\n",
	  run_build },
	{ "extract",
	  "forkvm image extract BZIMAGE OUT\n"
	  "  Decode the bzImage's compressed payload (lz4, gzip, zstd or xz) and write the\n"
	  "  vmlinux ELF.\n",
	  run_extract },
	{ "inspect",
	  "forkvm image inspect FILE\n"
	  "  Tell whether FILE is a vmlinux or bzImage and print its boot parameters.\n",
	  run_inspect },
};

#define IMAGE_USAGE                                                                \
	"forkvm image build|extract|inspect ...\n"                                 \
	"  build [--cache DIR] [--agent PATH] [--out DIR] [--module NAME]...\n"    \
	"        [--kernel-package NAME]\n"                                        \
	"  build --rootfs [--packages A,B] | --rootfs-dir DIR | --rootfs-tar FILE\n" \
	"        [--size MIB | --free MIB] [--cache DIR] [--agent PATH] [--out DIR]\n" \
	"  extract BZIMAGE OUT\n"                                                  \
	"  inspect FILE\n"                                                         \
	"Run \"forkvm image SUBCOMMAND --help\" for details.\n"


int cmd_image(int argc, char **argv)
{
	if (argc >= 2 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) {
		printf("usage: %s", IMAGE_USAGE);
		return CLI_EXIT_OK;
	}
	if (argc < 2) {
		fprintf(stderr, "forkvm image: missing subcommand\nusage: %s", IMAGE_USAGE);
		return CLI_EXIT_USAGE;
	}
	for (size_t i = 0; i < sizeof(subs) / sizeof(subs[0]); i++) {
		if (strcmp(argv[1], subs[i].name))
			continue;
		if (sub_help(&subs[i], argc - 1, argv + 1))
			return CLI_EXIT_OK;
		return subs[i].run(&subs[i], argc - 1, argv + 1);
	}
	fprintf(stderr, "forkvm image: unknown subcommand \"%s\"\nusage: %s", argv[1], IMAGE_USAGE);
	return CLI_EXIT_USAGE;
}

const struct cli_command cli_cmd_image = {
	.name = "image",
	.summary = "build the Linux guest image; extract or inspect kernels",
	.usage = IMAGE_USAGE,
	.run = cmd_image,
};
