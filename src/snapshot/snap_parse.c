/* Strict reading of a vmstate image: every length bounded, every checksum verified. */
#include "snapshot/snap_format.h"
#include "util/errmsg.h"

#include <endian.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#define SNAP_HDR_SIZE 16
#define SNAP_SEC_HDR_SIZE 24
#define SNAP_SECTION_MAX (64ULL << 20)
#define SNAP_MAX_SECTIONS (1 << 20)

struct parser {
	struct snap_state *st;
	struct fvm_err *err;
	int cap;
};

static uint32_t get32(const uint8_t *p)
{
	uint32_t v;

	memcpy(&v, p, 4);
	return le32toh(v);
}

static uint64_t get64(const uint8_t *p)
{
	uint64_t v;

	memcpy(&v, p, 8);
	return le64toh(v);
}

static int fail(struct parser *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int fail(struct parser *p, const char *fmt, ...)
{
	va_list ap;

	if (p->err) {
		va_start(ap, fmt);
		vsnprintf(p->err->msg, sizeof(p->err->msg), fmt, ap);
		va_end(ap);
		p->err->errnum = EINVAL;
	}
	return -EINVAL;
}

/* "section 'regs' instance 1": the same wording as the section decoders use. */
static const char *describe(char *buf, size_t len, uint32_t type, uint32_t instance)
{
	snprintf(buf, len, "section '%s' instance %u", snap_section_name(type), instance);
	return buf;
}

static int add_section(struct parser *p, uint32_t type, uint32_t instance, const uint8_t *data,
		       uint64_t len)
{
	struct snap_state *st = p->st;
	struct snap_section *s;

	if (st->nsections == SNAP_MAX_SECTIONS)
		return fail(p, "vmstate: more than %d sections", SNAP_MAX_SECTIONS);
	if (st->nsections == p->cap) {
		p->cap = p->cap ? p->cap * 2 : 32;
		s = realloc(st->sections, (size_t)p->cap * sizeof(*s));
		if (!s)
			return fail(p, "vmstate: out of memory indexing %d sections", st->nsections);
		st->sections = s;
	}
	st->sections[st->nsections++] = (struct snap_section){ type, instance, data, len };
	return 0;
}

/* The end section: nothing may follow it, and it checksums everything before it. */
static int parse_end(struct parser *p, size_t off, uint32_t instance, uint64_t len, uint64_t sum)
{
	const uint8_t *payload = p->st->data + off + SNAP_SEC_HDR_SIZE;
	size_t left = p->st->len - off - SNAP_SEC_HDR_SIZE;

	if (instance != 0 || len != 8)
		return fail(p, "vmstate: malformed end section (instance %u, length %llu)", instance,
			    (unsigned long long)len);
	if (left < 8)
		return fail(p, "vmstate: truncated in the end section (%zu of 8 bytes)", left);
	if (get64(payload) != XXH64(p->st->data, off, 0))
		return fail(p, "vmstate: whole-file checksum mismatch");
	if (XXH64(payload, 8, 0) != sum)
		return fail(p, "vmstate: checksum mismatch in section 'end'");
	if (left > 8)
		return fail(p, "vmstate: %zu trailing bytes after the end section", left - 8);
	return 0;
}

static int parse_sections(struct parser *p)
{
	const uint8_t *d = p->st->data;
	size_t len = p->st->len, off = SNAP_HDR_SIZE, left, padded;
	uint32_t type, instance;
	uint64_t plen, sum;
	char what[96];
	int ret;

	for (;;) {
		left = len - off;
		if (left == 0)
			return fail(p, "vmstate: missing end section");
		if (left < 8)
			return fail(p, "vmstate: truncated section header at offset %zu", off);
		type = get32(d + off);
		instance = get32(d + off + 4);
		describe(what, sizeof(what), type, instance);
		if (left < SNAP_SEC_HDR_SIZE)
			return fail(p, "vmstate: truncated header of %s at offset %zu", what, off);
		plen = get64(d + off + 8);
		sum = get64(d + off + 16);
		if (type == SNAP_SEC_END)
			return parse_end(p, off, instance, plen, sum);
		/* Checked before any arithmetic on plen, so a huge length cannot wrap. */
		if (plen > SNAP_SECTION_MAX)
			return fail(p, "vmstate: %s claims %llu bytes (the limit is 64 MiB)", what,
				    (unsigned long long)plen);
		padded = (size_t)((plen + 7) & ~7ULL);
		if (padded > left - SNAP_SEC_HDR_SIZE)
			return fail(p, "vmstate: truncated in %s (%llu-byte payload, %zu bytes left)",
				    what, (unsigned long long)plen, left - SNAP_SEC_HDR_SIZE);
		if (XXH64(d + off + SNAP_SEC_HDR_SIZE, (size_t)plen, 0) != sum)
			return fail(p, "vmstate: checksum mismatch in %s", what);
		ret = add_section(p, type, instance, d + off + SNAP_SEC_HDR_SIZE, plen);
		if (ret)
			return ret;
		off += SNAP_SEC_HDR_SIZE + padded;
	}
}

static int cmp_section(const void *a, const void *b)
{
	const struct snap_section *x = a, *y = b;

	if (x->type != y->type)
		return x->type < y->type ? -1 : 1;
	return x->instance < y->instance ? -1 : x->instance > y->instance;
}

/* snap_state_find returns one section per key, so two with the same key is an error. */
static int check_duplicates(struct parser *p)
{
	struct snap_state *st = p->st;
	struct snap_section *sorted;
	char what[96];
	int ret = 0;

	if (st->nsections < 2)
		return 0;
	sorted = malloc((size_t)st->nsections * sizeof(*sorted));
	if (!sorted)
		return fail(p, "vmstate: out of memory checking %d sections", st->nsections);
	memcpy(sorted, st->sections, (size_t)st->nsections * sizeof(*sorted));
	qsort(sorted, (size_t)st->nsections, sizeof(*sorted), cmp_section);
	for (int i = 1; i < st->nsections && !ret; i++) {
		if (cmp_section(&sorted[i - 1], &sorted[i]) == 0)
			ret = fail(p, "vmstate: duplicate %s",
				   describe(what, sizeof(what), sorted[i].type, sorted[i].instance));
	}
	free(sorted);
	return ret;
}

int snap_state_parse(uint8_t *data, size_t len, struct snap_state *st, struct fvm_err *err)
{
	struct parser p = { .st = st, .err = err };
	int ret;

	memset(st, 0, sizeof(*st));
	st->data = data;
	st->len = len;
	errclear(err);
	if (len >= 8 && memcmp(data, SNAP_MAGIC, 8) != 0) {
		ret = fail(&p, "vmstate: bad magic (not a forkvm snapshot)");
		goto out;
	}
	if (len < SNAP_HDR_SIZE) {
		ret = fail(&p, "vmstate: truncated header (%zu of %d bytes)", len, SNAP_HDR_SIZE);
		goto out;
	}
	st->version = get32(data + 8);
	if (st->version != SNAP_VERSION) {
		ret = fail(&p, "vmstate: format version %u is not supported (this forkvm reads "
			   "version %d)", st->version, SNAP_VERSION);
		goto out;
	}
	if (get32(data + 12) != SNAP_HDR_SIZE) {
		ret = fail(&p, "vmstate: header size %u, expected %d", get32(data + 12),
			   SNAP_HDR_SIZE);
		goto out;
	}
	ret = parse_sections(&p);
	if (!ret)
		ret = check_duplicates(&p);
out:
	if (ret)
		snap_state_free(st);
	return ret;
}

const struct snap_section *snap_state_find(const struct snap_state *st, uint32_t type,
					   uint32_t instance)
{
	for (int i = 0; i < st->nsections; i++) {
		if (st->sections[i].type == type && st->sections[i].instance == instance)
			return &st->sections[i];
	}
	return NULL;
}

void snap_state_free(struct snap_state *st)
{
	free(st->data);
	free(st->sections);
	memset(st, 0, sizeof(*st));
}
