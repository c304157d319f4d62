# Kernel loader + guest image tooling: LZ4, zstd and xz (bzImage payloads, compressed kernel
# modules) and zlib (gzip payloads, initramfs).
LDLIBS += -llz4 -lzstd -llzma -lz -lcrypto
