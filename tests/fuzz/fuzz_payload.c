/* libFuzzer harness: compressed kernel payload decoders (src/loader/payload.c): LZ4 legacy
 * frames, gzip, zstd and xz, with format detection and the kernel's appended-size check.
 * Input: byte 0 picks the entry point (0: payload_decode, the dispatcher the loader uses;
 * 1: lz4_legacy_decode; 2: gzip_decode; 3: zstd_decode; 4: xz_decode, the last two with a
 * 16 MiB output bound, the dispatcher with its own 1 GiB one); the rest is the payload. */
#include "fuzz_util.h"
#include "loader/payload.h"

#define BOUND (16u << 20)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	uint8_t *out = NULL;
	size_t out_len = 0, consumed = 0;
	int ret;

	if (size < 1)
		return 0;
	(void)payload_format_name(payload_detect(data + 1, size - 1));
	switch (data[0] % 5) {
	case 0:
		ret = payload_decode(data + 1, size - 1, &out, &out_len);
		break;
	case 1:
		ret = lz4_legacy_decode(data + 1, size - 1, &out, &out_len);
		break;
	case 2:
		ret = gzip_decode(data + 1, size - 1, &out, &out_len);
		break;
	case 3:
		ret = zstd_decode(data + 1, size - 1, BOUND, &out, &out_len, &consumed);
		if (!ret && (consumed > size - 1 || out_len > BOUND))
			abort();
		break;
	default:
		ret = xz_decode(data + 1, size - 1, BOUND, &out, &out_len, &consumed);
		if (!ret && (consumed > size - 1 || out_len > BOUND))
			abort();
		break;
	}
	if (ret == 0) {
		/* Touch the whole output: the length must be what was allocated and written. */
		volatile uint8_t sink = 0;

		for (size_t i = 0; i < out_len; i += 4096)
			sink ^= out[i];
		if (out_len)
			sink ^= out[out_len - 1];
		(void)sink;
	} else if (out) {
		abort(); /* no output is handed back on failure */
	}
	free(out);
	return 0;
}
