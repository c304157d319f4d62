/* Compressed kernel payloads inside a bzImage: format detection and decoding. */
#ifndef FORKVM_LOADER_PAYLOAD_H
#define FORKVM_LOADER_PAYLOAD_H

#include <stddef.h>
#include <stdint.h>

enum payload_format {
	PAYLOAD_UNKNOWN = 0,
	PAYLOAD_LZ4,	/* LZ4 legacy frames, as the kernel's "lz4 -l" build step writes */
	PAYLOAD_GZIP,
	PAYLOAD_XZ,
	PAYLOAD_ZSTD,
	PAYLOAD_BZIP2,
	PAYLOAD_LZMA,
	PAYLOAD_LZO,
	PAYLOAD_ELF,	/* uncompressed */
};

#define LZ4_LEGACY_MAGIC 0x184c2102u
#define LZ4_LEGACY_BLOCK (8u << 20) /* each block decompresses to at most 8 MiB */
/* Largest kernel payload we decode (a vmlinux is tens of MiB). */
#define PAYLOAD_MAX_OUT ((size_t)1 << 30)
/* zstd window the decoder accepts: 2^27 = 128 MiB, what "zstd -22 --ultra" (the kernel's
 * zstd22 build step) can use, and libzstd's own default limit. */
#define PAYLOAD_ZSTD_WINDOW_LOG_MAX 27
/* liblzma memory limit (the kernel's xz payloads use a 32 MiB dictionary). */
#define PAYLOAD_XZ_MEMLIMIT ((uint64_t)256 << 20)

enum payload_format payload_detect(const uint8_t *buf, size_t len);
const char *payload_format_name(enum payload_format format);

/* Decode an LZ4 legacy stream; trailing bytes that cannot be a block (the kernel's
 * appended size field) end the stream. *out is malloc'd; returns 0 or -errno. */
int lz4_legacy_decode(const uint8_t *src, size_t len, uint8_t **out, size_t *out_len);
int gzip_decode(const uint8_t *src, size_t len, uint8_t **out, size_t *out_len);
/* Decode the one zstd frame (xz stream) at the start of src with libzstd (liblzma), streaming
 * into a buffer that grows to at most max_out bytes: more output is -EFBIG, truncated or
 * corrupt input -EINVAL, each logged. *consumed gets the frame's (stream's) compressed length;
 * bytes after it are left to the caller. *out is malloc'd. */
int zstd_decode(const uint8_t *src, size_t len, size_t max_out, uint8_t **out, size_t *out_len,
		size_t *consumed);
int xz_decode(const uint8_t *src, size_t len, size_t max_out, uint8_t **out, size_t *out_len,
	      size_t *consumed);
/* Dispatch on payload_detect(); unsupported formats give -ENOTSUP. zstd and xz payloads are
 * one frame (stream) followed by the kernel's 4-byte little-endian uncompressed size, which
 * must match; a payload without it is accepted too. */
int payload_decode(const uint8_t *src, size_t len, uint8_t **out, size_t *out_len);

#endif
