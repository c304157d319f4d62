/* libFuzzer harness: the vmstate container and section decoder (src/snapshot/snap_parse.c,
 * snap_format.c, snap_decode.c): what `restore` and `snapshot verify` read from a snapshot.
 *
 * Input byte 0, bit 0 picks the mode:
 *   0 (raw)   the rest is a vmstate file, checksums and all;
 *   1 (built) the rest is a list of sections that the harness packs with snap_buf (so every
 *             checksum is right and the fuzzer reaches the section decoder): per section
 *             u16 type, u8 instance, u16 length (0xffff: the natural size of that section
 *             type), then that many payload bytes (zeros once the input runs out).
 * A vmstate that parses goes through snap_decode, the restore's validation of every section.
 *
 * FORKVM_FUZZ_WRITE_SEEDS=DIR: write this harness's seed corpus to DIR and exit (the sizes
 * of the KVM structures come from this build, so tests/fuzz/make_corpus.sh asks the harness). */
#include "fuzz_util.h"
#include "snapshot/snapshot.h"
#include "util/errmsg.h"

#include <linux/kvm.h>

#define M ((struct snap_machine *)0)

static uint64_t natural_size(uint32_t type)
{
	switch (type) {
	case SNAP_SEC_CONFIG: return sizeof(struct snap_config);
	case SNAP_SEC_CPUID: return sizeof(struct kvm_cpuid2);
	case SNAP_SEC_MP_STATE: return sizeof(struct kvm_mp_state);
	case SNAP_SEC_REGS: return sizeof(struct kvm_regs);
	case SNAP_SEC_SREGS: return sizeof(struct kvm_sregs);
	case SNAP_SEC_XSAVE: return sizeof(struct kvm_xsave);
	case SNAP_SEC_XCRS: return sizeof(struct kvm_xcrs);
	case SNAP_SEC_DEBUGREGS: return sizeof(struct kvm_debugregs);
	case SNAP_SEC_LAPIC: return sizeof(struct kvm_lapic_state);
	case SNAP_SEC_MSRS: return sizeof(struct kvm_msrs);
	case SNAP_SEC_VCPU_EVENTS: return sizeof(struct kvm_vcpu_events);
	case SNAP_SEC_TSC_KHZ: return 8;
	case SNAP_SEC_PIC_MASTER:
	case SNAP_SEC_PIC_SLAVE:
	case SNAP_SEC_IOAPIC: return sizeof(struct kvm_irqchip);
	case SNAP_SEC_PIT2: return sizeof(struct kvm_pit_state2);
	case SNAP_SEC_CLOCK: return sizeof(struct kvm_clock_data);
	case SNAP_SEC_SERIAL: return sizeof(M->serial);
	case SNAP_SEC_VIRTIO_MMIO: return sizeof(M->vsock_mmio);
	case SNAP_SEC_VSOCK: return sizeof(M->vsock);
	case SNAP_SEC_BLK: return sizeof(M->disks[0].st);
	case SNAP_SEC_NET: return sizeof(M->net);
	default: return 8;
	}
}

static void check(uint8_t *data, size_t len)
{
	struct snapshot snap;
	struct snap_machine *m;
	struct fvm_err err = FVM_ERR_INIT;

	memset(&snap, 0, sizeof(snap));
	if (snap_state_parse(data, len, &snap.state, &err)) {
		if (getenv("FORKVM_FUZZ_VERBOSE"))
			fprintf(stderr, "parse: %s\n", err.msg);
		return; /* data was freed by the parser */
	}
	for (int i = 0; i < snap.state.nsections; i++) {
		const struct snap_section *s = &snap.state.sections[i];

		if (snap_state_find(&snap.state, s->type, s->instance) == NULL)
			abort(); /* every indexed section must be found again */
		(void)snap_section_name(s->type);
	}
	m = calloc(1, sizeof(*m));
	if (!m)
		abort();
	if (snap_decode(&snap, m, &err) == 0)
		snap_machine_free(m);
	else if (getenv("FORKVM_FUZZ_VERBOSE"))
		fprintf(stderr, "decode: %s\n", err.msg);
	free(m);
	snap_state_free(&snap.state);
}

