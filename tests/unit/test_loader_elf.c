/* vmlinux ELF validation, PVH note discovery and PVH/long-mode boot structures and registers. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <elf.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "loader/boot_regs.h"
#include "loader/kernel.h"
#include "mem/guest_mem.h"
#include "x86/layout.h"

#define ELF_SIZE 0x3000
#define VBASE 0xffffffff81000000ULL

/* Two PT_LOAD segments at 16 MiB and 18 MiB plus a PT_NOTE with the Xen PVH entry. */
static uint8_t *make_elf(int with_pvh)
{
	uint8_t *b = calloc(1, ELF_SIZE);
	Elf64_Ehdr eh = { .e_type = ET_EXEC, .e_machine = EM_X86_64, .e_version = EV_CURRENT,
			  .e_entry = 0x1000000, .e_phoff = sizeof(Elf64_Ehdr),
			  .e_ehsize = sizeof(Elf64_Ehdr), .e_phentsize = sizeof(Elf64_Phdr),
			  .e_phnum = 3 };
	Elf64_Phdr ph[3] = {
		{ .p_type = PT_LOAD, .p_offset = 0x1000, .p_vaddr = VBASE, .p_paddr = 0x1000000,
		  .p_filesz = 0x1000, .p_memsz = 0x1000 },
		{ .p_type = PT_LOAD, .p_offset = 0x2000, .p_vaddr = VBASE + 0x200000,
		  .p_paddr = 0x1200000, .p_filesz = 0x800, .p_memsz = 0x4000 },
		{ .p_type = PT_NOTE, .p_offset = 0x400, .p_filesz = 0x30 },
	};
	Elf64_Nhdr other = { 4, 4, 6 }, nh = { 4, 8, XEN_ELFNOTE_PHYS32_ENTRY };
	uint64_t entry = 0x1000040;
	uint32_t dummy = 0x1234;

	memcpy(eh.e_ident, ELFMAG, SELFMAG);
	eh.e_ident[EI_CLASS] = ELFCLASS64;
	eh.e_ident[EI_DATA] = ELFDATA2LSB;
	eh.e_ident[EI_VERSION] = EV_CURRENT;
	memcpy(b, &eh, sizeof(eh));
	memcpy(b + eh.e_phoff, ph, sizeof(ph));
	/* An unrelated Xen note first, then PHYS32_ENTRY with an 8-byte descriptor. */
	memcpy(b + 0x400, &other, sizeof(other));
	memcpy(b + 0x40c, "Xen", 4);
	memcpy(b + 0x410, &dummy, 4);
	if (with_pvh) {
		memcpy(b + 0x414, &nh, sizeof(nh));
		memcpy(b + 0x420, "Xen", 4);
		memcpy(b + 0x424, &entry, 8);
	}
	memset(b + 0x1000, 0xc3, 0x1000);
	memset(b + 0x2000, 0x90, 0x800);
	return b;
}

static int parse(uint8_t *b, size_t len, struct kernel_info *info)
{
	int ret = kernel_parse("test-vmlinux", b, len, info);

	free(b);
	return ret;
}

static Elf64_Phdr *phdr(uint8_t *b, int i)
{
	return (Elf64_Phdr *)(b + sizeof(Elf64_Ehdr) + (size_t)i * sizeof(Elf64_Phdr));
}

static void test_good_with_pvh(void **state)
{
	struct kernel_info info;

	assert_int_equal(parse(make_elf(1), ELF_SIZE, &info), 0);
	assert_int_equal(info.format, KERNEL_VMLINUX);
	assert_true(info.has_pvh);
	assert_int_equal(info.pvh_entry, 0x1000040);
	assert_int_equal(info.nsegments, 2);
	assert_int_equal(info.elf_entry, 0x1000000);
	assert_int_equal(info.load_addr, 0x1000000);
	assert_int_equal(info.mem_size, 0x204000);
}

