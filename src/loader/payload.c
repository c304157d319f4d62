/* Recognise a bzImage payload's compression and decode the LZ4 legacy and gzip kinds. */
#include "loader/payload.h"

#include <errno.h>
#include <lz4.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "core/log.h"

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
	/* The kernel appends the uncompressed size; use it as a capacity hint when sane. */
	if (len >= 8 && le32(src + len - 4) < (1u << 30))
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

int payload_decode(const uint8_t *src, size_t len, uint8_t **out, size_t *out_len)
{
	enum payload_format format = payload_detect(src, len);

	switch (format) {
	case PAYLOAD_LZ4:
		return lz4_legacy_decode(src, len, out, out_len);
	case PAYLOAD_GZIP:
		return gzip_decode(src, len, out, out_len);
	default:
		log_err("payload compressed with %s is not supported (forkvm decodes lz4 and gzip)",
			payload_format_name(format));
		return -ENOTSUP;
	}
}