/* Mode 1: pack the described sections. */
static void build(struct fz *f)
{
	struct snap_buf b;
	static uint8_t payload[1 << 20];

	snap_buf_init(&b);
	while (fz_left(f) >= 5) {
		uint32_t type = (uint32_t)fz_uint(f, 2), inst = (uint32_t)fz_uint(f, 1);
		uint64_t len = fz_uint(f, 2);
		size_t got;
		const uint8_t *src;

		if (len == 0xffff)
			len = natural_size(type);
		src = fz_bytes(f, len, &got);
		memcpy(payload, src, got);
		memset(payload + got, 0, len - got);
		snap_buf_add(&b, type, inst, payload, len);
	}
	if (snap_buf_finish(&b) == 0) {
		check(b.data, b.len); /* takes ownership */
		b.data = NULL;
	}
	snap_buf_free(&b);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fz f = { data, size, 0 };

	if (size < 1)
		return 0;
	if (fz_uint(&f, 1) & 1)
		build(&f);
	else
		check(fz_dup(data + 1, size - 1), size - 1);
	return 0;
}

/* ---- seed corpus ---- */

struct seed {
	uint8_t *p;
	size_t len, cap;
};

static void put(struct seed *s, const void *src, size_t n)
{
	if (s->len + n > s->cap) {
		s->cap = (s->len + n) * 2;
		s->p = realloc(s->p, s->cap);
		if (!s->p)
			abort();
	}
	memcpy(s->p + s->len, src, n);
	s->len += n;
}

static void put_le(struct seed *s, uint64_t v, int bytes)
{
	for (int i = 0; i < bytes; i++) {
		uint8_t c = (uint8_t)(v >> (8 * i));
		put(s, &c, 1);
	}
}

/* One section in mode-1 form; payload NULL means zeros of the natural size. */
static void sec(struct seed *s, uint32_t type, uint32_t inst, const void *payload, size_t len)
{
	static const uint8_t zeros[1 << 16];

	if (!payload) {
		len = natural_size(type);
		payload = zeros;
	}
	put_le(s, type, 2);
	put_le(s, inst, 1);
	put_le(s, len, 2);
	put(s, payload, len);
}

/* A whole machine as snap_capture writes it: CONFIG, per-vCPU state, irqchips, PIT, clock. */
static void machine(struct seed *s, uint32_t nvcpus, uint32_t kind, bool devices)
{
	struct snap_config cfg = { 0 };
	uint64_t tsc = 2000000;

	cfg.mem_size = 64 << 20;
	cfg.nvcpus = nvcpus;
	cfg.guest_kind = kind;
	cfg.nregions = 1;
	cfg.regions[0].size = cfg.mem_size;
	cfg.xsave_size = sizeof(struct kvm_xsave);
	snprintf(cfg.cpu_features, sizeof(cfg.cpu_features), "-xsave");
	sec(s, SNAP_SEC_CONFIG, 0, &cfg, sizeof(cfg));
	for (uint32_t i = 0; i < nvcpus; i++) {
		struct {
			struct kvm_cpuid2 h;
			struct kvm_cpuid_entry2 e[2];
		} cpuid = { .h.nent = 2, .e = { { .function = 0, .eax = 0xd }, { .function = 1 } } };
		struct {
			struct kvm_msrs h;
			struct kvm_msr_entry e[1];
		} msrs = { .h.nmsrs = 1, .e = { { .index = 0x10, .data = 12345 } } };

		sec(s, SNAP_SEC_CPUID, i, &cpuid, sizeof(cpuid));
		sec(s, SNAP_SEC_MP_STATE, i, NULL, 0);
		sec(s, SNAP_SEC_REGS, i, NULL, 0);
		sec(s, SNAP_SEC_SREGS, i, NULL, 0);
		sec(s, SNAP_SEC_XSAVE, i, NULL, 0);
		sec(s, SNAP_SEC_XCRS, i, NULL, 0);
		sec(s, SNAP_SEC_DEBUGREGS, i, NULL, 0);
		sec(s, SNAP_SEC_LAPIC, i, NULL, 0);
		sec(s, SNAP_SEC_MSRS, i, &msrs, sizeof(msrs));
		sec(s, SNAP_SEC_VCPU_EVENTS, i, NULL, 0);
		sec(s, SNAP_SEC_TSC_KHZ, i, &tsc, 8);
	}
	sec(s, SNAP_SEC_PIC_MASTER, 0, NULL, 0);
	sec(s, SNAP_SEC_PIC_SLAVE, 0, NULL, 0);
	sec(s, SNAP_SEC_IOAPIC, 0, NULL, 0);
	sec(s, SNAP_SEC_PIT2, 0, NULL, 0);
	sec(s, SNAP_SEC_CLOCK, 0, NULL, 0);
	if (devices) {
		sec(s, SNAP_SEC_SERIAL, 0x3f8, NULL, 0);
		sec(s, SNAP_SEC_VIRTIO_MMIO, 0, NULL, 0);
		sec(s, SNAP_SEC_VSOCK, 0, NULL, 0);
		sec(s, SNAP_SEC_PROBE, 0, "probe!!!", 8);
	}
}

