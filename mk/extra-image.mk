# Kernel loader + guest image tooling: LZ4, zstd and xz (bzImage payloads, compressed kernel
# modules), zlib (gzip payloads, initramfs) and libarchive (rootfs from a tar stream).
LDLIBS += -llz4 -lzstd -llzma -lz -lcrypto -larchive
