/* The vmstate container: building it in memory (snap_buf) and naming its sections. */
#include "snapshot/snap_format.h"

#include <endian.h>
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "util/log.h"

#define SNAP_HDR_SIZE 16
#define SNAP_SEC_HDR_SIZE 24
#define SNAP_SECTION_MAX (64ULL << 20)

static const char *const section_names[] = {
	[SNAP_SEC_CONFIG] = "config",
	[SNAP_SEC_CPUID] = "cpuid",
	[SNAP_SEC_MP_STATE] = "mp_state",
	[SNAP_SEC_REGS] = "regs",
	[SNAP_SEC_SREGS] = "sregs",
	[SNAP_SEC_XSAVE] = "xsave",
	[SNAP_SEC_XCRS] = "xcrs",
	[SNAP_SEC_DEBUGREGS] = "debugregs",
	[SNAP_SEC_LAPIC] = "lapic",
	[SNAP_SEC_MSRS] = "msrs",
	[SNAP_SEC_VCPU_EVENTS] = "vcpu_events",
	[SNAP_SEC_TSC_KHZ] = "tsc_khz",
	[SNAP_SEC_PIC_MASTER] = "pic_master",
	[SNAP_SEC_PIC_SLAVE] = "pic_slave",
	[SNAP_SEC_IOAPIC] = "ioapic",
	[SNAP_SEC_PIT2] = "pit2",
	[SNAP_SEC_CLOCK] = "clock",
	[SNAP_SEC_SERIAL] = "serial",
	[SNAP_SEC_VIRTIO_MMIO] = "virtio_mmio",
	[SNAP_SEC_VSOCK] = "vsock",
	[SNAP_SEC_PROBE] = "probe",
	[SNAP_SEC_BLK] = "blk",
	[SNAP_SEC_NET] = "net",
};

const char *snap_section_name(uint32_t type)
{
	if (type == SNAP_SEC_END)
		return "end";
	if (type >= sizeof(section_names) / sizeof(section_names[0]) || !section_names[type])
		return "unknown";
	return section_names[type];
}

static void put32(uint8_t *p, uint32_t v)
{
	v = htole32(v);
	memcpy(p, &v, 4);
}

static void put64(uint8_t *p, uint64_t v)
{
	v = htole64(v);
	memcpy(p, &v, 8);
}

void snap_buf_init(struct snap_buf *b)
{
	memset(b, 0, sizeof(*b));
}

/* Make room for need more bytes; the first call also writes the file header. */
static int buf_reserve(struct snap_buf *b, size_t need)
{
	size_t cap = b->cap ? b->cap : 4096;
	uint8_t *data;

	if (need > SIZE_MAX / 2 - SNAP_HDR_SIZE - b->len)
		return -ENOMEM;
	need += b->len + (b->len ? 0 : SNAP_HDR_SIZE);
	while (cap < need)
		cap *= 2;
	if (cap != b->cap) {
		data = realloc(b->data, cap);
		if (!data)
			return -ENOMEM;
		b->data = data;
		b->cap = cap;
	}
	if (b->len == 0) {
		memcpy(b->data, SNAP_MAGIC, 8);
		put32(b->data + 8, SNAP_VERSION);
		put32(b->data + 12, SNAP_HDR_SIZE);
		b->len = SNAP_HDR_SIZE;
	}
	return 0;
}

/* Append one section: header, payload, zero padding to 8 bytes. */
static int buf_append(struct snap_buf *b, uint32_t type, uint32_t instance, const void *payload,
		      uint64_t len)
{
	size_t padded = (size_t)((len + 7) & ~7ULL);
	uint8_t *p;
	int ret;

	ret = buf_reserve(b, SNAP_SEC_HDR_SIZE + padded);
	if (ret)
		return ret;
	p = b->data + b->len;
	put32(p, type);
	put32(p + 4, instance);
	put64(p + 8, len);
	put64(p + 16, XXH64(len ? payload : p, (size_t)len, 0));
	if (len)
		memcpy(p + SNAP_SEC_HDR_SIZE, payload, (size_t)len);
	memset(p + SNAP_SEC_HDR_SIZE + len, 0, padded - (size_t)len);
	b->len += SNAP_SEC_HDR_SIZE + padded;
	return 0;
}

void snap_buf_add(struct snap_buf *b, uint32_t type, uint32_t instance, const void *payload,
		  uint64_t len)
{
	if (b->err)
		return;
	/* The reader rejects these, so refuse to write them in the first place. */
	if (type == SNAP_SEC_END || (len && !payload)) {
		log_err("vmstate: cannot add section '%s' instance %u: %s", snap_section_name(type),
			instance, payload ? "reserved for snap_buf_finish" : "no payload");
		b->err = -EINVAL;
		return;
	}
	if (len > SNAP_SECTION_MAX) {
		log_err("vmstate: section '%s' instance %u is %llu bytes (the limit is 64 MiB)",
			snap_section_name(type), instance, (unsigned long long)len);
		b->err = -EFBIG;
		return;
	}
	b->err = buf_append(b, type, instance, payload, len);
	if (b->err)
		log_err("vmstate: section '%s' instance %u: out of memory", snap_section_name(type),
			instance);
}

int snap_buf_finish(struct snap_buf *b)
{
	uint8_t sum[8];

	if (b->err)
		return b->err;
	/* An image with no sections still needs its header before the whole-file checksum. */
	b->err = buf_reserve(b, SNAP_SEC_HDR_SIZE + 8);
	if (b->err)
		return b->err;
	put64(sum, XXH64(b->data, b->len, 0));
	b->err = buf_append(b, SNAP_SEC_END, 0, sum, sizeof(sum));
	return b->err;
}

void snap_buf_free(struct snap_buf *b)
{
	free(b->data);
	memset(b, 0, sizeof(*b));
}