static void write_seed(const char *dir, const char *name, uint8_t mode, const struct seed *s)
{
	char path[4096];
	struct seed out = { 0 };

	put(&out, &mode, 1);
	if (s->len)
		put(&out, s->p, s->len);
	snprintf(path, sizeof(path), "%s/%s", dir, name);
	fz_write_file(path, out.p, out.len);
	free(out.p);
}

/* Mode-1 input → the packed vmstate file (for the raw-mode seeds). */
static struct seed packed(const struct seed *s)
{
	struct fz f = { s->p, s->len, 0 };
	struct snap_buf b;
	struct seed r = { 0 };
	static uint8_t payload[1 << 16];

	snap_buf_init(&b);
	while (fz_left(&f) >= 5) {
		uint32_t type = (uint32_t)fz_uint(&f, 2), inst = (uint32_t)fz_uint(&f, 1);
		uint64_t len = fz_uint(&f, 2);
		size_t got;
		const uint8_t *src = fz_bytes(&f, len, &got);

		memcpy(payload, src, got);
		snap_buf_add(&b, type, inst, payload, len);
	}
	if (snap_buf_finish(&b))
		abort();
	put(&r, b.data, b.len);
	snap_buf_free(&b);
	return r;
}

static void write_seeds(const char *dir)
{
	struct seed one = { 0 }, two = { 0 }, linux1 = { 0 }, bad = { 0 }, raw, trunc;

	machine(&one, 1, SNAP_GUEST_PROBE, true);
	machine(&two, 2, SNAP_GUEST_PROBE, false);
	machine(&linux1, 1, SNAP_GUEST_LINUX, true);
	machine(&bad, 1, 3, false); /* unknown guest kind */
	write_seed(dir, "built-probe-1vcpu", 1, &one);
	write_seed(dir, "built-probe-2vcpu", 1, &two);
	write_seed(dir, "built-linux-1vcpu", 1, &linux1);
	write_seed(dir, "built-bad-kind", 1, &bad);
	raw = packed(&one);
	write_seed(dir, "raw-probe-1vcpu", 0, &raw);
	trunc = raw;
	trunc.len = raw.len / 2;
	write_seed(dir, "raw-truncated", 0, &trunc);
	raw.p[40] ^= 1; /* a section checksum mismatch */
	write_seed(dir, "raw-bad-checksum", 0, &raw);
	trunc.len = 16;
	write_seed(dir, "raw-header-only", 0, &trunc);
	free(raw.p);
	free(one.p);
	free(two.p);
	free(linux1.p);
	free(bad.p);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	const char *dir = getenv("FORKVM_FUZZ_WRITE_SEEDS");

	if (dir) {
		write_seeds(dir);
		exit(0);
	}
	return 0;
}
