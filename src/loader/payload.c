/* Recognise a bzImage payload's compression and decode the LZ4 legacy, gzip, zstd and xz kinds. */
#include "loader/payload.h"

#include <errno.h>
#include <lz4.h>
#include <lzma.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>
#include <zstd.h>

#include "util/log.h"

static const struct {
	enum payload_format format;
	const char *name;
	const uint8_t magic[6];
	size_t len;
} formats[] = {
	{ PAYLOAD_LZ4, "lz4", { 0x02, 0x21, 0x4c, 0x18 }, 4 },
	{ PAYLOAD_GZIP, "gzip", { 0x1f, 0x8b }, 2 },
	{ PAYLOAD_XZ, "xz", { 0xfd, '7', 'z', 'X', 'Z', 0x00 }, 6 },
	{ PAYLOAD_ZSTD, "zstd", { 0x28, 0xb5, 0x2f, 0xfd }, 4 },
	{ PAYLOAD_BZIP2, "bzip2", { 'B', 'Z', 'h' }, 3 },
	{ PAYLOAD_LZMA, "lzma", { 0x5d, 0x00, 0x00 }, 3 },
	{ PAYLOAD_LZO, "lzo", { 0x89, 'L', 'Z', 'O' }, 4 },
	{ PAYLOAD_ELF, "uncompressed ELF", { 0x7f, 'E', 'L', 'F' }, 4 },
};

enum payload_format payload_detect(const uint8_t *buf, size_t len)
{
	for (size_t i = 0; i < sizeof(formats) / sizeof(formats[0]); i++)
		if (len >= formats[i].len && !memcmp(buf, formats[i].magic, formats[i].len))
			return formats[i].format;
	return PAYLOAD_UNKNOWN;
}

const char *payload_format_name(enum payload_format format)
{
	for (size_t i = 0; i < sizeof(formats) / sizeof(formats[0]); i++)
		if (formats[i].format == format)
			return formats[i].name;
	return "unknown";
}

static uint32_t le32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* Make room for at least need more bytes after used; *cap may hold a size hint. */
static int grow(uint8_t **buf, size_t *cap, size_t used, size_t need)
{
	size_t want = *cap > need ? *cap : need;
	uint8_t *p;

	if (*buf && *cap - used >= need)
		return 0;
	while (want - used < need)
		want *= 2;
	p = realloc(*buf, want);
	if (!p)
		return -ENOMEM;
	*buf = p;
	*cap = want;
	return 0;
}

int lz4_legacy_decode(const uint8_t *src, size_t len, uint8_t **out, size_t *out_len)
{
	const size_t max_block = (size_t)LZ4_compressBound(LZ4_LEGACY_BLOCK);
	size_t pos = 4, used = 0, cap = 0;
	uint8_t *buf = NULL;
	int ret = -EINVAL, nblocks = 0;

	if (len < 4 || le32(src) != LZ4_LEGACY_MAGIC) {
		log_err("lz4: missing legacy frame magic");
		goto out;
	}
	/*
	 * The kernel appends the uncompressed size; use it as a capacity hint when sane: an LZ4
	 * block expands at most 255-fold, so a hint beyond that is a lie not worth allocating for.
	 */
	if (len >= 8 && le32(src + len - 4) < (1u << 30) && le32(src + len - 4) / 255 <= len)
		cap = le32(src + len - 4) + (size_t)LZ4_LEGACY_BLOCK;
	while (len - pos >= 4) {
		uint32_t csize = le32(src + pos);
		int n;

		if (csize == LZ4_LEGACY_MAGIC) { /* concatenated streams */
			pos += 4;
			continue;
		}
		if (len - pos == 4 && nblocks > 0) {
			/* Exactly the appended size field is left: it must match what we decoded. */
			if (csize != (uint32_t)used) {
				log_err("lz4: trailing size %u does not match decoded %zu bytes (truncated?)",
					csize, used);
				goto out;
			}
			pos += 4;
			break;
		}
		if (csize == 0 || csize > max_block || csize > len - pos - 4) {
			log_err("lz4: block at offset %zu claims %u bytes, %zu left (truncated or corrupt)",
				pos, csize, len - pos - 4);
			goto out;
		}
		ret = grow(&buf, &cap, used, LZ4_LEGACY_BLOCK);
		if (ret) {
			ret = log_errno(ret, "lz4: output buffer");
			goto out;
		}
		ret = -EINVAL;
		n = LZ4_decompress_safe((const char *)src + pos + 4, (char *)buf + used, (int)csize,
					LZ4_LEGACY_BLOCK);
		if (n < 0) {
			log_err("lz4: corrupt block at offset %zu", pos);
			goto out;
		}
		used += (size_t)n;
		pos += 4 + csize;
		nblocks++;
		if (used > PAYLOAD_MAX_OUT) {
			log_err("lz4: decoded data exceeds the limit of %zu bytes", PAYLOAD_MAX_OUT);
			ret = -EFBIG;
			goto out;
		}
	}
	if (pos != len || nblocks == 0) {
		log_err("lz4: %zu stray bytes at the end of the stream", len - pos);
		goto out;
	}
	*out = buf;
	*out_len = used;
	buf = NULL;
	ret = 0;
out:
	free(buf);
	return ret;
}

