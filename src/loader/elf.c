/* vmlinux (ELF64 x86-64) validation: loadable segments and the Xen PVH entry note. */
#include <elf.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "util/log.h"
#include "loader/kernel.h"
#include "x86/layout.h"

static int bad(const char *path, const char *what)
{
	log_err("%s: not a usable vmlinux: %s", path, what);
	return -EINVAL;
}

/* Walk the notes of one PT_NOTE segment looking for XEN_ELFNOTE_PHYS32_ENTRY. */
static int find_pvh_note(const char *path, const uint8_t *p, size_t len, struct kernel_info *info)
{
	size_t pos = 0;

	while (len - pos >= sizeof(Elf64_Nhdr)) {
		Elf64_Nhdr nh;
		size_t name_at, desc_at, next;

		memcpy(&nh, p + pos, sizeof(nh));
		name_at = pos + sizeof(nh);
		desc_at = name_at + ((nh.n_namesz + 3ULL) & ~3ULL);
		next = desc_at + ((nh.n_descsz + 3ULL) & ~3ULL);
		if (desc_at > len || next > len || nh.n_descsz > len)
			return bad(path, "ELF note runs past its segment");
		if (nh.n_namesz == 4 && !memcmp(p + name_at, "Xen", 4) &&
		    nh.n_type == XEN_ELFNOTE_PHYS32_ENTRY) {
			uint64_t entry = 0;

			if (nh.n_descsz != 4 && nh.n_descsz != 8)
				return bad(path, "PVH entry note has an odd size");
			memcpy(&entry, p + desc_at, nh.n_descsz); /* little endian */
			if (entry >= UINT32_MAX)
				return bad(path, "PVH entry is above 4 GiB");
			info->has_pvh = true;
			info->pvh_entry = (uint32_t)entry;
		}
		pos = next;
	}
	return 0;
}

static int add_segment(const char *path, const Elf64_Phdr *ph, size_t len, struct kernel_info *info)
{
	struct kernel_segment *s;

	if (ph->p_offset > len || ph->p_filesz > len - ph->p_offset)
		return bad(path, "PT_LOAD segment runs past the end of the file (truncated)");
	if (ph->p_filesz > ph->p_memsz)
		return bad(path, "PT_LOAD segment has filesz > memsz");
	if (ph->p_paddr < KERNEL_MIN_PADDR)
		return bad(path, "PT_LOAD segment below 1 MiB would overwrite the boot structures");
	if (ph->p_paddr + ph->p_memsz < ph->p_paddr || ph->p_paddr + ph->p_memsz > LAYOUT_RAM_LOW_MAX)
		return bad(path, "PT_LOAD segment does not fit below the 3 GiB PCI hole");
	if (info->nsegments == KERNEL_MAX_SEGMENTS)
		return bad(path, "too many PT_LOAD segments");
	for (int i = 0; i < info->nsegments; i++) {
		const struct kernel_segment *o = &info->segments[i];

		if (ph->p_paddr < o->paddr + o->memsz && o->paddr < ph->p_paddr + ph->p_memsz)
			return bad(path, "PT_LOAD segments overlap");
	}
	s = &info->segments[info->nsegments++];
	s->paddr = ph->p_paddr;
	s->offset = ph->p_offset;
	s->filesz = ph->p_filesz;
	s->memsz = ph->p_memsz;
	return 0;
}

/* e_entry may be virtual (linked at __START_KERNEL_map): map it through its segment. */
static int entry_paddr(const Elf64_Ehdr *eh, const uint8_t *buf, uint64_t *out)
{
	for (int i = 0; i < eh->e_phnum; i++) {
		Elf64_Phdr ph;

		memcpy(&ph, buf + eh->e_phoff + (size_t)i * sizeof(ph), sizeof(ph));
		if (ph.p_type != PT_LOAD)
			continue;
		if (eh->e_entry >= ph.p_paddr && eh->e_entry < ph.p_paddr + ph.p_memsz) {
			*out = eh->e_entry;
			return 0;
		}
		if (eh->e_entry >= ph.p_vaddr && eh->e_entry < ph.p_vaddr + ph.p_memsz) {
			*out = eh->e_entry - ph.p_vaddr + ph.p_paddr;
			return 0;
		}
	}
	return -ENOENT;
}

int vmlinux_parse(const char *path, const uint8_t *buf, size_t len, struct kernel_info *info)
{
	Elf64_Ehdr eh;
	uint64_t lo = UINT64_MAX, hi = 0;
	int ret;

	if (len < EI_NIDENT || memcmp(buf, ELFMAG, SELFMAG))
		return bad(path, "no ELF magic");
	if (buf[EI_CLASS] != ELFCLASS64)
		return bad(path, "not a 64-bit ELF");
	if (len < sizeof(eh))
		return bad(path, "ELF header truncated");
	memcpy(&eh, buf, sizeof(eh));
	if (buf[EI_DATA] != ELFDATA2LSB || eh.e_machine != EM_X86_64)
		return bad(path, "not an x86-64 ELF");
	if (eh.e_type != ET_EXEC)
		return bad(path, "not an executable ELF (ET_EXEC)");
	if (eh.e_phentsize != sizeof(Elf64_Phdr) || eh.e_phnum == 0)
		return bad(path, "no usable program headers");
	if (eh.e_phoff > len || (uint64_t)eh.e_phnum * sizeof(Elf64_Phdr) > len - eh.e_phoff)
		return bad(path, "program headers run past the end of the file (truncated)");
	info->nsegments = 0;
	info->has_pvh = false;
	for (int i = 0; i < eh.e_phnum; i++) {
		Elf64_Phdr ph;

		memcpy(&ph, buf + eh.e_phoff + (size_t)i * sizeof(ph), sizeof(ph));
		if (ph.p_type == PT_LOAD && ph.p_memsz) {
			ret = add_segment(path, &ph, len, info);
			if (ret)
				return ret;
			lo = ph.p_paddr < lo ? ph.p_paddr : lo;
			hi = ph.p_paddr + ph.p_memsz > hi ? ph.p_paddr + ph.p_memsz : hi;
		} else if (ph.p_type == PT_NOTE) {
			if (ph.p_offset > len || ph.p_filesz > len - ph.p_offset)
				return bad(path, "PT_NOTE segment runs past the end of the file (truncated)");
			ret = find_pvh_note(path, buf + ph.p_offset, ph.p_filesz, info);
			if (ret)
				return ret;
		}
	}
	if (!info->nsegments)
		return bad(path, "no PT_LOAD segments");
	if (entry_paddr(&eh, buf, &info->elf_entry))
		return bad(path, "entry point lies outside every PT_LOAD segment");
	info->load_addr = lo;
	info->mem_size = hi - lo;
	info->format = KERNEL_VMLINUX;
	info->payload = PAYLOAD_UNKNOWN;
	return 0;
}
