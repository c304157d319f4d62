/* Shared helpers for the libFuzzer harnesses in tests/fuzz (header only). */
#ifndef FORKVM_FUZZ_UTIL_H
#define FORKVM_FUZZ_UTIL_H
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A cursor over the fuzz input: reads past the end yield zeros, never fail. */
struct fz {
	const uint8_t *p;
	size_t len, pos;
};

static inline size_t fz_left(const struct fz *f)
{
	return f->len - f->pos;
}

static inline uint64_t fz_uint(struct fz *f, int bytes)
{
	uint64_t v = 0;

	for (int i = 0; i < bytes; i++)
		v |= (uint64_t)(f->pos < f->len ? f->p[f->pos++] : 0) << (8 * i);
	return v;
}

/* Up to n bytes of input (fewer at the end); *got says how many. */
static inline const uint8_t *fz_bytes(struct fz *f, size_t n, size_t *got)
{
	const uint8_t *r = f->p + f->pos;

	*got = n < fz_left(f) ? n : fz_left(f);
	f->pos += *got;
	return r;
}

/* A malloc'd copy of buf (libFuzzer's own buffer is const; some parsers take ownership). */
static inline uint8_t *fz_dup(const uint8_t *buf, size_t len)
{
	uint8_t *c = malloc(len ? len : 1);

	if (!c)
		abort();
	if (len)
		memcpy(c, buf, len);
	return c;
}

/* Write a whole file; the harness aborts if its own scratch I/O fails (not the code under test). */
static inline void fz_write_file(const char *path, const void *buf, size_t len)
{
	FILE *f = fopen(path, "wb");

	if (!f || (len && fwrite(buf, 1, len, f) != len) || fclose(f))
		abort();
}

/* Where scratch files go: $TMPDIR (the pytest run points it at its own folder), else /tmp. */
static inline const char *fz_tmpdir(void)
{
	const char *d = getenv("TMPDIR");

	return d && *d && strlen(d) < 200 ? d : "/tmp";
}

#endif