int gzip_decode(const uint8_t *src, size_t len, uint8_t **out, size_t *out_len)
{
	z_stream zs = { 0 };
	size_t cap = 0, used = 0;
	uint8_t *buf = NULL;
	int ret = -EINVAL, zret;

	if (inflateInit2(&zs, 16 + MAX_WBITS) != Z_OK) {
		log_err("gzip: inflateInit2 failed");
		return -ENOMEM;
	}
	zs.next_in = (uint8_t *)src;
	zs.avail_in = len > UINT32_MAX ? UINT32_MAX : (uInt)len;
	do {
		ret = grow(&buf, &cap, used, 4u << 20);
		if (ret) {
			ret = log_errno(ret, "gzip: output buffer");
			goto out;
		}
		zs.next_out = buf + used;
		zs.avail_out = (uInt)(cap - used > UINT32_MAX ? UINT32_MAX : cap - used);
		zret = inflate(&zs, Z_NO_FLUSH);
		used = zs.total_out;
		if (used > PAYLOAD_MAX_OUT) {
			log_err("gzip: decoded data exceeds the limit of %zu bytes", PAYLOAD_MAX_OUT);
			ret = -EFBIG;
			goto out;
		}
		if (zret != Z_OK && zret != Z_STREAM_END) {
			log_err("gzip: %s", zret == Z_BUF_ERROR ? "truncated stream"
								: (zs.msg ? zs.msg : "corrupt stream"));
			ret = -EINVAL;
			goto out;
		}
	} while (zret != Z_STREAM_END);
	*out = buf;
	*out_len = used;
	buf = NULL;
	ret = 0;
out:
	inflateEnd(&zs);
	free(buf);
	return ret;
}

/* Output buffer for the bounded decoders: its capacity never exceeds limit + 1, so a stream
 * that fills limit + 1 bytes is known to be too large. */
struct bounded_out {
	uint8_t *buf;
	size_t cap, used, limit;
};

/* Start with hint + 1 bytes (an exact hint then needs no second allocation), else 1 MiB. */
static int bounded_init(struct bounded_out *o, size_t limit, size_t hint)
{
	size_t cap = hint && hint < limit ? hint + 1 : (1u << 20);

	o->limit = limit;
	o->used = 0;
	o->cap = cap < limit + 1 ? cap : limit + 1;
	o->buf = malloc(o->cap);
	return o->buf ? 0 : -ENOMEM;
}

