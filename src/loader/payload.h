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

enum payload_format payload_detect(const uint8_t *buf, size_t len);
const char *payload_format_name(enum payload_format format);

/* Decode an LZ4 legacy stream; trailing bytes that cannot be a block (the kernel's
 * appended size field) end the stream. *out is malloc'd; returns 0 or -errno. */
int lz4_legacy_decode(const uint8_t *src, size_t len, uint8_t **out, size_t *out_len);
int gzip_decode(const uint8_t *src, size_t len, uint8_t **out, size_t *out_len);
/* Dispatch on payload_detect(); unsupported formats give -ENOTSUP. */
int payload_decode(const uint8_t *src, size_t len, uint8_t **out, size_t *out_len);

#endif
