/* AML encoding per the ACPI spec chapter 20 (grammar) and 6.4 (resource descriptors). */
#include "x86/aml.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define AML_ZERO 0x00
#define AML_ONE 0x01
#define AML_NAME_OP 0x08
#define AML_DUAL_NAME_PREFIX 0x2e
#define AML_MULTI_NAME_PREFIX 0x2f
#define AML_BYTE_PREFIX 0x0a
#define AML_WORD_PREFIX 0x0b
#define AML_DWORD_PREFIX 0x0c
#define AML_STRING_PREFIX 0x0d
#define AML_QWORD_PREFIX 0x0e
#define AML_SCOPE_OP 0x10
#define AML_BUFFER_OP 0x11
#define AML_PACKAGE_OP 0x12
#define AML_METHOD_OP 0x14
#define AML_ARG0_OP 0x68
#define AML_NOTIFY_OP 0x86
#define AML_LEQUAL_OP 0x93
#define AML_IF_OP 0xa0
#define AML_EXT_PREFIX 0x5b
#define AML_DEVICE_OP 0x82 /* after AML_EXT_PREFIX */
#define AML_ROOT_CHAR '\\'
#define AML_PATH_SEP '.'
#define AML_MAX_SEGS 8
#define AML_METHOD_SERIALIZED 0x08

#define RES_MEMORY32_FIXED 0x86 /* large item, length 9 */
#define RES_EXT_INTERRUPT 0x89	/* large item, length 6 for one interrupt */
#define RES_END_TAG 0x79	/* small item, length 1: checksum byte */

void aml_init(struct aml *a)
{
	memset(a, 0, sizeof(*a));
}

void aml_free(struct aml *a)
{
	free(a->data);
	memset(a, 0, sizeof(*a));
}

static int aml_reserve(struct aml *a, size_t extra)
{
	size_t cap = a->cap ? a->cap : 256;
	uint8_t *p;

	if (a->err)
		return a->err;
	if (a->len + extra <= a->cap)
		return 0;
	while (cap < a->len + extra)
		cap *= 2;
	p = realloc(a->data, cap);
	if (!p)
		return a->err = -ENOMEM;
	a->data = p;
	a->cap = cap;
	return 0;
}

void aml_bytes(struct aml *a, const void *p, size_t n)
{
	if (aml_reserve(a, n))
		return;
	memcpy(a->data + a->len, p, n);
	a->len += n;
}

void aml_byte(struct aml *a, uint8_t b)
{
	aml_bytes(a, &b, 1);
}

/* An argument the grammar cannot encode: the first error sticks. */
static void aml_invalid(struct aml *a)
{
	if (!a->err)
		a->err = -EINVAL;
}

static void aml_le(struct aml *a, uint64_t v, int n)
{
	for (int i = 0; i < n; i++)
		aml_byte(a, (uint8_t)(v >> (8 * i)));
}

/*
 * PkgLength: one byte holds lengths up to 63 (bits 0-5). Longer ones use 1-3 follow bytes:
 * lead byte bits 6-7 = follow count, bits 0-3 = low nibble, follow bytes = the next 8 bits each.
 * The encoded value includes the PkgLength bytes themselves.
 */
size_t aml_pkglen_encode(size_t body, uint8_t out[4])
{
	size_t n, total;

	if (body + 1 < 64) {
		out[0] = (uint8_t)(body + 1);
		return 1;
	}
	for (n = 2; n <= 4; n++) {
		total = body + n;
		if (total < (1ULL << (4 + 8 * (n - 1))))
			break;
	}
	total = body + n;
	out[0] = (uint8_t)(((n - 1) << 6) | (total & 0xf));
	for (size_t i = 1; i < n; i++)
		out[i] = (uint8_t)(total >> (4 + 8 * (i - 1)));
	return n;
}

size_t aml_pkg_begin(struct aml *a, const uint8_t *op, size_t oplen)
{
	aml_bytes(a, op, oplen);
	return a->len;
}

void aml_pkg_end(struct aml *a, size_t start)
{
	uint8_t enc[4];
	size_t body = a->len - start, n = aml_pkglen_encode(body, enc);

	if (aml_reserve(a, n))
		return;
	memmove(a->data + start + n, a->data + start, body);
	memcpy(a->data + start, enc, n);
	a->len += n;
}

/* Count the '.'-separated segments of a path (after any root prefix). */
static int aml_path_segs(const char *name)
{
	int n = 1;

	for (; *name; name++)
		n += *name == AML_PATH_SEP;
	return n;
}

/* One NameSeg: exactly four characters, padded with '_'; returns the text after it. */
static const char *aml_nameseg(struct aml *a, const char *name)
{
	char seg[4] = { '_', '_', '_', '_' };

	for (int i = 0; i < 4 && *name && *name != AML_PATH_SEP; i++)
		seg[i] = *name++;
	aml_bytes(a, seg, 4);
	while (*name && *name != AML_PATH_SEP)
		name++; /* a longer segment is cut to four characters */
	return *name ? name + 1 : name;
}

void aml_name(struct aml *a, const char *name)
{
	int segs;

	if (*name == AML_ROOT_CHAR) {
		aml_byte(a, AML_ROOT_CHAR);
		name++;
	}
	segs = aml_path_segs(name);
	if (segs > AML_MAX_SEGS)
		aml_invalid(a);
	if (segs == 2) {
		aml_byte(a, AML_DUAL_NAME_PREFIX);
	} else if (segs > 2) {
		aml_byte(a, AML_MULTI_NAME_PREFIX);
		aml_byte(a, (uint8_t)segs);
	}
	for (int i = 0; i < segs; i++)
		name = aml_nameseg(a, name);
}