/* Double the buffer (up to limit + 1); -EFBIG once the output has gone past limit. */
static int bounded_grow(struct bounded_out *o, const char *what)
{
	size_t cap;
	uint8_t *p;

	if (o->used > o->limit) {
		log_err("%s: decoded data exceeds the limit of %zu bytes", what, o->limit);
		return -EFBIG;
	}
	cap = o->cap > (o->limit + 1) / 2 ? o->limit + 1 : o->cap * 2;
	p = realloc(o->buf, cap);
	if (!p)
		return log_errno(-ENOMEM, "%s: output buffer of %zu bytes", what, cap);
	o->buf = p;
	o->cap = cap;
	return 0;
}

/* Hand the decoded bytes to the caller (-EFBIG, logged, if they went past the limit). */
static int bounded_finish(struct bounded_out *o, const char *what, uint8_t **out,
			  size_t *out_len)
{
	if (o->used > o->limit)
		return bounded_grow(o, what);
	*out = o->buf;
	*out_len = o->used;
	o->buf = NULL;
	return 0;
}

int zstd_decode(const uint8_t *src, size_t len, size_t max_out, uint8_t **out, size_t *out_len,
		size_t *consumed)
{
	struct bounded_out o = { 0 };
	ZSTD_inBuffer in = { src, len, 0 };
	unsigned long long content = len >= 4 ? ZSTD_getFrameContentSize(src, len) : 0;
	ZSTD_DCtx *dctx = ZSTD_createDCtx();
	size_t zret;
	int ret = -ENOMEM;

	if (!dctx) {
		log_err("zstd: cannot create a decompression context");
		goto out;
	}
	zret = ZSTD_DCtx_setParameter(dctx, ZSTD_d_windowLogMax, PAYLOAD_ZSTD_WINDOW_LOG_MAX);
	if (ZSTD_isError(zret)) {
		log_err("zstd: set window limit: %s", ZSTD_getErrorName(zret));
		ret = -EINVAL;
		goto out;
	}
	if (content == ZSTD_CONTENTSIZE_ERROR || content == ZSTD_CONTENTSIZE_UNKNOWN)
		content = 0;
	if (content > max_out) {
		log_err("zstd: frame declares %llu bytes, more than the limit of %zu", content, max_out);
		ret = -EFBIG;
		goto out;
	}
	ret = bounded_init(&o, max_out, (size_t)content);
	if (ret) {
		ret = log_errno(ret, "zstd: output buffer");
		goto out;
	}
	for (;;) {
		ZSTD_outBuffer ob = { o.buf, o.cap, o.used };

		zret = ZSTD_decompressStream(dctx, &ob, &in);
		o.used = ob.pos;
		if (ZSTD_isError(zret)) {
			log_err("zstd: %s (input offset %zu of %zu)", ZSTD_getErrorName(zret), in.pos, len);
			ret = -EINVAL;
			goto out;
		}
		if (zret == 0)
			break; /* the frame is complete */
		if (o.used > o.limit) {
			ret = bounded_grow(&o, "zstd");
			goto out;
		}
		if (ob.pos < ob.size) {
			/* Room left yet the frame is not done: all input was used. */
			log_err("zstd: truncated frame (%zu bytes, %zu decoded)", len, o.used);
			ret = -EINVAL;
			goto out;
		}
		ret = bounded_grow(&o, "zstd");
		if (ret)
			goto out;
	}
	ret = bounded_finish(&o, "zstd", out, out_len);
	if (!ret)
		*consumed = in.pos;
out:
	ZSTD_freeDCtx(dctx);
	free(o.buf);
	return ret;
}

static const char *lzma_error(lzma_ret r)
{
	switch (r) {
	case LZMA_MEM_ERROR: return "out of memory";
	case LZMA_MEMLIMIT_ERROR: return "needs more memory than the limit";
	case LZMA_FORMAT_ERROR: return "not an xz stream";
	case LZMA_OPTIONS_ERROR: return "unsupported compression options";
	case LZMA_DATA_ERROR: return "corrupt data";
	case LZMA_BUF_ERROR: return "truncated stream";
	case LZMA_UNSUPPORTED_CHECK: return "unsupported integrity check";
	default: return "decoder error";
	}
}