static void test_no_pvh_virtual_entry(void **state)
{
	struct kernel_info info;
	uint8_t *b = make_elf(0);

	((Elf64_Ehdr *)b)->e_entry = VBASE + 0x200010; /* inside segment 2, virtual */
	assert_int_equal(parse(b, ELF_SIZE, &info), 0);
	assert_false(info.has_pvh);
	assert_int_equal(info.elf_entry, 0x1200010);
}

static void test_rejects(void **state)
{
	struct kernel_info info;
	uint8_t *b;

	b = make_elf(1); b[EI_CLASS] = ELFCLASS32;
	assert_int_equal(parse(b, ELF_SIZE, &info), -EINVAL);
	b = make_elf(1); ((Elf64_Ehdr *)b)->e_machine = EM_386;
	assert_int_equal(parse(b, ELF_SIZE, &info), -EINVAL);
	b = make_elf(1); ((Elf64_Ehdr *)b)->e_type = ET_DYN;
	assert_int_equal(parse(b, ELF_SIZE, &info), -EINVAL);
	b = make_elf(1);
	assert_int_equal(parse(b, sizeof(Elf64_Ehdr) + 100, &info), -EINVAL); /* phdrs cut */
	b = make_elf(1);
	assert_int_equal(parse(b, 0x2400, &info), -EINVAL);	/* segment 2 data cut */
	b = make_elf(1); phdr(b, 1)->p_paddr = 0x1000800;
	assert_int_equal(parse(b, ELF_SIZE, &info), -EINVAL);	/* overlap */
	b = make_elf(1); phdr(b, 0)->p_paddr = 0x8000;
	assert_int_equal(parse(b, ELF_SIZE, &info), -EINVAL);	/* below 1 MiB */
	b = make_elf(1); phdr(b, 1)->p_filesz = 0x5000;
	assert_int_equal(parse(b, ELF_SIZE, &info), -EINVAL);	/* filesz > memsz */
	b = make_elf(1); ((Elf64_Ehdr *)b)->e_entry = 0x5000000;
	assert_int_equal(parse(b, ELF_SIZE, &info), -EINVAL);	/* entry outside */
	b = make_elf(1); phdr(b, 2)->p_filesz = 0x20;
	assert_int_equal(parse(b, ELF_SIZE, &info), -EINVAL);	/* note cut */
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

static void load(enum boot_protocol proto, struct guest_mem *mem, struct boot_info *boot)
{
	uint8_t *img = make_elf(1), initrd[100] = { 1, 2, 3 };
	char *kpath = write_tmp(img, ELF_SIZE), *ipath = write_tmp(initrd, sizeof(initrd));
	struct kernel_load_opts opts = { .cmdline = "root=/dev/vda", .initrd_path = ipath,
					 .protocol = proto };
	struct kernel_info info;

	*mem = (struct guest_mem){ .backing = GUEST_MEM_ANON, .size = 32 << 20,
				   .map_size = 32 << 20, .fd = -1, .page_size = 4096,
				   .nregions = 1, .regions = { { 0, 32 << 20, 0 } } };
	mem->host = calloc(1, mem->size);
	memset(mem->host + 0x1200800, 0xee, 0x100); /* stale bytes the bss must clear */
	assert_int_equal(kernel_probe(kpath, &info), 0);
	assert_int_equal(kernel_load(mem, &info, &opts, boot), 0);
	assert_memory_equal(mem->host + 0x1000000, img + 0x1000, 0x1000);
	assert_int_equal(mem->host[0x1200800], 0);
	assert_memory_equal(mem->host + boot->initrd_addr, initrd, sizeof(initrd));
	unlink(kpath);
	unlink(ipath);
	free(kpath);
	free(ipath);
	free(img);
}

static void test_load_pvh(void **state)
{
	struct hvm_start_info si;
	struct hvm_modlist_entry mod;
	struct hvm_memmap_table_entry mm[3];
	struct kvm_regs regs;
	struct kvm_sregs sregs = { 0 };
	struct guest_mem mem;
	struct boot_info boot;

	load(BOOT_PROTO_AUTO, &mem, &boot);
	assert_int_equal(boot.mode, BOOT_MODE_PVH32);
	assert_int_equal(boot.entry, 0x1000040);
	assert_int_equal(boot.initrd_addr, (32 << 20) - 0x1000);
	memcpy(&si, mem.host + LAYOUT_PVH_START_INFO, sizeof(si));
	assert_int_equal(si.magic, PVH_START_MAGIC);
	assert_int_equal(si.version, 1);
	assert_int_equal(si.cmdline_paddr, LAYOUT_CMDLINE);
	assert_string_equal((char *)mem.host + LAYOUT_CMDLINE, "root=/dev/vda");
	assert_int_equal(si.nr_modules, 1);
	memcpy(&mod, mem.host + si.modlist_paddr, sizeof(mod));
	assert_int_equal(mod.paddr, boot.initrd_addr);
	assert_int_equal(mod.size, 100);
	assert_int_equal(si.memmap_entries, 3);
	memcpy(mm, mem.host + si.memmap_paddr, sizeof(mm));
	assert_int_equal(mm[2].addr, LAYOUT_HIGH_MEM);
	assert_int_equal(mm[2].addr + mm[2].size, 32 << 20);
	assert_int_equal(mm[2].type, E820_RAM);
	assert_int_equal(boot_regs_fill(&boot, &regs, &sregs), 0);
	assert_int_equal(regs.rip, 0x1000040);
	assert_int_equal(regs.rbx, LAYOUT_PVH_START_INFO);
	assert_int_equal(sregs.cr0 & 0x80000001, 1);	/* PE, no PG */
	assert_int_equal(sregs.cs.db, 1);
	assert_int_equal(sregs.cs.l, 0);
	assert_int_equal(sregs.efer, 0);
	free(mem.host);
}

static void test_load_linux64(void **state)
{
	struct kvm_regs regs;
	struct kvm_sregs sregs = { 0 };
	struct guest_mem mem;
	struct boot_info boot;
	uint64_t gdt[BOOT_GDT_ENTRIES] = { 0 };
	uint32_t v;

	load(BOOT_PROTO_LINUX64, &mem, &boot);
	assert_int_equal(boot.mode, BOOT_MODE_LONG64);
	assert_int_equal(boot.entry, 0x1000000);	/* e_entry, no 0x200 offset */
	assert_memory_equal(mem.host + LAYOUT_ZERO_PAGE + 0x202, "HdrS", 4);
	memcpy(&v, mem.host + LAYOUT_ZERO_PAGE + 0x218, 4);
	assert_int_equal(v, boot.initrd_addr);
	assert_int_equal(boot_regs_fill(&boot, &regs, &sregs), 0);
	assert_int_equal(regs.rsi, LAYOUT_ZERO_PAGE);
	assert_int_equal(sregs.cs.selector, BOOT_SEL_CODE64);
	assert_int_equal(sregs.ds.selector, BOOT_SEL_DATA);
	assert_int_equal(sregs.cs.l, 1);
	assert_int_equal(sregs.efer & 0x500, 0x500);
	assert_int_equal(sregs.cr3, LAYOUT_PML4);
	boot_gdt_fill(gdt);
	assert_int_equal((gdt[BOOT_SEL_CODE64 >> 3] >> 53) & 1, 1); /* L bit */
	assert_int_equal((gdt[BOOT_SEL_CODE32 >> 3] >> 54) & 1, 1); /* D bit */
	assert_int_equal(gdt[4], 0); /* TSS slot left alone */
	free(mem.host);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_good_with_pvh),
		cmocka_unit_test(test_no_pvh_virtual_entry),
		cmocka_unit_test(test_rejects),
		cmocka_unit_test(test_load_pvh),
		cmocka_unit_test(test_load_linux64),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
