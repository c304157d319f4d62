/* Test tool: rewrite a snapshot's vmstate with valid checksums but changed content. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "snapshot/snap_format.h"
#include "util/errmsg.h"
#include "x86/cpuid.h"

static int usage(void)
{
	fprintf(stderr, "usage: snap_edit DIR cpuid-set LEAF REG(eax|ebx|ecx|edx) BIT\n"
			"       snap_edit DIR drop SECTION_TYPE INSTANCE\n"
		"       snap_edit DIR add SECTION_TYPE INSTANCE LENGTH   (zero bytes)\n"
		"       snap_edit DIR set-u64 SECTION_TYPE INSTANCE VALUE (first 8 bytes)\n");
	return 2;
}

static void edit_cpuid(struct snap_section *s, uint32_t leaf, int reg, int bit, uint8_t *copy)
{
	struct kvm_cpuid2 *c = (struct kvm_cpuid2 *)copy;
	struct kvm_cpuid_entry2 *e = cpuid_find(c, leaf, 0);

	if (e) {
		uint32_t *r = reg == 0 ? &e->eax : reg == 1 ? &e->ebx : reg == 2 ? &e->ecx : &e->edx;
		*r |= 1u << bit;
	}
	s->data = copy;
}

int main(int argc, char **argv)
{
	struct snapshot snap;
	struct snap_buf out;
	char path[4200];
	struct fvm_err err = FVM_ERR_INIT;
	int fd;

	if (argc < 5)
		return usage();
	if (snap_open(argv[1], &snap, &err)) {
		fprintf(stderr, "snap_edit: %s\n", err.msg);
		return 1;
	}
	snap_buf_init(&out);
	for (int i = 0; i < snap.state.nsections; i++) {
		struct snap_section s = snap.state.sections[i];
		uint8_t *copy = malloc(s.len + 1);
		memcpy(copy, s.data, s.len);
		if (strcmp(argv[2], "cpuid-set") == 0 && argc == 6 && s.type == SNAP_SEC_CPUID) {
			const char *regs = "eaxebxecxedx";
			int reg = (int)((strstr(regs, argv[4]) - regs) / 3);
			edit_cpuid(&s, (uint32_t)strtoul(argv[3], NULL, 0), reg, atoi(argv[5]), copy);
		} else if (strcmp(argv[2], "drop") == 0 && s.type == strtoul(argv[3], NULL, 0) &&
			   s.instance == strtoul(argv[4], NULL, 0)) {
			free(copy);
			continue;
		} else if (strcmp(argv[2], "set-u64") == 0 && argc == 6 && s.len >= 8 &&
			   s.type == strtoul(argv[3], NULL, 0) && s.instance == strtoul(argv[4], NULL, 0)) {
			uint64_t v = strtoull(argv[5], NULL, 0);
			memcpy(copy, &v, sizeof(v));
			s.data = copy;
		}
		snap_buf_add(&out, s.type, s.instance, copy, s.len);
		free(copy);
	}
	if (strcmp(argv[2], "add") == 0 && argc == 6) {
		size_t n = strtoul(argv[5], NULL, 0);
		uint8_t *zero = calloc(1, n + 1);
		if (!zero)
			return 1;
		snap_buf_add(&out, (uint32_t)strtoul(argv[3], NULL, 0),
			     (uint32_t)strtoul(argv[4], NULL, 0), zero, n);
		free(zero);
	}
	if (snap_buf_finish(&out))
		return 1;
	snprintf(path, sizeof(path), "%s/vmstate", argv[1]);
	fd = open(path, O_WRONLY | O_TRUNC);
	if (fd < 0 || write(fd, out.data, out.len) != (ssize_t)out.len) {
		perror(path);
		return 1;
	}
	close(fd);
	snap_buf_free(&out);
	snap_close(&snap);
	return 0;
}