void aml_integer(struct aml *a, uint64_t v)
{
	if (v == 0) {
		aml_byte(a, AML_ZERO);
	} else if (v == 1) {
		aml_byte(a, AML_ONE);
	} else if (v <= 0xff) {
		aml_byte(a, AML_BYTE_PREFIX);
		aml_le(a, v, 1);
	} else if (v <= 0xffff) {
		aml_byte(a, AML_WORD_PREFIX);
		aml_le(a, v, 2);
	} else if (v <= 0xffffffffULL) {
		aml_byte(a, AML_DWORD_PREFIX);
		aml_le(a, v, 4);
	} else {
		aml_byte(a, AML_QWORD_PREFIX);
		aml_le(a, v, 8);
	}
}

void aml_string(struct aml *a, const char *s)
{
	aml_byte(a, AML_STRING_PREFIX);
	aml_bytes(a, s, strlen(s) + 1);
}

size_t aml_scope_begin(struct aml *a, const char *name)
{
	static const uint8_t op[] = { AML_SCOPE_OP };
	size_t start = aml_pkg_begin(a, op, sizeof(op));

	aml_name(a, name);
	return start;
}

size_t aml_device_begin(struct aml *a, const char *name)
{
	static const uint8_t op[] = { AML_EXT_PREFIX, AML_DEVICE_OP };
	size_t start = aml_pkg_begin(a, op, sizeof(op));

	aml_name(a, name);
	return start;
}

void aml_name_decl(struct aml *a, const char *name)
{
	aml_byte(a, AML_NAME_OP);
	aml_name(a, name);
}

void aml_package_ints(struct aml *a, const uint64_t *v, int n)
{
	static const uint8_t op[] = { AML_PACKAGE_OP };
	size_t start;

	if (n < 0 || n > 255) {
		aml_invalid(a);
		return;
	}
	start = aml_pkg_begin(a, op, sizeof(op));
	aml_byte(a, (uint8_t)n); /* NumElements */
	for (int i = 0; i < n; i++)
		aml_integer(a, v[i]);
	aml_pkg_end(a, start);
}

size_t aml_method_begin(struct aml *a, const char *name, int nargs, bool serialized)
{
	static const uint8_t op[] = { AML_METHOD_OP };
	size_t start = aml_pkg_begin(a, op, sizeof(op));

	if (nargs < 0 || nargs > 7)
		aml_invalid(a);
	aml_name(a, name);
	/* MethodFlags: bits 0-2 argument count, bit 3 serialized, bits 4-7 sync level 0. */
	aml_byte(a, (uint8_t)((nargs & 7) | (serialized ? AML_METHOD_SERIALIZED : 0)));
	return start;
}

size_t aml_if_begin(struct aml *a)
{
	static const uint8_t op[] = { AML_IF_OP };

	return aml_pkg_begin(a, op, sizeof(op));
}

void aml_lequal(struct aml *a)
{
	aml_byte(a, AML_LEQUAL_OP);
}

void aml_arg(struct aml *a, int n)
{
	if (n < 0 || n > 6)
		aml_invalid(a);
	aml_byte(a, (uint8_t)(AML_ARG0_OP + (n & 7)));
}

void aml_notify(struct aml *a, const char *path, uint64_t value)
{
	aml_byte(a, AML_NOTIFY_OP);
	aml_name(a, path);
	aml_integer(a, value);
}

/* Memory32Fixed(ReadWrite, base, len): 12 bytes at res. */
static size_t res_memory32_fixed(uint8_t *res, uint32_t base, uint32_t len)
{
	size_t n = 0;

	res[n++] = RES_MEMORY32_FIXED;
	res[n++] = 9; /* length, little-endian u16 */
	res[n++] = 0;
	res[n++] = 1; /* read-write */
	for (int i = 0; i < 4; i++)
		res[n++] = (uint8_t)(base >> (8 * i));
	for (int i = 0; i < 4; i++)
		res[n++] = (uint8_t)(len >> (8 * i));
	return n;
}

/* Interrupt(ResourceConsumer, Edge, ActiveHigh, Exclusive) { irq }: 9 bytes at res. */
static size_t res_interrupt(uint8_t *res, uint32_t irq)
{
	size_t n = 0;

	res[n++] = RES_EXT_INTERRUPT;
	res[n++] = 6;
	res[n++] = 0;
	res[n++] = 0x01 | 0x02; /* consumer, edge-triggered; active high, exclusive */
	res[n++] = 1;		/* one interrupt number follows */
	for (int i = 0; i < 4; i++)
		res[n++] = (uint8_t)(irq >> (8 * i));
	return n;
}

/* Buffer(){ res[0..n) + EndTag }: n + 2 must fit the caller's array. */
static void aml_resource_template(struct aml *a, uint8_t *res, size_t n)
{
	static const uint8_t op[] = { AML_BUFFER_OP };
	size_t start;

	res[n++] = RES_END_TAG;
	res[n++] = 0; /* checksum 0: "treat as correct" */
	start = aml_pkg_begin(a, op, sizeof(op));
	aml_integer(a, n);
	aml_bytes(a, res, n);
	aml_pkg_end(a, start);
}

void aml_crs_mmio_irq(struct aml *a, uint32_t base, uint32_t len, uint32_t irq)
{
	uint8_t res[12 + 9 + 2];
	size_t n = res_memory32_fixed(res, base, len);

	n += res_interrupt(res + n, irq);
	aml_resource_template(a, res, n);
}

void aml_crs_irq(struct aml *a, uint32_t irq)
{
	uint8_t res[9 + 2];

	aml_resource_template(a, res, res_interrupt(res, irq));
}