int xz_decode(const uint8_t *src, size_t len, size_t max_out, uint8_t **out, size_t *out_len,
	      size_t *consumed)
{
	struct bounded_out o = { 0 };
	lzma_stream xz = LZMA_STREAM_INIT;
	lzma_ret r;
	int ret;

	/* One stream (no LZMA_CONCATENATED): what follows it is the caller's. */
	r = lzma_stream_decoder(&xz, PAYLOAD_XZ_MEMLIMIT, 0);
	if (r != LZMA_OK) {
		log_err("xz: cannot create a decoder: %s", lzma_error(r));
		return r == LZMA_MEM_ERROR ? -ENOMEM : -EINVAL;
	}
	ret = bounded_init(&o, max_out, 0);
	if (ret) {
		ret = log_errno(ret, "xz: output buffer");
		goto out;
	}
	xz.next_in = src;
	xz.avail_in = len;
	for (;;) {
		xz.next_out = o.buf + o.used;
		xz.avail_out = o.cap - o.used;
		r = lzma_code(&xz, LZMA_FINISH);
		o.used = o.cap - xz.avail_out;
		if (r == LZMA_STREAM_END)
			break;
		if (r != LZMA_OK) {
			log_err("xz: %s (input offset %llu of %zu)", lzma_error(r),
				(unsigned long long)xz.total_in, len);
			ret = r == LZMA_MEM_ERROR ? -ENOMEM : -EINVAL;
			goto out;
		}
		if (xz.avail_out == 0) {
			ret = bounded_grow(&o, "xz");
			if (ret)
				goto out;
		}
	}
	ret = bounded_finish(&o, "xz", out, out_len);
	if (!ret)
		*consumed = (size_t)xz.total_in;
out:
	lzma_end(&xz);
	free(o.buf);
	return ret;
}

/* One zstd frame or xz stream, then (as the kernel's size_append writes it) the uncompressed
 * size as le32, which must agree with what was decoded. */
static int sized_decode(enum payload_format format, const uint8_t *src, size_t len,
			uint8_t **out, size_t *out_len)
{
	const char *name = payload_format_name(format);
	size_t used = 0, consumed = 0, rest;
	uint8_t *buf = NULL;
	int ret;

	if (format == PAYLOAD_ZSTD)
		ret = zstd_decode(src, len, PAYLOAD_MAX_OUT, &buf, &used, &consumed);
	else
		ret = xz_decode(src, len, PAYLOAD_MAX_OUT, &buf, &used, &consumed);
	if (ret)
		goto out;
	ret = -EINVAL;
	rest = len - consumed;
	if (rest != 0 && rest != 4) {
		log_err("%s: %zu stray bytes after the compressed data (expected the 4-byte size)",
			name, rest);
		goto out;
	}
	if (rest == 4 && le32(src + consumed) != (uint32_t)used) {
		log_err("%s: trailing size %u does not match decoded %zu bytes", name,
			le32(src + consumed), used);
		goto out;
	}
	*out = buf;
	*out_len = used;
	buf = NULL;
	ret = 0;
out:
	free(buf);
	return ret;
}

int payload_decode(const uint8_t *src, size_t len, uint8_t **out, size_t *out_len)
{
	enum payload_format format = payload_detect(src, len);

	switch (format) {
	case PAYLOAD_LZ4:
		return lz4_legacy_decode(src, len, out, out_len);
	case PAYLOAD_GZIP:
		return gzip_decode(src, len, out, out_len);
	case PAYLOAD_ZSTD:
	case PAYLOAD_XZ:
		return sized_decode(format, src, len, out, out_len);
	default:
		log_err("payload compressed with %s is not supported "
			"(forkvm decodes lz4, gzip, zstd and xz)", payload_format_name(format));
		return -ENOTSUP;
	}
}
